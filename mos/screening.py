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
    carries no ranking information and is rejected. With the paper's ``global`` reference, the
    statistics also hold ``srocc_loo`` and ``rejected_loo``, so that ``mos.compute`` can say when
    leave-one-out would reject a different set of viewers.
    """

    name = "srocc"

    def __init__(self, threshold: float = 0.6, reference: str = "global") -> None:
        if reference not in ("global", "loo"):
            raise ValueError("reference must be 'global' or 'loo'")
        self.threshold = threshold
        self.reference = reference

    def fit(self, obs: Observations) -> ScreeningResult:
        own = ViewerRanks(obs)
        if self.reference == "global":
            stimulus_mean = obs.stimulus_totals / np.maximum(obs.stimulus_counts, 1)
            srocc = own.spearman_with_stimulus_values(stimulus_mean)
            loo, _ = leave_one_out_srocc(obs, own)
            stats_frame = pd.DataFrame(
                {"srocc": srocc, "srocc_loo": loo, "rejected_loo": ~(loo >= self.threshold)}
            )
        else:
            srocc, _ = leave_one_out_srocc(obs, own)
            stats_frame = pd.DataFrame({"srocc": srocc})
        rejected = ~(srocc >= self.threshold)  # NaN (undefined) counts as rejected
        return ScreeningResult(rejected=rejected, stats=stats_frame)


class ViewerRanks:
    """Each viewer's ranks of their own scores, computed once for every SRoCC of a screening.

    The paper's SRoCC (against the stimulus means) and the leave-one-out one (against the others'
    means) rank the same scores; at crowd scale ranking is most of the cost, so it is done once.
    Where the viewer blocks are too unbalanced for the padded layout (:class:`grouped.Blocks`),
    the long-form helpers are used instead.
    """

    def __init__(self, obs: Observations) -> None:
        self.obs = obs
        self.padded = obs.blocks.padded
        self._own: np.ndarray | None = None

    @property
    def own(self) -> np.ndarray:
        """The viewer × slot matrix of the viewers' ranks of their own scores."""
        if self._own is None:
            codes, _ = grouped.ordered_codes(self.obs.score)  # few: ranked by a histogram
            self._own = grouped.block_ranks(self.obs.blocks, codes)
        return self._own

    def spearman_with_stimulus_values(self, values: np.ndarray) -> np.ndarray:
        """SRoCC against a per-stimulus value: ranked by the values' order among the stimuli
        (one small sort of the stimuli, not of the ratings)."""
        obs = self.obs
        codes, uniques = pd.factorize(values, sort=True)
        if not self.padded:
            x_ranks = grouped.rank(obs.viewer, obs.score, obs.n_viewers, obs.blocks)
            y_ranks = grouped.rank_codes(
                obs.viewer, codes[obs.stimulus], len(uniques), obs.n_viewers, obs.blocks
            )
            return grouped.pearson(
                obs.viewer, x_ranks, y_ranks, obs.n_viewers, obs.blocks.size, ranks=True
            )
        return grouped.block_spearman(obs.blocks, self.own, lambda rows: codes[obs.stimulus[rows]])

    def spearman_with_rows(self, values_of) -> np.ndarray:
        """SRoCC against one value per observation (e.g. the mean of the other viewers), given
        by ``values_of(rows)`` for an index array of rows: computed a span of viewers at a time
        (:func:`grouped.block_spearman`), never for every rating at once."""
        obs = self.obs
        if not self.padded:
            values = values_of(np.arange(obs.score.size))
            return grouped.spearman(obs.viewer, obs.score, values, obs.n_viewers, obs.blocks)
        return grouped.block_spearman(obs.blocks, self.own, values_of)


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


