"""Bjøntegaard deltas between two rate–quality curves, with the cases BD cannot handle reported.

The integration is the ``bjontegaard`` package (FAU-LMS; the JVET common-test-conditions PCHIP,
which it reproduces to ten decimals, plus Akima and the classic cubic fit). This module decides
*whether* a delta is defined and says why not, instead of letting an interpolator extrapolate:

- BD-rate integrates log-rate over quality, so quality must rise strictly with rate on both
  curves (after orienting lower-is-better metrics) and the quality ranges must overlap;
- BD-quality integrates quality over log-rate, so the rate ranges must overlap;
- both are averaged over the overlap only, whose share of the union is reported.

Signs: BD-rate is the test's extra rate at equal quality, in percent (negative: the test needs
fewer bits); BD-quality is test − anchor at equal rate in the metric's own units (for a
lower-is-better metric a negative value is the test's gain).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import bjontegaard
import numpy as np

METHODS = ("pchip", "akima", "cubic")


@dataclass
class Curve:
    """Points of one method on one metric: rates in bpp and mean scores, any order."""

    name: str
    rate: np.ndarray
    quality: np.ndarray

    def sorted(self) -> Curve:
        order = np.argsort(self.rate, kind="stable")
        return Curve(self.name, np.asarray(self.rate)[order], np.asarray(self.quality)[order])


@dataclass
class Delta:
    bd_rate: float
    bd_quality: float
    rate_overlap: float
    quality_overlap: float
    notes: list[str]


def delta(test: Curve, anchor: Curve, lower_better: bool, method: str = "pchip") -> Delta:
    """BD-rate and BD-quality of ``test`` against ``anchor``; NaN, with a note, where undefined."""
    if method not in METHODS:
        raise ValueError(f"unknown BD interpolation '{method}' (choose from {', '.join(METHODS)})")
    sign = -1.0 if lower_better else 1.0
    curves = []
    notes: list[str] = []
    for curve in (test, anchor):
        keep = np.isfinite(curve.rate) & np.isfinite(curve.quality)
        if not keep.all():
            notes.append(f"{curve.name}: {int((~keep).sum())} point(s) without a score left out")
        c = Curve(curve.name, np.log10(curve.rate[keep]), sign * curve.quality[keep]).sorted()
        curves.append(c)
        if len(c.rate) < 2:
            notes.append(f"{curve.name}: {len(c.rate)} point(s), a curve needs 2")
        elif np.any(np.diff(c.rate) <= 0):
            notes.append(f"{curve.name}: two points share one rate")
    t, a = curves
    if notes:
        return Delta(np.nan, np.nan, np.nan, np.nan, notes)
    rate_overlap = _overlap(t.rate, a.rate)
    quality_overlap = _overlap(t.quality, a.quality)
    monotone = True
    for c in (t, a):
        drops = np.flatnonzero(np.diff(c.quality) <= 0)
        if drops.size:
            monotone = False
            notes.append(
                f"{c.name}: quality does not rise with rate between "
                f"{10 ** c.rate[drops[0]]:.4g} and {10 ** c.rate[drops[0] + 1]:.4g} bpp: "
                "BD-rate undefined"
            )
    if rate_overlap == 0:
        notes.append(
            f"rate ranges do not overlap ({_span(10**t.rate)} vs {_span(10**a.rate)} bpp): "
            "BD-quality undefined"
        )
    if monotone and quality_overlap == 0:
        notes.append("quality ranges do not overlap: BD-rate undefined")
    bd_rate = bd_quality = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlap is checked and reported here
        if monotone and quality_overlap > 0:
            # log-rate as a function of quality: the package's bd_linear on our own axes
            log_delta = bjontegaard.bd_linear(a.quality, a.rate, t.quality, t.rate, method,
                                              require_matching_points=False, min_overlap=0)  # fmt: skip
            bd_rate = (10**log_delta - 1) * 100
        if rate_overlap > 0:
            oriented = bjontegaard.bd_linear(a.rate, a.quality, t.rate, t.quality, method,
                                             require_matching_points=False, min_overlap=0)  # fmt: skip
            bd_quality = sign * oriented
    return Delta(float(bd_rate), float(bd_quality), rate_overlap, quality_overlap, notes)


def _overlap(x: np.ndarray, y: np.ndarray) -> float:
    """The share of the union of the two ranges that both cover (0 when disjoint)."""
    union = max(x.max(), y.max()) - min(x.min(), y.min())
    both = min(x.max(), y.max()) - max(x.min(), y.min())
    return float(max(both, 0.0) / union) if union > 0 else 0.0


def _span(values: np.ndarray) -> str:
    return f"{values.min():.4g}–{values.max():.4g}"
