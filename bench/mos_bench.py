"""Benchmark of ``python -m mos.compute`` against Netflix sureal on simulated studies.

    python bench/mos_bench.py                 # all sizes (creates bench/out/*.db on first run)
    python bench/mos_bench.py --sizes paper   # just the paper's size
    python bench/mos_bench.py --ratings 10000000   # against plain pandas, CSV and SQLite input

With ``--ratings N`` it compares the whole command (with its report) against the paper's method
written plainly in pandas (``bench/mos_anchor.py``) on one simulated crowd study of about N rating
rows (N / 20 images, 20 viewers per group of 400, N / 4,000 viewers), stored both as a CSV and as a
SQLite study: for each input, with and without ``--exclude``, the anchor and ``mos.compute`` run
in turn in fresh processes, ``--repeat`` times (alternating, so a busy machine slows both alike),
and the table gives each one's median time, largest peak memory, and the anchor/ours time ratio.
``--before PATH`` (another checkout, e.g. a git worktree of an earlier commit) runs that checkout's
``mos.compute`` in turn with this one's too: a before/after on a machine whose speed drifts.
The ``app`` input is the same SQLite study as the app itself would have recorded it (made from
it once, :func:`_as_recorded_by_the_app`): every rating with its trial, its serving, showing,
first-input and submission times and its slider moves, which ``--exclude`` then reads too.

For each size it times the whole command in a fresh process (interpreter start, imports, database
read, computation, CSV and report writing) and reads that process's peak memory (``wait4``); then,
in one process, it times our pipeline and sureal's closest models on the same ratings, already in
memory, for both dimensions:

* z-scoring without screening — sureal ``ZscoringMosModel``;
* BT.500 screening, raw-score MOS — sureal ``SubjrejMosModel``.

Building sureal's dataset object is not timed (it is sureal's input format, not part of its model).
sureal keeps a dense stimuli × viewers array, so it is skipped where that array would not fit in
memory. Prints a Markdown table; the figures in bench/README.md come from it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from mos import pipeline
from mos.estimators import MeanEstimator
from mos.pipeline import MosPipeline
from mos.ratings import load_ratings
from mos.screening import Bt500Screening, NoScreening

ANCHOR = Path(__file__).resolve().with_name("mos_anchor.py")
MOS_ROOT = Path(pipeline.__file__).resolve().parents[1]
"""The checkout whose ``mos`` is measured (``PYTHONPATH=/path/to/main`` measures main's)."""
CASES = ("csv", "csv --exclude", "sqlite", "sqlite --exclude", "app --exclude")

SIZES = {
    # name: (stimuli, viewers, viewers per group or None = all); every rating row holds 2 scores
    "paper": (4_000, 20, None),  # 4,000 images x 20 viewers x 2 dimensions = 160,000 ratings
    "1m": (50_000, 250, 20),  # 1 M rating rows
    "crowd": (500_000, 2_500, 20),  # 10 M rating rows: crowdsourcing size
}
SUREAL_MAX_CELLS = 200_000_000  # stimuli x viewers of sureal's dense float64 array (1.6 GB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES)
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="working folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median kept)")
    parser.add_argument(
        "--ratings",
        type=int,
        help="compare with plain pandas on a study of about this many rating rows instead",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help="with --ratings: comma-separated, of " + ", ".join(CASES),
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="with --ratings: another checkout (a git worktree of an earlier commit) whose "
        "mos.compute runs in turn with this one's, for a before/after in the same run",
    )
    args = parser.parse_args()
    args.out = args.out.resolve()  # the commands run in another folder
    if args.ratings is not None:
        return _against_anchor(args)
    rows = []
    names = args.sizes.split(",")
    for name in names:  # fresh processes first, while this one holds no data
        stimuli, viewers, per_group = SIZES[name]
        db = args.out / name / "study.db"
        if not db.exists():
            _simulate(db, stimuli, viewers, per_group)
        for label, extra in (("no report", ["--no-report"]), ("with report", [])):
            seconds, peak = _time_command(db, extra, args.repeat)
            rows.append((name, f"`mos.compute` ({label})", seconds, peak))
    for name in names:
        table = load_ratings(args.out / name / "study.db")
        for label, ours, theirs in _in_process(table):
            rows.append((name, f"ours in-process: {label}", ours, None))
            rows.append((name, f"sureal in-process: {label}", theirs, None))
        del table
    print("| size | what | seconds | peak memory |")
    print("|---|---|---|---|")
    for name, what, seconds, peak in rows:
        shown = "not run (dense array too large)" if seconds is None else f"{seconds:.2f}"
        memory = "" if peak is None else f"{peak / 2**30:.2f} GiB"
        print(f"| {name} | {what} | {shown} | {memory} |")
    return 0


