"""The MOS pipeline of CMC-Bench (A.2), one dimension at a time, in scikit-learn estimator style.

    pipeline = MosPipeline()                       # the paper's method
    result = pipeline.fit(load_ratings("ratings.db"))
    result.mos_frame().to_csv("mos.csv")

Per dimension: (0) repeated ratings of one stimulus by one viewer are averaged; (1) viewers are
screened on their raw scores (SRoCC with the global average < 0.6 by default); (2) each session is
re-centred on 2.5 (eq. 1); (3) each kept viewer's scores are z-scored (eq. 2); (4) each stimulus's
z-scores are averaged over the kept viewers and mapped onto 0–5 (see :mod:`mos.scale`).
Every step can be switched or swapped; the defaults are the paper's.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mos import grouped
from mos.estimators import Estimator, MeanEstimator
from mos.normalize import session_normalize, zscore
from mos.observations import Observations, Pairs
from mos.ratings import InputError, RatingTable
from mos.reliability import split_half
from mos.scale import to_rating_scale
from mos.screening import Screening, ScreeningResult, SroccScreening


@dataclass
class DimensionResult:
    """Everything computed for one score dimension."""

    name: str
    per_stimulus: pd.DataFrame
    """Columns mos, z, std, ci95, n; one row per stimulus code."""
    per_viewer: pd.DataFrame
    """Columns rejected, n_ratings, plus the screening/estimator statistics; one row per viewer."""
    reliability: tuple[float, float] | None
    """Split-half reliability (mean, std over random viewer splits) of the kept observations;
    None unless asked for (``reliability_rounds``)."""


@dataclass
class StudyResult:
    """The fitted MOS of a whole study."""

    table: RatingTable
    dimensions: dict[str, DimensionResult]
    settings: dict[str, object]

    def mos_frame(self) -> pd.DataFrame:
        """``mos.csv``: stimulus, then D_mos, D_z, D_std, D_ci95, D_n per dimension, NSFW, metadata."""
        frame = pd.DataFrame({"stimulus": self.table.stimulus_ids})
        for name, result in self.dimensions.items():
            for column in ("mos", "z", "std", "ci95", "n"):
                frame[f"{name}_{column}"] = result.per_stimulus[column].to_numpy()
        if self.table.nsfw is not None:
            # counted over the flagged ratings only (few), not weighted over all of them
            frame["nsfw_reports"] = np.bincount(
                self.table.stimulus[self.table.nsfw.astype(bool, copy=False)],
                minlength=self.table.n_stimuli,
            ).astype(np.int64, copy=False)
        if self.table.metadata is not None:
            metadata = self.table.metadata
            if not np.array_equal(metadata.index.to_numpy(dtype=object), self.table.stimulus_ids):
                metadata = metadata.reindex(self.table.stimulus_ids)
            for column in metadata.columns:  # .array keeps Arrow-backed text as it is
                frame[column] = metadata[column].array
        return frame

    def viewers_frame(self) -> pd.DataFrame:
        """``viewers.csv``: one row per viewer and dimension."""
        frames = []
        for name, result in self.dimensions.items():
            frame = result.per_viewer.copy()
            frame.insert(0, "dimension", name)
            frame.insert(0, "viewer", self.table.viewer_ids)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


class MosPipeline:
    """Configurable MOS computation; the defaults reproduce the paper.

    Parameters
    ----------
    screening:
        A :class:`~mos.screening.Screening` (default: SRoCC < 0.6 against the global mean).
    session_norm:
        Apply eq. (1), per-session re-centring.
    zscore:
        Apply eq. (2), per-viewer z-scoring. Off: the MOS is the mean normalized score itself.
    estimator:
        A :class:`~mos.estimators.Estimator` (default: the mean over kept viewers).
    scale:
        How mean z-scores map onto 0–5 (:mod:`mos.scale`); unused without z-scoring.
    average_repetitions:
        Average repeated ratings of a stimulus by a viewer into one observation first. Off, each
        repetition is its own observation (sureal's convention).
    reliability_rounds:
        Random viewer splits for the split-half reliability (0: not computed).
    """

    def __init__(
        self,
        screening: Screening | None = None,
        session_norm: bool = True,
        zscore: bool = True,
        estimator: Estimator | None = None,
        scale: str = "sigma3",
        average_repetitions: bool = True,
        reliability_rounds: int = 0,
    ) -> None:
        self.screening = screening if screening is not None else SroccScreening()
        self.session_norm = session_norm
        self.zscore = zscore
        self.estimator = estimator if estimator is not None else MeanEstimator()
        self.scale = scale
        self.average_repetitions = average_repetitions
        self.reliability_rounds = reliability_rounds

    def settings(self) -> dict[str, object]:
        """The configuration, for the report."""
        return {
            "screening": self.screening.name,
            **{f"screening_{k}": v for k, v in vars(self.screening).items()},
            "session_norm": self.session_norm,
            "zscore": self.zscore,
            "estimator": self.estimator.name,
            "scale": self.scale if self.zscore else "none (raw scale)",
            "average_repetitions": self.average_repetitions,
        }

    def fit(self, table: RatingTable) -> StudyResult:
        """Compute the MOS of every dimension of ``table``."""
        blocks = grouped.Blocks(table.viewer, table.n_viewers)
        found = Pairs.find(table.viewer, table.stimulus, table.n_stimuli, blocks)
        repetitions = found.repetitions if found is not None else 1
        pairs = found if self.average_repetitions else None

        def fit_dimension(name: str) -> DimensionResult:
            result = self._fit_dimension(table, name, pairs, repetitions, blocks)
            if found is not None:
                result.per_viewer["repeat_mad"] = found.self_consistency(
                    table.scores[name], table.n_viewers
                )
            return result

        # The dimensions are independent and numpy's sorts and array passes release the GIL:
        # one thread per dimension uses a second core (7 s → 4 s for two at 10 M ratings).
        workers = max(1, min(len(table.scores), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            results = dict(zip(table.scores, pool.map(fit_dimension, table.scores), strict=True))
        return StudyResult(table=table, dimensions=results, settings=self.settings())

    def _fit_dimension(
        self,
        table: RatingTable,
        name: str,
        pairs: Pairs | None,
        repetitions: int,
        blocks: grouped.Blocks,
    ) -> DimensionResult:
        raw = table.scores[name]
        obs = self._observations(table, raw, pairs, repetitions, blocks)
        screened = self.screening.fit(obs)
        scores = raw
        if self.session_norm:
            scores = session_normalize(raw, table.session, table.n_sessions)
        normalized = obs.with_score(pairs.average(scores) if pairs is not None else scores)
        kept = normalized.select(~screened.rejected[normalized.viewer])
        del scores, normalized  # the kept rows are a copy: one array fewer per dimension
        if kept.score.size == 0:
            raise InputError(f"every viewer was rejected in dimension '{name}': no MOS to compute")
        pooled_mean, pooled_std = float(np.mean(kept.score)), float(np.std(kept.score, ddof=1))
        if self.zscore:
            kept = kept.with_score(zscore(kept, table.viewer_ids))
        estimate = self.estimator.estimate(kept)
        per_stimulus = pd.DataFrame(
            {
                "mos": estimate.quality,
                "z": estimate.quality if self.zscore else np.nan,
                "std": estimate.spread,
                "ci95": estimate.ci95,
                "n": estimate.n,
            }
        )
        if self.zscore:
            mos, slope = to_rating_scale(estimate.quality, self.scale, pooled_mean, pooled_std)
            per_stimulus["mos"] = mos
            per_stimulus["ci95"] = estimate.ci95 * slope
        return DimensionResult(
            name=name,
            per_stimulus=per_stimulus,
            per_viewer=self._viewer_table(obs, screened, estimate.viewer_stats),
            reliability=(
                split_half(kept, self.reliability_rounds) if self.reliability_rounds else None
            ),
        )

    @staticmethod
    def _observations(
        table: RatingTable,
        raw: np.ndarray,
        pairs: Pairs | None,
        repetitions: int,
        blocks: grouped.Blocks,
    ) -> Observations:
        if pairs is None:
            return Observations(
                table.viewer,
                table.stimulus,
                raw,
                table.n_viewers,
                table.n_stimuli,
                repetitions,
                _blocks=blocks,
            )
        return Observations(
            pairs.viewer, pairs.stimulus, pairs.average(raw), table.n_viewers, table.n_stimuli
        )

    @staticmethod
    def _viewer_table(
        obs: Observations, screened: ScreeningResult, viewer_stats: pd.DataFrame
    ) -> pd.DataFrame:
        frame = pd.DataFrame(
            {
                "n_ratings": obs.viewer_counts,
                "rejected": screened.rejected,
            }
        )
        return pd.concat(
            [frame, screened.stats.reset_index(drop=True), viewer_stats.reset_index(drop=True)],
            axis=1,
        )