def leave_one_out_srocc(
    obs: Observations, ranks: ViewerRanks | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each viewer's SRoCC with the mean of the *other* viewers, and how many images it rests on.

    Only images that at least one other viewer rated count (``shared``); a viewer with fewer than
    two such images gets NaN. ``ranks``: the viewers' own ranks, when the caller has them already
    (they are reused when every image has another viewer, as in any real study).
    """
    total = obs.stimulus_totals
    others = obs.stimulus_counts - 1

    def reference(rows: np.ndarray) -> np.ndarray:
        """The others' mean of each row's image (in place: one array of the rows' size)."""
        stimulus = obs.stimulus[rows]
        mean = total[stimulus]
        mean -= obs.score[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean /= others[stimulus]
        return mean

    if (others[obs.stimulus_counts > 0] > 0).all():  # every rated image has another viewer
        shared = obs.viewer_counts
        srocc = (ranks if ranks is not None else ViewerRanks(obs)).spearman_with_rows(reference)
    else:
        keep = np.flatnonzero(others[obs.stimulus] > 0)
        shared = np.bincount(obs.viewer[keep], minlength=obs.n_viewers)
        srocc = grouped.spearman(obs.viewer[keep], obs.score[keep], reference(keep), obs.n_viewers)
    srocc = np.where(shared >= 2, srocc, np.nan)
    return srocc, shared


@dataclass
class LiveScreening:
    """Screening while a study runs: leave-one-out SRoCC with its uncertainty, and a verdict.

    While few viewers have rated each image, a viewer's own scores weigh heavily in a "running
    average" that includes them, so even a random rater correlates well with it (five uniformly
    random raters scored 0.70–0.77 that way). Here each viewer is compared with the mean of the
    others over the images they share (``shared``), and the SRoCC gets a confidence interval from
    Fisher's z with the Bonett–Wright standard error for Spearman's rho, √((1 + ρ²/2)/(n − 3)).
    The verdict is ``reject`` as soon as the whole interval lies below ``threshold`` (enough
    evidence of a bad rater), ``keep`` once it lies at or above it, and ``undecided`` until then;
    a viewer whose scores never vary (no ranking at all) is rejected once ``min_shared`` images
    are shared. The MOS itself keeps the paper's definition (:class:`SroccScreening`).
    """

    threshold: float = 0.6
    confidence: float = 0.95
    min_shared: int = 10

    def fit(self, obs: Observations) -> pd.DataFrame:
        """One row per viewer: srocc, shared, low, high, verdict."""
        from scipy import special  # 0.2 s: only for a live study (scipy.stats would be 0.5 s)

        srocc, shared = leave_one_out_srocc(obs)
        z = special.ndtri(0.5 + self.confidence / 2)  # the normal quantile
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.clip(srocc, -0.9999, 0.9999)
            se = np.sqrt((1 + rho**2 / 2) / (shared - 3))
            low = np.tanh(np.arctanh(rho) - z * se)
            high = np.tanh(np.arctanh(rho) + z * se)
        enough = shared > 3
        low = np.where(enough, low, np.nan)
        high = np.where(enough, high, np.nan)
        verdict = np.full(obs.n_viewers, "undecided", dtype=object)
        verdict[enough & (high < self.threshold)] = "reject"
        verdict[enough & (low >= self.threshold)] = "keep"
        verdict[np.isnan(srocc) & (shared >= self.min_shared)] = "reject"
        return pd.DataFrame(
            {"srocc": srocc, "shared": shared, "low": low, "high": high, "verdict": verdict}
        )


def loo_note(viewers: pd.DataFrame) -> list[str]:
    """Sentences, one per dimension, where leave-one-out would reject another set than the paper.

    ``viewers`` is ``viewers.csv`` (one row per viewer and dimension); empty when the screening
    was not the paper's global SRoCC or when both rules agree.
    """
    if "rejected_loo" not in viewers.columns:
        return []
    lines = []
    for name, rows in viewers.groupby("dimension", sort=False):
        rejected = rows["rejected"].astype(bool).to_numpy()
        loo = rows["rejected_loo"].astype(bool).to_numpy()
        if (rejected == loo).all():
            continue
        only_loo = ", ".join(map(str, rows["viewer"][loo & ~rejected].head(20))) or "none"
        only_paper = ", ".join(map(str, rows["viewer"][rejected & ~loo].head(20))) or "none"
        lines.append(
            f"{name}: leave-one-out screening (--srocc-reference loo) would reject a different "
            f"set of viewers — it would also reject: {only_loo}; it would keep: {only_paper}."
        )
    return lines


SCREENINGS = {"srocc": SroccScreening, "bt500": Bt500Screening, "none": NoScreening}
"""Registry of screening methods by their CLI name."""