def _against_anchor(args: argparse.Namespace) -> int:
    """The anchor and mos.compute, alternating, on one study as a CSV and as a database."""
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
    folder = args.out / f"ratings_{args.ratings}"
    inputs = {
        "csv": folder / "ratings.csv",
        "sqlite": folder / "study.db",
        "app": folder / "study_app.db",
    }
    stimuli = max(400, args.ratings // 20)
    viewers = max(40, args.ratings // 4_000)
    kinds = {c.split()[0] for c in cases}
    for kind in sorted(kinds | ({"sqlite"} if "app" in kinds else set())):
        if inputs[kind].exists():
            continue
        if kind == "app":
            _as_recorded_by_the_app(inputs["sqlite"], inputs["app"])
        else:
            _simulate(inputs[kind], stimuli, viewers, 20)
    print(
        f"{args.ratings:,} ratings ({stimuli:,} images, {viewers:,} viewers, 20 per image), "
        f"median of {args.repeat}, load average {os.getloadavg()[0]:.1f} at the start"
    )
    before = " | before | before / ours" if args.before else ""
    print(f"| input | anchor (plain pandas) | `mos.compute` with report | anchor / ours{before} |")
    print("|---|---|---|---|" + ("---|---|" if args.before else ""))
    roots = {"ours": MOS_ROOT, **({"before": args.before.resolve()} if args.before else {})}
    for case in cases:
        kind, *flags = case.split()
        source = inputs[kind]
        runs: dict[str, list[tuple[float, int]]] = {"anchor": [], **{name: [] for name in roots}}
        for repeat in range(args.repeat):
            runs["anchor"].append(
                _run(
                    [sys.executable, str(ANCHOR), str(source), "--out", str(folder / "anchor")]
                    + flags
                )
            )
            # ours and before take turns at running first (right after the anchor's 4 GB)
            for name, root in list(roots.items())[:: -1 if repeat % 2 else 1]:
                command = [sys.executable, "-m", "mos.compute", str(source), "--quiet"]
                runs[name].append(_run([*command, "--out", str(folder / name), *flags], root))
        median = {name: statistics.median(t for t, _ in r) for name, r in runs.items()}
        peak = {name: max(p for _, p in r) / 1e9 for name, r in runs.items()}
        row = (
            f"| {case} | {median['anchor']:.2f} s, {peak['anchor']:.2f} GB | "
            f"{median['ours']:.2f} s, {peak['ours']:.2f} GB | "
            f"{median['anchor'] / median['ours']:.2f}× |"
        )
        if args.before:
            row += (
                f" {median['before']:.2f} s, {peak['before']:.2f} GB | "
                f"{median['before'] / median['ours']:.2f}× |"
            )
        print(row, flush=True)
    return 0


def _run(command: list[str], root: Path = MOS_ROOT) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one fresh process, importing ``mos`` from ``root`` (by
    default the same as this script): it runs in a neutral folder, because ``python -m`` puts the
    working folder first on the path, which would pick the checkout it is started from."""
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=tempfile.gettempdir(), env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss * 1024


def _simulate(db: Path, stimuli: int, viewers: int, per_group: int | None) -> None:
    command = [
        sys.executable,
        "-m",
        "mos.simulate",
        "--out",
        str(db),
        "--stimuli",
        str(stimuli),
        "--viewers",
        str(viewers),
        "--bad-viewers",
        str(max(1, viewers // 50)),
        "--seed",
        "1",
    ]
    if per_group:
        command += ["--viewers-per-group", str(per_group)]
    subprocess.run(command, check=True)


def _as_recorded_by_the_app(study: Path, target: Path) -> None:
    """``study`` (simulated: ratings only, as if imported) copied to ``target`` with what the
    app records beside each rating: its trial (served 2-8 s before the rating is submitted),
    the times it was shown and first moved (0.3-1.5 s later), its slider moves (1-6), a
    sitting's ratings 10 s apart, and a gold check trial at every hundredth place (accepting
    any score: these simulated viewers were never shown one). Times in the app's own form
    (SQLAlchemy's for SQLite, microseconds)."""
    import shutil
    import sqlite3

    partial = target.with_suffix(".partial")
    shutil.copyfile(study, partial)
    time = "strftime('%Y-%m-%d %H:%M:%f', {}, ({}) || ' seconds') || '000'"
    submitted = time.format("'2026-01-05 09:00:00'", "session_id * 5000 + position * 10")
    shown = time.format("submitted_at", "-2 - (abs(random()) % 6000) / 1000.0")
    moved = time.format("shown_at", "0.3 + (abs(random()) % 1200) / 1000.0")
    gold = "position % 100 = 50"
    statements = (
        "PRAGMA journal_mode = OFF",
        f"UPDATE ratings SET submitted_at = {submitted}, slider_events = 1 + abs(random()) % 6",
        f"UPDATE ratings SET shown_at = {shown}",
        f"UPDATE ratings SET first_input_at = {moved}",
        f"UPDATE ratings SET check_kind = 'gold' WHERE {gold}",
        "INSERT INTO trials (session_id, position, stimulus_id, is_warmup, is_repeat, shown_at, "
        "served_at) SELECT session_id, position, stimulus_id, is_warmup, is_repeat, shown_at, "
        "shown_at FROM ratings",
        f"UPDATE trials SET check_kind = 'gold', accept_low = 0, accept_high = 5 WHERE {gold}",
    )
    connection = sqlite3.connect(partial)
    try:
        for statement in statements:
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()
    partial.rename(target)


def _time_command(db: Path, extra: list[str], repeat: int) -> tuple[float, int]:
    """Median wall time and the largest peak RSS (bytes) of ``repeat`` fresh processes."""
    out = db.parent / "mos"
    command = [sys.executable, "-m", "mos.compute", str(db), "--out", str(out), "--quiet", *extra]
    runs = [_run(command) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs), max(p for _, p in runs)


def _in_process(table) -> list[tuple[str, float, float | None]]:
    from sureal.dataset_reader import RawDatasetReader
    from sureal.subjective_model import SubjrejMosModel, ZscoringMosModel

    ours_z = MosPipeline(
        screening=NoScreening(), session_norm=False, estimator=MeanEstimator("normal")
    )
    ours_bt = MosPipeline(screening=Bt500Screening(), session_norm=False, zscore=False)
    fits_sureal = table.n_stimuli * table.n_viewers <= SUREAL_MAX_CELLS
    readers = (
        [RawDatasetReader(_sureal_dataset(table, d)) for d in table.scores] if fits_sureal else []
    )
    results = []
    for label, ours, theirs in (
        ("z-scoring", ours_z, ZscoringMosModel),
        ("BT.500 + MOS", ours_bt, SubjrejMosModel),
    ):
        started = time.perf_counter()
        ours.fit(table)
        ours_seconds = time.perf_counter() - started
        theirs_seconds = None
        if fits_sureal:
            started = time.perf_counter()
            for reader in readers:
                theirs(reader).run_modeling()
            theirs_seconds = time.perf_counter() - started
        results.append((label, ours_seconds, theirs_seconds))
    return results


def _sureal_dataset(table, dimension: str) -> types.SimpleNamespace:
    """sureal's list-of-dicts dataset, one dict of viewer → score per stimulus."""
    order = np.argsort(table.stimulus, kind="stable")
    bounds = np.searchsorted(table.stimulus[order], np.arange(table.n_stimuli + 1))
    viewers = table.viewer_ids[table.viewer[order]]
    scores = table.scores[dimension][order]
    dis_videos = [
        {
            "content_id": 0,
            "asset_id": j,
            "path": str(table.stimulus_ids[j]),
            "os": dict(zip(viewers[a:b], scores[a:b].tolist(), strict=True)),
        }
        for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]
    return types.SimpleNamespace(
        ref_videos=[{"content_id": 0, "content_name": "all", "path": "ref"}], dis_videos=dis_videos
    )


if __name__ == "__main__":
    sys.exit(main())
