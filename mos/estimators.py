"""Estimators of each stimulus's quality from the kept viewers' observations.

One class per model with a common ``estimate(obs)`` interface, after sureal: the paper's plain mean
(of z-scores, or of normalized scores when z-scoring is off) and the ITU-T P.910 Annex E
maximum-likelihood subject model (Li & Bampis; sureal's ``P910AnnexEModel``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from mos import grouped
from mos.observations import Observations


@dataclass
class Estimate:
    """Per-stimulus quality, its spread across viewers, 95% CI half-width and viewer count.

    ``viewer_stats`` holds any per-viewer parameters the model fits (bias, inconsistency).
    """

    quality: np.ndarray
    spread: np.ndarray
    ci95: np.ndarray
    n: np.ndarray
    viewer_stats: pd.DataFrame = field(default_factory=pd.DataFrame)


class Estimator(ABC):
    name: str

    @abstractmethod
    def estimate(self, obs: Observations) -> Estimate:
        """Estimate every stimulus's quality from ``obs``."""


class MeanEstimator(Estimator):
    """Mean over viewers, sample std, and a Student-t 95% interval (``ci="t"``).

    ``ci="normal"`` uses 1.96 · std / √n like sureal; with 20 viewers the t interval is 7% wider,
    which is the honest width for so few viewers.
    """

    name = "mean"

    def __init__(self, ci: str = "t") -> None:
        if ci not in ("t", "normal"):
            raise ValueError("ci must be 't' or 'normal'")
        self.ci = ci

    def estimate(self, obs: Observations) -> Estimate:
        n = obs.stimulus_counts
        quality = grouped.mean(obs.stimulus, obs.score, obs.n_stimuli, n)
        spread = grouped.centred_std(obs.stimulus, obs.score, obs.n_stimuli, 1, n, quality)[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ci95 = self._critical_value(n) * spread / np.sqrt(n)
        return Estimate(quality=quality, spread=spread, ci95=ci95, n=n)

    def _critical_value(self, n: np.ndarray) -> np.ndarray | float:
        """The 97.5% quantile: Student t with n − 1 dof (computed once per distinct n), or normal.

        scipy is imported here, not with the module: it takes 0.2 s, which ``mos.compute``
        spends while the ratings are read instead (:func:`mos.compute.run`)."""
        from scipy import special

        if self.ci == "normal":
            return special.ndtri(0.975)
        sizes, index = np.unique(n, return_inverse=True)
        with np.errstate(invalid="ignore"):
            return special.stdtrit(np.maximum(sizes - 1, 0), 0.975)[index]


class P910Estimator(Estimator):
    """ITU-T P.910 Annex E / Li & Bampis: x_ij = ψ_j + Δ_i + υ_i·ε, solved by alternating projection.

    ψ_j is the stimulus quality, Δ_i the viewer's bias, υ_i the viewer's inconsistency; stimuli are
    averaged with weights 1/υ_i², so an erratic viewer counts less without being thrown out.
    Same iteration, stopping rule (‖Δψ‖ < 1e-8 or 1000 iterations) and zero-mean bias as sureal
    0.9.0's ``P910AnnexEModel``; written on sparse (long) arrays, so missing ratings cost nothing.
    The CI is 1.96 × the estimate's standard error, as in sureal.
    """

    name = "p910"
    max_iterations = 1000
    tolerance = 1e-8
    epsilon = 1e-8

    def estimate(self, obs: Observations) -> Estimate:
        v, s, x = obs.viewer, obs.stimulus, obs.score
        n_v, n_s = obs.n_viewers, obs.n_stimuli
        quality = grouped.mean(s, x, n_s)
        bias = grouped.mean(v, x - quality[s], n_v)
        progress = tqdm(range(self.max_iterations), desc="P.910 MLE", unit="it", leave=False)
        for _ in progress:
            previous = quality
            residual = x - quality[s] - bias[v]
            inconsistency = grouped.std(v, residual, n_v, ddof=0)
            weight = (1.0 / (inconsistency**2 + self.epsilon))[v]
            quality = np.bincount(s, weights=weight * (x - bias[v]), minlength=n_s) / np.bincount(
                s, weights=weight, minlength=n_s
            )
            bias = grouped.mean(v, x - quality[s], n_v)
            if np.linalg.norm(previous - quality) < self.tolerance:
                break
        progress.close()
        # Per-stimulus residual spread υ_j of the last iteration, which sureal's standard error uses.
        spread = grouped.std(s, residual, n_s, ddof=0)
        with np.errstate(divide="ignore"):
            standard_error = 1.0 / np.sqrt(
                np.bincount(s, weights=1.0 / spread[s] ** 2, minlength=n_s)
            )
        mean_bias = np.nanmean(bias)
        return Estimate(
            quality=quality + mean_bias,
            spread=spread,
            ci95=1.95996 * standard_error,
            n=grouped.counts(s, n_s),
            viewer_stats=pd.DataFrame(
                {"p910_bias": bias - mean_bias, "p910_inconsistency": inconsistency}
            ),
        )


ESTIMATORS = {"mean": MeanEstimator, "p910": P910Estimator}
"""Registry of estimators by their CLI name."""
