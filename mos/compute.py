"""``python -m mos.compute INPUT``: raw ratings in, ``mos.csv`` + ``viewers.csv`` + report out."""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # A command-line run makes few reference cycles (see main()): without the cyclic collector
    # from here on, the imports below take ~0.15 s less, on the one core a run starts on.
    gc.disable()

import argparse
import ctypes
import ctypes.util
import importlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import pyarrow as pa
import pyarrow.csv as pacsv

from cmc_common.help import HelpFormatter
from mos.estimators import MeanEstimator, P910Estimator
from mos.pipeline import MosPipeline, StudyResult
from mos.qc import ExclusionRules, exclude_participants, load_trials
from mos.ratings import (
    DEFAULT_DIMENSIONS,
    SCORE_MAX,
    SCORE_MIN,
    InputError,
    first_line,
    load_study,
)
from mos.scale import SCALES
from mos.screening import (
    SCREENINGS,
    Bt500Screening,
    NoScreening,
    Screening,
    SroccScreening,
    loo_note,
)

EXIT_INPUT_ERROR = 2
DEFAULT_OUT = Path("out/mos")
"""Relative to the working directory: never beside the input, which from the repository root
would be the source package ``mos/`` itself; ``out/`` is where every stage's examples write."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code (0, or 2 for bad input)."""
    args = build_parser().parse_args(argv)
    _tune_malloc()
    # One short run that makes few reference cycles: the cyclic collector would only walk the
    # objects of the imports and of the figures, again and again (~0.3 s at 10 M ratings).
    gc.disable()
    try:
        started = time.perf_counter()
        report = run(args)
    except InputError as error:
        print(f"mos.compute: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    finally:
        gc.enable()
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.2f} s")
        if report is not None:
            print(f"report: {report}")
    return 0


