"""The paper's Figures A5–A7: one CMC mode over img2img strength, one panel per metric.

Figure A7 is Pixel mode over strengths 0.4–0.99 (A5 and A6: Full and Image over 0.2–0.8); a run
of ``generate plan --sweep-strength`` gives it. Each model is a curve whose points are its
strengths, each the mean over the same references: a curve is restricted to the references it
has at every strength (a note says so when that leaves some out), and a curve sharing none across
its strengths is refused, as is a run with fewer than two strengths.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from compare.curves import InputError
from compare.pairs import covered_references
from compare.report import figure, points_markdown
from compare.score import points


def sweep_rows(chosen: pd.DataFrame, mode: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of one mode, each curve kept to the references it has at every strength."""
    where = chosen["manifest"].iloc[0]
    strength = pd.to_numeric(chosen["strength"], errors="coerce")
    if strength.isna().any():
        raise InputError(
            f"{where}: {mode}-mode row {chosen['id'][strength.isna()].iloc[0]!r} has no strength"
        )
    if strength.nunique() < 2:
        raise InputError(f"{where}: {mode} mode has one strength ({strength.iloc[0]:g}): a sweep "
                         "needs two or more (generate plan --sweep-strength)")  # fmt: skip
    chosen = chosen.assign(strength=strength)
    kept, notes = [], []
    for curve, group in chosen.groupby("curve", sort=False):
        common = covered_references(group)
        if not common:
            raise InputError(f"curve '{curve}' has no reference at every strength")
        if len(common) < group["reference_key"].nunique():
            notes.append(f"{curve}: over the {len(common)} of its {group['reference_key'].nunique()} "
                         "references it has at every strength")  # fmt: skip
        kept.append(group[group["reference_key"].isin(common)])
    return pd.concat(kept, ignore_index=True), notes


def table(scored: pd.DataFrame, metrics: list) -> pd.DataFrame:
    """Every (model, strength, metric): n, mean bpp and score, its interval, and the strength."""
    result = points(scored, metrics)
    strength = scored.groupby(["curve", "point"])["strength"].first()
    result["strength"] = [
        strength[(c, p)] for c, p in zip(result["curve"], result["point"], strict=True)
    ]
    return result


def write(result: pd.DataFrame, notes: list[str], mode: str, out: Path, title: str) -> dict:
    """figure.png (a panel per metric over strength), sweep.csv and sweep.md."""
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"{mode} mode over img2img strength"
    path = figure(result, out / "figure.png", title, x="strength")
    result.to_csv(out / "sweep.csv", index=False)
    text = [f"# {title}\n", "![metrics over strength](figure.png)\n", points_markdown(result),
            *(f"- {note}" for note in notes)]  # fmt: skip
    (out / "sweep.md").write_text("\n".join(text) + "\n")
    return {"figure": path, "csv": out / "sweep.csv", "markdown": out / "sweep.md"}
