"""The study's MOS and images as training data: content-disjoint splits and a decoded-image cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from studydb.images import ImageReadError, read_rgb

DEFAULT_TARGET = {True: "consistency_mos", False: "perception_mos"}
"""FR metrics learn Consistency (faithfulness to the reference), NR ones Perception (A.3)."""
MOS_SCALE = (0.0, 5.0)
"""The paper's MOS scale; training learns MOS / 5 and the leaderboard reports on it."""


class DataError(ValueError):
    """Unusable MOS file or images; the message names the problem."""


def read_csv(path: Path, what: str = "CSV") -> pd.DataFrame:
    """A CSV file as a frame, or a DataError naming the file for a missing, empty or malformed one."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such {what} file")
    try:
        # Stimulus ids are text: '007' stays '007', and two files match by what is written.
        frame = pd.read_csv(path, dtype={"stimulus": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        first = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise DataError(f"{path}: not a readable {what} file ({first})") from error
    if frame.empty:
        raise DataError(f"{path}: the {what} file has no rows")
    return frame


def unique_stimuli(frame: pd.DataFrame, path: Path) -> None:
    """Refuse a file that lists one stimulus twice: merging would silently pair every copy with
    every other (or average them), changing the figures."""
    repeated = frame["stimulus"][frame["stimulus"].duplicated()]
    if len(repeated):
        raise DataError(
            f"{path}: {repeated.nunique()} stimulus id(s) appear more than once "
            f"(first: {repeated.iloc[0]}); one row per stimulus"
        )


def drop_missing(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows with a ``column`` value; the stimuli left out are kept in ``frame.attrs["left_out"]``
    for the caller to report (a stimulus with no valid rating has a NaN MOS in mos.csv)."""
    missing = frame[column].isna()
    kept = frame[~missing].reset_index(drop=True)
    kept.attrs["left_out"] = frame.loc[missing, "stimulus"].astype(str).tolist()
    return kept