def _tune_malloc(threshold: int = 4 << 20, kept: int = 8 << 20) -> None:
    """Give every block of ``threshold`` bytes or more its own mapping, and keep up to ``kept``
    bytes freed at the top of a heap for the next blocks (glibc; elsewhere nothing).

    The study is read in ranges on several threads; glibc otherwise raises its mapping threshold
    as blocks are freed and keeps the arrays of each range (a few MB each) in per-thread arenas
    that it does not give back, which at 10 M ratings held ~0.4 GB beside the computation. The
    smaller blocks are reused instead: the fit's span-wise temporaries (2 MB each, a few alive at
    once) were otherwise handed back to the system as each was freed (glibc trims a heap's top
    beyond 128 kB) and faulted in again, page by page, for the next span — 200,000 page faults,
    a third of a run's, at 10 M ratings.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        libc.mallopt(M_TRIM_THRESHOLD, kept)
    except (OSError, AttributeError):
        pass


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mos.compute",
        description=(
            "Compute the Mean Opinion Score of every stimulus from raw ratings, the CMC-Bench way "
            "(A.2): SRoCC viewer screening, per-session normalization (eq. 1), per-viewer "
            "z-scoring (eq. 2), mean over the kept viewers mapped onto 0-5. Writes mos.csv, "
            "viewers.csv and report.md (with PNG figures) into --out."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "input",
        help="the study database (a SQLite file such as instance/ratings.db, or any SQLAlchemy URL "
        "such as postgresql://…) or a CSV of raw ratings with columns viewer,stimulus, the score "
        "columns, and optionally session, nsfw, warmup, repetition",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output folder, relative to where the command runs (the repository root), where "
        "train_iqa --mos out/mos/mos.csv reads it",
    )
    parser.add_argument(
        "--dimensions",
        default=",".join(DEFAULT_DIMENSIONS),
        help="comma-separated score columns, each processed on its own (sureal's data sets: score)",
    )
    method = parser.add_argument_group("method (defaults = the paper's)")
    method.add_argument(
        "--screening",
        choices=sorted(SCREENINGS),
        default="srocc",
        help="viewer screening: SRoCC with the average (paper), ITU-R BT.500 kurtosis test, or none",
    )
    method.add_argument(
        "--threshold", type=float, default=0.6, help="srocc: reject viewers below this SRoCC"
    )
    method.add_argument(
        "--srocc-reference",
        choices=("global", "loo"),
        default="global",
        help="srocc: compare with the mean of all viewers (paper) or of the others (leave-one-out, "
        "which a viewer cannot pull towards themselves; it matters when few viewers rated each "
        "image). With the paper's default, viewers.csv also holds srocc_loo and rejected_loo, and "
        "the command and the report say when leave-one-out would reject a different set",
    )
    method.add_argument(
        "--bt500-variant",
        choices=("sureal", "itu"),
        default="sureal",
        help="bt500: as Netflix sureal 0.9.0 computes it, or as the Recommendation's text reads "
        "(sample std, per-viewer N); see docs/mos.md",
    )
    method.add_argument(
        "--no-session-norm", action="store_true", help="skip eq. (1), per-session re-centring"
    )
    method.add_argument(
        "--no-zscore",
        action="store_true",
        help="skip eq. (2): the MOS is then the mean (normalized) score on the rating scale",
    )
    method.add_argument(
        "--estimator",
        choices=("mean", "p910"),
        default="mean",
        help="mean over kept viewers (paper), or the ITU-T P.910 Annex E maximum-likelihood "
        "subject model (Li & Bampis; sureal's P910 model)",
    )
    method.add_argument(
        "--scale", choices=SCALES, default="sigma3", help="how mean z-scores map onto 0-5"
    )
    method.add_argument(
        "--ci",
        choices=("t", "normal"),
        default="t",
        help="95%% CI of the mean: Student t (n-1 dof) or normal 1.96 (sureal)",
    )
    method.add_argument(
        "--keep-repetitions",
        action="store_true",
        help="treat repeated ratings of a stimulus by one viewer as separate observations "
        "instead of averaging them first",
    )
    method.add_argument(
        "--score-range",
        type=float,
        nargs=2,
        default=(SCORE_MIN, SCORE_MAX),
        metavar=("LOW", "HIGH"),
        help="valid score range; a score outside it is an input error",
    )
    _add_qc_arguments(parser)
    parser.add_argument("--no-report", action="store_true", help="write only the CSV files")
    parser.add_argument(
        "--reliability-rounds",
        type=int,
        default=10,
        help="random viewer splits for the report's split-half reliability",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    return parser


def run(args: argparse.Namespace) -> Path | None:
    """Load, fit, write; return the report's path (None with --no-report)."""
    dimensions = tuple(d.strip() for d in args.dimensions.split(",") if d.strip())
    if not dimensions:
        raise InputError("--dimensions names no score column")
    # What the later steps import (matplotlib 1 s, scipy 0.2 s) imports while the ratings are
    # read: the readers leave the interpreter free.
    later = ("scipy.special",) if args.no_report else ("scipy.special", "mos.report")
    threading.Thread(target=_import_all, args=(later,), daemon=True).start()
    qc_dimension = dimensions[0] if args.exclude else None
    table, cells = load_study(args.input, dimensions, tuple(args.score_range), qc_dimension)
    out = args.out
    trials = load_trials(args.input, qc_dimension, cells, study_read=True) if args.exclude else None
    # QC was the last reader of the cells read with the ratings (a CSV's, a study's trials): they
    # go back to the system before QC and the fit run.
    del cells
    pa.default_memory_pool().release_unused()
    if trials is not None:
        table = _apply_exclusion(args, table, trials, out)
        # Arrow's allocator keeps what the trials' columns held (0.3 GB of a study the app
        # recorded, at 10 M ratings) unless asked: the fit's peak would sit on top of it.
        del trials
        pa.default_memory_pool().release_unused()
    pipeline = pipeline_from_args(args)
    pipeline.reliability_rounds = 0 if args.no_report else args.reliability_rounds
    result = pipeline.fit(table)
    written = write_outputs(result, out, source=str(args.input), report=not args.no_report)
    if not args.quiet:
        for line in loo_note(result.viewers_frame()):
            print(f"note: {line}")
    return written


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


def pipeline_from_args(args: argparse.Namespace) -> MosPipeline:
    screening: Screening
    if args.screening == "srocc":
        screening = SroccScreening(args.threshold, args.srocc_reference)
    elif args.screening == "bt500":
        screening = Bt500Screening(args.bt500_variant)
    else:
        screening = NoScreening()
    estimator = P910Estimator() if args.estimator == "p910" else MeanEstimator(args.ci)
    return MosPipeline(
        screening=screening,
        session_norm=not args.no_session_norm,
        zscore=not args.no_zscore,
        estimator=estimator,
        scale=args.scale,
        average_repetitions=not args.keep_repetitions,
    )


