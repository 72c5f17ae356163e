"""Bjøntegaard deltas between two rate–quality curves, with the cases BD cannot handle reported.

The integration is the ``bjontegaard`` package (FAU-LMS; the JVET common-test-conditions PCHIP,
which it reproduces to ten decimals, plus Akima and the classic cubic fit). This module decides
*whether* a delta is defined and says why not, instead of letting an interpolator extrapolate
or fit a curve through too few points:

- a point without a score (NaN) is left out, with a note; the delta rests on the others;
- each curve needs as many points as the method: PCHIP and Akima 2 (the package draws a straight
  line through two), the cubic fit 4 (``numpy.polyfit`` of degree 3 through 2 or 3 points is
  underdetermined and returns one of infinitely many cubics without an error);
- BD-rate integrates log-rate over quality, so quality must rise strictly with rate on both
  curves (after orienting lower-is-better metrics) and the quality ranges must overlap;
- BD-quality integrates quality over log-rate, so the rate ranges must overlap;
- the overlap must cover at least :data:`MIN_OVERLAP` of the narrower of the two ranges.

Why 20% of the narrower range: a delta is an *average* difference over the overlap, and a ladder
of four rates (the paper's, and JVET's common test conditions) has three intervals of about a
third of its range each. An overlap under a fifth of the narrower curve lies inside one interval
of it: the "average" is then the value of one interpolated segment at nearly one level — a
single-point comparison that the interpolant's shape decides, not the measured points. The
narrower range, not the union (the package's own 75%-of-union warning), is the yardstick
because a short CMC curve lying wholly inside a codec ladder's range is fully comparable however
small its share of the union.

Signs: BD-rate is the test's extra rate at equal quality, in percent (negative: the test needs
fewer bits); BD-quality is test − anchor at equal rate in the metric's own units (for a
lower-is-better metric a negative value is the test's gain).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from compare.defaults import METHODS

MIN_POINTS = {"pchip": 2, "akima": 2, "cubic": 4}
"""The fewest points per curve each interpolation is defined on (module docstring)."""
MIN_OVERLAP = 0.2
"""The smallest share of the narrower curve's range the overlap must cover (module docstring)."""


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
    """BD-rate and BD-quality of ``test`` against ``anchor``; NaN, with a note, where undefined.

    The overlaps are the share of the narrower curve's range (log-rate, quality) both cover.
    """
    if method not in METHODS:
        raise ValueError(f"unknown BD interpolation '{method}' (choose from {', '.join(METHODS)})")
    sign = -1.0 if lower_better else 1.0
    notes: list[str] = []
    t, a = (_usable(curve, sign, notes) for curve in (test, anchor))
    if not all([_enough(c, method, notes) for c in (t, a)]):  # a note for each
        return Delta(np.nan, np.nan, np.nan, np.nan, notes)
    rate_overlap = _overlap(t.rate, a.rate)
    quality_overlap = _overlap(t.quality, a.quality)
    monotone = all([_rises(c, notes) for c in (t, a)])
    rate_ok = _overlap_ok(rate_overlap, "rate", "BD-quality", notes,
                          f" ({_span(10**t.rate)} vs {_span(10**a.rate)} bpp)")  # fmt: skip
    quality_ok = monotone and _overlap_ok(quality_overlap, "quality", "BD-rate", notes, "")
    bd_rate = bd_quality = np.nan
    import bjontegaard  # imports matplotlib: only when a delta is computed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlap is checked and reported here
        if quality_ok:
            # log-rate as a function of quality: the package's bd_linear on our own axes
            log_delta = bjontegaard.bd_linear(a.quality, a.rate, t.quality, t.rate, method,
                                              require_matching_points=False, min_overlap=0)  # fmt: skip
            bd_rate = (10**log_delta - 1) * 100
        if rate_ok:
            oriented = bjontegaard.bd_linear(a.rate, a.quality, t.rate, t.quality, method,
                                             require_matching_points=False, min_overlap=0)  # fmt: skip
            bd_quality = sign * oriented
    return Delta(float(bd_rate), float(bd_quality), rate_overlap, quality_overlap, notes)


def _usable(curve: Curve, sign: float, notes: list[str]) -> Curve:
    """The curve on BD's axes (log10 rate, oriented quality), its unscored points left out."""
    rate, quality = np.asarray(curve.rate, float), np.asarray(curve.quality, float)
    keep = np.isfinite(rate) & np.isfinite(quality)
    if not keep.all():
        at = ", ".join(f"{r:.4g}" for r in rate[~keep])
        notes.append(f"{curve.name}: {int((~keep).sum())} point(s) without a score left out "
                     f"(at {at} bpp); the delta uses its other {int(keep.sum())}")  # fmt: skip
    return Curve(curve.name, np.log10(rate[keep]), sign * quality[keep]).sorted()


def _enough(curve: Curve, method: str, notes: list[str]) -> bool:
    """Whether the curve has the points ``method`` needs, each at its own rate."""
    need = MIN_POINTS[method]
    if len(curve.rate) < need:
        notes.append(f"{curve.name}: {len(curve.rate)} point(s); {method} needs {need} per curve")
        return False
    if np.any(np.diff(curve.rate) <= 0):
        notes.append(f"{curve.name}: two points share one rate")
        return False
    return True


def _rises(curve: Curve, notes: list[str]) -> bool:
    drops = np.flatnonzero(np.diff(curve.quality) <= 0)
    if drops.size:
        notes.append(
            f"{curve.name}: quality does not rise with rate between "
            f"{10 ** curve.rate[drops[0]]:.4g} and {10 ** curve.rate[drops[0] + 1]:.4g} bpp: "
            "BD-rate undefined"
        )
    return not drops.size


def _overlap_ok(share: float, axis: str, what: str, notes: list[str], detail: str) -> bool:
    if share == 0:
        notes.append(f"{axis} ranges do not overlap{detail}: {what} undefined")
    elif share < MIN_OVERLAP:
        notes.append(f"{axis} ranges overlap over {share:.0%} of the narrower one{detail}, under "
                     f"the {MIN_OVERLAP:.0%} a delta needs: {what} not given")  # fmt: skip
    return share >= MIN_OVERLAP


def _overlap(x: np.ndarray, y: np.ndarray) -> float:
    """The share of the narrower of the two ranges that both cover (0 when disjoint)."""
    narrower = min(x.max() - x.min(), y.max() - y.min())
    both = min(x.max(), y.max()) - max(x.min(), y.min())
    return float(np.clip(both / narrower, 0.0, 1.0)) if narrower > 0 else 0.0


def _span(values: np.ndarray) -> str:
    return f"{values.min():.4g}–{values.max():.4g}"
