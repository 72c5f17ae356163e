"""``python -m generate ladder``: the traditional codecs' rate–quality ladder (the paper's Figure 6).

Every reference through AVC (libx264), HEVC (libx265) and AV1 (libsvtav1), all bundled with PyAV,
and VVC (Fraunhofer ``vvencapp`` / ``vvdecapp``) when both are on PATH — one intra frame each,
at a list of fixed QPs or of target bitrates (the bpp search of ``generate run``: the best
quality within each target). The bits are counted as in ``generate run``: what a decoder needs of
the raw bitstream, × 8 (:mod:`generate.bitstream`). Each decoded image is written as a PNG with
its bitstream beside it (``images/<id>.h264|.hevc|.obu|.266``: ``bits`` = 8 × its size), and
``manifest.csv`` has the columns of a ``generate run`` manifest where they apply (``model`` = the
codec's label, ``mode`` = ``Codec``, ``text_bits`` = ``pixel_bits`` = 0), so a scorer reads the
two alike.

Resumable: a point whose image, bitstream and metadata exist, made from the same reference
content, is skipped; one whose reference changed since is made again. An output folder holds
one reference folder's ladder: a run over another folder is refused (its curves would mix), and
so is a folder holding points of a reference renamed or removed since, or made from an earlier
content at a rate the run does not make again.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from generate import codec
from generate.hints import content_digest, rate_warning
from generate.plan import content_type
from generate.run import _write_bytes, _write_json, _write_png, make_folders, write_manifest
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
    if not codecs:
        raise codec.CodecError("--codecs lists no codec (choose among avc,hevc,av1,vvc)")
    for target in bpps or []:
        codec.check_target(target, "--bpp")
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
        codec.check_size(reference)
    if len(set(codecs)) != len(codecs):
        raise codec.CodecError("--codecs lists a value twice")
    named = [f"{target:g}" for target in bpps or []]  # as a point's id names its target
    if len(set(named)) != len(named):
        raise codec.CodecError("--bpp lists a value twice (to 6 significant digits)")
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
    """Make every missing or stale point (``workers`` processes); return how many were made."""
    make_folders(out, ("images", "meta"))
    missing = stale(todo, out)
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
    for note in same_encode_notes(todo, out):
        tqdm.write(note, file=sys.stderr)
    if any((out / "meta").glob("*.json")):
        write_manifest(out)
    return len(missing)


def stale(todo: list[Point], out: Path) -> list[Point]:
    """The points to make: those without image, bitstream or metadata, and those made from
    another content of their reference. A folder holding a point the run's references do not
    stand behind is refused, before anything is encoded (:func:`check_points`)."""
    check_points(todo, out)
    missing = []
    for point in todo:
        meta = _read_meta(out, point)
        if meta is None or meta.get("reference_digest") != content_digest(point.reference):
            missing.append(point)  # not made, or its reference was edited since
    return missing


def check_points(todo: list[Point], out: Path) -> None:
    """Refuse an output folder whose manifest would not be a ladder of this run's references:
    one holding a point of another reference folder (two sets of references in one curve per
    codec), of a reference the folder no longer has (renamed or removed), or made from an
    earlier content of a reference at a rate this run does not make again."""
    folders = {p.reference.resolve().parent for p in todo}
    current = {p.reference.resolve(): p.reference for p in todo}
    remade = {p.id for p in todo}
    for path in sorted((out / "meta").glob("*.json")):
        try:
            meta = json.loads(path.read_text())
            made_from = Path(meta["reference_path"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue  # unreadable: write_manifest names it
        if made_from.parent not in folders:
            raise codec.CodecError(
                f"{out} holds a ladder of the references in {made_from.parent}, not "
                f"{', '.join(sorted(map(str, folders)))}: give another --out (one folder, one "
                "ladder)"
            )
        if path.stem in remade:
            continue  # made again below if its reference changed
        if made_from not in current:
            raise codec.CodecError(
                f"{out} holds {path.stem}, made from {made_from.name}, which {made_from.parent} "
                f"no longer has: delete {path.relative_to(out)} or give another --out"
            )
        if meta.get("reference_digest") != content_digest(current[made_from]):
            raise codec.CodecError(
                f"{out} holds {path.stem}, made from an earlier {made_from.name}: ask for its "
                f"codec and rate again to make it anew, or delete {path.relative_to(out)}"
            )


def same_encode_notes(todo: list[Point], out: Path) -> list[str]:
    """A note for each reference and codec where two target bpps gave the same encode: no
    setting lands between the targets (or, below the target, none fits at all)."""
    by_encode: dict[tuple, list[float]] = {}
    for point in todo:
        meta = _read_meta(out, point)
        if point.target_bpp is None or meta is None:
            continue
        settings = json.loads(meta["codec_settings"])
        key = (point.reference.name, point.codec, settings["quality"], settings["scale"],
               meta["bpp"], settings.get("within_target", True))  # fmt: skip
        by_encode.setdefault(key, []).append(point.target_bpp)
    notes = []
    for (name, coder, quality, scale, bpp, within), targets in by_encode.items():
        if len(targets) < 2:
            continue
        why = (
            "no setting fits below them; it is the smallest encode"
            if not within
            else "it is the best within each: no setting lands between them"
        )
        notes.append(
            f"generate: note: {name} ({coder}): targets {', '.join(f'{t:g}' for t in targets)} "
            f"bpp give the same encode (QP {quality} at scale {scale:g}, {bpp:.4f} bpp): {why}"
        )
    return notes


def make(point: Point) -> codec.CodedImage:
    """Encode and decode one point (module level, so a worker process can run it)."""
    image = read_rgb_array(point.reference)
    if point.qp is not None:
        return codec.encode_at_qp(image, point.qp, point.codec)
    return codec.encode_at_bpp(image, point.target_bpp, point.codec)


def _read_meta(out: Path, point: Point) -> dict | None:
    """A finished point's metadata; None when its image, bitstream or metadata is missing."""
    meta_path = out / "meta" / f"{point.id}.json"
    if not (meta_path.exists() and (out / "images" / f"{point.id}.png").exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # half-written or damaged: made again
    kept = out / meta.get("bitstream_path", "\0")
    return meta if kept.is_file() and "reference_path" in meta else None


def _write(out: Path, point: Point, coded: codec.CodedImage) -> None:
    """The decoded image and its bitstream, then its metadata (which marks the point made),
    each atomically."""
    height, width, _ = coded.image.shape
    bpp = coded.bits / (width * height)
    if point.target_bpp is not None:
        warning = rate_warning(
            f"{point.reference.name} ({point.codec})", bpp, point.target_bpp,
            coded.settings.get("within_target", True),
        )  # fmt: skip
        if warning:
            tqdm.write(warning, file=sys.stderr)
    _write_png(out / "images" / f"{point.id}.png", coded.image)
    _write_bytes(out / bitstream_path(point), coded.bitstream)
    _write_json(out / "meta" / f"{point.id}.json", record(point, coded))


def bitstream_path(point: Point) -> str:
    """Where a point's bitstream is kept, relative to the output folder: beside its PNG."""
    return f"images/{point.id}{codec.EXTENSIONS[point.codec]}"


def record(point: Point, coded: codec.CodedImage) -> dict:
    """One manifest row, with ``generate run``'s column names where they apply."""
    height, width, _ = coded.image.shape
    return {
        "id": point.id,
        "distorted_path": f"images/{point.id}.png",
        "bitstream_path": bitstream_path(point),
        "reference_path": str(point.reference.resolve()),
        "reference_digest": content_digest(point.reference),
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
