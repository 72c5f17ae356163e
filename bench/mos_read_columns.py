"""What each kind of column costs the SQLite driver when ``mos.compute --exclude`` reads a study.

    python bench/mos_read_columns.py bench/out/ratings_10000000/study_app.db [--rows 2000000]

Runs, through ADBC as ``mos.study_sql.fetch_sqlite_arrow`` does (whole ranges in one batch),
queries over the first ``--rows`` rating ids that add to the ratings' packed ids and scores, one
group at a time, what QC reads: the join to each rating's trial, then the check columns, flags
and slider moves, then the four stored times. Prints the thread CPU seconds of each (best of
``--repeat``): the differences are what each group costs per that many ratings. Then the same
columns read apart, without the join: the ratings with their page's place, and the first
``--rows`` trials scanned in their own order (to be matched to the ratings outside SQLite).

Beside each, the same query run by SQLite alone (the standard library's ``sqlite3``, each
column's largest value taken inside SQLite, so that every value is decoded but none leaves it):
what any reader of the study through SQLite pays, the floor under the driver's figure. Made for
the bench's ``app`` study (``mos_bench.py --cases "app --exclude"``), whose ratings all have
trials.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from functools import partial
from pathlib import Path

import adbc_driver_sqlite.dbapi as adbc

KEY = (
    "r.session_id * 2097152 + r.stimulus_id * 2 + CASE WHEN r.nsfw != 0 THEN 1 ELSE 0 END AS key, "
    "r.consistency, r.perception"
)
TRIAL = " LEFT OUTER JOIN trials t ON t.session_id = r.session_id AND t.position = r.position"
CHECKS = (
    ', r.check_kind IS NOT NULL AS is_check, t.check_kind AS "check", t.accept_low, '
    "t.accept_high, r.slider_events"
)
TIMES = ", r.submitted_at, t.served_at, r.first_input_at, r.shown_at AS revealed_at"
RATING_QC = (
    ", r.position, r.check_kind IS NOT NULL AS is_check, r.slider_events, r.submitted_at, "
    "r.first_input_at, r.shown_at AS revealed_at"
)
TRIALS_APART = (
    'SELECT t.session_id * 65536 + t.position AS place, t.served_at, t.check_kind AS "check", '
    "t.accept_low, t.accept_high FROM trials t WHERE t.rowid BETWEEN 1 AND {rows}"
)


def queries(rows: int) -> dict[str, str]:
    """The queries timed, by label, over the first ``rows`` rating ids (or trials)."""
    where = f" WHERE r.is_warmup = 0 AND r.id BETWEEN 1 AND {rows}"
    joined = {
        "packed ids and scores": (KEY, ""),
        "+ the join to the trial": (KEY + ", t.position", TRIAL),
        "+ checks, flags, slider moves": (KEY + CHECKS, TRIAL),
        "+ the four stored times": (KEY + CHECKS + TIMES, TRIAL),
        "apart: the ratings with their place": (KEY + RATING_QC, ""),
    }
    chosen = {
        label: f"SELECT {columns} FROM ratings r{join}{where}"
        for label, (columns, join) in joined.items()
    }
    chosen["apart: the trials in their order"] = TRIALS_APART.format(rows=rows)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="a SQLite study whose ratings have trials")
    parser.add_argument("--rows", type=int, default=2_000_000, help="rating ids read")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each query (best kept)")
    args = parser.parse_args()
    print(f"| columns read ({args.rows:,} rating ids) | CPU seconds | SQLite alone | rows | MB |")
    print("|---|---|---|---|---|")
    alone = sqlite3.connect(f"file:{args.study}?mode=ro", uri=True)
    with adbc.connect(f"file:{args.study}?mode=ro") as connection, connection.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(args.rows)})
        for label, query in queries(args.rows).items():
            best, table = _best_cpu(partial(_through_driver, cursor, query), args.repeat)
            decoded = _decoded_in_sqlite(query, table.column_names)
            floor, _ = _best_cpu(partial(_in_sqlite, alone, decoded), args.repeat)
            print(
                f"| {label} | {best:.2f} | {floor:.2f} | {table.num_rows:,} "
                f"| {table.nbytes / 1e6:.0f} |"
            )
    alone.close()
    return 0


def _decoded_in_sqlite(query: str, names: list[str]) -> str:
    """``query`` with each of its columns reduced to its largest value inside SQLite: every
    value is decoded (``max`` compares them), one row leaves."""
    largest = ", ".join(f'max("{name}")' for name in names)
    return f"SELECT count(*), {largest} FROM ({query})"


def _through_driver(cursor, query: str):
    cursor.execute(query)
    return cursor.fetch_arrow_table()


def _in_sqlite(connection: sqlite3.Connection, query: str) -> list:
    return connection.execute(query).fetchall()


def _best_cpu(run, repeat: int) -> tuple[float, object]:
    """The least thread CPU seconds of ``repeat`` calls of ``run``, and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.thread_time()
        result = run()
        best = min(best, time.thread_time() - started)
    return best, result


if __name__ == "__main__":
    raise SystemExit(main())
