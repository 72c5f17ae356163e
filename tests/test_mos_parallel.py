"""The second core in ``mos.compute``'s single-threaded steps (issue 22): the report's figures
drawn in a forked copy, QC's signals and row selection on threads, the SQLite study read in
ranges shared evenly between the readers; and a full output folder as a one-line error."""

from __future__ import annotations

import errno
import os

import numpy as np
import pandas as pd
import pytest

import mos.compute
import mos.report
from mos.compute import main
from mos.qc import MIN_TIMED, ExclusionRules, _recoded, qc_signals
from mos.simulate import SimulationConfig, simulate
from mos.study_sql import even_ranges


@pytest.fixture
def study_csv(tmp_path):
    study = simulate(SimulationConfig(stimuli=60, viewers=12, bad_viewers=2, seed=5))
    path = tmp_path / "ratings.csv"
    ratings = study.ratings.drop(columns=["group"], errors="ignore")
    ratings["model"] = np.where(ratings["stimulus"].str[-1].isin(list("02468")), "a", "b")
    ratings.to_csv(path, index=False)
    return path


def _pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture
def forked(monkeypatch):
    """The pids of the copies the report forks (in the parent; the copy sees 0)."""
    real_fork, pids = os.fork, []

    def fork():
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids


def _all_reaped(pids) -> bool:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # reaped by the report: not a child any more
        return False
    return True


def test_figures_drawn_in_a_forked_copy_equal_those_drawn_here(
    study_csv, tmp_path, monkeypatch, forked
):
    """The copy draws every other figure; the files are those one process draws, byte for byte,
    and no child is left behind."""
    assert main([str(study_csv), "--out", str(tmp_path / "two"), "--quiet"]) == 0
    assert len(forked) == 1 and _all_reaped(forked)
    monkeypatch.delattr(os, "fork")  # a system without fork: all drawn here
    assert main([str(study_csv), "--out", str(tmp_path / "one"), "--quiet"]) == 0
    two, one = _pngs(tmp_path / "two"), _pngs(tmp_path / "one")
    assert len(one) == 4 and two == one  # histograms, screening, CI widths, MOS by model
    assert (tmp_path / "two" / "report.md").read_text() == (
        tmp_path / "one" / "report.md"
    ).read_text()


def test_a_figure_the_copy_fails_to_draw_is_drawn_here(tmp_path):
    parent = os.getpid()

    def draw_here_only():
        if os.getpid() != parent:
            raise RuntimeError("drawing failed in the copy")
        return mos.report.plt.figure(figsize=(1, 1))

    figures = [
        mos.report.Figure("a.png", lambda: mos.report.plt.figure(figsize=(1, 1))),
        mos.report.Figure("b.png", draw_here_only),
        mos.report.Figure("c.png", lambda: mos.report.plt.figure(figsize=(1, 1))),
    ]
    ran = []
    mos.report._draw_all(figures, tmp_path, meanwhile=lambda: ran.append(os.getpid()))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.png", "b.png", "c.png"]
    assert ran == [parent]


