"""``python -m mos.compute`` end to end, and its one-line errors (exit code 2) on bad input."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mos.compute import main
from mos.simulate import SimulationConfig, simulate, write_study


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    write_study(simulate(SimulationConfig(stimuli=120, viewers=8, bad_viewers=1)), folder / "s.db")
    return folder / "s.db"


def test_database_to_outputs(study_db, capsys, tmp_path, monkeypatch):
    """With no --out, the outputs land in out/mos/ under the working directory (the repository
    root in every example), never beside the input (from the root, that is the package mos/)."""
    monkeypatch.chdir(tmp_path)
    assert main([str(study_db)]) == 0
    out = tmp_path / "out" / "mos"
    assert not (study_db.parent / "mos").exists()
    mos = pd.read_csv(out / "mos.csv")
    assert list(mos.columns[:11]) == [
        "stimulus",
        *[f"consistency_{c}" for c in ("mos", "z", "std", "ci95", "n")],
        *[f"perception_{c}" for c in ("mos", "z", "std", "ci95", "n")],
    ]
    assert {"nsfw_reports", "model", "mode", "strength", "content_type"} <= set(mos.columns)
    assert len(mos) == 120 and mos["consistency_mos"].between(0, 5).all()
    viewers = pd.read_csv(out / "viewers.csv")
    assert set(viewers.columns) >= {"viewer", "dimension", "srocc", "rejected", "n_ratings"}
    report = (out / "report.md").read_text()
    for figure in ("mos_histograms.png", "screening.png", "ci95.png", "mos_by_model.png"):
        assert figure in report and (out / figure).stat().st_size > 1000
    assert "split-half" in report and "NSFW" in report
    assert f"report: {out.relative_to(tmp_path) / 'report.md'}" in capsys.readouterr().out


def test_csv_input_and_options(tmp_path, study_db):
    csv = tmp_path / "r.csv"
    write_study(simulate(SimulationConfig(stimuli=80, viewers=6, bad_viewers=1)), csv)
    code = main(
        [
            str(csv),
            "--out",
            str(tmp_path / "o"),
            "--screening",
            "bt500",
            "--estimator",
            "p910",
            "--no-zscore",
            "--no-report",
            "--quiet",
        ]
    )
    assert code == 0
    assert not (tmp_path / "o" / "report.md").exists()
    assert pd.read_csv(tmp_path / "o" / "mos.csv")["consistency_z"].isna().all()


def run_error(args, capsys) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mos.compute: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_score_out_of_range(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    csv.write_text("viewer,stimulus,consistency,perception\na,x,3,7\na,y,2,2\n")
    assert "outside 0–5" in run_error([csv], capsys)


def test_nan_score(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    csv.write_text("viewer,stimulus,consistency,perception\na,x,3,\na,y,2,2\n")
    assert "NaN" in run_error([csv], capsys)


@pytest.mark.parametrize("warmup", [False, True])
def test_a_score_column_that_is_no_number_is_named(tmp_path, capsys, warmup):
    """The columns are read on two threads: the error names the first bad column in
    ``--dimensions`` order, with or without warm-up rows to leave out."""
    rows = ["viewer,stimulus,warmup,consistency,perception", "a,w,True,1,x"] if warmup else []
    rows = rows or ["viewer,stimulus,warmup,consistency,perception"]
    csv = tmp_path / "r.csv"
    csv.write_text("\n".join([*rows, "a,x,False,3,bad", "a,y,False,two,2"]) + "\n")
    assert "column 'consistency' is not numeric" in run_error([csv], capsys)
    err = run_error([csv, "--dimensions", "perception,consistency"], capsys)
    assert "column 'perception' is not numeric" in err


@pytest.mark.parametrize(
    "rows, message",
    [(["viewer,stimulus,session,session,consistency,perception", "a,x,1,1,3,3", ",y,1,1,2,2"],
      "column(s) named twice in the header: session"),
     (["viewer,stimulus,consistency,perception,model,model", "a,x,3,3,m,m"], "named twice"),
     (["viewer,stimulus,consistency,perception,nsfw", "a,x,3,3,maybe", "a,y,2,2,false"],
      "column 'nsfw' holds a value that is no flag"),
     (["viewer,stimulus,warmup,consistency,perception,model", "a,x,true,3,3,m", "b,y,true,2,2,n"],
      "no test ratings (every rating is a warm-up or a check trial)"),
     (["viewer,stimulus,check,consistency,perception", "a,x,gold,3,3", "b,y,attention,2,2"],
      "no test ratings")],
)  # fmt: skip
def test_a_csv_without_a_reading_is_one_line(tmp_path, capsys, rows, message):
    """From a black-box review: a header naming a column twice, a flag that is no flag, and a
    CSV of warm-ups and checks only were tracebacks (or a later, unclear error)."""
    csv = tmp_path / "r.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert message in run_error([csv], capsys)


def test_a_flag_in_text_is_read(tmp_path):
    """NSFW flags a CSV holds as text (True/false/1/0 among empty cells) are flags."""
    csv = tmp_path / "r.csv"
    lines = ["viewer,stimulus,consistency,perception,nsfw"]
    lines += [f"v{v},s{s},{(v + s) % 5},{(v * s) % 5},{['True', 'false', '1', '0', ''][s % 5]}"
              for v in range(4) for s in range(6)]  # fmt: skip
    csv.write_text("\n".join(lines) + "\n")
    assert main([str(csv), "--out", str(tmp_path / "o"), "--no-report", "--quiet",
                 "--screening", "none", "--no-zscore"]) == 0  # fmt: skip
    reports = pd.read_csv(tmp_path / "o" / "mos.csv").set_index("stimulus")["nsfw_reports"]
    assert reports.to_dict() == {"s0": 4, "s1": 0, "s2": 4, "s3": 0, "s4": 0, "s5": 4}


def test_metadata_is_one_value_per_stimulus_over_every_slice(monkeypatch):
    """A column is per-stimulus metadata when every rating of an image has its first rating's
    value; the check runs a slice of ratings at a time, so a difference in a later slice, or in
    the ratings left after the warm-ups, must still be seen."""
    from mos import ratings

    stimulus = np.array([0, 1, 0, 2, 1, 2, 0])
    first_rows = np.array([0, 1, 3])
    same = np.array([5, 7, 5, 9, 7, 9, 5])
    for step in (1, 2, 3, 100):
        assert ratings._one_per_stimulus(same, None, first_rows, stimulus, step)
        late = same.copy()
        late[6] = 6  # the last rating of image 0 differs
        assert not ratings._one_per_stimulus(late, None, first_rows, stimulus, step)
        # rows taken out of a longer column (a warm-up at row 6 left out): 99 differs if kept
        column = np.concatenate([same[:6], [1], same[6:], [99]])
        rows = np.array([0, 1, 2, 3, 4, 5, 7])
        assert ratings._one_per_stimulus(column, rows, first_rows, stimulus, step)
        assert not ratings._one_per_stimulus(
            column, np.r_[rows[:-1], 8], first_rows, stimulus, step
        )


def test_unknown_column(tmp_path, study_db, capsys):
    csv = tmp_path / "r.csv"
    csv.write_text("viewer,stimulus,score\na,x,3\n")
    assert "no column 'consistency'" in run_error([csv], capsys)
    assert "unknown score column 'quality'" in run_error(
        [study_db, "--dimensions", "quality"], capsys
    )


def test_missing_file_and_folder(tmp_path, capsys):
    assert "no such file" in run_error([tmp_path / "nope.db"], capsys)
    assert "is a folder" in run_error([tmp_path], capsys)


def test_foreign_and_empty_databases(tmp_path, capsys):
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE things (id INTEGER)")
    assert "not a cmc-lab study database" in run_error([foreign], capsys)
    from studydb import create_study

    create_study(tmp_path / "empty.db").dispose()
    assert "no submitted ratings" in run_error([tmp_path / "empty.db"], capsys)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    assert "error" in run_error([garbage], capsys)


def test_viewer_who_cannot_be_zscored(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    csv.write_text(
        "viewer,stimulus,consistency,perception\n"
        "a,x,3,3\na,y,2,4\nb,x,1,1\nb,y,4,2\nlazy,x,2,2\nlazy,y,2,3\n"
    )
    message = run_error([csv, "--screening", "none"], capsys)
    assert "cannot z-score viewer(s) lazy" in message


def test_help_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "mos.compute", "--help"], capture_output=True, text=True, check=True
    )
    assert "--screening" in done.stdout and "SRoCC" in done.stdout


def test_the_module_leaves_with_its_output_flushed_and_its_status(study_db, tmp_path):
    """``python -m mos.compute`` ends without the interpreter's teardown (``_leave``): what it
    printed into a pipe still arrives, the files are whole, and a bad input still exits 2."""
    out = tmp_path / "out"
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as in a shell
    done = subprocess.run(
        [sys.executable, "-m", "mos.compute", str(study_db), "--out", str(out), "--exclude"],
        capture_output=True,
        text=True,
        env=buffered,
    )
    assert done.returncode == 0, done.stderr
    assert "quality control: excluded" in done.stdout and done.stdout.endswith("report.md\n")
    assert len(pd.read_csv(out / "mos.csv")) == 120
    assert (out / "report.md").read_text().endswith("\n")
    bad = subprocess.run(
        [sys.executable, "-m", "mos.compute", str(tmp_path / "none.csv"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=buffered,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("mos.compute: error: ")


@pytest.mark.parametrize("closed", [1, 2])
@pytest.mark.parametrize("report", [True, False])
def test_a_closed_standard_stream_changes_no_status(study_db, tmp_path, closed, report):
    """Started with stdout or stderr closed (a daemon, ``>&-``): the outputs are written, the
    status is 0 — or 2 for a bad input — and no traceback is printed on the other stream."""
    out = tmp_path / "out"
    flags = [] if report else ["--no-report"]

    def run(source):
        return subprocess.run(
            [sys.executable, "-m", "mos.compute", str(source), "--out", str(out), *flags],
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.close(closed),
        )

    done = run(study_db)
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr
    assert (out / "mos.csv").exists() and (out / "report.md").exists() == report
    bad = run(tmp_path / "none.csv")
    assert bad.returncode == 2 and "Traceback" not in bad.stdout + bad.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_output_that_cannot_be_flushed_is_reported_as_python_does(study_db, tmp_path):
    """A full disk behind stdout: the files are written, and the exit is Python's own (120, the
    reason on stderr), not a silent one."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "mos.compute", str(study_db), "--out", str(tmp_path / "o"),
             "--no-report"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )  # fmt: skip
    assert done.returncode == 120 and "No space left on device" in done.stderr
    assert len(pd.read_csv(tmp_path / "o" / "mos.csv")) == 120


def test_mos_stage_never_imports_flask(study_db, tmp_path):
    code = (
        "import sys, mos.compute as c; "
        f"c.main([{str(study_db)!r}, '--out', {str(tmp_path / 'x')!r}, '--quiet']); "
        "assert 'flask' not in sys.modules, 'mos imported flask'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "module, args",
    [
        ("mos.simulate", []),
        ("annotate.__main__", []),
        ("annotate.__main__", ["serve"]),
        ("generate.__main__", ["run"]),
        ("train_iqa.__main__", []),
        ("train_iqa.validate", []),
        ("train_iqa.leaderboard", []),
    ],
)
def test_every_command_explains_itself(module, args, capsys):
    import importlib

    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main([*args, "--help"])
    assert done.value.code == 0
    assert "usage: python -m" in capsys.readouterr().out
