"""The study report: a Markdown page with matplotlib figures, written beside ``mos.csv``."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the report must render on a headless lab server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mos.pipeline import StudyResult  # noqa: E402
from mos.screening import loo_note  # noqa: E402

GROUPING_COLUMNS = ("model", "mode", "content_type")
MAX_PLOTTED = 20_000
"""Figures of bigger studies draw a random sample of this many stimuli (tables use all)."""
MAX_BARS = 120
"""Up to this many viewers the screening figure shows one bar each; beyond, a histogram."""


@dataclass
class Figure:
    """One PNG of the report: its file name, and how to draw it (returns the pyplot figure).

    Sections say what to draw; :func:`_draw_all` draws, so that the figures can be shared out
    between two processes."""

    name: str
    draw: Callable[[], matplotlib.figure.Figure]


def write_report(
    result: StudyResult,
    mos: pd.DataFrame,
    viewers: pd.DataFrame,
    out: Path,
    source: str,
    meanwhile: Callable[[], object] | None = None,
) -> Path:
    """Write ``report.md`` and its PNG figures into ``out``; return the report's path.

    ``meanwhile``: work to run on a thread while the figures are drawn (``mos.compute`` writes
    its tables then), started after the drawing process is forked; its error is raised here."""
    figures: list[Figure] = []
    lines = [
        "# MOS report",
        "",
        f"Input: `{source}` — {len(result.table):,} ratings, {result.table.n_viewers} viewers, "
        f"{result.table.n_stimuli:,} stimuli, {result.table.n_sessions} sessions.",
        "",
        "Settings: " + ", ".join(f"{k} = {v}" for k, v in result.settings.items()) + ".",
        "",
        "## Summary",
        "",
        "| dimension | viewers kept | rejected | MOS mean | MOS std | median CI95 | "
        "split-half reliability |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, dim in result.dimensions.items():
        rejected = int(dim.per_viewer["rejected"].sum())
        present = int((dim.per_viewer["n_ratings"] > 0).sum())
        r_mean, r_std = dim.reliability or (float("nan"), float("nan"))
        lines.append(
            f"| {name} | {present - rejected} | {rejected} | {mos[f'{name}_mos'].mean():.3f} | "
            f"{mos[f'{name}_mos'].std():.3f} | {mos[f'{name}_ci95'].median():.3f} | "
            f"{r_mean:.3f} ± {r_std:.3f} |"
        )
    lines += [
        "",
        "## MOS distribution",
        "",
        _shown(figures, _histograms(result, mos), "MOS histograms"),
    ]
    lines += [
        "",
        "## Viewer screening",
        "",
        _shown(figures, _screening(result, viewers), "screening"),
    ]
    lines += _rejected_list(viewers)
    lines += [f"\n**Note.** {line}" for line in loo_note(viewers)]
    lines += [
        "",
        "## Confidence intervals",
        "",
        _shown(figures, _ci_widths(result, mos), "CI95 widths"),
    ]
    lines += _by_metadata(result, mos, figures)
    lines += _nsfw(mos)
    _draw_all(figures, out, meanwhile)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _shown(figures: list[Figure], figure: Figure, caption: str) -> str:
    """The Markdown that shows ``figure``, which joins the figures to draw."""
    figures.append(figure)
    return f"![{caption}]({figure.name})"


def _draw_all(figures: list[Figure], out: Path, meanwhile: Callable[[], object] | None) -> None:
    """Draw and save ``figures``, every other one in a forked copy of this process where the
    system can fork (Linux, macOS).

    matplotlib draws in Python under the GIL, ~0.3 s a figure, so a thread cannot use a second
    core but a second process can: the seven figures of a large study with metadata take half the
    time. The copy shares this process's memory (nothing is pickled) and only draws and saves;
    if it fails in any way, its figures are drawn here, where the error is raised."""
    # the copy takes the first of every two: it has no tables to write
    theirs, mine = figures[0::2], figures[1::2]
    child = _fork_drawing(theirs, out) if theirs else None
    if child is None:
        mine, theirs = figures, []
    try:
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(meanwhile) if meanwhile is not None else None
            for figure in mine:
                _save(figure, out)
            drawn = child is None or _succeeded(child)
            child = None
            if not drawn:
                for figure in theirs:
                    _save(figure, out)
            if job is not None:
                job.result()
    finally:
        if child is not None:  # stopped before the copy was waited for (an error, Ctrl-C)
            _stop(child)


def _fork_drawing(figures: list[Figure], out: Path) -> int | None:
    """Start a forked copy that saves ``figures`` and exits; its pid, or None (no fork here, or
    the fork failed: the caller draws them itself)."""
    if not hasattr(os, "fork"):
        return None
    for stream in (sys.stdout, sys.stderr):  # what is buffered is printed once, not twice
        if stream is not None:  # None: the stream was closed before the run began
            stream.flush()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the copy: draw, then leave at once (no atexit, no buffers of the parent)
        code = 1
        try:
            _end_with(parent)
            for figure in figures:
                _save(figure, out)
            code = 0
        finally:
            os._exit(code)
    return pid


def _end_with(parent: int) -> None:
    """Linux: have the kernel kill this copy when the process that forked it ends (a run killed
    while drawing leaves no copy behind still writing figures); elsewhere nothing."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it ended before the request was made
        os._exit(1)


