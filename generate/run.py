"""``python -m generate run``: a plan in, images and the manifest out.

* Resumable: an item whose image and metadata exist is skipped; both are written to a temporary
  name and renamed, so a crash never leaves half a file. The writing overlaps the next batch's
  decoding.
* Deterministic per item: each row's seed drives a CPU generator, so rerunning an item (or
  resuming) reproduces it.
* Each model is loaded once: the rows are processed model by model.
* Multi-GPU / multi-node: run under ``torchrun`` or ``accelerate launch``; rank r of world size W
  takes the rows r, r + W, r + 2W, … of the plan (RANK / WORLD_SIZE / LOCAL_RANK from the launcher).
* The manifest (``manifest.csv``, the format ``annotate import`` reads) is rebuilt from the
  per-image metadata at the end of every rank's run, and by ``python -m generate manifest``.

Per-reference hints (the Image-mode codec image, the Pixel-mode thumbnail) and captions are
computed once and cached in ``hints/``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from generate import codec, hints, pixel, restoration
from generate.captions import Captioner, text_bits
from generate.decode import Decoded, Decoder, Request, instruct_image_guidance
from generate.registry import CAPTIONED_MODES, CODED_MODES, DecoderSpec
from studydb.images import read_rgb_array

MANIFEST = "manifest.csv"
SETTINGS = "settings.json"
"""The settings that shape an output folder's images, recorded by its first run."""
IMAGE_SETTINGS = {
    "codec": "--codec", "target_bpp": "--target-bpp", "codec_qp": "--codec-qp",
    "pixel_block": "--pixel-block", "pixel_bits": "--pixel-bits", "long_side": "--size",
    "steps": "--steps", "image_prompt": "--image-prompt",
}  # fmt: skip
"""RunSettings fields that change what an image is (and the options that set them); the rest
(device, batch size, compile, workers) only change how fast it is made."""


class RunError(ValueError):
    """An output folder that cannot be written or listed; the message says why."""


@dataclass
class RunSettings:
    codec: str = "av1"
    target_bpp: float = 0.024
    codec_qp: int | None = None
    """A fixed quantizer for the codec hints (the paper: VVC QP 53); None = the bpp search.
    A plan row's own ``codec_qp`` (a QP sweep) wins over it."""
    pixel_block: int = 64
    pixel_bits: int = pixel.DEFAULT_BITS
    long_side: int = 1024
    steps: int = 40
    image_prompt: str = ""
    """Image mode's prompt: empty as in the paper (the public script sends QUALITY_PROMPT)."""
    device: str = "cpu"
    batch_size: int = 1
    """Images per pipeline call (see Decoder.batch_key); 1 = bit-exact resumes."""
    compile: bool = False
    """The GPU fast path: channels-last and torch.compile (see Decoder)."""
    workers: int = 1
    """Processes for the codec hints' bitrate search (see Hints.prepare_codec)."""


