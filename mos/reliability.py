"""Split-half inter-rater reliability: how reproducible is the MOS with half the viewers?"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mos.observations import Observations

MAX_STIMULI = 50_000
"""Larger studies are estimated on a random sample of this many stimuli: plenty for a correlation,
and it keeps the report of a 10-million-rating study from spending seconds here."""


def split_half(obs: Observations, rounds: int = 10, seed: int = 0) -> tuple[float, float]:
    """Mean and std over ``rounds`` random viewer splits of the Spearman–Brown-corrected Pearson
    correlation between the two halves' per-stimulus mean scores.

    The Spearman–Brown step, r_full = 2r / (1 + r), predicts the reliability of the full panel
    from that of a half panel. Stimuli that one half did not rate are left out of that round.
    """
    rng = np.random.default_rng(seed)
    if obs.n_stimuli > MAX_STIMULI:
        sample = np.zeros(obs.n_stimuli, dtype=bool)
        sample[rng.choice(obs.n_stimuli, MAX_STIMULI, replace=False)] = True
        obs = obs.select(sample[obs.stimulus])
        # the sampled stimuli numbered 0..MAX_STIMULI-1 in their order: each round's per-stimulus
        # arrays are then a tenth of the size, with the same values in the same order
        code = np.cumsum(sample) - 1
        obs = replace(obs, stimulus=code[obs.stimulus], n_stimuli=MAX_STIMULI)
    # the viewers present, in order (what np.unique gives), counted rather than sorted
    viewers = np.flatnonzero(np.bincount(obs.viewer, minlength=obs.n_viewers))
    if viewers.size < 2:
        return float("nan"), float("nan")
    total = np.bincount(obs.stimulus, weights=obs.score, minlength=obs.n_stimuli)
    count = np.bincount(obs.stimulus, minlength=obs.n_stimuli).astype(float)
    estimates = []
    for _ in range(rounds):
        in_a = np.zeros(obs.n_viewers, dtype=bool)
        in_a[rng.permutation(viewers)[: viewers.size // 2]] = True
        row_in_a = in_a[obs.viewer]
        sum_a = np.bincount(obs.stimulus, weights=obs.score * row_in_a, minlength=obs.n_stimuli)
        n_a = np.bincount(obs.stimulus, weights=row_in_a, minlength=obs.n_stimuli)
        both = (n_a > 0) & (count - n_a > 0)
        if both.sum() < 3:
            continue
        mean_a = sum_a[both] / n_a[both]
        mean_b = (total[both] - sum_a[both]) / (count[both] - n_a[both])
        r = np.corrcoef(mean_a, mean_b)[0, 1]
        estimates.append(2 * r / (1 + r))
    if not estimates:
        return float("nan"), float("nan")
    return float(np.mean(estimates)), float(np.std(estimates))
