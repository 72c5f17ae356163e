"""What each kind of column costs the SQLite driver when ``mos.compute --exclude`` reads a study.

    python bench/mos_read_columns.py bench/out/ratings_10000000/study_app.db [--rows 2000000]

Runs, through ADBC as ``mos.study_sql.fetch_sqlite_arrow`` does (whole ranges in one batch),
queries over the first ``--rows`` rating ids that add to the ratings' packed ids and scores, one
group at a time, what QC reads: the join to each rating's trial, then the check columns, flags
and slider moves, then the four stored times. Prints the thread CPU seconds of each (best of
``--repeat``): the differences are what each group costs per that many ratings. Made for the
bench's ``app`` study (``mos_bench.py --cases "app --exclude"``), whose ratings all have trials.
"""

from __future__ import annotations

import argparse
import time
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
QUERIES = {
    "packed ids and scores": (KEY, ""),
    "+ the join to the trial": (KEY + ", t.position", TRIAL),
    "+ checks, flags, slider moves": (KEY + CHECKS, TRIAL),
    "+ the four stored times": (KEY + CHECKS + TIMES, TRIAL),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="a SQLite study whose ratings have trials")
    parser.add_argument("--rows", type=int, default=2_000_000, help="rating ids read")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each query (best kept)")
    args = parser.parse_args()
    where = f" WHERE r.is_warmup = 0 AND r.id BETWEEN 1 AND {args.rows}"
    print(f"| columns read ({args.rows:,} rating ids) | CPU seconds | rows | MB |")
    print("|---|---|---|---|")
    with adbc.connect(f"file:{args.study}?mode=ro") as connection, connection.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(args.rows)})
        for label, (columns, join) in QUERIES.items():
            best = float("inf")
            for _ in range(args.repeat):
                started = time.thread_time()
                cursor.execute(f"SELECT {columns} FROM ratings r{join}{where}")
                table = cursor.fetch_arrow_table()
                best = min(best, time.thread_time() - started)
            print(f"| {label} | {best:.2f} | {table.num_rows:,} | {table.nbytes / 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
