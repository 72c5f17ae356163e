"""``mos.compute --exclude``: P.808-style exclusion from a CSV or a study database with checks."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from mos.compute import main
from mos.ratings import InputError
from studydb import Rating, Session, Stimulus, Trial, Viewer, create_study
from studydb.csvcells import neutralise

N_IMAGES = 30
CAREFUL = [f"p{i}" for i in range(1, 8)]


def _rows(rng: np.random.Generator) -> list[dict]:
    truth = np.linspace(0.5, 4.5, N_IMAGES)
    rows = []
    for person in ["p0", *CAREFUL]:
        careless = person == "p0"
        for img in range(N_IMAGES):
            score = rng.uniform(0, 5) if careless else truth[img] + 0.3 * rng.standard_normal()
            rows.append(
                dict(
                    viewer=person,
                    stimulus=f"img{img:02d}",
                    consistency=float(np.clip(round(score, 1), 0, 5)),
                    seconds=0.7 if careless else 3.0 + (img * 7 % 11) / 2,  # people vary
                    check="",
                )
            )
        rows.append(
            dict(
                viewer=person,
                stimulus="gold-same",
                consistency=1.2 if careless else 4.8,
                seconds=5.0,
                check="gold",
                accept_low=3.0,
                accept_high=5.0,
            )
        )
    return rows


def test_csv_exclusion_drops_the_careless_participant_and_says_why(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    pd.DataFrame(_rows(np.random.default_rng(0))).to_csv(path, index=False)
    out = tmp_path / "mos"
    code = main([str(path), "--dimensions", "consistency", "--exclude", "--out", str(out)])
    assert code == 0
    qc = pd.read_csv(out / "participants_qc.csv").set_index("participant")
    assert qc["excluded"].tolist() == [True] + [False] * 7
    reasons = qc.loc["p0", "reasons"]
    assert "gold" in reasons and "faster than" in reasons and "agreement" in reasons
    assert "excluded 1 of 8" in capsys.readouterr().out
    mos = pd.read_csv(out / "mos.csv")
    assert "gold-same" not in set(mos["stimulus"])  # check trials never enter a MOS
    assert (mos["consistency_n"] <= 7).all()
    viewers = pd.read_csv(out / "viewers.csv")
    assert "p0" not in set(viewers["viewer"])


def test_csv_exclusion_matches_a_participant_whose_code_the_export_escaped(tmp_path):
    """A code that starts like a formula is written as ``'+v0000``; QC must read the same
    participant as the ratings do, or a flagged one is never excluded and enters the MOS."""
    rows = pd.DataFrame(_rows(np.random.default_rng(0)))
    rows["viewer"] = rows["viewer"].replace({"p0": "+v0000", "p1": "=p1"}).map(neutralise)
    assert rows["viewer"].iloc[0] == "'+v0000"
    path = tmp_path / "ratings.csv"
    rows.to_csv(path, index=False)
    out = tmp_path / "mos"
    code = main([str(path), "--dimensions", "consistency", "--exclude", "--out", str(out)])
    assert code == 0
    qc = pd.read_csv(out / "participants_qc.csv", dtype={"participant": str})
    qc = qc.set_index("participant")
    assert sorted(qc.index) == sorted(["+v0000", "=p1", *CAREFUL[1:]])
    assert qc.loc["+v0000", "excluded"] and "gold" in qc.loc["+v0000", "reasons"]
    assert not qc.loc["=p1", "excluded"]
    viewers = pd.read_csv(out / "viewers.csv", dtype={"viewer": str})
    assert "+v0000" not in set(viewers["viewer"]) and "=p1" in set(viewers["viewer"])
    assert (pd.read_csv(out / "mos.csv")["consistency_n"] == 7).all()


def test_rules_are_configurable_and_off_disables_one(tmp_path):
    path = tmp_path / "ratings.csv"
    pd.DataFrame(_rows(np.random.default_rng(1))).to_csv(path, index=False)
    out = tmp_path / "mos"
    args = [str(path), "--dimensions", "consistency", "--exclude", "--out", str(out), "--quiet"]
    off = ["--max-gold-failures", "off", "--max-fast-share", "off", "--min-agreement", "off"]
    off += ["--min-time-spread", "off"]
    assert main(args + off) == 0
    assert not pd.read_csv(out / "participants_qc.csv")["excluded"].any()
    with pytest.raises(SystemExit):
        main(args + ["--min-agreement", "high"])


def test_a_whole_number_beyond_floats_in_a_qc_column_is_read_not_a_traceback(tmp_path):
    """Arrow refuses to turn 2^53 + 1 into a float by default; QC's numbers are floats, and a
    response time that large is simply very slow (found by a black-box review)."""
    rows = pd.DataFrame(_rows(np.random.default_rng(1)))
    rows["seconds"] = rows["seconds"].round().astype(np.int64)
    rows.loc[rows.index[rows["viewer"] == "p3"][0], "seconds"] = 2**53 + 1
    path = tmp_path / "ratings.csv"
    rows.to_csv(path, index=False)
    out = tmp_path / "mos"
    assert main([str(path), "--dimensions", "consistency", "--exclude", "--out", str(out)]) == 0
    qc = pd.read_csv(out / "participants_qc.csv").set_index("participant")
    assert qc.loc["p3", "fast_trials"] == 0 and not qc.loc["p3", "excluded"]
    assert qc.loc["p0", "excluded"]  # the careless one still is


def test_excluding_everyone_is_a_clear_input_error(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    pd.DataFrame(_rows(np.random.default_rng(2))).to_csv(path, index=False)
    args = [str(path), "--dimensions", "consistency", "--exclude", "--out", str(tmp_path / "m")]
    assert main(args + ["--min-trials", "1000"]) == 2
    assert "exclude every participant" in capsys.readouterr().err


def test_unknown_check_kind_is_refused(tmp_path, capsys):
    rows = _rows(np.random.default_rng(3))
    rows[0]["check"] = "trap"
    path = tmp_path / "ratings.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert main([str(path), "--dimensions", "consistency", "--exclude", "--quiet"]) == 2
    assert "unknown check kind" in capsys.readouterr().err


def test_database_checks_and_timing_come_from_the_trials(tmp_path):
    """Gold trials stored as trials with a check kind; seconds from serving to submission."""
    db_path = tmp_path / "study.db"
    engine = create_study(db_path)
    rng = np.random.default_rng(4)
    start = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    truth = np.linspace(0.5, 4.5, N_IMAGES)
    with engine.begin() as db:
        db.execute(
            Stimulus.__table__.insert(),
            [
                {"id": i + 1, "key": f"img{i:02d}", "distorted_path": "d", "reference_path": "r"}
                for i in range(N_IMAGES + 1)
            ],
        )
        gold = N_IMAGES + 1
        for v, person in enumerate(["p0", *CAREFUL], start=1):
            careless = person == "p0"
            db.execute(Viewer.__table__.insert(), [{"id": v, "code": person, "created_at": start}])
            db.execute(
                Session.__table__.insert(),
                [{"id": v, "viewer_id": v, "started_at": start, "closed_reason": "completed"}],
            )
            trials, ratings = [], []
            for position in range(N_IMAGES + 1):
                is_gold = position == N_IMAGES
                stimulus = gold if is_gold else position + 1
                if is_gold:
                    score = 0.5 if careless else 4.9
                elif careless:
                    score = rng.uniform(0, 5)
                else:
                    score = truth[position] + 0.3 * rng.standard_normal()
                served = start + dt.timedelta(seconds=10 * position)
                took = dt.timedelta(seconds=0.6 if careless else 4.0 + position * 7 % 9 / 2)
                trials.append(
                    {
                        "session_id": v,
                        "position": position,
                        "stimulus_id": stimulus,
                        "served_at": served,
                        "check_kind": "gold" if is_gold else None,
                        "accept_low": 3.0 if is_gold else None,
                        "accept_high": 5.0 if is_gold else None,
                    }
                )
                ratings.append(
                    {
                        "session_id": v,
                        "stimulus_id": stimulus,
                        "position": position,
                        "consistency": float(np.clip(round(score, 1), 0, 5)),
                        "perception": float(np.clip(round(score, 1), 0, 5)),
                        "submitted_at": served + took,
                        "check_kind": "gold" if is_gold else None,
                    }
                )
            db.execute(Trial.__table__.insert(), trials)
            db.execute(Rating.__table__.insert(), ratings)
    engine.dispose()
    out = tmp_path / "mos"
    assert main([str(db_path), "--exclude", "--out", str(out), "--no-report", "--quiet"]) == 0
    qc = pd.read_csv(out / "participants_qc.csv").set_index("participant")
    assert qc.loc["p0", "excluded"] and not qc.drop(index="p0")["excluded"].any()
    assert qc.loc["p0", "gold_failures"] == 1 and qc.loc["p0", "fast_trials"] == N_IMAGES
    assert (qc["gold_trials"] == 1).all() and (qc["trials"] == N_IMAGES).all()
    mos = pd.read_csv(out / "mos.csv")
    assert len(mos) == N_IMAGES  # the gold pair is not a stimulus of the MOS
    # Without --exclude the checks still stay out of the MOS.
    assert main([str(db_path), "--out", str(tmp_path / "all"), "--no-report", "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "all" / "mos.csv")) == N_IMAGES


def test_a_study_from_before_schema_4_is_read_without_checks(tmp_path):
    """mos reads an older study as it is (read-only, no upgrade): no check columns, no checks."""
    import sqlite3

    from mos.simulate import SimulationConfig, simulate, write_study

    db_path = tmp_path / "old.db"
    write_study(simulate(SimulationConfig(stimuli=40, viewers=6, bad_viewers=1)), db_path)
    with sqlite3.connect(db_path) as db:
        for table, column in [
            ("ratings", "check_kind"),
            ("trials", "check_kind"),
            ("trials", "accept_low"),
            ("trials", "accept_high"),
        ]:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    out = tmp_path / "mos"
    rules = ["--max-fast-share", "off"]  # the simulated study has no serving times
    assert (
        main([str(db_path), "--exclude", *rules, "--out", str(out), "--no-report", "--quiet"]) == 0
    )
    qc = pd.read_csv(out / "participants_qc.csv")
    assert len(qc) == 6 and (qc["gold_trials"] == 0).all()
    assert len(pd.read_csv(out / "mos.csv")) == 40


def _study_with_mixed_times(path, n_viewers: int = 6, n_images: int = 40):
    """A study whose stored times come in every form a SQLite study may hold (with and without
    fractions and zone), with checks, slider counts and missing values in some ranges only."""
    import sqlite3

    engine = create_study(path)
    rng = np.random.default_rng(7)
    start = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    with engine.begin() as db:
        db.execute(
            Stimulus.__table__.insert(),
            [
                {"id": i + 1, "key": f"img{i:02d}", "distorted_path": "d", "reference_path": "r"}
                for i in range(n_images)
            ],
        )
        for v in range(1, n_viewers + 1):
            db.execute(Viewer.__table__.insert(), [{"id": v, "code": f"p{v}", "created_at": start}])
            db.execute(Session.__table__.insert(), [{"id": v, "viewer_id": v, "started_at": start}])
            trials, ratings = [], []
            for position in range(n_images):
                served = start + dt.timedelta(seconds=10 * position + v)
                check = "attention" if position == 3 else ("gold" if position == 5 else None)
                trials.append(
                    dict(session_id=v, position=position, stimulus_id=position + 1,
                         served_at=served, check_kind=check,
                         accept_low=1.0 if check else None, accept_high=2.0 if check else None)
                )  # fmt: skip
                late = v > n_viewers // 2  # the later viewers' ratings record the page's input
                ratings.append(
                    dict(session_id=v, stimulus_id=position + 1, position=position,
                         consistency=round(float(rng.uniform(0, 5)), 1), perception=1.0,
                         submitted_at=served + dt.timedelta(seconds=float(rng.uniform(1, 6))),
                         shown_at=served + dt.timedelta(seconds=0.6) if late else None,
                         first_input_at=served + dt.timedelta(seconds=1.25) if late else None,
                         slider_events=int(rng.integers(0, 4)) if late else None,
                         check_kind=check)
                )  # fmt: skip
            db.execute(Trial.__table__.insert(), trials)
            db.execute(Rating.__table__.insert(), ratings)
    engine.dispose()
    with sqlite3.connect(path) as db:  # the other stored forms: with a zone, without fractions
        db.execute(
            "UPDATE ratings SET submitted_at = replace(submitted_at, ' ', 'T') || '+00:00' "
            "WHERE session_id = 2"
        )
        db.execute("UPDATE trials SET served_at = substr(served_at, 1, 19) WHERE session_id = 3")


@pytest.mark.parametrize("ranges_of", [1_000_000, 37])
def test_database_trials_fast_path_equals_the_apps_reading(tmp_path, monkeypatch, ranges_of):
    """mos.compute --exclude reads a SQLite study's trials through Arrow, range by range; the
    signals equal those of the app's own reading (SQLAlchemy rows, pandas time parsing)."""
    import mos.study_sql
    from mos.qc import load_trials, qc_signals

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    reference = _apps_signals(path)
    monkeypatch.setattr(pd, "read_sql", _no_slow_path)
    monkeypatch.setattr(
        mos.study_sql, "READ_CHUNK", ranges_of
    )  # several ranges, some without input
    fast = qc_signals(load_trials(path, "consistency"))
    pd.testing.assert_frame_equal(fast, reference, check_dtype=False)
    assert fast["slider_events"].notna().sum() == 3 and (fast["attention_trials"] == 1).all()
    assert (
        np.isfinite(fast["time_spread"]).all()
        and np.isfinite(fast["first_input_median"]).sum() == 3
    )