def finite_target(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Refuse a non-numeric or infinite ``column`` (NaN is a missing MOS, left out beforehand):
    an infinite MOS would train to an infinite loss and NaN figures."""
    if not pd.api.types.is_numeric_dtype(frame[column]):
        raise DataError(f"{path}: column '{column}' is not numeric")
    bad = frame["stimulus"][~np.isfinite(frame[column].to_numpy(float))]
    if len(bad):
        raise DataError(
            f"{path}: {len(bad)} '{column}' value(s) not finite (first: stimulus {bad.iloc[0]})"
        )


def mos_range(text: str) -> tuple[float, float]:
    """``LOW:HIGH`` (e.g. ``0:100``) of a ``--mos-range`` option, LOW < HIGH."""
    import argparse

    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW:HIGH (e.g. 0:100)") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise argparse.ArgumentTypeError(f"{text!r}: LOW must be below HIGH")
    return low, high


def on_mos_scale(
    frame: pd.DataFrame, column: str, path: Path, scale: tuple[float, float] | None
) -> pd.DataFrame:
    """``frame`` with ``column`` on the 0–5 MOS scale: mapped linearly from ``scale`` (LOW,
    HIGH) when given, else checked to lie in 0–5 already. A value outside the range is refused:
    a 0–100 MOS would otherwise train towards targets 20 times too large, without a word."""
    low, high = scale or MOS_SCALE
    values = frame[column]
    outside = frame["stimulus"][(values < low) | (values > high)]
    if len(outside):
        hint = "" if scale else "; give its scale with --mos-range LOW:HIGH (e.g. 0:100)"
        raise DataError(
            f"{path}: {len(outside)} '{column}' value(s) outside {low:g}–{high:g} (first: "
            f"stimulus {outside.iloc[0]}, {values[outside.index[0]]:g}){hint}"
        )
    if scale:
        frame = frame.assign(**{column: (values - low) / (high - low) * MOS_SCALE[1]})
    return frame


def absolute_paths(frame: pd.DataFrame, path: Path, images: Path | None) -> pd.DataFrame:
    """``frame`` with its distorted_path / reference_path made absolute (relative ones are
    under ``images``, else beside the MOS file ``path``) and checked to exist."""
    for column in ("distorted_path", "reference_path"):
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column '{column}' (mos.csv from a study database has the image "
                "paths; for others add distorted_path / reference_path)"
            )
    base = Path(images) if images is not None else Path(path).parent
    frame = frame.copy()
    for column in ("distorted_path", "reference_path"):
        frame[column] = [str(p if Path(p).is_absolute() else base / p) for p in frame[column]]
        missing = [p for p in frame[column] if not Path(p).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} image(s) not found (first: {missing[0]}); set --images"
            )
    if "reference" not in frame.columns:
        frame["reference"] = [Path(p).stem for p in frame["reference_path"]]
    return frame


def load_mos(
    path: Path, target: str, images: Path | None, scale: tuple[float, float] | None = None
) -> pd.DataFrame:
    """``mos.csv`` rows with absolute image paths and a ``target`` column (on the 0–5 scale, or
    mapped to it from ``scale``), checked for files.

    Stimuli without a ``target`` value are left out, listed in ``attrs["left_out"]``."""
    frame = read_csv(path, "MOS")
    for column in ("stimulus", target):
        if column not in frame.columns:
            raise DataError(f"{path}: no column '{column}'")
    unique_stimuli(frame, path)
    if not pd.api.types.is_numeric_dtype(frame[target]):
        raise DataError(f"{path}: column '{target}' is not numeric")
    frame = drop_missing(frame, target)
    finite_target(frame, target, path)
    if len(frame) < 5:
        raise DataError(f"{path}: {len(frame)} stimuli with a '{target}' — too few to train on")
    left_out = frame.attrs["left_out"]
    frame = absolute_paths(on_mos_scale(frame, target, path, scale), path, images)
    frame["target"] = frame[target].astype(float)
    frame.attrs["left_out"] = left_out
    return frame


def split(frame: pd.DataFrame, test_fraction: float, seed: int, by_content: bool = True):
    """(train, test) indices. By content: all images of one reference land on the same side, so
    the test figures measure generalization to unseen pictures, not memory of them."""
    rng = np.random.default_rng(seed)
    if not by_content:
        order = rng.permutation(len(frame))
        cut = int(round(len(frame) * (1 - test_fraction)))
        return np.sort(order[:cut]), np.sort(order[cut:])
    groups = frame["reference"].unique()
    shuffled = rng.permutation(groups)
    n_test = max(1, int(round(len(groups) * test_fraction)))
    test_groups = set(shuffled[:n_test])
    is_test = frame["reference"].isin(test_groups).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """``image`` at ``size`` × ``size`` without distorting it: the shorter side resized to
    ``size`` (bicubic, aspect ratio kept), then the centre cropped. Squashing to a square would
    change the very structure metrics like SSIM and the MOS judge."""
    resized = resize_shorter(image, size)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """``image`` with its shorter side ``size`` pixels, aspect ratio kept (bicubic)."""
    scale = size / min(image.size)
    target = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    return image if target == image.size else image.resize(target, Image.Resampling.BICUBIC)


class ImagePairs(Dataset):
    """(distorted, reference, target) tensors in [0, 1] at ``size`` × ``size`` (:func:`fit_square`).

    Every image is decoded and resized once, then kept as uint8 — on the GPU when ``device`` is
    CUDA, so the training loop never waits on JPEG/PNG decoding.
    """

    def __init__(self, frame: pd.DataFrame, size: int, device: str = "cpu") -> None:
        if size < 1:
            raise DataError(f"image size {size}: must be a positive number of pixels")
        self.targets = torch.tensor(frame["target"].to_numpy(), dtype=torch.float32)
        cache: dict[str, torch.Tensor] = {}
        self.distorted = [self._load(p, size, cache) for p in frame["distorted_path"]]
        self.reference = [self._load(p, size, cache) for p in frame["reference_path"]]
        if device.startswith("cuda"):
            self.distorted = [t.to(device) for t in self.distorted]
            self.reference = [t.to(device) for t in self.reference]

    @staticmethod
    def _load(path: str, size: int, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        if path not in cache:
            try:
                image = fit_square(read_rgb(path), size)
            except ImageReadError as error:
                raise DataError(str(error)) from error
            cache[path] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        return cache[path]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return (
            self.distorted[index].float() / 255.0,
            self.reference[index].float() / 255.0,
            self.targets[index],
        )
