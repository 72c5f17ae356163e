"""Mapping mean z-scores back onto the 0–5 rating scale.

The paper reports its MOS on 0–5 but does not say how the mean z-score gets there. Three choices,
all linear, so a CI half-width maps by the same slope:

* ``sigma3`` (default): z ∈ [−3, 3] ↦ [0, 5], i.e. MOS = 5·(z + 3)/6, clipped. A fixed map (as the
  LIVE databases' 0–100 rescaling): the MOS of an image does not depend on which other images were
  in the study, and z = 0 (the average viewer's average) lands at the scale's middle, 2.5.
* ``minmax``: the lowest mean z of the study ↦ 0, the highest ↦ 5. Uses the whole scale, but depends
  on the study's extremes.
* ``rescale``: MOS = μ + σ·z with μ, σ the mean and standard deviation of all kept (normalized)
  scores: z-scores expressed back in the viewers' own average rating units.
"""

from __future__ import annotations

import numpy as np

from mos.ratings import SCORE_MAX, SCORE_MIN

SCALES = ("sigma3", "minmax", "rescale")


def to_rating_scale(
    z: np.ndarray, method: str, pooled_mean: float, pooled_std: float
) -> tuple[np.ndarray, float]:
    """Return (MOS on 0–5, slope d MOS / d z) for mean z-scores ``z``."""
    if method == "sigma3":
        slope, offset = (SCORE_MAX - SCORE_MIN) / 6.0, SCORE_MIN + 3 * (SCORE_MAX - SCORE_MIN) / 6.0
    elif method == "minmax":
        low, high = np.nanmin(z), np.nanmax(z)
        slope = (SCORE_MAX - SCORE_MIN) / (high - low) if high > low else 0.0
        offset = SCORE_MIN - slope * low
    elif method == "rescale":
        slope, offset = pooled_std, pooled_mean
    else:
        raise ValueError(f"unknown scale '{method}' (choose from {', '.join(SCALES)})")
    return np.clip(offset + slope * z, SCORE_MIN, SCORE_MAX), float(slope)