PR_SET_PDEATHSIG = 1
"""Linux's ``prctl`` option (linux/prctl.h)."""


def _succeeded(pid: int) -> bool:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _stop(pid: int) -> None:
    """End the copy and reap it: nothing it draws matters once this run has failed."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _histograms(result: StudyResult, mos: pd.DataFrame) -> Figure:
    names = list(result.dimensions)

    def draw():
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            ax.hist(mos[f"{name}_mos"].dropna(), bins=np.linspace(0, 5, 26), color="#4477aa")
            ax.set(title=f"{name.capitalize()} MOS", xlabel="MOS (0–5)", ylabel="stimuli")
        return fig

    return Figure("mos_histograms.png", draw)


def _screening(result: StudyResult, viewers: pd.DataFrame) -> Figure:
    return Figure("screening.png", lambda: _draw_screening(result, viewers))


def _draw_screening(result: StudyResult, viewers: pd.DataFrame):
    names = list(result.dimensions)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 3 * len(names)), squeeze=False)
    method = result.settings["screening"]
    for ax, name in zip(axes[:, 0], names, strict=True):
        rows = viewers[viewers["dimension"] == name]
        if "srocc" in rows:
            column, label = "srocc", "SRoCC with average"
            threshold = result.settings.get("screening_threshold", 0.6)
        elif "bt500_ratio" in rows:
            column, label, threshold = "bt500_ratio", "(P + Q) / N", 0.05
        else:
            column, label, threshold = "n_ratings", "ratings", None
        values = rows[column].fillna(0)
        if len(rows) <= MAX_BARS:
            colours = np.where(rows["rejected"], "#cc3311", "#4477aa")
            ax.bar(range(len(rows)), values, color=colours)
            ax.set_xticks(range(len(rows)), rows["viewer"].astype(str), rotation=90, fontsize=7)
            ax.set_ylabel(label)
            if threshold is not None:
                ax.axhline(threshold, color="k", ls="--")
        else:  # a crowd: the distribution, split by outcome
            ax.hist(
                [values[~rows["rejected"]], values[rows["rejected"]]],
                bins=50,
                color=["#4477aa", "#cc3311"],
                stacked=True,
            )
            ax.set(xlabel=label, ylabel="viewers")
            if threshold is not None:
                ax.axvline(threshold, color="k", ls="--")
        ax.set_title(f"{name}: per-viewer screening ({method}; red = rejected)")
    return fig


def _rejected_list(viewers: pd.DataFrame) -> list[str]:
    rejected = viewers[viewers["rejected"]]
    if rejected.empty:
        return ["", "No viewer was rejected."]
    lines = ["", "Rejected viewers:", ""]
    for name, rows in rejected.groupby("dimension", sort=False):
        shown = ", ".join(str(v) for v in rows["viewer"].head(50))
        more = f" … and {len(rows) - 50} more" if len(rows) > 50 else ""
        lines.append(f"- {name}: {shown}{more}")
    return lines


def _ci_widths(result: StudyResult, mos: pd.DataFrame) -> Figure:
    def draw():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name in result.dimensions:
            widths = mos[f"{name}_ci95"].to_numpy(dtype=float)
            # an image with no spread estimate (one rating, or P.910 with a single-rating
            # viewer) has an infinite or unknown interval: not a width to draw
            ax.hist(widths[np.isfinite(widths)], bins=30, alpha=0.6, label=name)
        ax.set(xlabel="95% CI half-width (0–5 scale)", ylabel="stimuli")
        ax.legend()
        return fig

    return Figure("ci95.png", draw)


def _by_metadata(result: StudyResult, mos: pd.DataFrame, figures: list[Figure]) -> list[str]:
    lines: list[str] = []
    names = list(result.dimensions)
    shown = mos if len(mos) <= MAX_PLOTTED else mos.sample(MAX_PLOTTED, random_state=0)
    if len(shown) < len(mos):
        lines += [
            "",
            f"(Figures below draw a random sample of {MAX_PLOTTED:,} stimuli; tables use all.)",
        ]
    for column in GROUPING_COLUMNS:
        if column not in mos or mos[column].nunique() < 2:
            continue
        table = mos.groupby(column)[[f"{n}_mos" for n in names]].agg(["mean", "count"])
        lines += ["", f"## MOS by {column.replace('_', ' ')}", "", _markdown_table(table.round(3))]
        groups = sorted(mos[column].dropna().unique(), key=str)
        figure = _boxplots(names, shown, column, groups)
        lines += ["", _shown(figures, figure, f"MOS by {column}")]
    if "strength" in mos and mos["strength"].notna().sum() > 2:
        lines += [
            "",
            "## MOS by strength",
            "",
            _shown(figures, _strength(names, shown), "MOS by strength"),
        ]
    return lines


def _boxplots(names: list[str], shown: pd.DataFrame, column: str, groups: list) -> Figure:
    def draw():
        fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            data = [shown.loc[shown[column] == g, f"{name}_mos"].dropna() for g in groups]
            ax.boxplot(data, tick_labels=[str(g) for g in groups])
            ax.set(title=f"{name} MOS by {column}", ylim=(0, 5))
            ax.tick_params(axis="x", rotation=45)
        return fig

    return Figure(f"mos_by_{column}.png", draw)


def _strength(names: list[str], shown: pd.DataFrame) -> Figure:
    def draw():
        fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            ax.scatter(shown["strength"], shown[f"{name}_mos"], s=6, alpha=0.5)
            ax.set(title=f"{name} MOS by img2img strength", xlabel="strength", ylim=(0, 5))
        return fig

    return Figure("mos_by_strength.png", draw)


def _nsfw(mos: pd.DataFrame) -> list[str]:
    if "nsfw_reports" not in mos:
        return []
    flagged = mos[mos["nsfw_reports"] > 0].sort_values("nsfw_reports", ascending=False)
    share = len(flagged) / max(1, len(mos))
    lines = ["", "## NSFW reports", "", f"{len(flagged)} stimuli ({share:.2%}) were flagged."]
    if not flagged.empty:
        lines += ["", _markdown_table(flagged.set_index("stimulus")[["nsfw_reports"]].head(100))]
    return lines


def _markdown_table(frame: pd.DataFrame) -> str:
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.copy()
        frame.columns = [" ".join(str(p) for p in c) for c in frame.columns]
    header = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    rows = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for index, values in frame.iterrows():
        rows.append("| " + " | ".join([str(index)] + [str(v) for v in values]) + " |")
    return "\n".join(rows)


def _save(figure: Figure, out: Path) -> None:
    fig = figure.draw()
    try:
        fig.tight_layout()
        fig.savefig(out / figure.name, dpi=110)
    finally:
        plt.close(fig)
