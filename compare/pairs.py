"""Which curves a Bjøntegaard delta compares, and over which images: the same pictures only.

A delta between two curves made on different pictures measures the pictures as much as the
methods (the same HEVC ladder on two image sets differs by +50% BD-rate). So each (CMC, codec)
pair is compared over the references that *both* curves have at *every* point — references are
told apart by content, not by name — with each point's mean (and FID) recomputed over exactly
those images; their number is in the ``references`` column, with a note when it is fewer than a
curve holds. A pair that shares no reference is refused.
"""

from __future__ import annotations

import pandas as pd

from compare.bd import Curve, delta
from compare.curves import InputError
from compare.score import points

BD_COLUMNS = ["metric", "type", "test", "anchor", "references", "bd_rate_percent", "bd_quality",
              "rate_overlap", "quality_overlap", "note"]  # fmt: skip


def deltas(scored: pd.DataFrame, metrics: list, method: str = "pchip") -> pd.DataFrame:
    """BD-rate and BD-quality of every CMC curve against every codec curve, per metric, each
    over the references the two share; an InputError for a pair that shares none."""
    kinds = scored.groupby("curve", sort=False)["kind"].first()
    covered = {name: covered_references(group) for name, group in scored.groupby("curve")}
    records = []
    for test in kinds.index[kinds == "cmc"]:
        for anchor in kinds.index[kinds == "codec"]:
            common = covered[test] & covered[anchor]
            if not common:
                raise InputError(
                    f"CMC curve '{test}' and codec curve '{anchor}' share no reference image "
                    f"({len(covered[test])} and {len(covered[anchor])} at every point, compared "
                    "by content): a BD delta compares the same pictures; code the run's "
                    "references with the ladder"
                )
            pair = scored[
                scored["curve"].isin([test, anchor]) & scored["reference_key"].isin(common)
            ]
            note = _restricted(test, anchor, common, scored)
            for metric, rows in points(pair, metrics).groupby("metric", sort=False):
                curves = {name: Curve(name, g["bpp"].to_numpy(float), g["mean"].to_numpy(float))
                          for name, g in rows.groupby("curve")}  # fmt: skip
                d = delta(curves[test], curves[anchor], bool(rows["lower_better"].iloc[0]), method)
                records.append({"metric": metric, "type": rows["type"].iloc[0], "test": test,
                                "anchor": anchor, "references": len(common),
                                "bd_rate_percent": d.bd_rate, "bd_quality": d.bd_quality,
                                "rate_overlap": d.rate_overlap,
                                "quality_overlap": d.quality_overlap,
                                "note": "; ".join(([note] if note else []) + d.notes)})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=BD_COLUMNS)


def covered_references(curve: pd.DataFrame) -> set[str]:
    """The references (content keys) a curve has at every one of its points."""
    per_point = curve.groupby("point")["reference_key"].agg(set)
    return set.intersection(*per_point)


def _restricted(test: str, anchor: str, common: set[str], scored: pd.DataFrame) -> str:
    """A note when the pair leaves images of either curve out ('' when it keeps them all)."""
    held = {name: scored.loc[scored["curve"] == name, "reference_key"].nunique()
            for name in (test, anchor)}  # fmt: skip
    if all(n == len(common) for n in held.values()):
        return ""
    return (f"over the {len(common)} reference(s) both curves have at every point "
            f"({test}: {held[test]}, {anchor}: {held[anchor]})")  # fmt: skip
