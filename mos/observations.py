"""One dimension's observations in long form: the unit every step of the MOS pipeline works on."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd

from mos import grouped


@dataclass
class Observations:
    """Scores of one dimension, one row per observation, with integer viewer/stimulus codes.

    ``repetitions`` is the largest number of observations any viewer made of one stimulus (1 once
    repetitions are averaged); sureal's BT.500 variant needs it. ``blocks`` (rows grouped by
    viewer) is computed on first use and shared by every copy with the same rows.
    """

    viewer: np.ndarray
    stimulus: np.ndarray
    score: np.ndarray
    n_viewers: int
    n_stimuli: int
    repetitions: int = 1
    _blocks: grouped.Blocks | None = field(default=None, repr=False)

    @property
    def blocks(self) -> grouped.Blocks:
        if self._blocks is None:
            self._blocks = grouped.Blocks(self.viewer, self.n_viewers)
        return self._blocks

    @cached_property
    def viewer_counts(self) -> np.ndarray:
        """Observations per viewer (every per-viewer mean needs it; counted once)."""
        if self._blocks is not None:
            return self._blocks.size
        return grouped.counts(self.viewer, self.n_viewers)

    @cached_property
    def stimulus_counts(self) -> np.ndarray:
        """Observations per stimulus."""
        return grouped.counts(self.stimulus, self.n_stimuli)

    @cached_property
    def stimulus_totals(self) -> np.ndarray:
        """Sum of the scores per stimulus (the paper's SRoCC and the leave-one-out one both
        start from it)."""
        return np.bincount(self.stimulus, weights=self.score, minlength=self.n_stimuli)

    def with_score(self, score: np.ndarray) -> Observations:
        """The same rows with other scores (keeps the viewer blocks and counts)."""
        twin = replace(self, score=score, _blocks=self._blocks)
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k.endswith("_counts")})
        return twin

    def select(self, rows: np.ndarray) -> Observations:
        """A subset of rows (codes keep their meaning)."""
        return replace(
            self,
            viewer=self.viewer[rows],
            stimulus=self.stimulus[rows],
            score=self.score[rows],
            _blocks=None,
        )


@dataclass
class Pairs:
    """Which (viewer, stimulus) pair each rating belongs to, to average repeated ratings."""

    code: np.ndarray
    viewer: np.ndarray
    stimulus: np.ndarray
    repetitions: int

    @classmethod
    def find(
        cls, viewer: np.ndarray, stimulus: np.ndarray, n_stimuli: int, blocks: grouped.Blocks
    ) -> Pairs | None:
        """The pairs, or None when no viewer rated any stimulus twice (the usual case).

        That check sorts each viewer's short row of stimuli instead of hashing every rating, a
        span of viewers at a time (:meth:`grouped.Blocks.spans`), stopping at the first repeat.
        """
        if blocks.padded and not _any_repeat(stimulus, blocks):
            return None
        key = viewer.astype(np.int64) * n_stimuli + stimulus
        code, unique_keys = pd.factorize(key)
        repetitions = int(np.bincount(code).max()) if code.size else 1
        if repetitions == 1:
            return None
        return cls(
            code=code,
            viewer=unique_keys // n_stimuli,
            stimulus=unique_keys % n_stimuli,
            repetitions=repetitions,
        )

    def average(self, score: np.ndarray) -> np.ndarray:
        """Mean score of each pair."""
        return grouped.mean(self.code, score, self.viewer.shape[0])

    def self_consistency(self, score: np.ndarray, n_viewers: int) -> np.ndarray:
        """Each viewer's mean absolute deviation of repeated ratings from their pair's mean
        (for two showings, half their absolute difference); NaN for a viewer without repeats.

        Planted repeats exist to measure this: a viewer who cannot reproduce their own scores adds
        noise whatever their correlation with the panel.
        """
        size = np.bincount(self.code, minlength=self.viewer.shape[0])
        repeated = size[self.code] > 1
        deviation = np.abs(score - self.average(score)[self.code])[repeated]
        viewer = self.viewer[self.code][repeated]
        total = np.bincount(viewer, weights=deviation, minlength=n_viewers)
        count = np.bincount(viewer, minlength=n_viewers)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count


def _any_repeat(stimulus: np.ndarray, blocks: grouped.Blocks) -> bool:
    """Whether a viewer rated a stimulus twice: the spans of viewers checked on two cores (numpy's
    sorts leave the interpreter free), each half stopping once either has found one."""
    spans = blocks.spans()
    found = threading.Event()

    def scan(part: list[tuple[int, int]]) -> None:
        for span in part:
            if found.is_set():
                return
            if _has_repeat(blocks.span_matrix(span, stimulus[blocks.rows(span)], fill=-1)):
                found.set()

    half = len(spans) // 2
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(scan, (spans[:half], spans[half:])))
    return found.is_set()


def _has_repeat(matrix: np.ndarray) -> bool:
    """Whether a row of ``matrix`` (stimulus codes, -1 padding) holds one code twice."""
    matrix.sort(axis=1)
    return bool(((matrix[:, 1:] == matrix[:, :-1]) & (matrix[:, 1:] >= 0)).any())
