"""One dimension's observations in long form: the unit every step of the MOS pipeline works on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from mos import grouped


@dataclass
class Observations:
    """Scores of one dimension, one row per observation, with integer viewer/stimulus codes.

    ``repetitions`` is the largest number of observations any viewer made of one stimulus (1 once
    repetitions are averaged); sureal's BT.500 variant needs it.
    """

    viewer: np.ndarray
    stimulus: np.ndarray
    score: np.ndarray
    n_viewers: int
    n_stimuli: int
    repetitions: int = 1

    @cached_property
    def blocks(self) -> grouped.Blocks:
        """Rows grouped by viewer, shared by every per-viewer rank."""
        return grouped.Blocks(self.viewer, self.n_viewers)

    def with_score(self, score: np.ndarray) -> Observations:
        """The same rows with other scores (keeps the cached viewer blocks)."""
        twin = Observations(
            self.viewer, self.stimulus, score, self.n_viewers, self.n_stimuli, self.repetitions
        )
        if "blocks" in self.__dict__:
            twin.__dict__["blocks"] = self.blocks
        return twin

    def select(self, rows: np.ndarray) -> Observations:
        """A subset of rows (codes keep their meaning)."""
        return Observations(
            self.viewer[rows],
            self.stimulus[rows],
            self.score[rows],
            self.n_viewers,
            self.n_stimuli,
            self.repetitions,
        )


@dataclass
class Pairs:
    """Which (viewer, stimulus) pair each rating belongs to, to average repeated ratings."""

    code: np.ndarray
    viewer: np.ndarray
    stimulus: np.ndarray
    repetitions: int

    @classmethod
    def of(cls, viewer: np.ndarray, stimulus: np.ndarray, n_stimuli: int) -> Pairs:
        key = viewer.astype(np.int64) * n_stimuli + stimulus
        code, unique_keys = pd.factorize(key)
        repetitions = int(np.bincount(code).max()) if code.size else 1
        return cls(
            code=code,
            viewer=(unique_keys // n_stimuli).astype(np.int32),
            stimulus=(unique_keys % n_stimuli).astype(np.int32),
            repetitions=repetitions,
        )

    @property
    def has_repetitions(self) -> bool:
        return self.repetitions > 1

    def average(self, score: np.ndarray) -> np.ndarray:
        """Mean score of each pair."""
        return grouped.mean(self.code, score, self.viewer.shape[0])
