"""``python -m generate ladder``: the traditional codecs' rate–quality ladder (the paper's Figure 6).

Every reference through AVC (libx264), HEVC (libx265) and AV1 (libsvtav1), all bundled with PyAV,
and VVC (Fraunhofer ``vvencapp`` / ``vvdecapp``) when both are on PATH — one intra frame each,
at a list of fixed QPs or of target bitrates (the bpp search of ``generate run``). The bits are
counted as in ``generate run``: the raw bitstream's bytes × 8, no container. Each decoded image
is written as a PNG, and ``manifest.csv`` has the columns of a ``generate run`` manifest where they
apply (``model`` = the codec's label, ``mode`` = ``Codec``, ``text_bits`` = ``pixel_bits`` = 0),
so a scorer reads the two alike. Resumable: a point whose image and metadata exist is skipped.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from generate import codec
from generate.hints import rate_warning
from generate.plan import content_type
from generate.run import _done, _write_json, _write_png, write_manifest
from studydb.images import read_rgb_array

MODE = "Codec"
"""The ``mode`` of a ladder point in the manifest."""


@dataclass(frozen=True)
class Point:
    """One image to make: a reference through one codec at one QP or target bpp."""

    reference: Path
    codec: str
    qp: int | None = None
    target_bpp: float | None = None

    @property
    def id(self) -> str:
        rate = f"qp{self.qp}" if self.qp is not None else f"{self.target_bpp:g}bpp"
        return f"{self.reference.stem}__{codec.LABELS[self.codec]}__{rate}"


def points(
    references: list[Path],
    codecs: list[str],
    qps: list[int] | dict[str, list[int]] | None = None,
    bpps: list[float] | None = None,
) -> list[Point]:
    """Every (reference, codec, rate); refuses what cannot be honoured before any encoding.

    ``qps`` is one list for every codec, or a list per codec (``{"hevc": [37, 42, 47, 51],
    "avc": [51, 57, 63, 67]}``; the key ``""`` is the list of every codec not named), since the
    codecs' QP scales differ.
    """
    if bool(qps) == bool(bpps):
        raise codec.CodecError("give either --qps or --bpp (one list of rates)")
    for name in codecs:
        if name not in codec.QP_LIMITS:
            raise codec.CodecError(
                f"unknown codec '{name}' (choose from {', '.join(codec.LABELS)})"
            )
        if not codec.available(name):
            raise codec.CodecError(
                f"codec '{name}' is not available here"
                + (" (needs vvencapp and vvdecapp on PATH)" if name == "vvc" else "")
            )
    table = per_codec_qps(codecs, qps) if qps else {}
    for reference in references:  # headers only: a too-small image stops the ladder up front
        with Image.open(reference) as image:
            if min(image.size) < codec.MIN_SIDE:
                raise codec.CodecError(
                    f"{reference.name} is {image.size[0]}×{image.size[1]}: too small to encode "
                    f"(min side {codec.MIN_SIDE})"
                )
    if any(not (math.isfinite(b) and b > 0) for b in bpps or []):
        raise codec.CodecError(f"--bpp targets must be > 0, got {bpps}")
    for label, values in (("--codecs", codecs), ("--bpp", bpps or [])):
        if len(set(values)) != len(values):
            raise codec.CodecError(f"{label} lists a value twice")
    return [
        Point(reference, name, qp=qp) if qp is not None else Point(reference, name, target_bpp=b)
        for reference in references
        for name in codecs
        for qp, b in ([(q, None) for q in table[name]] if qps else [(None, b) for b in bpps or []])
    ]


def per_codec_qps(codecs: list[str], qps: list[int] | dict[str, list[int]]) -> dict[str, list[int]]:
    """Each codec's QP list, every QP checked against that codec's scale."""
    given = {"": list(qps)} if isinstance(qps, list) else qps
    stray = sorted(set(given) - set(codecs) - {""})
    if stray:
        raise codec.CodecError(f"--qps names {stray[0]}, which --codecs does not list")
    table = {}
    for name in codecs:
        values = given.get(name, given.get(""))
        if not values:
            raise codec.CodecError(f"no QPs for {name}: add --qps {name}=… or one list for all")
        if len(set(values)) != len(values):
            raise codec.CodecError(f"--qps lists a value twice for {name}")
        for qp in values:
            try:
                codec.check_qp(name, qp)
            except codec.CodecError as error:
                raise codec.CodecError(
                    f"{error} (give each codec its own list, e.g. --qps {name}="
                    f"{','.join(map(str, _in_range(name)))})"
                ) from None
        table[name] = list(values)
    return table


def _in_range(name: str) -> tuple[int, ...]:
    """Four QPs near the top of a codec's scale: an example for the error message."""
    high = codec.QP_LIMITS[name][1]
    return (high - 14, high - 9, high - 4, high)


def run_ladder(todo: list[Point], out: Path, workers: int = 1) -> int:
    """Make every missing point (``workers`` processes); return how many were made."""
    for folder in ("images", "meta"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    missing = [p for p in todo if not _done(out, p.id)]
    progress = tqdm(total=len(missing), desc="codec ladder", unit="img", disable=None)
    if workers <= 1:
        for point in missing:
            _write(out, point, make(point))
            progress.update(1)
    else:  # spawn, as generate run's codec hints: safe whatever the parent holds
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = {pool.submit(make, p): p for p in missing}
            for job in as_completed(jobs):
                _write(out, jobs[job], job.result())
                progress.update(1)
    progress.close()
    if any((out / "meta").glob("*.json")):
        write_manifest(out)
    return len(missing)


def make(point: Point) -> codec.CodedImage:
    """Encode and decode one point (module level, so a worker process can run it)."""
    image = read_rgb_array(point.reference)
    if point.qp is not None:
        return codec.encode_at_qp(image, point.qp, point.codec)
    return codec.encode_at_bpp(image, point.target_bpp, point.codec)


def _write(out: Path, point: Point, coded: codec.CodedImage) -> None:
    """The decoded image, then its metadata (which marks the point made), each atomically."""
    height, width, _ = coded.image.shape
    bpp = coded.bits / (width * height)
    if point.target_bpp is not None:
        warning = rate_warning(f"{point.reference.name} ({point.codec})", bpp, point.target_bpp)
        if warning:
            tqdm.write(warning, file=sys.stderr)
    _write_png(out / "images" / f"{point.id}.png", coded.image)
    _write_json(out / "meta" / f"{point.id}.json", record(point, coded))


def record(point: Point, coded: codec.CodedImage) -> dict:
    """One manifest row, with ``generate run``'s column names where they apply."""
    height, width, _ = coded.image.shape
    return {
        "id": point.id,
        "distorted_path": f"images/{point.id}.png",
        "reference_path": str(point.reference.resolve()),
        "reference": point.reference.stem,
        "content_type": content_type(point.reference.name) or "",
        "model": codec.LABELS[point.codec],
        "mode": MODE,
        "caption": "",
        "caption_words": "",
        "codec": point.codec,
        "codec_settings": json.dumps(coded.settings),
        "codec_qp": "" if point.qp is None else point.qp,
        "codec_target_bpp": "" if point.target_bpp is None else point.target_bpp,
        "codec_bpp": coded.bits / (width * height),
        "text_bits": 0,
        "pixel_bits": 0,
        "codec_bits": coded.bits,
        "bits": coded.bits,
        "bpp": coded.bits / (width * height),
        "compression_ratio": 24 * width * height / coded.bits,
    }
