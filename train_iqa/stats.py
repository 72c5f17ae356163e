"""How well an objective metric agrees with the MOS: SRCC, KRCC, PLCC, RMSE, with bootstrap CIs.

PLCC and RMSE follow the usual IQA practice (VQEG): the metric's scores are first mapped onto the
MOS scale by a 4-parameter logistic fitted by least squares; SRCC and KRCC are rank statistics and
need no fit. A metric where lower is better (LPIPS, DISTS, PieAPP) is negated first, so every
reported correlation has the MOS's sign.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """(b1 − b2) / (1 + exp(−(x − b3) / |b4|)) + b2: monotone, between b2 and b1."""
    with np.errstate(over="ignore"):  # exp overflows to inf far from b3: the value is then b2
        return (b1 - b2) / (1 + np.exp(-(x - b3) / (abs(b4) + 1e-12))) + b2


def fit_logistic(scores: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """The 4-parameter logistic mapping ``scores`` onto ``mos`` (falls back to linear)."""
    start = [mos.max(), mos.min(), float(np.median(scores)), float(np.std(scores)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, scores, mos, p0=start, maxfev=20000)
        return logistic4(scores, *params)
    except (RuntimeError, ValueError):
        slope, intercept = np.polyfit(scores, mos, 1)
        return slope * scores + intercept


def oriented(scores, lower_better: bool) -> np.ndarray:
    """``scores`` as floats, negated for a lower-is-better metric so that higher means better."""
    scores = np.asarray(scores, float)
    return -scores if lower_better else scores


def correlations(scores, mos, lower_better: bool = False) -> dict[str, float]:
    """SRCC, KRCC, PLCC (after the logistic fit) and RMSE (on the MOS scale)."""
    scores = oriented(scores, lower_better)
    mos = np.asarray(mos, float)
    if scores.size < 3 or np.ptp(scores) == 0 or np.ptp(mos) == 0:
        return {"srcc": np.nan, "krcc": np.nan, "plcc": np.nan, "rmse": np.nan}
    fitted = fit_logistic(scores, mos)
    with warnings.catch_warnings():  # a flat logistic fit has no PLCC: NaN, not a warning
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return {
            "srcc": float(stats.spearmanr(scores, mos)[0]),
            "krcc": float(stats.kendalltau(scores, mos)[0]),
            "plcc": float(stats.pearsonr(fitted, mos)[0]),
            "rmse": float(np.sqrt(np.mean((fitted - mos) ** 2))),
        }


def bootstrap(
    scores, mos, lower_better: bool = False, rounds: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Each statistic with its 95% percentile-bootstrap interval: {name: (value, low, high)}.

    SRCC / KRCC / RMSE are resampled in full; PLCC reuses one logistic fit per resample.
    """
    scores, mos = np.asarray(scores, float), np.asarray(mos, float)
    point = correlations(scores, mos, lower_better)
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in point}
    for _ in range(rounds):
        index = rng.integers(0, len(mos), len(mos))
        for name, value in correlations(scores[index], mos[index], lower_better).items():
            draws[name].append(value)
    return {
        name: (point[name], *np.nanpercentile(values, [2.5, 97.5]).tolist())
        for name, values in draws.items()
    }


def paired_srcc_test(a, b, mos, rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    """Do two metrics' SRCCs with the MOS differ? A paired bootstrap on the same images.

    Returns the difference SRCC(a) − SRCC(b), its 95% interval, and a two-sided p-value (the share
    of resampled differences on the other side of zero, doubled).
    """
    a, b, mos = (np.asarray(v, float) for v in (a, b, mos))
    rng = np.random.default_rng(seed)
    observed = stats.spearmanr(a, mos)[0] - stats.spearmanr(b, mos)[0]
    differences = np.empty(rounds)
    for i in range(rounds):
        index = rng.integers(0, len(mos), len(mos))
        differences[i] = (
            stats.spearmanr(a[index], mos[index])[0] - stats.spearmanr(b[index], mos[index])[0]
        )
    low, high = np.nanpercentile(differences, [2.5, 97.5])
    side = np.mean(differences <= 0) if observed > 0 else np.mean(differences >= 0)
    return {"difference": float(observed), "low": float(low), "high": float(high),
            "p_value": float(min(1.0, 2 * side))}  # fmt: skip
