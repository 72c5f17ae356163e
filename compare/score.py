"""Scoring: every image with every per-image metric, then every point's mean, CI and set metrics.

pyiqa metrics (stock or fine-tuned) score through :mod:`train_iqa.scoring`, the step
``validate`` and the leaderboard use, and its score cache: a second run on the same images and
metric settings, or ``validate`` after it, reads the scores instead of computing them. CLIPSIM
and FID read each image once here. A distorted image of another size than its reference is an
error, not resized: ``generate`` writes every decoded image at its reference's size, so a
mismatch means a wrong pairing (or an image from elsewhere), and a resize would hide it and
score its interpolation; the sizes are checked from the files' headers before anything is
scored. Set metrics (FID) take each image's features here and are evaluated per point in
:func:`points`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from scipy import stats
from tqdm import tqdm

from compare.curves import InputError
from compare.metrics import PyiqaMetric
from studydb.images import ImageReadError, read_rgb
from train_iqa.scoring import ScoreCache

ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height (as read_rgb turns them)


def score(
    rows: pd.DataFrame, metrics: list, cache: ScoreCache | None = None, progress: bool = True
) -> pd.DataFrame:
    """``rows`` with one column per per-image metric (set metrics featurise as a side effect);
    pyiqa metrics read and fill ``cache`` (None: score everything, store nothing)."""
    _check_sizes(rows)
    distorted, references = list(rows["distorted_path"]), list(rows["reference_path"])
    values = {}
    try:
        for metric in metrics:
            if isinstance(metric, PyiqaMetric):
                values[metric.label] = metric.scores(distorted, references, cache, progress)
    except ImageReadError as error:
        raise InputError(str(error)) from error
    values.update(_read_once(rows, [m for m in metrics if not isinstance(m, PyiqaMetric)],
                             progress))  # fmt: skip
    return rows.assign(**{m.label: values[m.label] for m in metrics if not m.set_level})


def _read_once(rows: pd.DataFrame, metrics: list, progress: bool) -> dict[str, list[float]]:
    """The metrics that take decoded images (CLIPSIM, FID's features), each image read once."""
    values = {m.label: [] for m in metrics if not m.set_level}
    if not metrics:
        return values
    for row in tqdm(rows.itertuples(), total=len(rows), desc="scoring", disable=not progress):
        distorted, reference = _open(row.distorted_path), _open(row.reference_path)
        for metric in metrics:
            if metric.set_level:
                metric.features(row.distorted_path, distorted)
                metric.features(row.reference_path, reference)
            else:
                values[metric.label].append(metric(distorted, reference))
    return values


def _check_sizes(rows: pd.DataFrame) -> None:
    """Refuse a distorted image whose size is not its reference's (headers only, each file once)."""
    sizes: dict[str, tuple[int, int]] = {}
    for path in [*rows["distorted_path"], *rows["reference_path"]]:
        if path not in sizes:
            sizes[path] = _size(path)
    for row in rows.itertuples():
        (dw, dh), (rw, rh) = sizes[row.distorted_path], sizes[row.reference_path]
        if (dw, dh) != (rw, rh):
            raise InputError(
                f"{row.distorted_path} is {dw}×{dh} but its reference {row.reference_path} is "
                f"{rw}×{rh}: a decoded image has its reference's size (not resized here)"
            )


def _size(path: str) -> tuple[int, int]:
    """The image's width and height as :func:`~studydb.images.read_rgb` gives it (EXIF-turned),
    from its header: no pixels decoded."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            turned = opened.getexif().get(0x0112) in ROTATED
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from error
    return (height, width) if turned else (width, height)


def points(scored: pd.DataFrame, metrics: list, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (curve, point, metric): n, mean bpp, mean score and its t-interval.

    Set metrics have one value per point and no interval.
    """
    records = []
    for (curve, point), group in scored.groupby(["curve", "point"], sort=False):
        base = {"curve": curve, "kind": group["kind"].iloc[0], "point": point, "n": len(group),
                "bpp": group["bpp"].mean()}  # fmt: skip
        for metric in metrics:
            if metric.set_level:
                mean = metric.distance(list(group["distorted_path"]), list(group["reference_path"]))
                low = high = np.nan
            else:
                mean, low, high = _mean_ci(group[metric.label].to_numpy(float), confidence)
            records.append({**base, "metric": metric.label, "type": metric.kind,
                            "lower_better": metric.lower_better, "mean": mean,
                            "ci_low": low, "ci_high": high})  # fmt: skip
    return pd.DataFrame.from_records(records)


def _mean_ci(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean and Student-t interval (none for a single image or a constant score)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, np.nan, np.nan
    sem = stats.sem(values)
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, values.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def _open(path: str) -> Image.Image:
    try:
        return read_rgb(path)
    except ImageReadError as error:
        raise InputError(str(error)) from error
