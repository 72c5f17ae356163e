"""The one scoring step: any pyiqa metric or fine-tuned checkpoint on image pairs, with a cache.

``validate``, the leaderboard and ``compare`` all score images here, so that one metric gives one
number per image whoever asks, and asks only once::

    from train_iqa.scoring import MetricSpec, Scorer, ScoreCache, score_pairs

    scorer = Scorer(MetricSpec.parse("topiq_fr:runs/topiq_fr/best.pt"), device="cuda")
    values = score_pairs(scorer, distorted_paths, reference_paths, ScoreCache.default())

Rules, the same for every consumer:

- **Any metric**: a pyiqa name (with or without trainable parameters, FR or NR) or
  ``NAME:CHECKPOINT`` for a fine-tuned one; its direction is pyiqa's ``lower_better``.
- **Pixels**: every image is read by :func:`studydb.images.read_rgb` (16-bit, palette, alpha,
  CMYK and EXIF-rotated files converted correctly); a distorted image of another size than its
  reference is resized to the reference's (bicubic), as decoders' outputs are.
- **Size**: the image's own size by default. A fine-tuned checkpoint needs the scale it was
  trained at: its shorter side is resized to the training size, keeping the aspect ratio (the
  scorer says so in :attr:`Scorer.resize_note`); ``size`` asks the same of any metric.
- **SSIM** is pyiqa's formula computed with a separable window (:mod:`train_iqa.ssim`).
- **Cache**: scores are stored in one SQLite file keyed by the images' content (SHA-256 of the
  files' bytes: the distorted image, and the reference for FR) and by the metric's settings
  (name, the SHA-256 of its weights, size, pyiqa's version), so a renamed or moved image keeps
  its score and a retrained checkpoint never reuses an old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from studydb.images import ImageReadError, read_rgb
from train_iqa.cache_options import CACHE_ENV
from train_iqa.cache_options import add_cache_options as add_cache_options  # re-exported
from train_iqa.data import resize_shorter
from train_iqa.model import MetricError, create, read_checkpoint

SCORER_VERSION = 1  # part of every cache key: bump when the scoring itself changes
SPEC = re.compile(r"^(?:(?P<label>[^=:]+)=)?(?P<name>[A-Za-z0-9_+.-]+)(?::(?P<weights>.+))?$")


@dataclass(frozen=True)
class MetricSpec:
    """``[LABEL=]NAME[:CHECKPOINT]``: a pyiqa metric, fine-tuned when a checkpoint is given; the
    label tells two checkpoints of one metric apart (default ``NAME`` or ``NAME:FILE-STEM``)."""

    label: str
    name: str
    weights: Path | None = None

    @classmethod
    def parse(cls, text: str) -> MetricSpec:
        match = SPEC.match(text.strip())
        if not match:
            raise MetricError(f"metric '{text}' is not NAME, NAME:CHECKPOINT or LABEL=NAME[:…]")
        name, weights = match["name"].lower(), match["weights"]
        label = match["label"] or (f"{name}:{Path(weights).stem}" if weights else name)
        return cls(label.strip(), name, Path(weights) if weights else None)


class Scorer:
    """A metric ready to score batches of image pairs, and what a report needs to know of it."""

    def __init__(
        self, spec: MetricSpec, pretrained: bool = True, device: str = "cpu",
        size: int | None = None, weights_option: str = "--weights FILE",
    ) -> None:  # fmt: skip
        """``weights_option`` is how the caller's command line names a checkpoint, for errors."""
        self.spec, self.label, self.name, self.device = spec, spec.label, spec.name, device
        self.settings = _checkpoint_settings(spec)
        self.fine_tuned = bool(self.settings)
        wrapper = create(spec.name, pretrained, spec.weights, device, as_loss=False,
                         weights_option=weights_option)  # fmt: skip
        self.full_reference = wrapper.metric_mode == "FR"
        self.lower_better = bool(wrapper.lower_better)
        self.net = _fast_net(spec.name, wrapper.net).to(device).eval()
        self.size = size or self.settings.get("size")
        self.key = self._key()

    @property
    def resize_note(self) -> str:
        """How images are sized for this metric, in words for reports."""
        if self.size is None:
            return "native size"
        why = " (its training size)" if self.size == self.settings.get("size") else ""
        return f"shorter side resized to {self.size}{why}, aspect ratio kept"

    @torch.inference_mode()
    def __call__(self, distorted: torch.Tensor, reference: torch.Tensor | None) -> np.ndarray:
        """Raw scores of a batch: (N, H, W, 3) uint8 pixels as :func:`to_tensor` gives, or
        (N, 3, H, W) floats in [0, 1] as pyiqa takes."""
        inputs = [distorted] + ([reference] if self.full_reference else [])
        out = self.net(*(self._prepared(x) for x in inputs))
        return torch.as_tensor(out).reshape(-1).double().cpu().numpy()

    def _prepared(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) floats in [0, 1] on the device, as pyiqa's networks take; the separable
        SSIM takes the 8-bit pixels themselves (its Y channel is computed from them)."""
        if images.dtype == torch.uint8 and not getattr(self.net, "takes_uint8", False):
            images = images.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return images.to(self.device)

    def _key(self) -> str:
        """The metric's part of the cache key: its name, the exact weights it holds (random ones
        too: a random build scored again gets new scores), size and library version."""
        import pyiqa

        weights = hashlib.sha256()
        for name, tensor in sorted(self.net.state_dict().items()):
            weights.update(name.encode())
            weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        settings = {"name": self.name, "weights": weights.hexdigest(), "size": self.size,
                    "pyiqa": pyiqa.__version__, "scorer": SCORER_VERSION,
                    "implementation": type(self.net).__name__}  # fmt: skip
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def score_pairs(
    scorer: Scorer,
    distorted: Iterable[str | Path],
    references: Iterable[str | Path] | None = None,
    cache: ScoreCache | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """Every image's raw score, in order: from the cache when it has it, else computed (images
    of one size batched together) and stored. ``references`` may be None for an NR metric.

    Raises MetricError for a non-finite score (a diverged checkpoint) and DataError-like
    :class:`~studydb.images.ImageReadError` for an unreadable image."""
    distorted = [str(p) for p in distorted]
    references = [str(p) for p in references] if references is not None else [None] * len(distorted)
    if scorer.full_reference and None in references:
        raise MetricError(f"{scorer.label}: a full-reference metric needs the reference images")
    if cache is None:  # no content keys needed: the rows' own positions
        keys = [str(i) for i in range(len(distorted))]
    else:
        hashes = _Hashes()
        keys = [
            hashes.of(d) + (f"|{hashes.of(r)}" if scorer.full_reference else "")
            for d, r in zip(distorted, references, strict=True)
        ]
    scores = cache.get(scorer.key, keys) if cache is not None else {}
    todo = [i for i, key in enumerate(keys) if key not in scores]
    pending: dict[tuple, list[tuple[int, torch.Tensor, torch.Tensor | None]]] = {}

    def flush(shape: tuple) -> None:
        batch = pending.pop(shape)
        refs = [r for _, _, r in batch]
        values = scorer(
            torch.stack([d for _, d, _ in batch]),
            torch.stack(refs) if scorer.full_reference else None,
        )
        if not np.isfinite(values).all():
            raise MetricError(f"{scorer.label}: non-finite scores (a diverged checkpoint?)")
        new = {keys[i]: float(v) for (i, _, _), v in zip(batch, values, strict=True)}
        scores.update(new)
        if cache is not None:
            cache.put(scorer.key, new)
        bar.update(len(batch))

    with tqdm(total=len(todo), desc=f"scoring {scorer.label}", unit="image",
              disable=not progress or not todo) as bar:  # fmt: skip

        def read(i: int):
            return _pair(distorted[i], references[i], scorer)

        for i, (d, r) in zip(todo, _read_ahead(read, todo, batch_size), strict=True):
            shape = tuple(d.shape)
            pending.setdefault(shape, []).append((i, d, r))
            if len(pending[shape]) >= batch_size:
                flush(shape)
        for shape in list(pending):
            flush(shape)
    return np.array([scores[key] for key in keys], dtype=float)


def _read_ahead(read, items: list, ahead: int) -> Iterator:
    """``read(item)`` for every item, in order, decoded on every core up to ``ahead`` items ahead
    of the consumer (PIL's decoders release the GIL; the scoring of one batch overlaps the
    reading of the next, and memory holds a batch or two, not the whole set)."""
    with ThreadPoolExecutor(max(1, min(ahead, os.cpu_count() or 1))) as pool:
        flight: deque = deque()
        for item in items:
            flight.append(pool.submit(read, item))
            if len(flight) > ahead:
                yield flight.popleft().result()
        while flight:
            yield flight.popleft().result()


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(H, W, 3) uint8, as decoded: batches are stacked as contiguous bytes (no transposed
    copy, a quarter of the traffic of floats) and turned into floats once, by :class:`Scorer`."""
    return torch.from_numpy(np.array(image, dtype=np.uint8))