def shard(plan: pd.DataFrame, rank: int, world: int) -> pd.DataFrame:
    """Rank ``rank``'s rows: every ``world``-th row, so the shards partition the plan exactly."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    return plan.iloc[rank::world]


def batches(rows: pd.DataFrame, decoder: Decoder, size: int) -> list[list]:
    """Rows that can share a pipeline call (equal :meth:`Decoder.batch_key`), in plan order."""
    groups: dict[tuple, list] = {}
    for row in rows.itertuples(index=False):
        with Image.open(row.reference_path) as image:
            key = decoder.batch_key(row.mode, float(row.strength), image.size)
        groups.setdefault(key, []).append(row)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def launcher_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun / accelerate set them; (0, 1, 0) alone."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def cpu_share() -> int:
    """The CPUs this process may use, divided among the ranks on this machine: the fewer of its
    affinity mask and its cgroup's CPU quota. A container limited to 16 CPUs on a 200-core host
    sees 200 cores in ``os.cpu_count()`` and the affinity mask, and so does torch."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota()
    cpus = min(cpus or 1, quota or cpus or 1)
    return max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def cgroup_cpu_quota(
    proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:  # fmt: skip
    """Whole CPUs the cgroup quota allows this process (at least 1; rounded down, so that the
    threads are never throttled), or None where there is no quota or no cgroup file system.

    cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); every level
    from the process's own cgroup up to the mount point counts, and the tightest wins. Inside a
    container, /proc/self/cgroup may name the host's path, which is not mounted: then the mount
    point's own files are the container's.
    """
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        if controllers == "":  # v2
            folder, read = root, _v2_quota
        elif "cpu" in names:
            folder, read = root / controllers, _v1_quota
            if not folder.is_dir():
                folder = root / "cpu"
        else:
            continue
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts), -1, -1):
            quota = read(folder.joinpath(*parts[:depth]))
            if quota is not None:
                quotas.append(quota)
    return max(1, int(min(quotas))) if quotas else None


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def torch_threads() -> int:
    """Size torch's intra-op thread pool for this rank, and return the size.

    torch sizes it from the cores it sees, which in a container are the host's: a rank limited
    to a few CPUs then runs dozens of threads, and each small host op (the images' conversions,
    the scheduler's arithmetic) waits on throttled threads (issue 15's first lead). An
    ``OMP_NUM_THREADS`` in the environment is kept: the user's choice, or torchrun's (one
    thread per rank when it starts several). Otherwise: :func:`cpu_share`.
    """
    import torch

    chosen = os.environ.get("OMP_NUM_THREADS")
    if chosen is None:
        threads = cpu_share()
    elif chosen.strip().isdigit() and int(chosen) > 0:
        threads = int(chosen)
    else:
        raise RunError(f"OMP_NUM_THREADS must be a positive integer, got {chosen!r}")
    torch.set_num_threads(threads)
    return threads


def run_plan(
    plan: pd.DataFrame,
    out: Path,
    registry: dict[str, DecoderSpec],
    captioner: Captioner | None,
    settings: RunSettings,
    rank: int = 0,
    world: int = 1,
) -> int:
    """Make every missing image of this rank's share; return how many were made."""
    make_folders(out, ("images", "meta", "hints"))
    check_settings(out, settings)
    mine = shard(plan, rank, world)
    finished = [_done(out, row_id) for row_id in mine["id"]]
    check_finished(out, mine[finished])
    todo = mine[[not done for done in finished]]
    if captioner is not None:  # what would stop the run midway is checked before it starts
        captioned = todo.loc[todo["mode"].isin(CAPTIONED_MODES), "reference_path"]
        captioner.check([Path(p).name for p in dict.fromkeys(captioned)])
    for model in todo["model"].unique():
        if registry[model].family == "external":
            restoration.require_command(registry[model])
    torch_threads()
    hints = Hints(out / "hints", settings, captioner)
    # Each rank makes its share of the plan's codec hints up front; one another rank has not
    # finished yet is made when first needed (the files are written atomically, so a hint made
    # twice is harmless).
    coded = plan[plan["mode"].isin(CODED_MODES)]
    wanted = sorted({(r.reference_path, row_qp(r, settings)) for r in coded.itertuples()},
                    key=lambda item: (item[0], -1 if item[1] is None else item[1]))  # fmt: skip
    hints.prepare_codec([(Path(p), qp) for p, qp in wanted[rank::world]], settings.workers)
    made = 0
    progress = tqdm(total=len(todo), desc=f"rank {rank}: generating", unit="img", disable=rank != 0)
    # The PNGs are written by a second thread while the next batch decodes (PNG compression
    # releases the GIL): written in line they added 0.29 s to each image on the project's CPU,
    # half of the GPU goal (bench/generate_overhead.py). One batch waits at most, so an error in
    # writing stops the run one batch later, and on any exit the pending batch is finished
    # first: nothing decoded is lost.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="png-writer") as writer:
        pending: Future | None = None
        for model, rows in todo.groupby("model", sort=False):
            decoder = Decoder(registry[model], settings.device, settings.long_side,
                              settings.steps, settings.compile)  # fmt: skip
            for batch in batches(rows, decoder, settings.batch_size):
                done = _decode(batch, decoder, hints, settings)
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write, out, done, progress)
                made += len(done)
        if pending is not None:
            pending.result()
    progress.close()
    if any((out / "meta").glob("*.json")):  # a rank of a world larger than the plan made none
        write_manifest(out)
    if hints.rates:
        tqdm.write(hints.rate_summary(), file=sys.stderr)
    return made


