"""The report: the paper's Figure 6 layout, a table of every point and the Bjøntegaard deltas.

Figure: one panel per metric, rate (bpp, log scale) on x; consistency metrics on the first
row(s), framed and titled as such, perception metrics below; codecs dashed, CMC methods solid,
95% intervals as error bars. Tables are CSV (for scripts) and Markdown (for people).

The rate axis is labelled at a few round values (1, 2, 5 × 10ᵏ, thinned to at most
:data:`MAX_RATE_LABELS`) and its minor ticks are not labelled: matplotlib's own log labels put a
label on every minor tick at spans of about one to two decades, where they overprint.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from compare.metrics import CONSISTENCY, PERCEPTION  # noqa: E402

CONSISTENCY_COLOUR = "#1f5fa8"
X_LABELS = {"bpp": "bits per pixel", "strength": "img2img strength"}
MAX_RATE_LABELS = 5
ROUND_STEPS = ((1, 2, 5), (1, 3), (1,))
"""Mantissas of the rate labels, finest first: the first that fits MAX_RATE_LABELS is used."""


def figure(table: pd.DataFrame, path: Path, title: str = "", x: str = "bpp") -> Path:
    """One panel per metric, consistency first, as the paper's Figure 6: each over rate, or
    over another column of the table (``x``: the strength of Figures A5–A7)."""
    metrics = table.drop_duplicates("metric")
    groups = [
        list(metrics.loc[metrics["type"] == kind, "metric"]) for kind in (CONSISTENCY, PERCEPTION)
    ]
    groups = [g for g in groups if g]
    columns = min(4, max(len(g) for g in groups))
    layout = [g[i : i + columns] for g in groups for i in range(0, len(g), columns)]
    fig, axes = plt.subplots(len(layout), columns, figsize=(3.6 * columns, 3.1 * len(layout)),
                             squeeze=False)  # fmt: skip
    curves = list(dict.fromkeys(table["curve"]))
    colours = dict(
        zip(curves, plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors, strict=False)
    )
    for r, names in enumerate(layout):
        for c in range(columns):
            ax = axes[r][c]
            if c >= len(names):
                ax.axis("off")
                continue
            _panel(ax, table[table["metric"] == names[c]], colours, x)
    handles = [plt.Line2D([], [], color=colours[name], marker="s" if kind == "codec" else "o",
                          linestyle="--" if kind == "codec" else "-", label=name)
               for name, kind in table.drop_duplicates("curve")[["curve", "kind"]].itertuples(index=False)]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    legend_rows = math.ceil(len(handles) / 5)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * legend_rows, 1, 0.97 if title else 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _panel(ax, rows: pd.DataFrame, colours: dict, x: str) -> None:
    metric, kind = rows["metric"].iloc[0], rows["type"].iloc[0]
    for name, g in rows.groupby("curve", sort=False):
        g = g.sort_values(x)
        codec = g["kind"].iloc[0] == "codec"
        err = None
        if g["ci_low"].notna().any():
            err = np.vstack([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]]).clip(min=0)
            err = np.nan_to_num(err)
        ax.errorbar(g[x], g["mean"], yerr=err, color=colours[name], capsize=2, markersize=4,
                    marker="s" if codec else "o", linestyle="--" if codec else "-", linewidth=1.2)  # fmt: skip
    if x == "bpp":
        rate_axis(ax)
    ax.set_xlabel(X_LABELS.get(x, x))
    arrow = " (lower is better)" if rows["lower_better"].iloc[0] else ""
    ax.set_ylabel(metric + arrow)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{kind.capitalize()}: {metric}", fontsize=10,
                 color=CONSISTENCY_COLOUR if kind == CONSISTENCY else "black")  # fmt: skip
    if kind == CONSISTENCY:  # the paper marks the consistency panels
        ax.set_facecolor("#eef3fb")
        for spine in ax.spines.values():
            spine.set_edgecolor(CONSISTENCY_COLOUR)
            spine.set_linewidth(1.5)


def rate_axis(ax) -> None:
    """A log rate axis labelled at round values that never overprint (module docstring)."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(ticker.FixedLocator(round_ticks(low, high)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlim(low, high)


