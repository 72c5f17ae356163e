"""The paper's two normalizations: per-session centring (eq. 1) and per-viewer z-scoring (eq. 2)."""

from __future__ import annotations

import numpy as np

from mos import grouped
from mos.observations import Observations
from mos.ratings import InputError

SESSION_CENTRE = 2.5
"""Eq. (1) re-centres every session on the middle of the 0–5 scale."""


def session_normalize(
    score: np.ndarray, session: np.ndarray, n_sessions: int, centre: float = SESSION_CENTRE
) -> np.ndarray:
    """Eq. (1): s = r − (the viewer's mean within that session) + 2.5.

    Removes a viewer's drift between sittings (a harsher mood on Tuesday) before the scores of
    different sessions are pooled.
    """
    normalized = grouped.mean(session, score, n_sessions)[session]
    np.subtract(score, normalized, out=normalized)  # in place: one array of ratings, not three
    normalized += centre
    return normalized


def zscore(obs: Observations, viewer_ids: np.ndarray) -> np.ndarray:
    """Eq. (2): z = (s − μ_j) / σ_j over all of viewer j's observations, σ the sample std (N − 1).

    A kept viewer whose scores cannot be z-scored (fewer than two, or all equal) is an input
    problem, not a number to invent: it raises :class:`InputError` naming the viewer.
    """
    n = obs.viewer_counts
    centred, sigma = grouped.centred_std(obs.viewer, obs.score, obs.n_viewers, ddof=1, n=n)
    present = n > 0
    bad = present & ~(sigma > 0)
    if bad.any():
        names = ", ".join(str(v) for v in viewer_ids[bad][:5])
        raise InputError(
            f"cannot z-score viewer(s) {names}: fewer than two ratings or all ratings equal "
            "(screen them out, or use --no-zscore)"
        )
    centred /= sigma[obs.viewer]
    return centred