def check_settings(out: Path, settings: RunSettings) -> None:
    """Record the image settings of the folder's first run in ``settings.json``, and refuse a
    later run (a resume) whose settings differ: it would keep the finished images and make the
    rest another way, one set with two recipes. A folder with no finished image yet (a first
    run that stopped early), or made before the record existed, gets the new record."""
    current = _image_settings(settings)
    path = out / SETTINGS
    if path.exists():
        try:
            recorded = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunError(f"{path}: unreadable ({error})") from None
        changed = [
            key for key in IMAGE_SETTINGS if key in recorded and recorded[key] != current[key]
        ]
        if changed and any((out / "meta").glob("*.json")):  # no image made yet: nothing mixes
            was = ", ".join(f"{IMAGE_SETTINGS[k]} {_shown(recorded[k])}" for k in changed)
            now = ", ".join(f"{IMAGE_SETTINGS[k]} {_shown(current[k])}" for k in changed)
            raise RunError(
                f"{out} was made with {was}, this run asks for {now}: resume with the folder's "
                f"settings (see {SETTINGS}), or give another --out"
            )
        if not changed and all(key in recorded for key in IMAGE_SETTINGS):
            return
    _write_json(path, current)


PLAN_FIELDS = ("reference_path", "model", "mode", "strength", "seed")
"""What a plan row says about its image, compared with a finished image's metadata on resume."""


def check_finished(out: Path, rows: pd.DataFrame) -> None:
    """Every finished image (skipped on resume) was made from the row the plan has now: after
    an edit (another strength or seed, a reference of the same name from another folder) it
    would be kept by its id alone, an image the plan no longer describes."""
    for row in rows.itertuples(index=False):
        path = out / "meta" / f"{row.id}.json"
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunError(
                f"{path}: unreadable metadata ({error}); delete it to remake the image"
            ) from None
        for field in PLAN_FIELDS:
            planned, made = getattr(row, field), meta.get(field)
            same = (
                float(planned) == float(made)
                if field == "strength" and made is not None
                else str(planned) == str(made)
            )
            if not same:
                raise RunError(
                    f"{row.id}: finished with {field} {made} but the plan now says {planned}: "
                    f"delete {out / 'images' / row.id}.png and its meta to remake it, or give "
                    "another --out"
                )
        if row.mode in CODED_MODES and "codec_bitstream_path" not in meta:
            raise RunError(
                f"{row.id}: finished before codec bits were counted as a decoder needs (no kept "
                "bitstream): its bits would not compare with the rest; give another --out"
            )


def _image_settings(settings: RunSettings) -> dict:
    values = {key: getattr(settings, key) for key in IMAGE_SETTINGS}
    if settings.codec_qp is not None:  # a fixed quantizer: the bpp target is unused
        values["target_bpp"] = None
    return values


def _shown(value) -> str:
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)


def write_manifest(out: Path) -> Path:
    """``manifest.csv`` from every finished item's metadata (atomic)."""
    paths = sorted((out / "meta").glob("*.json"))
    if not paths:
        raise RunError(f"{out}: no finished images to list (no meta/*.json)")
    records = []
    for path in paths:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunError(
                f"{path}: unreadable metadata ({error}); delete it to remake the image"
            ) from None
    frame = pd.DataFrame(records)
    target = out / MANIFEST
    _atomic(target, lambda tmp: frame.to_csv(tmp, index=False))
    return target