def write_outputs(result: StudyResult, out: Path, source: str, report: bool) -> Path | None:
    """Write ``mos.csv``, ``viewers.csv`` and (``report``) the report into ``out``; return the
    report's path. A folder that cannot be made or written (no permission, a full disk) is an
    :class:`InputError` naming it, not a traceback."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        tables = {"mos.csv": result.mos_frame(), "viewers.csv": result.viewers_frame()}

        def write_tables() -> None:
            for name, frame in tables.items():
                _write_csv(frame, out / name)

        if not report:
            write_tables()
            return None
        from mos.report import write_report  # matplotlib only when a report is wanted

        # Arrow's CSV writer releases the GIL: the tables are written while the figures are drawn.
        return write_report(result, *tables.values(), out, source, meanwhile=write_tables)
    except OSError as error:
        raise InputError(f"cannot write the outputs into {out}: {_reason(error)}") from error


def _reason(error: OSError) -> str:
    """An OS error in a few words (Arrow's writer raises OSError with its message only)."""
    return error.strerror or first_line(error)


def _add_qc_arguments(parser: argparse.ArgumentParser) -> None:
    """The exclusion rules of online studies (mos.qc.ExclusionRules); 'off' disables a rule."""
    rules = ExclusionRules()
    group = parser.add_argument_group(
        "quality control of online studies (P.808-style exclusion before the MOS)"
    )
    group.add_argument(
        "--exclude",
        action="store_true",
        help="drop the participants who break a rule below and write participants_qc.csv "
        "(every participant's signals, whether excluded and why)",
    )

    def rule(flag: str, kind, default, text: str) -> None:
        def parse(value: str):
            if value == "off":
                return None
            try:
                return kind(value)
            except ValueError as error:
                raise argparse.ArgumentTypeError(f"expected a number or 'off': {value}") from error

        group.add_argument(flag, type=parse, default=default, help=f"{text} ('off' disables)")

    rule("--min-trials", int, rules.min_trials, "exclude participants with fewer test trials")
    rule("--max-gold-failures", int, rules.max_gold_failures, "failed gold trials allowed")
    rule(
        "--max-attention-failures",
        int,
        rules.max_attention_failures,
        "failed attention checks allowed",
    )
    group.add_argument(
        "--fast-seconds",
        type=float,
        default=rules.fast_seconds,
        help="a test trial answered faster than this is too fast to have looked",
    )
    rule("--max-fast-share", float, rules.max_fast_share, "largest share of too-fast trials")
    rule(
        "--min-agreement",
        float,
        rules.min_agreement,
        "smallest Pearson r with the other participants' mean (leave-one-out)",
    )
    rule("--min-score-std", float, rules.min_score_std, "smallest spread of own scores")
    rule(
        "--min-time-spread",
        float,
        rules.min_time_spread,
        "smallest standard deviation of response times, seconds (equal waits are a script's)",
    )
    rule(
        "--max-no-input-share",
        float,
        rules.max_no_input_share,
        "largest share of trials with no slider move recorded by the page (schema ≥ 5)",
    )


def _apply_exclusion(args: argparse.Namespace, table, trials, out: Path):
    """Drop the excluded participants; write their verdicts; print a one-line summary."""
    rules = ExclusionRules(
        min_trials=args.min_trials,
        max_gold_failures=args.max_gold_failures,
        max_attention_failures=args.max_attention_failures,
        fast_seconds=args.fast_seconds,
        max_fast_share=args.max_fast_share,
        min_agreement=args.min_agreement,
        min_score_std=args.min_score_std,
        min_time_spread=args.min_time_spread,
        max_no_input_share=args.max_no_input_share,
    )
    table, verdicts = exclude_participants(table, trials, rules)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(verdicts, out / "participants_qc.csv")
    except OSError as error:
        raise InputError(f"cannot write the outputs into {out}: {_reason(error)}") from error
    if not args.quiet:
        n_out = int(verdicts["excluded"].sum())
        print(f"quality control: excluded {n_out} of {len(verdicts)} participant(s)", end="")
        print(f" (see {out / 'participants_qc.csv'})" if n_out else "")
    return table


def _write_csv(frame, path: Path) -> None:
    """Arrow's CSV writer: 10× faster than pandas on half a million rows, full float precision.

    The writer formats on one core and leaves the interpreter free: a large table's second half
    is formatted on another core while the first is written, then appended (the same bytes)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    half = table.num_rows // 2
    if half < SPLIT_ROWS:
        pacsv.write_csv(table, path)
        return
    with ThreadPoolExecutor(1) as pool:
        tail = pool.submit(_csv_bytes, table.slice(half))
        with pa.OSFile(str(path), "wb") as sink:
            pacsv.write_csv(table.slice(0, half), sink)
            sink.write(tail.result())


SPLIT_ROWS = 50_000
"""Rows in each half of a table :func:`_write_csv` formats on two cores (~0.1 s of work)."""


def _csv_bytes(table: pa.Table) -> pa.Buffer:
    """``table`` as CSV rows without the header line."""
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue()


def _leave(code: int) -> NoReturn:
    """End the command-line process with ``code`` once its output is flushed, without the
    interpreter's teardown: every file is written and closed by then, and freeing the modules and
    the study's memory one object at a time took ~0.3 s at 10 M ratings (the system takes the
    whole process back at once). Output that cannot be flushed (a pipe its reader closed, a full
    disk) leaves the usual way instead, where Python says why and exits 120."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: the stream was closed before the run began
                stream.flush()
        except OSError:
            sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    _leave(main())
