"""Guard: ``mos`` stays faster than the paper's method written plainly in pandas.

``bench/mos_bench.py --ratings 10000000`` measures the whole command against
``bench/mos_anchor.py`` (the plain-pandas A.2). This test is its cheap, in-process guard: on a
300,000-rating crowd study (CSV with formula-escaped viewer codes and a per-stimulus metadata
column, so that every text path runs), reading, the paper's method with the leave-one-out note
and the split-half reliability, and writing ``mos.csv`` / ``viewers.csv`` must take less time than
the anchor's reading, method and writing, timed in turn in the same test. mos is 2-3× faster than
the anchor there; a step that goes back to Python once per rating (a regex per cell, a loop per
row) costs a second or more at this size and makes it fail. The report's figures are left out:
their cost does not grow with the ratings. The ``exclude`` case adds quality control on both
sides (the anchor's plain-pandas rules against ``mos.qc``'s reading of the same cells and its
signals).
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mos.compute import write_outputs
from mos.pipeline import MosPipeline
from mos.qc import ExclusionRules, exclude_participants, load_trials
from mos.ratings import load_study
from mos.screening import loo_note
from mos.simulate import SimulationConfig, simulate

ANCHOR = Path(__file__).resolve().parents[1] / "bench" / "mos_anchor.py"
ROUNDS = 3


def _anchor():
    spec = importlib.util.spec_from_file_location("mos_anchor", ANCHOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _crowd_csv(path: Path) -> Path:
    study = simulate(
        SimulationConfig(stimuli=15_000, viewers=75, bad_viewers=2, viewers_per_group=20, seed=3)
    )
    ratings = study.ratings.drop(columns=["group"])
    ratings["viewer"] = "'=" + ratings["viewer"]  # as the lab's exports escape formula-like text
    ratings["model"] = ratings["stimulus"].map(study.truth.set_index("stimulus")["model"])
    ratings.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("exclude", [False, True], ids=["plain", "exclude"])
def test_mos_is_faster_than_plain_pandas(tmp_path, exclude):
    csv = _crowd_csv(tmp_path / "ratings.csv")
    anchor = _anchor()

    def plain() -> pd.DataFrame:
        ratings = anchor.read(csv, with_qc=exclude)
        mos, viewers = anchor.compute(anchor.exclude(ratings) if exclude else ratings)
        mos.to_csv(tmp_path / "anchor_mos.csv")
        viewers.to_csv(tmp_path / "anchor_viewers.csv")
        return mos

    def ours() -> pd.DataFrame:
        table, cells = load_study(csv)
        if exclude:
            trials = load_trials(csv, "consistency", cells)
            table, _ = exclude_participants(table, trials, ExclusionRules())
        result = MosPipeline(reliability_rounds=10).fit(table)
        write_outputs(result, tmp_path / "mos", source=str(csv), report=False)
        loo_note(result.viewers_frame())
        return result.mos_frame()

    seconds: dict[str, list[float]] = {"plain": [], "ours": []}
    for _ in range(ROUNDS):  # in turn, so that a busy machine slows both alike
        for name, run in (("plain", plain), ("ours", ours)):
            started = time.perf_counter()
            frame = run()
            seconds[name].append(time.perf_counter() - started)
            if name == "plain":
                expected = frame
            else:
                got = frame
    plain_s, ours_s = (statistics.median(seconds[k]) for k in ("plain", "ours"))
    assert ours_s < plain_s, (
        f"mos took {ours_s:.2f} s against plain pandas' {plain_s:.2f} s on 300,000 ratings: "
        "a step has become slow (per-rating Python?); profile bench/mos_bench.py --ratings"
    )
    # the same method: the anchor's MOS is ours (the study has no repeated ratings)
    got = got.set_index("stimulus")
    for dimension in ("consistency", "perception"):
        np.testing.assert_allclose(
            got[f"{dimension}_mos"].to_numpy(),
            expected[f"{dimension}_mos"].reindex(got.index).to_numpy(),
            rtol=0,
            atol=1e-12,
        )
    assert got["model"].notna().all()  # kept as per-stimulus metadata
    viewers = pd.read_csv(tmp_path / "mos" / "viewers.csv")
    assert viewers["viewer"].str.startswith("=v").all()  # the escape undone


def test_the_stage_timer_times_each_stage_of_a_run(tmp_path, capsys):
    """bench/mos_stages.py (where a run's time goes) wraps mos.compute's own calls: it must
    still find each of them, time every stage of a run with --exclude, leave the run's outputs
    as the command writes them, and put mos.compute back as it was."""
    spec = importlib.util.spec_from_file_location("mos_stages", ANCHOR.with_name("mos_stages.py"))
    stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stages)
    study = simulate(SimulationConfig(stimuli=60, viewers=12, bad_viewers=1, seed=5))
    csv = tmp_path / "ratings.csv"
    study.ratings.drop(columns=["group"]).to_csv(csv, index=False)
    before = MosPipeline.fit, load_study
    status = stages.main([str(csv), "--exclude", "--no-report", "--out", str(tmp_path / "out")])
    table = capsys.readouterr().out
    assert status == 0 and (tmp_path / "out" / "mos.csv").is_file()
    for stage in (*stages.STAGES, "fit", "whole run"):
        assert f"| {stage} |" in table
    import mos.compute

    assert (MosPipeline.fit, mos.compute.load_study) == before
