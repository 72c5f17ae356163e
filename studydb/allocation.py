"""Which images a participant rates next: uniform or adaptive allocation, under the study's rules.

Shared by the annotation app's online mode (which picks each sitting's pairs on the server) and by
``mos.online_study`` (which runs whole simulated studies through this very code), so a figure
measured on simulation is a figure of the app's own policy. Numpy and SciPy only: no Flask, no
database.

Two policies (:data:`POLICIES`):

- ``uniform`` — the classical design: the images with the fewest ratings first, ties at random, so
  the counts stay level (within 2: a sitting's equal shares of the quality bands come first).
- ``adaptive`` — shrink the widest confidence intervals first: images below the minimum count come
  first (fewest first), then the images whose current 95% CI is still wider than the target, widest
  first, then the rest. An image whose raters disagree (an ambiguous picture) needs more ratings to
  reach a given width than one on which everyone agrees; uniform allocation pays every image for
  the worst one, adaptive allocation pays each image what it needs.

The design rules that hold under both policies (:meth:`Allocator.choose`):

- a participant never gets an image they already rated (in any sitting);
- each image reaches ``min_ratings`` before any image gets more (both policies put those first);
- each sitting spans the quality range: the images are drawn in equal shares from ``quality_bins``
  bands of the current quality estimate, so no sitting is all good or all bad images (a viewer's
  use of the scale drifts when the range shown narrows);
- no two distortions of one reference back to back (:func:`studydb.design.order_without_repeats`).

The current CI widths come from :func:`ci_halfwidths`: a one-pass version of the P.910 Annex E
subject model (each participant's bias removed, the per-image spread shrunk towards the pooled
spread while an image has few ratings), cheap enough to recompute after every sitting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from studydb.design import order_without_repeats

POLICIES = ("uniform", "adaptive")
"""Allocation policies by name (the ``ALLOCATION`` config key; ``mos.online_study`` runs both)."""

PRIOR_WEIGHT = 2.0
"""Pseudo-ratings of the pooled spread added to each image's own: with 3 ratings, a lucky small
sample spread would otherwise declare an image precise (and stop it) far too early."""

BIAS_SHRINK = 5.0
"""A participant's bias is shrunk by n / (n + 5): a few ratings say little about someone's bias."""


@dataclass
class Precision:
    """What the ratings so far say about each image: quality, 95% CI half-width and count."""

    quality: np.ndarray
    """Bias-corrected mean score (NaN for an image without ratings)."""
    ci95: np.ndarray
    """95% CI half-width (inf for an image without ratings)."""
    n: np.ndarray
    """Ratings per image."""


def ci_halfwidths(
    stimulus: np.ndarray,
    viewer: np.ndarray,
    score: np.ndarray,
    n_stimuli: int,
    n_viewers: int | None = None,
    prior_weight: float = PRIOR_WEIGHT,
) -> Precision:
    """Each image's quality and 95% CI half-width from ratings in long form (integer codes).

    One alternating step of the P.910 Annex E model — x = ψ_image + Δ_participant + noise: the
    participants' biases Δ are estimated from the residuals about the plain image means and
    removed, then each image's spread is the residual spread, pooled with ``prior_weight``
    pseudo-ratings at the study's pooled spread. The half-width is Student's t (n − 1 + prior
    dof) × spread / √n. All bincounts: ~1 ms for 100,000 ratings.
    """
    stimulus = np.asarray(stimulus, dtype=np.int64)
    viewer = np.asarray(viewer, dtype=np.int64)
    score = np.asarray(score, dtype=float)
    n_viewers = int(viewer.max()) + 1 if n_viewers is None and viewer.size else (n_viewers or 0)
    n = np.bincount(stimulus, minlength=n_stimuli).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        plain = np.bincount(stimulus, weights=score, minlength=n_stimuli) / n
        n_v = np.bincount(viewer, minlength=n_viewers)
        bias = np.bincount(viewer, weights=score - plain[stimulus], minlength=n_viewers)
        bias = bias / (n_v + BIAS_SHRINK)  # = mean residual × n / (n + BIAS_SHRINK)
        corrected = score - bias[viewer]
        quality = np.bincount(stimulus, weights=corrected, minlength=n_stimuli) / n
        squares = np.bincount(
            stimulus, weights=(corrected - quality[stimulus]) ** 2, minlength=n_stimuli
        )
        dof = np.maximum(n - 1, 0)
        pooled = squares.sum() / dof.sum() if dof.sum() > 0 else 1.0
        variance = (squares + prior_weight * pooled) / (dof + prior_weight)
        ci = special.stdtrit(dof + prior_weight, 0.975) * np.sqrt(variance / n)
    ci = np.where(n > 0, ci, np.inf)
    return Precision(quality=quality, ci95=ci, n=n.astype(np.int64))


class Allocator:
    """Chooses the images of one participant's sitting (see the module docstring for the rules).

    ``reference[i]`` is image i's reference code (for the no-two-distortions-in-a-row rule).
    ``target_ci``: an image whose CI is at most this wide (and has ``min_ratings``) is *done*; the
    adaptive policy turns to it only when nothing else is left. Raises ``ValueError`` for a policy
    it does not know or a setting out of range, so a bad config fails at start-up.
    """

    def __init__(
        self,
        reference: np.ndarray,
        policy: str = "adaptive",
        min_ratings: int = 5,
        target_ci: float | None = None,
        quality_bins: int = 5,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown allocation policy {policy!r} (choose {', '.join(POLICIES)})")
        if min_ratings < 0 or quality_bins < 1:
            raise ValueError("min_ratings must be ≥ 0 and quality_bins ≥ 1")
        if target_ci is not None and not target_ci > 0:
            raise ValueError("target_ci must be positive")
        self.reference = np.asarray(reference)
        self.policy = policy
        self.min_ratings = min_ratings
        self.target_ci = target_ci
        self.quality_bins = quality_bins

    @property
    def n_stimuli(self) -> int:
        return self.reference.size

    def done(self, precision: Precision) -> np.ndarray:
        """Images that need no more ratings: the minimum count reached and the CI within target."""
        enough = precision.n >= self.min_ratings
        if self.target_ci is None:
            return np.zeros_like(enough)
        return enough & (precision.ci95 <= self.target_ci)

    def priority(self, precision: Precision, rng: np.random.Generator) -> np.ndarray:
        """Higher first. Below the minimum count always leads (fewest ratings first)."""
        n = precision.n.astype(float)
        jitter = rng.random(n.size) * 1e-6  # random order among equals
        below = n < self.min_ratings
        if self.policy == "uniform":
            return -n + jitter
        width = np.where(np.isfinite(precision.ci95), precision.ci95, 1e3)
        rest = np.where(self.done(precision), width - 1e3, width)
        return np.where(below, 1e6 - n, rest) + jitter

    def choose(
        self,
        k: int,
        precision: Precision,
        rng: np.random.Generator,
        already_rated: np.ndarray | None = None,
    ) -> np.ndarray:
        """The ``k`` images of one sitting, in presentation order (fewer if fewer are eligible).

        ``already_rated``: the image indices this participant has rated before (never again).
        The k images are the highest-priority ones within equal shares of ``quality_bins`` quality
        bands (a short band is made up from the best of the others), ordered so that no two
        neighbours share a reference.
        """
        if k < 1:
            raise ValueError("a sitting needs at least one image")
        key = self.priority(precision, rng)
        eligible = np.ones(self.n_stimuli, dtype=bool)
        if already_rated is not None and len(already_rated):
            eligible[np.asarray(already_rated, dtype=np.int64)] = False
        candidates = np.flatnonzero(eligible)
        if candidates.size <= k:
            chosen = candidates
        else:
            chosen = self._spanning(k, candidates, key, precision.quality, rng)
        return order_without_repeats(chosen, self.reference, rng)

    def _spanning(
        self,
        k: int,
        candidates: np.ndarray,
        key: np.ndarray,
        quality: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """The best ``k`` of ``candidates`` in equal shares of the quality bands.

        Images not rated yet have no quality to place them by: those among the overall best k
        are taken as they are (early in a study that is most of a sitting, in random order of
        unknown quality); the remaining places are shared equally among the bands, a short band
        made up from the best of the rest.
        """
        ranked = candidates[np.argsort(-key[candidates], kind="stable")]
        band = quality_bands(quality, self.quality_bins)[ranked]
        taken = np.zeros(ranked.size, dtype=bool)
        taken[:k] = band[:k] < 0
        left = k - int(taken.sum())
        quotas = np.full(self.quality_bins, left // self.quality_bins)
        quotas[rng.permutation(self.quality_bins)[: left % self.quality_bins]] += 1
        for b in range(self.quality_bins):
            taken[np.flatnonzero(band == b)[: quotas[b]]] = True
        short = k - int(taken.sum())
        if short:
            taken[np.flatnonzero(~taken)[:short]] = True
        return ranked[taken]


def quality_bands(quality: np.ndarray, bands: int) -> np.ndarray:
    """Each image's band 0…bands−1 by rank of its current quality (equal-sized bands); −1 for
    an image without an estimate yet (NaN)."""
    quality = np.asarray(quality, dtype=float)
    known = np.isfinite(quality)
    band = np.full(quality.size, -1, dtype=np.int64)
    if known.any():
        ranks = np.empty(int(known.sum()), dtype=np.int64)
        ranks[np.argsort(quality[known], kind="stable")] = np.arange(ranks.size)
        band[known] = ranks * bands // ranks.size
    return band