@pytest.mark.parametrize("trial_rows", [True, False])
def test_one_reading_gives_the_ratings_and_the_trials(tmp_path, monkeypatch, trial_rows):
    """--exclude reads a SQLite study once: the ratings read with QC's trials are the ratings read
    alone, and the trials' signals are the app's — also for a study without trial rows (ratings
    imported from elsewhere), whose times, checks and ranges are then not read at all."""
    import sqlite3

    import mos.study_sql
    from mos.qc import load_trials, qc_signals
    from mos.ratings import load_study

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    if not trial_rows:
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM trials")
    reference = _apps_signals(path)
    monkeypatch.setattr(pd, "read_sql", _no_slow_path)
    monkeypatch.setattr(mos.study_sql, "READ_CHUNK", 37)
    alone, nothing = load_study(path)
    together, trials = load_study(path, trials_of="consistency")
    assert nothing is None and trials is not None
    for field in ("viewer", "stimulus", "session", "nsfw", "viewer_ids", "stimulus_ids"):
        np.testing.assert_array_equal(getattr(together, field), getattr(alone, field))
    for name, scores in alone.scores.items():
        np.testing.assert_array_equal(together.scores[name], scores)
    assert together.n_sessions == alone.n_sessions and len(alone) == 6 * 38  # checks left out
    signals = qc_signals(load_trials(path, "consistency", trials))
    pd.testing.assert_frame_equal(signals, reference, check_dtype=False)
    known = {"seconds", "check", "accept_low", "accept_high"} & set(trials.column_names)
    assert known == (known if trial_rows else set()) and (len(known) == 4) == trial_rows
    # Read in several ranges, given in one piece: QC reads the columns as they are, no copy.
    assert {trials.column(name).num_chunks for name in trials.column_names} == {1}
    frame = load_trials(path, "consistency", trials)
    for name in ("low", "high") if trial_rows else ():  # known for 2 trials in 40: only those held
        assert isinstance(frame[name].dtype, pd.SparseDtype)


