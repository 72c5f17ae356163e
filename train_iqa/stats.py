"""How well an objective metric agrees with the MOS: SRCC, KRCC, PLCC, RMSE, with bootstrap CIs.

PLCC and RMSE follow VQEG's FR-TV Phase II report and ITU-T P.1401 §7.3: the metric's scores are
first mapped onto the MOS scale by a **monotonic** 4-parameter logistic fitted by least squares;
SRCC and KRCC are rank statistics and need no fit. The logistic rises or falls with the metric
(the direction of its rank correlation) and PLCC carries that direction's sign, so an
anti-correlated metric reports a negative PLCC, as its SRCC does. A metric where lower is better
(LPIPS, DISTS, PieAPP) is negated first, so every reported correlation has the MOS's sign.

Resampling: images of one reference share its content and are not independent, so the bootstrap
resamples whole references when they are known (a cluster bootstrap) and images otherwise.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
from scipy import optimize, stats

MIN_UNITS = 10
"""Fewer resampling units (references, or images) than this and a bootstrap interval cannot be
trusted: two references have three distinct resamples, so the "interval" is three points."""

STARTING_SLOPES = (0.3, 1.0, 3.0)
"""Logistic widths tried as starting values (in standard deviations of the scores): one start
alone stops in a local optimum for weak metrics, where the best width is far from the guess."""


def logistic4(x: np.ndarray, low: float, span: float, centre: float, width: float) -> np.ndarray:
    """``low + span / (1 + exp(−(x − centre) / width))``: P.1401's 4-parameter logistic, written
    so that box bounds (``span ≥ 0``, ``width > 0``) keep it monotonically increasing."""
    with np.errstate(over="ignore"):  # exp overflows to inf far below the centre: value is low
        return low + span / (1 + np.exp(-(x - centre) / width))


MAX_EVALUATIONS = 400
"""Per start. A regular fit converges in tens; a subset whose MOS takes two values (one mode of a
small study) makes the fit chase a step function for ten thousand and more, and validate's
bootstrap refits 1,000 times per subset. The bounded point reached is a monotonic logistic all
the same, and the best of the starts is kept."""


def _residuals(params, z, mos):
    return logistic4(z, *params) - mos


def _jacobian(params, z, mos):
    """∂ logistic4 / ∂ (low, span, centre, width), exactly: no finite differences."""
    _, span, centre, width = params
    u = (z - centre) / width
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-u))
    slope = s * (1 - s)
    return np.column_stack([np.ones_like(z), s, -span * slope / width, -span * slope * u / width])


def fit_logistic(scores, mos, widths=STARTING_SLOPES) -> tuple[np.ndarray, float, float]:
    """(the MOS predicted from ``scores`` by the monotonic logistic, its direction ±1, its width).

    The direction is that of the scores' rank correlation with the MOS; the logistic is fitted on
    direction × scores, standardized, from one start per width in ``STARTING_SLOPES`` (the MOS's
    range as the asymptotes, the median as centre), within bounds that keep it monotonic, and the
    least-squares best is kept (each start stops after ``MAX_EVALUATIONS``). If no start gives
    finite parameters, the linear least-squares fit is used
    (width NaN). The bootstrap passes the point fit's width alone: one start instead of three.
    """
    scores, mos = np.asarray(scores, float), np.asarray(mos, float)
    rho = stats.spearmanr(scores, mos)[0]
    direction = -1.0 if rho < 0 or (rho == 0 and np.corrcoef(scores, mos)[0, 1] < 0) else 1.0
    z = direction * (scores - scores.mean()) / scores.std()
    reach = float(np.ptp(mos))
    lower = [mos.min() - reach, 0.0, z.min() - 1.0, 1e-3]
    upper = [mos.max(), 3.0 * reach, z.max() + 1.0, 1e2]
    best, best_error = None, np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for width in widths:
            start = [mos.min(), reach, float(np.median(z)), width]
            start[3] = float(np.clip(start[3], lower[3], upper[3]))
            try:
                params = optimize.least_squares(
                    _residuals, start, jac=_jacobian, bounds=(lower, upper), args=(z, mos),
                    max_nfev=MAX_EVALUATIONS,
                ).x  # fmt: skip
            except (RuntimeError, ValueError):
                continue
            if not np.isfinite(params).all():
                continue
            error = float(np.sum((logistic4(z, *params) - mos) ** 2))
            if error < best_error:
                best, best_error = params, error
    if best is None:
        slope, intercept = np.polyfit(z, mos, 1)
        return slope * z + intercept, direction, np.nan
    return logistic4(z, *best), direction, float(best[3])


def oriented(scores, lower_better: bool) -> np.ndarray:
    """``scores`` as floats, negated for a lower-is-better metric so that higher means better."""
    scores = np.asarray(scores, float)
    return -scores if lower_better else scores


def correlations(scores, mos, lower_better: bool = False) -> dict[str, float]:
    """SRCC, KRCC, PLCC (signed, after the monotonic logistic) and RMSE (on the MOS scale).

    NaN for all four when there is nothing to correlate (under 3 images, or a constant input).
    Raises ValueError on a NaN or infinite input: a missing value must be dealt with by the caller
    (and said), never averaged over.
    """
    return _figures(oriented(scores, lower_better), np.asarray(mos, float), STARTING_SLOPES)[0]


def _figures(scores: np.ndarray, mos: np.ndarray, widths) -> tuple[dict[str, float], float]:
    """:func:`correlations` of oriented scores, with the fitted logistic's width."""
    if not (np.isfinite(scores).all() and np.isfinite(mos).all()):
        raise ValueError("NaN or infinite score or MOS")
    if scores.size < 3 or np.ptp(scores) == 0 or np.ptp(mos) == 0:
        return {"srcc": np.nan, "krcc": np.nan, "plcc": np.nan, "rmse": np.nan}, np.nan
    with quiet_correlations():  # a flat logistic fit has no PLCC: NaN, not a warning
        fitted, direction, width = fit_logistic(scores, mos, widths)
        figures = {
            "srcc": float(stats.spearmanr(scores, mos)[0]),
            "krcc": float(stats.kendalltau(scores, mos)[0]),
            "plcc": float(direction * stats.pearsonr(fitted, mos)[0]),
            "rmse": float(np.sqrt(np.mean((fitted - mos) ** 2))),
        }
    return figures, width


