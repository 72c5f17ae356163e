"""Scoring: every image with every per-image metric, then every point's mean, CI and set metrics.

Each image is read once and given to every metric. A distorted image of another size than its
reference is an error, not resized: ``generate`` writes every decoded image at its reference's
size, so a mismatch means a wrong pairing (or an image from elsewhere), and a resize would hide
it and score its interpolation. Set metrics (FID) take each image's features here and are
evaluated per point in :func:`points`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from scipy import stats
from tqdm import tqdm

from compare.curves import InputError
from studydb.images import ImageReadError, read_rgb


def score(rows: pd.DataFrame, metrics: list, progress: bool = True) -> pd.DataFrame:
    """``rows`` with one column per per-image metric (set metrics featurise as a side effect)."""
    values = {m.label: [] for m in metrics if not m.set_level}
    for row in tqdm(rows.itertuples(), total=len(rows), desc="scoring", disable=not progress):
        distorted, reference = _open(row.distorted_path), _open(row.reference_path)
        if distorted.size != reference.size:
            raise InputError(
                f"{row.distorted_path} is {distorted.size[0]}×{distorted.size[1]} but its "
                f"reference {row.reference_path} is {reference.size[0]}×{reference.size[1]}: a "
                "decoded image has its reference's size (not resized here)"
            )
        for metric in metrics:
            if metric.set_level:
                metric.features(row.distorted_path, distorted)
                metric.features(row.reference_path, reference)
            else:
                values[metric.label].append(metric(distorted, reference))
    return rows.assign(**values)


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