def test_ranges_without_rating_checks_or_input_read_lean_and_equal(tmp_path, monkeypatch):
    """A range whose ratings hold no check kind and no interaction count (an imported half of a
    study) is read without those columns: the same ratings and signals as reading them all."""
    import sqlite3

    import mos.ratings
    import mos.study_sql
    from mos.qc import load_trials, qc_signals
    from mos.ratings import load_study

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    with sqlite3.connect(path) as db:  # the first three viewers: no check kind on the rating
        db.execute("UPDATE ratings SET check_kind = NULL WHERE session_id <= 3")
        # a warm-up that holds input does not make its range's test ratings hold any
        db.execute("UPDATE ratings SET is_warmup = 1, slider_events = 2 WHERE id = 1")
    monkeypatch.setattr(mos.study_sql, "READ_CHUNK", 37)
    monkeypatch.setattr(pd, "read_sql", _no_slow_path)
    lean = []
    query = mos.ratings._ratings_query

    def spy(*args, **kwargs):
        if kwargs.get("rating_qc") is False:
            lean.append(args)
        return query(*args, **kwargs)

    monkeypatch.setattr(mos.ratings, "_ratings_query", spy)
    fetch = mos.ratings.fetch_sqlite_arrow
    lean_ranges = []

    def counting(path_, sql, dialect):
        if "slider_events" not in str(sql) and "ratings.id BETWEEN" in str(sql):
            lean_ranges.append(str(sql))
        return fetch(path_, sql, dialect)

    monkeypatch.setattr(mos.ratings, "fetch_sqlite_arrow", counting)
    table, trials = load_study(path, trials_of="consistency")
    signals = qc_signals(load_trials(path, "consistency", trials))
    assert lean and 2 <= len(lean_ranges) < 7  # the first ranges lean, the later ones not
    monkeypatch.setattr(mos.ratings, "_rating_qc_probe", lambda *args: None)
    full_table, full_trials = load_study(path, trials_of="consistency")
    for field in ("viewer", "stimulus", "session", "nsfw"):
        np.testing.assert_array_equal(getattr(table, field), getattr(full_table, field))
    np.testing.assert_array_equal(table.scores["consistency"], full_table.scores["consistency"])
    pd.testing.assert_frame_equal(
        signals, qc_signals(load_trials(path, "consistency", full_trials))
    )
    monkeypatch.undo()
    pd.testing.assert_frame_equal(signals, _apps_signals(path), check_dtype=False)