class ScoreCache:
    """Scores by (metric key, image key) in one SQLite file, safe for several processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS scores (metric TEXT, image TEXT, score REAL, "
                "PRIMARY KEY (metric, image))"
            )
        except sqlite3.DatabaseError as error:
            raise MetricError(f"{self.path}: not a usable score cache ({error})") from error

    @classmethod
    def default(cls) -> ScoreCache:
        """The cache named by ``$CMC_SCORE_CACHE``, else ``~/.cache/cmc-lab/scores.sqlite``."""
        path = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cmc-lab" / "scores.sqlite"
        return cls(Path(path))

    def get(self, metric: str, images: list[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        unique = list(dict.fromkeys(images))
        for start in range(0, len(unique), 500):  # SQLite's limit on bound parameters
            chunk = unique[start : start + 500]
            rows = self._db.execute(
                f"SELECT image, score FROM scores WHERE metric = ? AND image IN "
                f"({','.join('?' * len(chunk))})",
                [metric, *chunk],
            )
            found.update(dict(rows.fetchall()))
        return found

    def put(self, metric: str, scores: dict[str, float]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?)",
                [(metric, image, score) for image, score in scores.items()],
            )


def open_cache(args) -> ScoreCache | None:
    """The cache :func:`add_cache_options` chose (None with ``--no-cache``)."""
    if args.no_cache:
        return None
    return ScoreCache(args.cache) if args.cache else ScoreCache.default()


class _Hashes:
    """SHA-256 of files' bytes, each file read once per scoring call."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def of(self, path: str) -> str:
        if path not in self._known:
            try:
                self._known[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError as error:
                raise ImageReadError(f"{path}: not a readable image ({error.strerror})") from None
        return self._known[path]


def _pair(distorted: str, reference: str | None, scorer: Scorer):
    """The tensors of one pair at the scorer's size (reference None for an NR metric)."""
    image = read_rgb(distorted)
    if not scorer.full_reference:
        return to_tensor(_sized(image, scorer.size)), None
    ref = read_rgb(reference)
    if image.size != ref.size:
        image = image.resize(ref.size, Image.Resampling.BICUBIC)
    return to_tensor(_sized(image, scorer.size)), to_tensor(_sized(ref, scorer.size))


def _sized(image: Image.Image, size: int | None) -> Image.Image:
    return image if size is None else resize_shorter(image, size)


def _checkpoint_settings(spec: MetricSpec) -> dict:
    """A train_iqa checkpoint's training settings ({} for pyiqa's own weights or none), after
    checking it holds the metric the spec names."""
    if spec.weights is None:
        return {}
    state = read_checkpoint(spec.weights)
    trained = state.get("metric")
    if isinstance(trained, str) and trained != spec.name:
        raise MetricError(f"{spec.weights}: a checkpoint of {trained}, not of {spec.name}")
    return state.get("settings") or {}


def _fast_net(name: str, net: torch.nn.Module) -> torch.nn.Module:
    """pyiqa's network, or a faster exact implementation of the same formula."""
    if name == "ssim" and type(net).__name__ == "SSIM" and _default_ssim(net):
        from train_iqa.ssim import SeparableSSIM

        return SeparableSSIM()
    return net


def _default_ssim(net: torch.nn.Module) -> bool:
    """pyiqa's SSIM with the settings SeparableSSIM implements."""
    return (
        not net.downsample and net.test_y_channel and net.color_space == "yiq"
        and not net.crop_border
    )  # fmt: skip