class Hints:
    """What the encoder sends besides the caption, per reference, computed once and cached."""

    def __init__(self, folder: Path, settings: RunSettings, captioner: Captioner | None) -> None:
        self.folder, self.settings, self.captioner = folder, settings, captioner
        self._captions: dict[tuple[str, int | None], str] = {}
        self.rates: dict[Path, tuple[float, bool]] = {}
        """(achieved bpp, found by the bpp search) of each codec hint this run used."""

    def caption(self, reference: str, path: Path, words: int | None = None) -> str:
        """The caption (``words`` long where the captioner takes a length; None = its own)."""
        key = (reference, words)
        if key not in self._captions:
            if self.captioner is None:
                raise ValueError("this plan needs captions: give --captions")
            self._captions[key] = self.captioner.caption(path.name, path, words)
        return self._captions[key]

    def prepare_codec(self, references: list[tuple[Path, int | None]], workers: int) -> None:
        """Make the missing codec hints of ``references`` ((path, fixed QP or None) pairs)
        before decoding starts, ``workers`` processes at a time: the bitrate search costs about
        a second a reference, which a GPU would otherwise sit out, reference by reference."""
        missing = [(p, qp) for p, qp in references if not self._made(p, qp)]
        if not missing:
            return
        target, name = self.settings.target_bpp, self.settings.codec
        progress = tqdm(total=len(missing), desc="codec hints", unit="ref", disable=None)
        if workers <= 1:
            for path, qp in missing:
                self._store(path, qp, _code(path, target, name, qp))
                progress.update(1)
        else:  # spawn: the parent may already hold CUDA, which a forked child must not inherit
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                jobs = {pool.submit(_code, p, target, name, qp): (p, qp) for p, qp in missing}
                for job in as_completed(jobs):
                    self._store(*jobs[job], job.result())
                    progress.update(1)
        progress.close()

    def codec(self, path: Path, qp: int | None) -> tuple[np.ndarray, int, dict, str]:
        """(decoded hint, bits, codec settings, the bitstream's path relative to the run's
        folder) of one reference's codec hint, made now if not cached."""
        image_path, meta_path = self._codec_paths(path, qp)
        if not self._made(path, qp):
            self._store(path, qp, _code(path, self.settings.target_bpp, self.settings.codec, qp))
        meta = json.loads(meta_path.read_text())
        image = np.asarray(Image.open(image_path))
        self.rates[meta_path] = (meta["bits"] / (image.shape[0] * image.shape[1]), qp is None)
        kept = self._bitstream_path(path, qp)
        return image, meta["bits"], meta["settings"], f"{self.folder.name}/{kept.name}"

    def rate_summary(self) -> str:
        """The spread of the hints' bpp: searched ones against the target, fixed-QP ones apart."""
        lines = []
        for searched, target in ((True, self.settings.target_bpp), (False, None)):
            values = [bpp for bpp, kind in self.rates.values() if kind == searched]
            if values:
                lines.append(hints.rate_summary(values, target))
        return "\n".join(lines)

    def _codec_paths(self, path: Path, qp: int | None) -> tuple[Path, Path]:
        stem = hints.codec_key(path, self.settings.codec, qp, self.settings.target_bpp)
        return self.folder / f"{stem}.png", self.folder / f"{stem}.json"

    def _bitstream_path(self, path: Path, qp: int | None) -> Path:
        """The hint's bitstream, beside its PNG: ``bits`` is 8 × its size."""
        return self._codec_paths(path, qp)[0].with_suffix(codec.EXTENSIONS[self.settings.codec])

    def _made(self, path: Path, qp: int | None) -> bool:
        """A hint is made when its image, bitstream and metadata exist (one cached before
        bitstreams were kept counted other bytes as its rate, so it is made again)."""
        image_path, meta_path = self._codec_paths(path, qp)
        return all(p.exists() for p in (image_path, self._bitstream_path(path, qp), meta_path))

    def _store(self, path: Path, qp: int | None, coded: codec.CodedImage) -> None:
        """The hint image, then its metadata (which marks it made), each atomically; a bpp
        search that missed its target says so now, not in a manifest column read later."""
        image_path, meta_path = self._codec_paths(path, qp)
        if qp is None:
            bpp = coded.bpp(*coded.image.shape[:2])
            within = bool(coded.settings.get("within_target", True))
            warning = hints.rate_warning(Path(path).name, bpp, self.settings.target_bpp, within)
            if warning:
                tqdm.write(warning, file=sys.stderr)
        _write_png(image_path, coded.image)
        _write_bytes(self._bitstream_path(path, qp), coded.bitstream)
        _write_json(meta_path, {"bits": coded.bits, "settings": coded.settings})

    def pixel(self, path: Path) -> tuple[np.ndarray, int]:
        image = _rgb(path)
        hint = pixel.encode(image, self.settings.pixel_block, self.settings.pixel_bits)
        return pixel.start_image(hint, (image.shape[1], image.shape[0])), hint.bits


