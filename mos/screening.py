"""Viewer screening: which viewers' ratings are left out of the MOS.

One class per method with a common interface, after sureal's subjective models: ``fit(obs)``
returns a :class:`ScreeningResult` (a rejected flag and the statistics behind it, per viewer).
Screening always sees the *raw* scores (repetitions averaged), before any normalization, as the
paper does (A.2: "After collecting every viewer's quality ratings, we compute the SRoCC …").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mos import grouped
from mos.observations import Observations


@dataclass
class ScreeningResult:
    """Per-viewer outcome: ``rejected[v]`` and the statistics that decided it (one column each)."""

    rejected: np.ndarray
    stats: pd.DataFrame = field(default_factory=pd.DataFrame)


class Screening(ABC):
    """A viewer-screening method."""

    name: str

    @abstractmethod
    def fit(self, obs: Observations) -> ScreeningResult:
        """Decide, for every viewer of ``obs``, whether to reject them."""


class NoScreening(Screening):
    """Keep every viewer."""

    name = "none"

    def fit(self, obs: Observations) -> ScreeningResult:
        return ScreeningResult(rejected=np.zeros(obs.n_viewers, dtype=bool))


class SroccScreening(Screening):
    """The paper's screening: reject viewers whose SRoCC with the average is below a threshold.

    ``reference="global"`` correlates each viewer with the mean of *all* viewers, themselves
    included, exactly as the paper says. ``reference="loo"`` (leave-one-out) excludes the viewer's
    own score from the mean they are compared with, which matters in small panels, where a viewer
    pulls the average towards themselves. A viewer whose SRoCC is undefined (every score the same)
    carries no ranking information and is rejected.
    """

    name = "srocc"

    def __init__(self, threshold: float = 0.6, reference: str = "global") -> None:
        if reference not in ("global", "loo"):
            raise ValueError("reference must be 'global' or 'loo'")
        self.threshold = threshold
        self.reference = reference

    def fit(self, obs: Observations) -> ScreeningResult:
        total = np.bincount(obs.stimulus, weights=obs.score, minlength=obs.n_stimuli)
        count = obs.stimulus_counts
        if self.reference == "global":
            stimulus_mean = total / np.maximum(count, 1)
            srocc = self._spearman_with_stimulus_values(obs, stimulus_mean)
        else:
            others = count[obs.stimulus] - 1
            keep = others > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                reference = (total[obs.stimulus] - obs.score) / others
            srocc = grouped.spearman(
                obs.viewer[keep], obs.score[keep], reference[keep], obs.n_viewers
            )
        rejected = ~(srocc >= self.threshold)  # NaN (undefined) counts as rejected
        return ScreeningResult(rejected=rejected, stats=pd.DataFrame({"srocc": srocc}))

    @staticmethod
    def _spearman_with_stimulus_values(obs: Observations, values: np.ndarray) -> np.ndarray:
        """SRoCC against a per-stimulus value: its ranks come from stimulus-level codes (no big sort)."""
        codes, uniques = pd.factorize(values, sort=True)
        x_ranks = grouped.rank(obs.viewer, obs.score, obs.n_viewers, obs.blocks)
        y_ranks = grouped.rank_codes(
            obs.viewer, codes[obs.stimulus], len(uniques), obs.n_viewers, obs.blocks
        )
        return grouped.pearson(
            obs.viewer, x_ranks, y_ranks, obs.n_viewers, obs.blocks.size, ranks=True
        )


class Bt500Screening(Screening):
    """ITU-R BT.500 Annex 1 §2.3.1 (β2 kurtosis test) observer screening.

    For each stimulus, scores are tested for normality by the kurtosis β2 = m4 / m2²; a viewer's
    score counts in P (high) or Q (low) when it lies beyond the stimulus mean ± 2σ (normal) or
    ± √20·σ (not normal). A viewer is rejected when (P + Q) / N > 0.05 and |P − Q| / (P + Q) < 0.3.

    ``variant="sureal"`` (default) reproduces Netflix sureal 0.9.0's ``SubjrejMosModel`` exactly, so
    results are comparable with the established tool: population σ, N = number of stimuli ×
    repetitions for every viewer (which under-counts viewers who rated only part of a partial
    design), and unanimous stimuli count every viewer in both P and Q. ``variant="itu"`` follows the
    Recommendation's text instead: σ is the sample standard deviation (N − 1), N is the number of
    ratings the viewer gave, and a stimulus on which every viewer agrees (σ = 0) flags nobody; it
    rejects somewhat fewer viewers. As in sureal, if every viewer would be rejected, none is.
    """

    name = "bt500"

    def __init__(self, variant: str = "sureal") -> None:
        if variant not in ("itu", "sureal"):
            raise ValueError("variant must be 'itu' or 'sureal'")
        self.variant = variant

    def fit(self, obs: Observations) -> ScreeningResult:
        ddof = 1 if self.variant == "itu" else 0
        n = obs.stimulus_counts
        mean = grouped.mean(obs.stimulus, obs.score, obs.n_stimuli, n)
        deviation = obs.score - mean[obs.stimulus]
        m2 = grouped.mean(obs.stimulus, deviation**2, obs.n_stimuli, n)
        m4 = grouped.mean(obs.stimulus, deviation**4, obs.n_stimuli, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma = np.nan_to_num(np.sqrt(m2 * n / (n - ddof)))
        with np.errstate(invalid="ignore", divide="ignore"):
            beta2 = m4 / m2**2
        factor = np.where((beta2 >= 2) & (beta2 <= 4), 2.0, np.sqrt(20.0))
        limit = (factor * sigma)[obs.stimulus]
        high = obs.score >= mean[obs.stimulus] + limit
        low = obs.score <= mean[obs.stimulus] - limit
        if self.variant == "itu":
            informative = (sigma > 0)[obs.stimulus]
            high &= informative
            low &= informative
            n_ratings = obs.viewer_counts
        else:
            n_ratings = np.full(obs.n_viewers, obs.n_stimuli * obs.repetitions)
        p = np.bincount(obs.viewer, weights=high, minlength=obs.n_viewers)
        q = np.bincount(obs.viewer, weights=low, minlength=obs.n_viewers)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio_flagged = (p + q) / n_ratings
            balance = np.abs(p - q) / (p + q)
        rejected = (ratio_flagged > 0.05) & (balance < 0.3)
        if rejected.all():
            rejected[:] = False
        stats = pd.DataFrame(
            {"bt500_p": p, "bt500_q": q, "bt500_ratio": ratio_flagged, "bt500_balance": balance}
        )
        return ScreeningResult(rejected=rejected, stats=stats)


SCREENINGS = {"srocc": SroccScreening, "bt500": Bt500Screening, "none": NoScreening}
"""Registry of screening methods by their CLI name."""