@pytest.mark.parametrize("gap", [1 << 40, 1_000])
def test_rating_ids_far_apart_are_read_in_ranges_of_ratings(tmp_path, monkeypatch, gap):
    """Ids a hand edit or an import spread over 2⁴⁰ are stepped through (ranges of so many
    ratings, not of so many ids: the run used to hang cutting the span into a million empty
    ranges); the ratings and trials read equal those of the same study with compact ids."""
    import shutil
    import sqlite3

    import mos.study_sql
    from mos.ratings import load_study

    compact, spread = tmp_path / "compact.db", tmp_path / "spread.db"
    _study_with_mixed_times(compact)
    shutil.copy(compact, spread)
    with sqlite3.connect(spread) as db:
        db.execute(f"UPDATE ratings SET id = id + {gap} WHERE id % 3 = 0")
    monkeypatch.setattr(mos.study_sql, "READ_CHUNK", 37)
    cut_evenly = []
    even = mos.study_sql.even_ranges
    monkeypatch.setattr(
        mos.study_sql, "even_ranges", lambda *args: cut_evenly.append(args) or even(*args)
    )
    table, trials = load_study(spread, trials_of="consistency")
    assert bool(cut_evenly) == (gap == 1_000)  # far apart: stepped through, not cut evenly
    expected, expected_trials = load_study(compact, trials_of="consistency")

    def ratings(t):
        return pd.DataFrame(
            {
                "viewer": t.viewer_ids[t.viewer],
                "stimulus": t.stimulus_ids[t.stimulus],
                "score": t.scores["consistency"],
            }  # fmt: skip
        ).sort_values(["viewer", "stimulus"], ignore_index=True)

    pd.testing.assert_frame_equal(ratings(table), ratings(expected))
    assert trials.num_rows == expected_trials.num_rows == 240