@pytest.mark.parametrize("where", ["figure", "table"])
def test_a_full_disk_is_a_one_line_error(study_csv, tmp_path, monkeypatch, capsys, where, forked):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "figure":
        monkeypatch.setattr(mos.report.plt.Figure, "savefig", full)
    else:
        monkeypatch.setattr(mos.compute, "_write_csv", full)
    assert main([str(study_csv), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"mos.compute: error: cannot write the outputs into {tmp_path / 'o'}: "
        "No space left on device"
    )
    assert len(forked) == 1 and _all_reaped(forked)


@pytest.mark.parametrize("rows", [1_001, 1_000])
def test_a_table_formatted_in_two_halves_is_the_same_file(tmp_path, monkeypatch, rows):
    """mos.csv's second half is formatted on another core and appended: the same bytes as in
    one piece (one header, quoted text, empty cells), and a full disk is still an OSError."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "stimulus": [f"s{i}" for i in range(rows)],
            "mos": rng.random(rows) * 5,
            "n": np.arange(rows),
            "model": pd.array([None if i % 11 == 0 else f'm, "{i % 3}"' for i in range(rows)]),
        }
    )
    mos.compute._write_csv(frame, tmp_path / "whole.csv")  # below SPLIT_ROWS: one piece
    monkeypatch.setattr(mos.compute, "SPLIT_ROWS", 10)
    mos.compute._write_csv(frame, tmp_path / "halves.csv")
    whole = (tmp_path / "whole.csv").read_bytes()
    assert (tmp_path / "halves.csv").read_bytes() == whole
    assert whole.count(b'"stimulus"') == 1 and len(pd.read_csv(tmp_path / "halves.csv")) == rows
    if os.path.exists("/dev/full"):
        with pytest.raises(OSError):
            mos.compute._write_csv(frame, "/dev/full")


@pytest.mark.parametrize("checks", [False, True, "sparse"])
@pytest.mark.parametrize("images", [120, 1_500])  # 1,500: many images rated by fewer than 3
def test_qc_signals_equal_one_participant_at_a_time(checks, images):
    """The agreement (the others' means on a thread, each participant's centred scores shared
    with the spread) and every other signal, against a plain loop; with check trials, which
    neither counts (their accepted ranges also held sparse, as a study's rare ones are), and
    with images too few others rated, which the agreement leaves out."""
    rng = np.random.default_rng(2)
    n = 3_000
    trials = pd.DataFrame(
        {
            "participant": rng.choice([f"p{i}" for i in range(25)], n),
            "stimulus": rng.integers(0, images, n),
            "score": rng.integers(0, 51, n) / 10,
            "seconds": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(4, 2, n)),
            "slider_events": np.where(rng.random(n) < 0.3, np.nan, rng.gamma(2, 1.5, n)),
            "first_input": np.where(rng.random(n) < 0.2, np.nan, rng.gamma(2, 0.5, n)),
        }
    )
    if checks:
        trials["check"] = rng.choice(["", "gold", "attention"], n, p=[0.8, 0.1, 0.1])
        trials["low"] = np.where(trials["check"] != "", 3.0, np.nan)
        trials["high"] = np.where(trials["check"] != "", 5.0, np.nan)
        if checks == "sparse":
            for name in ("low", "high"):
                trials[name] = pd.arrays.SparseArray(trials[name], fill_value=np.nan)
    signals = qc_signals(trials)
    assert list(signals["participant"]) == sorted(trials["participant"].unique())
    kind = trials["check"] if checks else pd.Series("", index=trials.index)
    tests = trials[kind == ""]
    total = tests.groupby("stimulus")["score"].agg(["sum", "count"])
    for row in signals.itertuples():
        own = tests[tests["participant"] == row.participant]
        others = total.loc[own["stimulus"]]
        mean_others = (others["sum"].to_numpy() - own["score"]) / (others["count"].to_numpy() - 1)
        use = (others["count"].to_numpy() - 1) >= 2
        expected = np.corrcoef(own["score"][use], mean_others[use])[0, 1]
        if use.sum() < 5:
            expected = np.nan
        assert row.agreement == pytest.approx(expected, abs=1e-12, nan_ok=True)
        assert row.trials == len(own)
        assert row.score_std == pytest.approx(own["score"].std(), abs=1e-12)
        assert row.fast_trials == int((own["seconds"] < ExclusionRules.fast_seconds).sum())
        mine = trials[(trials["participant"] == row.participant) & (kind == "gold")]
        assert row.gold_trials == len(mine)
        assert row.gold_failures == int((mine["score"] < 3).sum())
        timed = own["seconds"].dropna()
        spread = timed.std() if len(timed) >= MIN_TIMED else np.nan
        assert row.time_spread == pytest.approx(spread, abs=1e-12, nan_ok=True)
        counted = own[own["slider_events"].notna()]
        assert row.slider_events == pytest.approx(counted["slider_events"].mean(), nan_ok=True)
        assert row.first_input_median == pytest.approx(counted["first_input"].median(), nan_ok=True)
        no_input = (counted["slider_events"] <= 0) | counted["first_input"].isna()
        assert row.no_input_trials == int(no_input.sum())
    # The mean slider moves to the last bit as pandas' grouped mean (compensated sums) gives it.
    counted = tests[tests["slider_events"].notna()]
    expected = counted.groupby("participant")["slider_events"].mean()
    got = signals.set_index("participant")["slider_events"].loc[expected.index]
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    if images > 1_000:  # the case it is there for: some trials left out of the agreement
        assert (total["count"] < 3).any()


@pytest.mark.parametrize("lose_one", [False, True])
def test_recoding_kept_rows_equals_unique(lose_one):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 40, 2_000)
    keep = rng.random(2_000) < 0.8
    if lose_one:
        keep &= codes != 7  # code 7 loses every row
    new, present = _recoded(codes, keep)
    expected_present, expected_new = np.unique(codes[keep], return_inverse=True)
    np.testing.assert_array_equal(present, expected_present)
    np.testing.assert_array_equal(new, expected_new)


@pytest.mark.parametrize(
    "low, high, largest, readers",
    [(1, 10_500_000, 1_000_000, 2), (1, 37, 37, 2), (5, 5, 10, 4), (1, 100, 37, 2),
     (1, 3, 1, 2), (7, 1_000_006, 1_000_000, 3), (1, 2_000_000, 1_000_000, 2)],
)  # fmt: skip
def test_id_ranges_cover_the_span_evenly(low, high, largest, readers):
    ranges = even_ranges(low, high, largest, readers)
    assert ranges[0][0] == low and ranges[-1][1] == high
    assert all(a <= b for a, b in ranges)
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(len(ranges) - 1))
    sizes = [b - a + 1 for a, b in ranges]
    assert max(sizes) <= largest and max(sizes) - min(sizes) <= max(sizes) // 2 + 1
    span = high - low + 1
    if span >= readers:
        assert len(ranges) % readers == 0 or len(ranges) == span


def test_an_interrupted_report_stops_and_reaps_its_copy(study_csv, tmp_path, monkeypatch, forked):
    """Ctrl-C (or any error) in the parent right after the fork: the copy is ended and reaped,
    not left drawing into the folder."""

    class Interrupted:
        def __init__(self, *args):
            pass

        def __enter__(self):
            raise KeyboardInterrupt

        def __exit__(self, *args):
            return False

    monkeypatch.setattr(mos.report, "ThreadPoolExecutor", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        main([str(study_csv), "--out", str(tmp_path / "o"), "--quiet"])
    assert len(forked) == 1 and _all_reaped(forked)


def test_infinite_confidence_intervals_do_not_stop_the_report(tmp_path):
    """P.910 where most images have one rating (one viewer rated far more than the others)
    gives infinite CIs: the report draws the finite widths instead of failing."""
    rng = np.random.default_rng(3)
    rows = [("v0", f"s{s:04d}") for s in range(600)]
    rows += [(f"v{v}", f"s{s:04d}") for v in range(1, 12) for s in rng.choice(120, 30, False)]
    ratings = pd.DataFrame(rows, columns=["viewer", "stimulus"])
    for name in ("consistency", "perception"):
        ratings[name] = rng.integers(0, 51, len(ratings)) / 10
    path = tmp_path / "unbalanced.csv"
    ratings.to_csv(path, index=False)
    out = tmp_path / "o"
    args = [str(path), "--screening", "bt500", "--estimator", "p910", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    assert (out / "ci95.png").exists()
    assert np.isinf(pd.read_csv(out / "mos.csv")["consistency_ci95"]).any()


@pytest.mark.parametrize("max_stimuli", [40, 10_000])  # a sample of the stimuli, or all of them
def test_split_half_reliability_equals_the_rounds_written_out(monkeypatch, max_stimuli):
    """The split-half reliability, its sampled stimuli renumbered, against each round written out
    with pandas on the stimuli's own codes (the same draws of the same generator)."""
    from mos import reliability
    from mos.observations import Observations

    rng = np.random.default_rng(4)
    n, n_viewers, n_stimuli = 6_000, 30, 300
    obs = Observations(
        viewer=rng.integers(0, n_viewers, n),
        stimulus=rng.integers(0, n_stimuli, n),
        score=rng.integers(0, 51, n) / 10,
        n_viewers=n_viewers,
        n_stimuli=n_stimuli,
    )
    monkeypatch.setattr(reliability, "MAX_STIMULI", max_stimuli)
    mean, std = reliability.split_half(obs, rounds=5, seed=3)

    draws = np.random.default_rng(3)
    frame = pd.DataFrame({"viewer": obs.viewer, "stimulus": obs.stimulus, "score": obs.score})
    if n_stimuli > max_stimuli:
        sample = draws.choice(n_stimuli, max_stimuli, replace=False)
        frame = frame[frame["stimulus"].isin(sample)]
    viewers = np.unique(frame["viewer"])
    estimates = []
    for _ in range(5):
        half = frame["viewer"].isin(draws.permutation(viewers)[: viewers.size // 2])
        means = pd.concat(
            [frame[half].groupby("stimulus")["score"].mean(),
             frame[~half].groupby("stimulus")["score"].mean()], axis=1, join="inner"
        )  # fmt: skip
        r = np.corrcoef(means.iloc[:, 0], means.iloc[:, 1])[0, 1]
        estimates.append(2 * r / (1 + r))
    assert mean == pytest.approx(np.mean(estimates), abs=1e-12)
    assert std == pytest.approx(np.std(estimates), abs=1e-12)