def _decode(
    batch: list, decoder: Decoder, hints: Hints, settings: RunSettings
) -> list[tuple[str, Decoded, dict]]:  # fmt: skip
    """Encode and decode one batch of rows: (id, decoded image, metadata) for each, nothing
    written."""
    items = [_encode(row, hints, settings, decoder.spec) for row in batch]
    requests = [
        Request(item["prompt"], item["start"], float(row.strength), int(row.seed), item["size"])
        for row, item in zip(batch, items, strict=True)
    ]
    decoded = decoder.batch(batch[0].mode, requests)
    done = []
    for row, item, result in zip(batch, items, decoded, strict=True):
        width, height = item["size"]
        bits = item["bits"]
        coded = row.mode in CODED_MODES
        total = sum(bits.values())
        meta = {
            "id": row.id,
            "distorted_path": f"images/{row.id}.png",
            "reference_path": str(row.reference_path),
            "reference": row.reference,
            "content_type": row.content_type,
            "model": row.model,
            "mode": row.mode,
            "strength": row.strength,
            "seed": int(row.seed),
            "caption": item["caption"],
            "prompt": item["prompt"],
            "codec": settings.codec if row.mode in CODED_MODES else "",
            "codec_settings": json.dumps(item["codec_settings"]) if item["codec_settings"] else "",
            "codec_qp": "" if item["qp"] is None else item["qp"],
            "codec_target_bpp": settings.target_bpp if coded and item["qp"] is None else "",
            "codec_bpp": bits["codec_bits"] / (width * height) if coded else "",
            "codec_bitstream_path": item["bitstream"],
            "caption_words": _words(row, hints) if item["caption"] else "",
            **bits,
            "bits": total,
            "bpp": total / (width * height),
            "compression_ratio": 24 * width * height / total if total else float("inf"),
            "steps": result.steps,
            "denoising_steps": result.denoising_steps,
            "guidance_scale": restoration.guidance(decoder.spec),
            "image_guidance_scale": instruct_image_guidance(float(row.strength))
            if decoder.spec.family == "instruct-pix2pix"
            else "",
            "decoder_weights": decoder.spec.weights or decoder.spec.command,
            "nsfw_detected": result.nsfw,
        }
        done.append((row.id, result, meta))  # its pixels stay on the device until written
    return done


def _words(row, hints: Hints) -> int | str:
    """The caption length requested: the row's (a sweep), else the captioner's; empty for a
    caption CSV, whose captions have the length they have."""
    words = row_words(row)
    if words is None and hints.captioner is not None:
        words = getattr(hints.captioner, "words", None)
    return "" if words is None else words