@pytest.mark.parametrize(
    "edit, packed",
    [("", True),
     ("UPDATE stimuli SET id = id + 1099511627776; UPDATE ratings SET stimulus_id = stimulus_id "
      "+ 1099511627776; UPDATE trials SET stimulus_id = stimulus_id + 1099511627776", True),
     ("UPDATE sessions SET id = -id; UPDATE ratings SET session_id = -session_id; "
      "UPDATE trials SET session_id = -session_id", False),
     ("UPDATE sessions SET id = id + 4294967296; UPDATE ratings SET session_id = session_id + "
      "4294967296; UPDATE stimuli SET id = id + 1073741824; UPDATE ratings SET stimulus_id = "
      "stimulus_id + 1073741824", False),  # 33 + 31 + 1 bits: no room for the key
     ("DROP INDEX ix_ratings_stimulus_id", False)],
)  # fmt: skip
def test_ids_read_as_one_value_equal_the_ids_read_apart(tmp_path, monkeypatch, edit, packed):
    """A SQLite study's sitting, stimulus and NSFW flag are read as one integer where the ids
    allow it: the ratings and trials equal those read column by column, with ids near the
    key's limits, and where packing is refused (negative ids, ids too large together, an index
    missing)."""
    import sqlite3

    import mos.ratings
    import mos.study_sql
    from mos.ratings import load_study
    from mos.study_sql import PackedIds

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("UPDATE ratings SET nsfw = 1 WHERE id % 7 = 0")
        db.executescript(edit)
    monkeypatch.setattr(mos.study_sql, "READ_CHUNK", 37)
    monkeypatch.setattr(pd, "read_sql", _no_slow_path)
    unpacked = []  # per range read packed: whether its key was all integers
    unpack = PackedIds.unpack

    def spy(self, raw):
        result = unpack(self, raw)
        unpacked.append(result is not None)
        return result

    monkeypatch.setattr(PackedIds, "unpack", spy)
    table, trials = load_study(path, trials_of="consistency")
    assert bool(unpacked) == packed and all(unpacked)
    monkeypatch.setattr(mos.ratings.PackedIds, "of_study", lambda engine: None)
    apart, apart_trials = load_study(path, trials_of="consistency")
    for field in ("viewer", "stimulus", "session", "nsfw", "viewer_ids", "stimulus_ids"):
        np.testing.assert_array_equal(getattr(table, field), getattr(apart, field))
    np.testing.assert_array_equal(table.scores["consistency"], apart.scores["consistency"])
    pd.testing.assert_frame_equal(trials.to_pandas(), apart_trials.to_pandas())
    assert table.nsfw.sum() == apart.nsfw.sum() > 0