def round_ticks(low: float, high: float, most: int = MAX_RATE_LABELS) -> list[float]:
    """At most ``most`` round values in [low, high] (at least two, whatever the span)."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for steps in ROUND_STEPS:
        values = [m * 10.0**k for k in decades for m in steps if low <= m * 10.0**k <= high]
        if 2 <= len(values) <= most:
            return values
    if len(values) > most:  # many decades: every n-th one
        return values[:: math.ceil(len(values) / most)]
    return [float(f"{v:.2g}") for v in np.geomspace(low, high, 4)[1:3]]  # under a factor of 2


def points_markdown(table: pd.DataFrame) -> str:
    """Every point: curve, point, n, bpp, and each metric's mean ± half its 95% interval."""
    metrics = list(dict.fromkeys(table["metric"]))
    header = ["curve", "point", "n", "bpp", *[_metric_header(table, m) for m in metrics]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (curve, point), g in table.groupby(["curve", "point"], sort=False):
        by = g.set_index("metric")
        cells = [curve, point, str(int(g["n"].iloc[0])), f"{g['bpp'].iloc[0]:.4g}"]
        for m in metrics:
            mean, low, high = by.loc[m, ["mean", "ci_low", "ci_high"]]
            cell = "—" if np.isnan(mean) else f"{mean:.4g}"
            if not np.isnan(low):
                cell += f" ± {(high - low) / 2:.2g}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bd_markdown(bd: pd.DataFrame) -> str:
    if bd.empty:
        return "No BD deltas: they need at least one CMC curve and one codec curve.\n"
    lines = ["| metric | test | anchor | references | BD-rate % | BD-quality | rate overlap | quality overlap | note |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in bd.itertuples():
        lines.append(f"| {r.metric} | {r.test} | {r.anchor} | {r.references} | "
                     f"{_num(r.bd_rate_percent, '+.1f')} | "
                     f"{_num(r.bd_quality, '+.4g')} | {_num(r.rate_overlap, '.0%')} | "
                     f"{_num(r.quality_overlap, '.0%')} | {r.note} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write(table: pd.DataFrame, bd: pd.DataFrame, out: Path, method: str, title: str) -> dict:
    """figure.png, points.csv/.md, bd.csv and report.md in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"figure": figure(table, out / "figure.png", title)}
    table.to_csv(out / "points.csv", index=False)
    bd.to_csv(out / "bd.csv", index=False)
    (out / "points.md").write_text(points_markdown(table))
    noted = bd[bd["note"] != ""] if not bd.empty else bd
    report = [
        f"# {title or 'Rate–quality comparison'}\n", "![rate–quality curves](figure.png)\n",
        "## Bjøntegaard deltas\n",
        f"Each CMC curve against each codec curve, `{method}` interpolation, over the references "
        "both curves have at every point (their number is given) and over the overlap of the two "
        "curves only (its share of the narrower curve's range is given; under 20% no delta is "
        "given). BD-rate: the test's extra rate "
        "at equal quality (negative = fewer bits). BD-quality: test − anchor at equal rate, in "
        "the metric's units (for a lower-is-better metric, negative = better). Undefined cases "
        "are left empty and explained in the note.\n",
        bd_markdown(bd),
        f"{len(noted)} of {len(bd)} comparisons carry a note.\n" if len(bd) else "",
        "## Every point\n", "Mean over the point's images ± half the 95% t-interval; FID is one "
        "value per point.\n", points_markdown(table),
    ]  # fmt: skip
    (out / "report.md").write_text("\n".join(report))
    return {
        **paths,
        "points": out / "points.csv",
        "bd": out / "bd.csv",
        "report": out / "report.md",
    }


def _metric_header(table: pd.DataFrame, metric: str) -> str:
    row = table[table["metric"] == metric].iloc[0]
    return f"{metric} ({'FR' if row['type'] == CONSISTENCY else 'NR'}{', ↓' if row['lower_better'] else ''})"


def _num(value: float, spec: str) -> str:
    return "—" if value is None or np.isnan(value) else format(value, spec)
