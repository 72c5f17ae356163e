"""The paper's steps, checked by hand on tiny studies and against a simulated truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mos.pipeline import MosPipeline
from mos.ratings import load_ratings
from mos.scale import to_rating_scale
from mos.screening import NoScreening, SroccScreening
from mos.simulate import SimulationConfig, simulate, write_study


def write_csv(tmp_path, rows, name="ratings.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_session_normalization_then_zscore_follow_eqs_1_and_2(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for viewer in ("a", "b", "c"):
        for session, shift in (("s1", 0.0), ("s2", 1.0)):
            for i in range(6):
                stimulus = f"x{i + 6 * (session == 's2')}"
                rows.append(
                    {
                        "viewer": viewer,
                        "session": session,
                        "stimulus": stimulus,
                        "score": float(np.clip(i * 0.7 + shift + rng.normal(0, 0.2), 0, 5)),
                    }
                )
    frame = pd.DataFrame(rows)
    table = load_ratings(write_csv(tmp_path, frame), dimensions=("score",))
    dim = MosPipeline(screening=NoScreening()).fit(table).dimensions["score"]
    # by hand: eq. (1) per (viewer, session), eq. (2) per viewer with the sample std
    frame["s"] = (
        frame["score"] - frame.groupby(["viewer", "session"])["score"].transform("mean") + 2.5
    )
    frame["z"] = frame.groupby("viewer")["s"].transform(lambda s: (s - s.mean()) / s.std(ddof=1))
    expected = frame.groupby("stimulus")["z"].mean()
    got = pd.Series(dim.per_stimulus["z"].to_numpy(), index=table.stimulus_ids)
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    mos, slope = to_rating_scale(expected.to_numpy(), "sigma3", 0, 1)
    np.testing.assert_allclose(np.sort(dim.per_stimulus["mos"]), np.sort(mos))
    n = 3
    ci = stats.t.ppf(0.975, n - 1) * frame.groupby("stimulus")["z"].std(ddof=1) / np.sqrt(n) * slope
    np.testing.assert_allclose(np.sort(dim.per_stimulus["ci95"]), np.sort(ci.to_numpy()))


def test_repetitions_are_averaged_before_zscoring_unless_asked(tmp_path):
    rows = [
        {"viewer": v, "stimulus": s, "score": sc, "repetition": r}
        for v, base in (("a", 0.0), ("b", 0.5))
        for s, sc0 in (("x", 1.0), ("y", 2.0), ("z", 4.0))
        for r, sc in ((0, sc0 + base), (1, sc0 + base + (0.4 if s == "x" else 0.0)))
    ]
    table = load_ratings(write_csv(tmp_path, rows), dimensions=("score",))
    averaged = MosPipeline(screening=NoScreening(), zscore=False, session_norm=False).fit(table)
    kept = MosPipeline(
        screening=NoScreening(), zscore=False, session_norm=False, average_repetitions=False
    ).fit(table)
    x = list(table.stimulus_ids).index("x")
    assert averaged.dimensions["score"].per_stimulus["n"][x] == 2
    assert kept.dimensions["score"].per_stimulus["n"][x] == 4
    assert averaged.dimensions["score"].per_stimulus["mos"][x] == pytest.approx(1.0 + 0.25 + 0.2)
    # self-consistency from the repeats: x's two showings differ by 0.4 → 0.2 from their mean
    mad = averaged.dimensions["score"].per_viewer.set_index(table.viewer_ids)["repeat_mad"]
    assert mad["a"] == pytest.approx(0.4 / 6) and mad["b"] == pytest.approx(0.4 / 6)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    study = simulate(SimulationConfig(stimuli=600, viewers=20, bad_viewers=3, group_size=200))
    write_study(study, folder / "study.db")
    return study, folder / "study.db"


def test_simulated_study_recovers_the_truth_and_rejects_exactly_the_bad_viewers(simulated):
    study, db = simulated
    result = MosPipeline().fit(load_ratings(db))
    mos = result.mos_frame().merge(study.truth, on="stimulus")
    bad = set(study.viewers.loc[study.viewers["bad"], "viewer"])
    viewers = result.viewers_frame()
    for name in ("consistency", "perception"):
        assert stats.pearsonr(mos[f"{name}_mos"], mos[f"true_{name}"])[0] > 0.97
        rejected = set(viewers.loc[(viewers["dimension"] == name) & viewers["rejected"], "viewer"])
        assert rejected == bad
        assert (mos[f"{name}_n"] == 17).all()  # 20 viewers − 3 rejected


def test_warmup_ratings_are_left_out(simulated):
    study, db = simulated
    table = load_ratings(db)
    assert len(table) == int((~study.ratings["warmup"]).sum())


def test_paper_normalization_beats_raw_means_under_session_drift(simulated):
    study, db = simulated
    table = load_ratings(db)
    paper = MosPipeline().fit(table).mos_frame().merge(study.truth, on="stimulus")
    raw = (
        MosPipeline(session_norm=False, zscore=False, screening=SroccScreening())
        .fit(table)
        .mos_frame()
        .merge(study.truth, on="stimulus")
    )
    r_paper = stats.pearsonr(paper["consistency_mos"], paper["true_consistency"])[0]
    r_raw = stats.pearsonr(raw["consistency_mos"], raw["true_consistency"])[0]
    assert r_paper > r_raw


def test_loo_reference_rejects_the_same_bad_viewers(simulated):
    study, db = simulated
    result = MosPipeline(screening=SroccScreening(reference="loo")).fit(load_ratings(db))
    viewers = result.viewers_frame()
    rejected = set(viewers.loc[viewers["rejected"], "viewer"])
    assert rejected == set(study.viewers.loc[study.viewers["bad"], "viewer"])


@pytest.mark.parametrize("method", ["sigma3", "minmax", "rescale"])
def test_scales_are_linear_and_stay_within_0_5(method):
    z = np.array([-2.0, -0.5, 0.0, 1.0, 2.5])
    mos, slope = to_rating_scale(z, method, pooled_mean=2.4, pooled_std=0.9)
    assert ((mos >= 0) & (mos <= 5)).all()
    np.testing.assert_allclose(np.diff(mos), slope * np.diff(z))
    if method == "minmax":
        assert mos.min() == 0 and mos.max() == 5
    if method == "sigma3":
        assert to_rating_scale(np.array([0.0]), method, 0, 1)[0][0] == 2.5