def test_a_fractional_id_is_refused_read_packed_or_not(tmp_path, monkeypatch):
    """An id stored by hand as a fraction makes its range's key a REAL: that range is read again
    column by column, where the id is refused — the same one-line error as without packing
    (a cast made 7.5 the stimulus 7)."""
    import sqlite3

    import mos.ratings
    from mos.study_sql import PackedIds

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ratings SET stimulus_id = 7.5 WHERE id = 50")
    unpacked = []
    unpack = PackedIds.unpack
    monkeypatch.setattr(
        PackedIds, "unpack", lambda self, raw: unpacked.append(1) or unpack(self, raw)
    )
    errors = []
    for packing in (True, False):
        if not packing:
            monkeypatch.setattr(mos.ratings.PackedIds, "of_study", lambda engine: None)
        with pytest.raises(InputError) as error:
            mos.ratings.load_study(path, trials_of="consistency")
        errors.append(str(error.value))
    assert unpacked and errors[0] == errors[1]
    assert "stimulus: 1 stored id(s) are empty or not whole numbers (first: 7.5)" in errors[0]


def test_ids_are_whole_numbers():
    """Integers pass as they are, whole floats (a column with an empty cell comes as floats)
    become integers, and an empty or fractional id is named."""
    from mos.study_sql import whole_ids

    ints = np.array([3, 1 << 40])
    assert whole_ids(ints, "id") is ints
    np.testing.assert_array_equal(whole_ids(np.array([2.0, 5.0]), "id"), [2, 5])
    cases = (
        ([1.0, np.nan], "empty"),
        ([1.0, 3.5, 0.5], "3.5"),
        ([np.inf], "inf"),
        ([2.0**63], "9.2"),
    )
    for values, first in cases:
        with pytest.raises(ValueError, match=rf"session: {len(values) - 1 or 1} stored id"):
            whole_ids(np.array(values), "session")
        with pytest.raises(ValueError, match=rf"\(first: {re.escape(first)}"):
            whole_ids(np.array(values), "session")


@pytest.mark.parametrize(
    "edit, packing",
    [("", 6),
     ("UPDATE ratings SET stimulus_id = 'img07' WHERE id = 9", None),  # text: sorts last
     ("UPDATE ratings SET nsfw = 'yes' WHERE id = 9", None),  # the unpacked reading refuses it
     ("UPDATE ratings SET nsfw = '' WHERE id = 9", None),
     ("UPDATE ratings SET nsfw = x'00' WHERE id = 9", None),
     ("UPDATE ratings SET nsfw = 0.5 WHERE id = 9", 6),
     ("DROP INDEX ix_ratings_nsfw", None),
     # one sitting numbered 0: it still takes a bit, so the multiplier stays an integer
     ("UPDATE ratings SET session_id = 0, position = id, stimulus_id = stimulus_id + (1 << 60)", 61),
     ("UPDATE ratings SET session_id = 0, position = id, stimulus_id = stimulus_id + (1 << 61)", None)],
)  # fmt: skip
def test_packing_is_refused_where_a_value_could_not_come_back(tmp_path, edit, packing):
    """The ids and flags a hand edit may leave (text, a blob) are seen through the indexes'
    bounds, and the key never needs more than 63 bits, its multiplier included."""
    import sqlite3

    from mos.study_sql import PackedIds
    from studydb import make_engine

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = OFF")
        db.executescript(edit)
    engine = make_engine(path, read_only=True)
    expected = None if packing is None else PackedIds(stimulus_bits=packing)
    assert PackedIds.of_study(engine) == expected
    engine.dispose()


