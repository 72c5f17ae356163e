"""The allocator the online mode and the simulations share: its constraints and its CI estimate."""

from __future__ import annotations

import numpy as np
import pytest

from studydb.allocation import Allocator, Precision, ci_halfwidths, quality_bands


def _precision(n: np.ndarray, ci: np.ndarray | None = None, quality=None) -> Precision:
    n = np.asarray(n)
    quality = np.linspace(0, 5, n.size) if quality is None else quality
    ci = np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1)), np.inf) if ci is None else ci
    return Precision(quality=np.asarray(quality, float), ci95=np.asarray(ci, float), n=n)


def _references(n: int, per: int = 4) -> np.ndarray:
    return np.arange(n) // per


def test_unknown_policy_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown allocation policy"):
        Allocator(_references(8), policy="greedy")
    with pytest.raises(ValueError):
        Allocator(_references(8), min_ratings=-1)
    with pytest.raises(ValueError):
        Allocator(_references(8), target_ci=0)
    with pytest.raises(ValueError):
        Allocator(_references(8)).choose(0, _precision(np.zeros(8, int)), np.random.default_rng())


def test_uniform_allocation_keeps_counts_level():
    rng = np.random.default_rng(0)
    n = np.zeros(100, dtype=np.int64)
    allocator = Allocator(_references(100), policy="uniform")
    for _ in range(23):
        chosen = allocator.choose(17, _precision(n), rng)
        assert np.unique(chosen).size == chosen.size == 17
        n[chosen] += 1
    # Level within 2 ratings: each sitting's equal shares of the quality bands come first.
    assert n.max() - n.min() <= 2


def test_images_below_the_minimum_come_first_under_both_policies():
    rng = np.random.default_rng(1)
    n = np.full(60, 9)
    starving = np.array([3, 17, 41, 58])
    n[starving] = [0, 1, 2, 4]
    ci = np.full(60, 0.9)  # every well-rated image is wider than any other signal
    for policy in ("uniform", "adaptive"):
        allocator = Allocator(_references(60), policy=policy, min_ratings=5, target_ci=0.3)
        chosen = allocator.choose(5, _precision(n, ci), rng)
        assert set(starving) <= set(chosen.tolist())


def test_adaptive_allocation_takes_the_widest_intervals_and_skips_finished_images():
    rng = np.random.default_rng(2)
    n = np.full(50, 10)
    ci = np.full(50, 0.2)  # on target (0.3)
    wide = np.array([4, 9, 22, 30, 47])
    ci[wide] = [0.5, 0.9, 0.7, 0.6, 0.8]
    allocator = Allocator(_references(50, 1), "adaptive", min_ratings=5, target_ci=0.3)
    # One quality band so that only the widths decide.
    allocator.quality_bins = 1
    chosen = allocator.choose(5, _precision(n, ci), rng)
    assert sorted(chosen.tolist()) == sorted(wide.tolist())
    assert allocator.done(_precision(n, ci)).sum() == 45


def test_a_participant_never_gets_an_image_twice():
    rng = np.random.default_rng(3)
    allocator = Allocator(_references(30), "adaptive")
    rated = np.arange(0, 30, 2)
    chosen = allocator.choose(20, _precision(np.zeros(30, int)), rng, already_rated=rated)
    assert not set(chosen.tolist()) & set(rated.tolist())
    assert chosen.size == 15  # only 15 images are left for this participant


def test_no_two_distortions_of_one_reference_back_to_back():
    rng = np.random.default_rng(4)
    reference = _references(200, 10)  # 20 references, 10 distortions each
    allocator = Allocator(reference, "adaptive", target_ci=0.3)
    for _ in range(20):
        chosen = allocator.choose(40, _precision(rng.integers(0, 8, 200)), rng)
        assert not np.any(reference[chosen[1:]] == reference[chosen[:-1]])


def test_each_sitting_spans_the_quality_range():
    rng = np.random.default_rng(5)
    quality = np.linspace(0, 5, 500)
    # The widest intervals all sit among the worst images: without the bands a sitting would
    # hold only bad pictures.
    ci = np.where(quality < 1, 2.0, 0.5)
    allocator = Allocator(_references(500, 1), "adaptive", min_ratings=0, target_ci=0.1)
    chosen = allocator.choose(50, _precision(np.full(500, 10), ci, quality), rng)
    bands = np.floor(quality[chosen]).clip(0, 4).astype(int)
    assert np.bincount(bands, minlength=5).tolist() == [10] * 5


def test_quality_bands_are_equal_sized_and_unrated_images_have_none():
    bands = quality_bands(np.arange(100.0), 5)
    assert np.bincount(bands).tolist() == [20] * 5
    assert bands[0] == 0 and bands[-1] == 4
    assert (quality_bands(np.array([np.nan, 1.0, np.nan]), 5) == [-1, 0, -1]).all()


def test_unrated_images_come_first_whatever_the_bands():
    """Early in a study the bands cannot be known: the images nobody rated yet go first."""
    rng = np.random.default_rng(8)
    quality = np.where(np.arange(40) < 20, np.nan, np.linspace(0, 5, 40))
    n = np.where(np.isnan(quality), 0, 1)
    allocator = Allocator(_references(40, 1), "uniform", min_ratings=5)
    chosen = allocator.choose(20, _precision(n, quality=quality), rng)
    assert sorted(chosen.tolist()) == list(range(20))


def test_ci_halfwidths_remove_participant_bias_and_mark_unrated_images():
    rng = np.random.default_rng(7)
    n_img, n_people = 40, 30
    truth = rng.uniform(0, 5, n_img)
    noise = np.where(np.arange(n_img) < 20, 0.2, 1.0)  # the second half is ambiguous
    offsets = np.where(np.arange(n_people) % 2, 1.5, -1.5)  # strongly biased people
    s = np.tile(np.arange(n_img - 1), n_people)  # the last image is never rated
    v = np.repeat(np.arange(n_people), n_img - 1)
    x = truth[s] + offsets[v] + noise[s] * rng.standard_normal(s.size)
    p = ci_halfwidths(s, v, x, n_img, n_people)
    assert np.isinf(p.ci95[-1]) and np.isnan(p.quality[-1]) and p.n[-1] == 0
    # Bias removed: the clear images' CI reflects their 0.2 noise, not the ±1.5 offsets.
    assert np.median(p.ci95[:20]) < 0.2
    assert np.median(p.ci95[20:-1]) > 2.5 * np.median(p.ci95[:20])
    assert np.corrcoef(p.quality[:-1], truth[:-1])[0, 1] > 0.98


def test_ci_of_an_image_with_few_ratings_leans_on_the_pooled_spread():
    # Two identical ratings would give a zero sample spread; the prior keeps the CI honest.
    s = np.array([0, 0] + [1] * 20)
    v = np.array([0, 1] + list(range(20)))
    x = np.array([3.0, 3.0] + list(np.linspace(1, 4, 20)))
    p = ci_halfwidths(s, v, x, 2, 20)
    assert p.ci95[0] > 0.5