def _write(out: Path, done: list[tuple[str, Decoded, dict]], progress: tqdm) -> None:
    """Each image, then its metadata (which marks it finished), each atomically. Runs in the
    writer thread: reading ``Decoded.image`` there waits for the copy from the device and
    resizes to the reference's size, off the decoding thread."""
    for row_id, decoded, meta in done:
        _write_png(out / "images" / f"{row_id}.png", decoded.image)
        _write_json(out / "meta" / f"{row_id}.json", meta)
        progress.update(1)


def _encode(row, hints: Hints, settings: RunSettings, spec: DecoderSpec) -> dict:
    """The encoder side of one row: caption, hint image, bits of each part, and the prompt."""
    reference_path = Path(row.reference_path)
    with Image.open(reference_path) as image:  # the header: Text rows need no pixels
        width, height = image.size
    caption, start, codec_settings, bitstream = "", None, {}, ""
    bits = {"text_bits": 0, "pixel_bits": 0, "codec_bits": 0}
    qp = row_qp(row, settings) if row.mode in CODED_MODES else None
    if row.mode in CAPTIONED_MODES and takes_prompt(spec):
        caption = hints.caption(row.reference, reference_path, row_words(row))
        bits["text_bits"] = text_bits(caption)
    if row.mode == "Pixel":
        start, bits["pixel_bits"] = hints.pixel(reference_path)
    if row.mode in CODED_MODES:
        start, bits["codec_bits"], codec_settings, bitstream = hints.codec(reference_path, qp)
    prompt = settings.image_prompt if row.mode == "Image" else caption
    return {"caption": caption, "start": start, "bits": bits, "prompt": prompt, "qp": qp,
            "codec_settings": codec_settings, "bitstream": bitstream,
            "size": (width, height)}  # fmt: skip


def takes_prompt(spec: DecoderSpec) -> bool:
    """Whether the decoder receives the caption: the diffusers ones always; an external
    restoration command only when it has a ``{prompt}`` placeholder — otherwise the caption
    would be charged in Full mode without reaching the decoder."""
    return spec.family != "external" or restoration.takes(spec, "prompt")


def _rgb(path: Path) -> np.ndarray:
    return read_rgb_array(path)


def _code(path: Path, target_bpp: float, name: str, qp: int | None = None) -> codec.CodedImage:
    """One reference's codec hint (a module-level function, so that a worker process can run it)."""
    if qp is not None:
        return codec.encode_at_qp(_rgb(path), qp, name)
    return codec.encode_at_bpp(_rgb(path), target_bpp, name)


def row_qp(row, settings: RunSettings) -> int | None:
    """The fixed codec QP of one plan row: its own (a QP sweep), else the run's, else None."""
    value = getattr(row, "codec_qp", "")
    if value not in ("", None) and not pd.isna(value):
        return int(value)
    return settings.codec_qp


def row_words(row) -> int | None:
    """The caption length a plan row asks for (a caption sweep), else None (the run's own)."""
    value = getattr(row, "caption_words", "")
    return None if value in ("", None) or pd.isna(value) else int(value)


def _done(out: Path, row_id: str) -> bool:
    return (out / "images" / f"{row_id}.png").exists() and (
        out / "meta" / f"{row_id}.json"
    ).exists()


def make_folders(out: Path, names: tuple[str, ...]) -> None:
    """The output folder's subfolders; one that cannot be made (``out`` is a file, or a
    read-only place) is the user's to fix, so a one-line error."""
    for name in names:
        try:
            (out / name).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(
                f"cannot create {out / name} ({error.strerror or error}): give another --out"
            ) from None


def _write_png(target: Path, image: np.ndarray) -> None:
    _atomic(target, lambda tmp: Image.fromarray(image).save(tmp, "PNG"))


def _write_bytes(target: Path, data: bytes) -> None:
    _atomic(target, lambda tmp: Path(tmp).write_bytes(data))


def _write_json(target: Path, record: dict) -> None:
    _atomic(target, lambda tmp: Path(tmp).write_text(json.dumps(record)))


def _atomic(target: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: all or nothing."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise RunError(f"cannot write {target} ({error.strerror or error})") from error
