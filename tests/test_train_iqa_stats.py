"""``train_iqa.stats``: the signed monotonic logistic PLCC against an independent fit, and the
reference-level bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from train_iqa.stats import bootstrap, correlations, fit_logistic, paired_srcc_test, resampling


def grid_logistic_fit(scores: np.ndarray, mos: np.ndarray, direction: float) -> np.ndarray:
    """An independent fit of the same monotonic logistic: a dense grid over centre and width, the
    two asymptotes solved exactly by linear least squares at each (variable projection), slope
    forced to the given direction. Slow, but with no starting values to get wrong."""
    z = direction * (scores - scores.mean()) / scores.std()
    best, best_error = None, np.inf
    for centre in np.linspace(z.min() - 1, z.max() + 1, 161):
        for width in np.geomspace(1e-2, 1e2, 161):
            with np.errstate(over="ignore"):
                basis = 1 / (1 + np.exp(-(z - centre) / width))
            design = np.column_stack([np.ones_like(z), basis])
            (low, span), *_ = np.linalg.lstsq(design, mos, rcond=None)
            if span < 0:  # not monotonic in the given direction: the best is flat
                low, span = mos.mean(), 0.0
            fitted = low + span * basis
            error = np.sum((fitted - mos) ** 2)
            if error < best_error:
                best, best_error = fitted, error
    return best


@pytest.mark.parametrize("strength, seed", [(3.0, 0), (0.4, 1), (0.15, 2), (-2.0, 3)])
def test_logistic_plcc_matches_an_independent_fit_and_keeps_its_sign(strength, seed):
    rng = np.random.default_rng(seed)
    mos = rng.uniform(0, 5, 150)
    score = np.tanh(strength * (mos - 2.5)) + rng.normal(0, 0.3, mos.size)
    figures = correlations(score, mos)
    direction = np.sign(figures["srcc"])
    reference = grid_logistic_fit(score, mos, direction)
    expected_plcc = direction * stats.pearsonr(reference, mos)[0]
    expected_rmse = np.sqrt(np.mean((reference - mos) ** 2))
    # Least squares: the fit is at least as good as the grid's (which is only grid-accurate).
    assert figures["rmse"] <= expected_rmse + 1e-6
    assert figures["plcc"] == pytest.approx(expected_plcc, abs=2e-3)
    assert np.sign(figures["plcc"]) == np.sign(figures["srcc"]) == np.sign(strength)


def test_an_anti_correlated_metric_reports_a_negative_plcc():
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 5, 200)
    score = -mos + rng.normal(0, 0.3, 200)
    figures = correlations(score, mos)
    assert figures["srcc"] < -0.9 and figures["plcc"] < -0.9
    assert correlations(score, mos, lower_better=True)["plcc"] == pytest.approx(-figures["plcc"])


def test_the_fitted_logistic_is_monotonic_in_the_metrics_direction():
    rng = np.random.default_rng(4)
    score = rng.uniform(-3, 3, 300)
    mos = np.where(score > 0, 4.0, 1.0) - 0.5 * score + rng.normal(0, 0.2, 300)  # bumpy
    fitted, direction, _ = fit_logistic(score, mos)
    ordered = fitted[np.argsort(score)]
    steps = np.diff(ordered) * direction
    assert (steps >= -1e-9).all()


def test_nan_input_is_refused_not_averaged():
    with pytest.raises(ValueError, match="NaN"):
        correlations([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0])


def test_reference_bootstrap_resamples_whole_references_and_is_wider():
    """30 references × 20 images, each reference with its own offset: images of one reference
    are correlated, so resampling them as independent understates the uncertainty."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 20)
    offset = rng.normal(0, 1, 30)[groups]
    mos = rng.uniform(0, 5, groups.size)
    score = mos + 3 * offset + rng.normal(0, 0.5, groups.size)
    by_image = bootstrap(score, mos, rounds=200)
    by_reference = bootstrap(score, mos, rounds=200, groups=groups)
    assert by_image["srcc"][0] == by_reference["srcc"][0]  # same point estimate
    width = {k: v["srcc"][2] - v["srcc"][1] for k, v in (("i", by_image), ("r", by_reference))}
    assert width["r"] > 1.5 * width["i"]
    assert resampling(groups) == "references (30)" and resampling(None) == "images"
    test = paired_srcc_test(score, mos, mos, rounds=200, groups=groups)
    assert test["difference"] < 0 and test["p_value"] < 0.05