def test_a_database_score_is_a_score_column(tmp_path, capsys):
    """Review: --dimensions nsfw (any ratings column) was taken as a score by one reading and
    refused with Arrow's message by the other; only the study's score columns are scores."""
    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    for source in (str(path), f"sqlite:///{path}"):
        for dimensions in ("nsfw", "consistency,session_id"):
            args = [source, "--dimensions", dimensions, "--out", str(tmp_path / "o"), "--quiet"]
            assert main(args) == 2
            error = capsys.readouterr().err.strip()
            assert "unknown score column" in error and len(error.splitlines()) == 1, error


def _apps_signals(path) -> pd.DataFrame:
    """QC's signals of a study as the app reads its trials (SQLAlchemy rows, pandas times)."""
    from sqlalchemy import select

    from mos.qc import qc_signals, trials_frame
    from mos.study_sql import trials_query
    from studydb import make_engine

    engine = make_engine(path, read_only=True)
    with engine.connect() as connection:
        raw = pd.read_sql(select(trials_query().subquery()), connection)
    engine.dispose()
    return qc_signals(trials_frame(raw))


def _no_slow_path(*args, **kwargs):
    raise AssertionError("the slow path read the study")


@pytest.mark.parametrize(
    "stored, rows",
    [("'yesterday'", "id = 5"), ("1772355600", "id = 5"), ("''", "id = 5"),
     # every time a number (the fast reading took them for microseconds since 1970)
     ("CAST(strftime('%s', submitted_at) AS INTEGER)", "1"),
     ("julianday(submitted_at)", "1")],
)  # fmt: skip
def test_a_stored_time_that_is_no_time_is_a_clear_input_error(tmp_path, capsys, stored, rows):
    """Review: one hand-edited time sent --exclude to a traceback (exit 1) through the slower
    reading the fast one falls back to; a whole column of numbers was read as times."""
    import sqlite3

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE ratings SET submitted_at = {stored} WHERE {rows}")
    args = [str(path), "--exclude", "--out", str(tmp_path / "o"), "--quiet", "--no-report"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("mos.compute: error:") and "stored time" in error
    assert len(error.splitlines()) == 1


def test_an_empty_viewer_or_stimulus_cell_is_an_input_error(tmp_path, capsys):
    """Review: an empty viewer cell became a participant named ''."""
    for column in ("viewer", "stimulus"):
        frame = pd.DataFrame(_rows(np.random.default_rng(1)))
        frame.loc[3, column] = ""
        csv = tmp_path / f"{column}.csv"
        frame.to_csv(csv, index=False)
        for extra in ([], ["--exclude"]):
            args = [str(csv), *extra, "--dimensions", "consistency", "--out", str(tmp_path / "o")]
            assert main([*args, "--quiet"]) == 2
            assert f"1 rating(s) have an empty {column}" in capsys.readouterr().err


def test_the_trials_read_after_a_failed_fast_read_keep_the_score_range(tmp_path, capsys):
    """Review: when the driver cannot type the study's columns (here a slider count stored as
    text), QC's trials are read through SQLAlchemy — once, and under the command's own
    --score-range (the fallback read the study again with the default 0–5 and refused it)."""
    import sqlite3

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("UPDATE ratings SET consistency = consistency + 5")  # over 0–5
        db.execute("UPDATE ratings SET slider_events = 'many' WHERE id = 200")
    out = tmp_path / "o"
    args = [str(path), "--exclude", *LENIENT, "--score-range", "0", "10", "--out", str(out),
            "--no-report", "--dimensions", "consistency"]  # fmt: skip
    assert main([*args, "--quiet"]) == 0, capsys.readouterr().err
    assert len(pd.read_csv(out / "participants_qc.csv")) == 6


@pytest.mark.parametrize(
    "edit, message",
    [("UPDATE ratings SET session_id = 99 WHERE id = 7", "1 rating(s) name a sitting"),
     ("UPDATE ratings SET stimulus_id = 999 WHERE id = 7", "1 rating(s) name a stimulus"),
     ("UPDATE ratings SET stimulus_id = -3 WHERE id IN (7, 8)", "2 rating(s) name a stimulus"),
     ("UPDATE ratings SET stimulus_id = 'img07' WHERE id = 7", "cannot read the study"),
     ("UPDATE ratings SET session_id = 'first' WHERE id = 7", "cannot read the study"),
     ("UPDATE ratings SET session_id = -1 WHERE id = 9", "1 rating(s) name a sitting"),
     ("UPDATE sessions SET viewer_id = 77 WHERE id = 2", "sitting(s) name a viewer"),
     # an id stored by hand as a fraction names no row (a cast made 3.5 the sitting 3)
     ("UPDATE ratings SET session_id = 3.5 WHERE id = 9", "not whole numbers (first: 3.5)"),
     ("UPDATE ratings SET stimulus_id = stimulus_id + 0.5 WHERE id IN (9, 10)", "2 stored id"),
     ("UPDATE sessions SET viewer_id = 2.5 WHERE id = 2", "not whole numbers (first: 2.5)"),
     ("UPDATE ratings SET stimulus_id = stimulus_id + 0.25 WHERE id = "
      "(SELECT min(id) FROM ratings WHERE check_kind IS NOT NULL)", "(first: "),  # QC's only
     # a check rating is in no MOS: its sitting was given to whichever participant the look-up
     # table held there (file) or dropped by the query's join (URL); a whole id of 2^63 or more
     # stored as a REAL was cast to -2^63
     ("UPDATE ratings SET session_id = 3.5 WHERE id = "  # the URL's join: no such sitting
      "(SELECT min(id) FROM ratings WHERE check_kind IS NOT NULL)", ("(first: 3.5)", "1 rating(s)")),
     ("UPDATE ratings SET session_id = 99 WHERE id = "
      "(SELECT min(id) FROM ratings WHERE check_kind IS NOT NULL)", "1 rating(s) name a sitting"),
     ("UPDATE ratings SET session_id = 0 WHERE id = "  # inside the look-up table's span
      "(SELECT min(id) FROM ratings WHERE check_kind IS NOT NULL)", "1 rating(s) name a sitting"),
     ("UPDATE ratings SET session_id = 1e20 WHERE id = 9", "(first: 1e+20)"),
     ("UPDATE viewers SET id = 1099511627776 WHERE id = 1; "
      "UPDATE sessions SET viewer_id = 1099511627776 WHERE viewer_id = 1", None),
     ("UPDATE sessions SET id = -3 WHERE id = 3; UPDATE ratings SET session_id = -3 "
      "WHERE session_id = 3; UPDATE trials SET session_id = -3 WHERE session_id = 3", None),
     ("UPDATE stimuli SET id = -5 WHERE id = 5; UPDATE ratings SET stimulus_id = -5 "
      "WHERE stimulus_id = 5; UPDATE trials SET stimulus_id = -5 WHERE stimulus_id = 5", None),
     ("UPDATE stimuli SET id = 1099511627776 WHERE id = 5; UPDATE ratings SET stimulus_id = "
      "1099511627776 WHERE stimulus_id = 5; UPDATE trials SET stimulus_id = 1099511627776 "
      "WHERE stimulus_id = 5", None),
     ("UPDATE ratings SET id = id + 1099511627776 WHERE id > 100", None),
     ("UPDATE sessions SET id = 1099511627776 WHERE id = 1; "
      "UPDATE ratings SET session_id = 1099511627776 WHERE session_id = 1; "
      "UPDATE trials SET session_id = 1099511627776 WHERE session_id = 1", None)],
)  # fmt: skip
def test_a_damaged_study_is_one_line_and_sparse_ids_are_read(tmp_path, capsys, edit, message):
    """Review: a rating naming a missing sitting or stimulus, or a sitting naming a missing
    viewer, was a traceback; an id of 2⁴⁰ asked for a lookup table of a terabyte. Read as a
    file (fast path) and as a URL (SQLAlchemy) alike."""
    import sqlite3

    path = tmp_path / "study.db"
    _study_with_mixed_times(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = OFF")
        db.executescript(edit)
    for source in (str(path), f"sqlite:///{path}"):
        out = tmp_path / "o"
        code = main([source, "--exclude", *LENIENT, "--dimensions", "consistency", "--out",
                     str(out), "--no-report", "--quiet"])  # fmt: skip
        error = capsys.readouterr().err.strip()
        if message is None:
            assert code == 0, error
            assert len(pd.read_csv(out / "participants_qc.csv")) == 6
        else:
            messages = message if isinstance(message, tuple) else (message,)
            assert code == 2 and any(m in error for m in messages), error
            assert len(error.splitlines()) == 1, error


LENIENT = [
    part
    for rule in ("max-gold-failures", "max-attention-failures", "min-agreement",
                 "max-fast-share", "min-time-spread")
    for part in (f"--{rule}", "off")
] + ["--screening", "none"]  # fmt: skip
"""The study of :func:`_study_with_mixed_times` is rated at random: the rules and screening off."""
