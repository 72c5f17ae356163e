"""The paper's Table A1 (A.6): CMC decoded from a codec hint against that codec's own image.

For each hint setting of a run (a codec QP from ``generate plan --sweep-qp``, or the bpp target
of its search), three rows per metric:

- **Original**: the codec's own decoded image at that setting — the very image the CMC decoder
  started from. It comes from a ``generate ladder`` manifest made with the same codec at the same
  QPs (or targets) on the same references, matched per reference (by content) and setting, and
  checked to be the same encode: its ``codec_bits`` must equal the run's (another codec build or
  setting would make another image, and the table would compare against the wrong Original).
- **CMC**: the run's decoded images of that mode (Full by default, as the paper) and setting.
- **Improve**: CMC's relative gain in the metric's own direction — ``CMC / Original − 1`` for a
  higher-is-better metric, ``Original / CMC − 1`` for a lower-is-better one, in percent; positive
  means CMC is better. This is the paper's definition, as its numbers show: LPIPS 0.523 → 0.435
  is +20.2% (0.523 / 0.435 − 1), FID 300.8 → 255.8 +17.5%, SSIM 0.677 → 0.571 −15.6%. A ratio
  needs two positive values; otherwise Improve is left empty, with a note.

Both rows of a setting average the same references (each CMC group's own). The Original's bpp
is the codec's bits only; the CMC's adds the caption's.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from compare.curves import InputError
from compare.score import points

ORIGINAL, CMC, IMPROVE = "Original", "CMC", "Improve"
KEY = ["reference_key", "codec", "qp", "target"]


def pair_rows(cmc: pd.DataFrame, ladder: pd.DataFrame) -> pd.DataFrame:
    """The run's rows of one mode (curve: model, point: its setting) and, once per (reference,
    setting), the ladder's image of it (curve ``Original``), each with its ``hint`` label."""
    unhinted = cmc["codec"].str.strip() == ""
    if unhinted.any():
        raise InputError(f"{cmc['manifest'].iloc[0]}: row {cmc['id'][unhinted].iloc[0]!r} has no "
                         "codec hint (Table A1 needs Image or Full mode)")  # fmt: skip
    cmc = _keyed(cmc)
    coded = _keyed(ladder)
    found = cmc.merge(coded[[*KEY, "codec_bits", "id"]].drop_duplicates(KEY), on=KEY, how="left",
                      suffixes=("", "_ladder"))  # fmt: skip
    where = ladder["manifest"].iloc[0]
    problems = (  # the first that applies is reported
        (found["id_ladder"].isna(), lambda first, n: (
            f"{where}: no {first['codec']} image at {first['hint']} of {n} run image(s)' "
            f"references (first: {first['reference']}); make the ladder with the run's codec "
            "and settings on the run's references")),
        (_number(found["codec_bits"]) != _number(found["codec_bits_ladder"]), lambda first, n: (
            f"{first['reference']} at {first['hint']}: the ladder's {first['codec']} image has "
            f"{first['codec_bits_ladder']} bits, the run's hint {first['codec_bits']}: not the "
            "same encode (another codec build or setting), so not the run's Original")),
    )  # fmt: skip
    for bad, message in problems:
        if bad.any():
            raise InputError(message(found[bad].iloc[0], int(bad.sum())))
    wanted = cmc[KEY].drop_duplicates()
    original = coded.merge(wanted, on=KEY).drop_duplicates(KEY)
    original = original.assign(curve=ORIGINAL, point=original["hint"], kind="codec")
    return pd.concat([cmc.assign(kind="cmc"), original], ignore_index=True)


def table(scored: pd.DataFrame, metrics: list) -> tuple[pd.DataFrame, list[str]]:
    """Rows Original / CMC / Improve per (model, setting), one column per metric; and notes."""
    records, notes = [], []
    cmc = scored[scored["curve"] != ORIGINAL]
    for (model, point), group in cmc.groupby(["curve", "point"], sort=False):
        hint = group["hint"].iloc[0]
        original = scored[(scored["curve"] == ORIGINAL) & (scored["hint"] == hint)
                          & scored["reference_key"].isin(group["reference_key"])]  # fmt: skip
        means = points(pd.concat([original, group]), metrics).set_index(["curve", "metric"])
        base = {"model": model, "hint": point, "references": len(group)}
        rows = {name: {**base, "image": name} for name in (ORIGINAL, CMC, IMPROVE)}
        for name, curve in ((ORIGINAL, ORIGINAL), (CMC, model)):
            rows[name]["bpp"] = means.loc[(curve, metrics[0].label), "bpp"]
        for metric in metrics:
            before, after = (means.loc[(c, metric.label), "mean"] for c in (ORIGINAL, model))
            rows[ORIGINAL][metric.label], rows[CMC][metric.label] = before, after
            rows[IMPROVE][metric.label] = improve(before, after, metric.lower_better)
            if math.isnan(rows[IMPROVE][metric.label]):
                notes.append(f"{model}, {point}, {metric.label}: Improve needs two positive "
                             f"values (Original {before:.4g}, CMC {after:.4g})")  # fmt: skip
        records += rows.values()
    return pd.DataFrame.from_records(records), notes


def improve(original: float, cmc: float, lower_better: bool) -> float:
    """CMC's gain over the Original in percent, in the metric's direction (module docstring)."""
    if not (original > 0 and cmc > 0):  # also False for NaN
        return math.nan
    ratio = original / cmc if lower_better else cmc / original
    return (ratio - 1) * 100


def write(result: pd.DataFrame, notes: list[str], metrics: list, out: Path, title: str) -> dict:
    """table_a1.csv (every number) and table_a1.md (the paper's layout, with arrows)."""
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "table_a1.csv", index=False)
    heads = [f"{m.label} {'↓' if m.lower_better else '↑'}" for m in metrics]
    lines = [f"# {title or 'Table A1: CMC from a codec hint against the codec'}\n",
             "Improve: CMC / Original − 1 (↑ metrics) or Original / CMC − 1 (↓ metrics); "
             "positive = CMC better.\n",
             "| model | hint | image | references | bpp | " + " | ".join(heads) + " |",
             "|" + "---|" * (5 + len(metrics))]  # fmt: skip
    for record in result.to_dict("records"):
        cells = [_cell(record[m.label], record["image"] == IMPROVE) for m in metrics]
        bpp = "" if record["image"] == IMPROVE else f"{record['bpp']:.4g}"
        lines.append(f"| {record['model']} | {record['hint']} | {record['image']} | "
                     f"{record['references']} | {bpp} | " + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", *(f"- {note}" for note in notes)]
    (out / "table_a1.md").write_text("\n".join(lines) + "\n")
    return {"csv": out / "table_a1.csv", "markdown": out / "table_a1.md"}


def _keyed(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with the match key's normalised settings and a readable ``hint``."""
    qp, target = (rows[c].map(_setting) for c in ("codec_qp", "codec_target_bpp"))
    hint = [f"QP {q}" if q else f"target {t} bpp" for q, t in zip(qp, target, strict=True)]
    return rows.assign(codec=rows["codec"].str.strip().str.lower(), qp=qp, target=target, hint=hint)


def _setting(value: str) -> str:
    """'51', '51.0' → '51'; '0.024' → '0.024'; '' stays ''."""
    text = str(value).strip()
    try:
        return f"{float(text):g}" if text else ""
    except ValueError:
        return text


def _number(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def _cell(value: float, percent: bool) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.3g}%" if percent else f"{value:.4g}"
