"""Live comparison with Netflix sureal 0.9.0 on public raw-score data sets nobody here made."""

from __future__ import annotations

import numpy as np
import pytest
import sureal
from sureal.dataset_reader import RawDatasetReader
from sureal.subjective_model import (
    SubjrejMosModel,
    ZscoringMosModel,
    ZscoringSubjrejMosModel,
)

from mos.estimators import P910Estimator
from mos.pipeline import MosPipeline
from mos.ratings import load_ratings
from mos.screening import Bt500Screening, NoScreening, SroccScreening
from tests.conftest import sureal_dataset

DATASETS = [
    "NFLX_dataset_public_raw_last4outliers.csv",
    "NFLX_dataset_public_raw.csv",
    "VQEGHD3_dataset_raw.csv",
    "quality_variation_2017_agh_tv.csv",  # 43% missing: a partial design
]


def fit(csv, **options):
    table = load_ratings(csv, dimensions=("score",))
    result = MosPipeline(**options).fit(table)
    return table, result.dimensions["score"]


def in_sureal_order(table, values, stimuli):
    index = {s: i for i, s in enumerate(table.stimulus_ids)}
    return np.asarray(values)[[index[s] for s in stimuli]]


def sureal_rejected(dataset, result):
    observers = RawDatasetReader(dataset)._get_list_observers()
    return sorted(o for o, r in zip(observers, result["observer_rejected"], strict=True) if r)


@pytest.mark.parametrize("name", DATASETS)
def test_bt500_sureal_variant_rejects_the_same_viewers_and_gives_the_same_mos(sureal_data, name):
    dataset, stimuli = sureal_dataset(sureal_data / name)
    expected = SubjrejMosModel(RawDatasetReader(dataset)).run_modeling()
    table, dim = fit(
        sureal_data / name, screening=Bt500Screening("sureal"), session_norm=False, zscore=False
    )
    rejected = sorted(table.viewer_ids[dim.per_viewer["rejected"].to_numpy()])
    assert rejected == sureal_rejected(dataset, expected)
    mos = in_sureal_order(table, dim.per_stimulus["mos"], stimuli)
    np.testing.assert_allclose(mos, expected["quality_scores"], atol=1e-12)


def test_bt500_reference_numbers_from_provenance(sureal_data):
    table, dim = fit(
        sureal_data / "NFLX_dataset_public_raw_last4outliers.csv",
        screening=Bt500Screening(),
        session_norm=False,
        zscore=False,
    )
    mos = dim.per_stimulus["mos"].to_numpy()
    np.testing.assert_allclose(
        mos[:5], [1.333333, 2.074074, 2.555556, 3.148148, 3.814815], atol=1e-6
    )
    assert mos.mean() == pytest.approx(3.546179, abs=1e-6)
    assert sorted(table.viewer_ids[dim.per_viewer["rejected"].to_numpy()]) == ["s26", "s28", "s29"]


def test_bt500_itu_variant_differs_only_as_documented(sureal_data):
    """The Recommendation's text (sample std) flags fewer scores than sureal (population std)."""
    _, sureal_dim = fit(sureal_data / "NFLX_dataset_public_raw.csv", screening=Bt500Screening())
    _, itu_dim = fit(sureal_data / "NFLX_dataset_public_raw.csv", screening=Bt500Screening("itu"))
    flagged = sureal_dim.per_viewer["bt500_p"] + sureal_dim.per_viewer["bt500_q"]
    flagged_itu = itu_dim.per_viewer["bt500_p"] + itu_dim.per_viewer["bt500_q"]
    assert (flagged_itu <= flagged).all() and (flagged_itu < flagged).any()


@pytest.mark.parametrize("name", DATASETS)
def test_zscoring_equals_sureal_zscoring_mos_model(sureal_data, name):
    dataset, stimuli = sureal_dataset(sureal_data / name)
    expected = ZscoringMosModel(RawDatasetReader(dataset)).run_modeling()
    table, dim = fit(sureal_data / name, screening=NoScreening(), session_norm=False)
    z = in_sureal_order(table, dim.per_stimulus["z"], stimuli)
    np.testing.assert_allclose(z, expected["quality_scores"], atol=1e-12)


@pytest.mark.parametrize("name", DATASETS)
def test_p910_mle_matches_sureal_p910_model(sureal_data, name):
    dataset, stimuli = sureal_dataset(sureal_data / name)
    expected = sureal.P910AnnexEModel(RawDatasetReader(dataset)).run_modeling()
    table, dim = fit(
        sureal_data / name,
        screening=NoScreening(),
        session_norm=False,
        zscore=False,
        estimator=P910Estimator(),
    )
    quality = in_sureal_order(table, dim.per_stimulus["mos"], stimuli)
    np.testing.assert_allclose(quality, expected["quality_scores"], atol=1e-4)
    ci = in_sureal_order(table, dim.per_stimulus["ci95"], stimuli)
    np.testing.assert_allclose(ci, expected["quality_scores_ci95"][0], atol=1e-4)
    observers = RawDatasetReader(dataset)._get_list_observers()
    bias = dict(zip(table.viewer_ids, dim.per_viewer["p910_bias"], strict=True))
    np.testing.assert_allclose([bias[o] for o in observers], expected["observer_bias"], atol=1e-4)


def test_srocc_screening_rejects_exactly_the_four_corrupted_viewers(sureal_data):
    table, dim = fit(sureal_data / "NFLX_dataset_public_raw_last4outliers.csv")
    rejected = sorted(table.viewer_ids[dim.per_viewer["rejected"].to_numpy()])
    assert rejected == ["s26", "s27", "s28", "s29"]


def test_paper_pipeline_on_outlier_set_equals_zscoring_on_the_clean_set(sureal_data):
    """SRoCC screening + z-scoring removes the planted viewers' influence completely."""
    dataset, stimuli = sureal_dataset(sureal_data / "NFLX_dataset_public_raw.csv")
    clean = ZscoringMosModel(RawDatasetReader(dataset)).run_modeling()["quality_scores"]
    table, dim = fit(sureal_data / "NFLX_dataset_public_raw_last4outliers.csv", session_norm=False)
    np.testing.assert_allclose(
        in_sureal_order(table, dim.per_stimulus["z"], stimuli), clean, atol=1e-12
    )
    np.testing.assert_allclose(
        dim.per_stimulus["z"].to_numpy()[:5],
        [-1.679821, -1.09509, -0.800171, -0.27259, 0.215905],
        atol=1e-6,
    )


def test_zscoring_subjrej_reference_rejects_the_same_with_srocc(sureal_data):
    dataset, _ = sureal_dataset(sureal_data / "NFLX_dataset_public_raw_last4outliers.csv")
    expected = ZscoringSubjrejMosModel(RawDatasetReader(dataset)).run_modeling()
    table, dim = fit(sureal_data / "NFLX_dataset_public_raw_last4outliers.csv")
    ours = sorted(table.viewer_ids[dim.per_viewer["rejected"].to_numpy()])
    assert ours == sureal_rejected(dataset, expected)


def test_partial_design_agh_tv_gives_a_mos_for_every_stimulus(sureal_data):
    table, dim = fit(sureal_data / "quality_variation_2017_agh_tv.csv", screening=SroccScreening())
    assert table.n_stimuli == 320 and table.n_viewers == 99
    assert np.isfinite(dim.per_stimulus["mos"]).all()
    assert (dim.per_stimulus["n"] > 0).all()
