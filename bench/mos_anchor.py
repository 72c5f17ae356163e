"""The paper's MOS method (CMC-Bench A.2) written plainly in pandas: the anchor of mos_bench.py.

    python bench/mos_anchor.py RATINGS.csv|study.db --out FOLDER [--exclude]

What a competent pandas user writes in an afternoon, without this project's code: ``read_csv``
(pandas' default reader, ids as text) or ``read_sql`` over an ADBC SQLite connection (pandas' fast path; the
standard library's ``sqlite3`` is 5-10x slower) with one join; warm-up and check trials dropped; per dimension the SRoCC of each viewer with the
global per-image average (``groupby().rank()`` and Pearson's r of the ranks from group sums — no
Python loop over viewers), rejection below 0.6, eq. (1) per (viewer, session) mean, eq. (2) per
viewer mean and sample std, then the per-image mean, std and count of the z-scores and a
Student-t 95% interval, mapped onto 0-5 as mos.compute's default (z in [-3, 3]). Writes
``mos.csv`` and ``viewers.csv``. ``--exclude`` first drops participants as mos.compute's quality
control does by default (fewer than 10 trials, a failed gold or attention trial, over 20% of
trials under 2 s, a leave-one-out Pearson r with the others below 0.3, a score spread below 0.15).

It is not this project's method in every detail (no repetition averaging, no report, no
leave-one-out note): it is the reference point for speed and memory, not for results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import adbc_driver_sqlite.dbapi as adbc
import numpy as np
import pandas as pd
from scipy import stats

DIMENSIONS = ("consistency", "perception")
THRESHOLD = 0.6

SQL = """
SELECT v.code AS viewer, r.session_id AS session, s.key AS stimulus,
       r.consistency, r.perception, r.nsfw{extra}
FROM ratings r
JOIN sessions se ON se.id = r.session_id
JOIN viewers v ON v.id = se.viewer_id
JOIN stimuli s ON s.id = r.stimulus_id{join}
WHERE NOT r.is_warmup{where}
"""
QC_SQL = {
    "extra": ', t.check_kind AS "check", t.accept_low, t.accept_high, '
    "(julianday(r.submitted_at) - julianday(t.served_at)) * 86400 AS seconds",
    "join": " LEFT JOIN trials t ON t.session_id = r.session_id AND t.position = r.position",
    "where": "",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="a raw-ratings CSV or a SQLite study database")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--exclude", action="store_true", help="quality control first")
    args = parser.parse_args()
    ratings = read(args.input, args.exclude)
    if args.exclude:
        ratings = exclude(ratings)
    mos, viewers = compute(ratings)
    args.out.mkdir(parents=True, exist_ok=True)
    mos.to_csv(args.out / "mos.csv")
    viewers.to_csv(args.out / "viewers.csv")
    return 0


def read(path: Path, with_qc: bool) -> pd.DataFrame:
    """Test ratings (no warm-ups); with ``with_qc`` the check trials and timings stay in."""
    if path.suffix == ".db":
        parts = (
            QC_SQL if with_qc else {"extra": "", "join": "", "where": " AND r.check_kind IS NULL"}
        )
        with adbc.connect(f"file:{path}?mode=ro") as connection:
            frame = pd.read_sql(SQL.format(**parts), connection)
    else:
        frame = pd.read_csv(path, dtype={"viewer": str, "stimulus": str, "session": str})
        if "warmup" in frame:
            frame = frame[~frame["warmup"]]
    if "check" not in frame:
        frame["check"] = np.nan
    if not with_qc:
        frame = frame[frame["check"].isna()]
    return frame


def exclude(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the participants that the default exclusion rules reject; then drop check trials."""
    is_check = frame["check"].notna()
    test = frame[~is_check]
    score = test["consistency"]
    by_viewer = score.groupby(test["viewer"])
    total = score.groupby(test["stimulus"]).transform("sum")
    count = score.groupby(test["stimulus"]).transform("count")
    others = (total - score) / (count - 1)
    use = count - 1 >= 2
    agreement = (
        pd.DataFrame({"x": score[use], "y": others[use]})
        .groupby(test["viewer"][use])
        .corr()
        .xs("x", level=1)["y"]
    )
    verdict = pd.DataFrame({"trials": by_viewer.size(), "spread": by_viewer.std()})
    verdict["agreement"] = agreement
    if "accept_low" in frame:
        checked = frame[is_check]
        failed = (checked["consistency"] < checked["accept_low"]) | (
            checked["consistency"] > checked["accept_high"]
        )
        verdict["failed_checks"] = failed.groupby(checked["viewer"]).sum()
    if "seconds" in frame:
        verdict["fast_share"] = (test["seconds"] < 2.0).groupby(test["viewer"]).mean()
    bad = (
        (verdict["trials"] < 10)
        | (verdict.get("failed_checks", 0) > 0)
        | (verdict.get("fast_share", 0) > 0.2)
        | (verdict["agreement"] < 0.3)
        | (verdict["spread"] < 0.15)
    )
    return test[~test["viewer"].isin(verdict.index[bad])]


def compute(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A.2 on each dimension: SRoCC screening, eq. (1), eq. (2), per-image statistics."""
    mos = {}
    viewers = {}
    for dim in DIMENSIONS:
        average = frame.groupby("stimulus")[dim].transform("mean")
        ranks = pd.DataFrame({"x": frame[dim], "y": average}).groupby(frame["viewer"]).rank()
        n = ranks.groupby(frame["viewer"])["x"].transform("size")
        centred = ranks.sub((n + 1) / 2, axis=0)
        sums = (
            pd.DataFrame(
                {
                    "xy": centred["x"] * centred["y"],
                    "xx": centred["x"] ** 2,
                    "yy": centred["y"] ** 2,
                }
            )
            .groupby(frame["viewer"])
            .sum()
        )
        srocc = sums["xy"] / np.sqrt(sums["xx"] * sums["yy"])
        rejected = ~(srocc >= THRESHOLD)
        keys = [frame["viewer"], frame["session"]]
        session_mean = frame[dim].groupby(keys).transform("mean")
        normalized = frame[dim] - session_mean + 2.5  # eq. (1)
        kept = ~frame["viewer"].isin(srocc.index[rejected])
        s = normalized[kept]
        by_viewer = s.groupby(frame["viewer"][kept])
        z = (s - by_viewer.transform("mean")) / by_viewer.transform("std")  # eq. (2)
        per_image = z.groupby(frame["stimulus"][kept]).agg(["mean", "std", "count"])
        t = stats.t.ppf(0.975, per_image["count"] - 1)
        mos[f"{dim}_mos"] = np.clip((per_image["mean"] + 3) * 5 / 6, 0, 5)
        mos[f"{dim}_z"] = per_image["mean"]
        mos[f"{dim}_std"] = per_image["std"]
        mos[f"{dim}_ci95"] = t * per_image["std"] / np.sqrt(per_image["count"]) * 5 / 6
        mos[f"{dim}_n"] = per_image["count"]
        viewers[f"{dim}_srocc"] = srocc
        viewers[f"{dim}_rejected"] = rejected
    mos_frame = pd.DataFrame(mos)
    mos_frame["nsfw_reports"] = frame.groupby("stimulus")["nsfw"].sum()
    viewers_frame = pd.DataFrame(viewers)
    viewers_frame["n_ratings"] = frame.groupby("viewer").size()
    return mos_frame, viewers_frame


if __name__ == "__main__":
    sys.exit(main())