@contextlib.contextmanager
def quiet_correlations():
    """A context without scipy's (Near)ConstantInputWarning: a resample where one input is
    (nearly) constant gives a NaN or imprecise correlation, counted as such; a warning per
    resample on stderr says nothing more."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        yield


def p_text(p_value: float, rounds: int) -> str:
    """A bootstrap p-value in words: "< 1/rounds" when no resample fell on the other side (a
    resampling test cannot tell a smaller p apart from zero)."""
    return f"< {1 / rounds:.2g}" if p_value == 0 else f"{p_value:.4f}"


def units(groups, n: int) -> int:
    """How many independent units a bootstrap resamples: references, or the ``n`` images."""
    return n if groups is None else len(np.unique(np.asarray(groups)))


def resampler(n: int, groups=None, seed: int = 0):
    """A function drawing one bootstrap resample of ``n`` rows' indices.

    With ``groups`` (e.g. each image's reference), whole groups are drawn with replacement and all
    their rows kept — the cluster bootstrap, right when rows of one group are correlated; without,
    single rows are drawn.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        return lambda: rng.integers(0, n, n)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    return lambda: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def resampling(groups=None) -> str:
    """How :func:`bootstrap` resamples, in words for reports: 'references (30)' or 'images'."""
    return "images" if groups is None else f"references ({len(np.unique(np.asarray(groups)))})"


def bootstrap(
    scores, mos, lower_better: bool = False, rounds: int = 1000, seed: int = 0, groups=None
) -> dict[str, tuple[float, float, float]]:
    """Each statistic with its 95% percentile-bootstrap interval: {name: (value, low, high)}.

    Resamples images, or whole references when ``groups`` gives each image's reference; every
    resample refits the logistic, starting from the point fit's width.
    """
    scores, mos = oriented(scores, lower_better), np.asarray(mos, float)
    point, width = _figures(scores, mos, STARTING_SLOPES)
    widths = (width,) if np.isfinite(width) else STARTING_SLOPES
    draw = resampler(len(mos), groups, seed)
    draws = {name: [] for name in point}
    for _ in range(rounds):
        index = draw()
        for name, value in _figures(scores[index], mos[index], widths)[0].items():
            draws[name].append(value)
    with warnings.catch_warnings():  # every resample degenerate: NaN interval, said as NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            name: (point[name], *np.nanpercentile(values, [2.5, 97.5]).tolist())
            for name, values in draws.items()
        }


def paired_srcc_test(a, b, mos, rounds: int = 2000, seed: int = 0, groups=None) -> dict[str, float]:
    """Do two metrics' SRCCs with the MOS differ? A paired bootstrap on the same images
    (resampling whole references when ``groups`` gives them, as :func:`bootstrap`).

    Returns the difference SRCC(a) − SRCC(b), its 95% interval, and a two-sided p-value (the share
    of resampled differences on the other side of zero, doubled).
    """
    a, b, mos = (np.asarray(v, float) for v in (a, b, mos))
    draw = resampler(len(mos), groups, seed)
    differences = np.empty(rounds)
    with quiet_correlations():
        observed = stats.spearmanr(a, mos)[0] - stats.spearmanr(b, mos)[0]
        for i in range(rounds):
            index = draw()
            differences[i] = (
                stats.spearmanr(a[index], mos[index])[0] - stats.spearmanr(b[index], mos[index])[0]
            )
    low, high = np.nanpercentile(differences, [2.5, 97.5])
    side = np.mean(differences <= 0) if observed > 0 else np.mean(differences >= 0)
    return {"difference": float(observed), "low": float(low), "high": float(high),
            "p_value": float(min(1.0, 2 * side))}  # fmt: skip
