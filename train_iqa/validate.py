"""``python -m train_iqa.validate``: how well do quality metrics agree with the study's MOS?

    python -m train_iqa.validate --mos mos.csv --metric psnr --metric ssim \\
        --metric topiq_fr:runs/topiq_fr/best.pt --scores gmsd.csv:lower

Scores the images with any number of metrics — stock pyiqa metrics by name, fine-tuned
checkpoints as NAME:CHECKPOINT, or a metric's scores from a CSV (stimulus,score) — and prints the
paper's Table 2: SRCC / KRCC / PLCC against each MOS dimension, FR and NR metrics apart, with
bootstrap 95% intervals, then paired tests of every two metrics' SRCCs on the same images. Each
metric keeps its own direction (pyiqa's for a metric, :lower / :higher for a CSV). This is how a
new IQA metric is validated against the study.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cmc_common.help import HelpFormatter
from studydb.images import ImageReadError
from train_iqa.cli import Parser, positive_int, report_left_out
from train_iqa.data import (
    DataError,
    absolute_paths,
    finite_target,
    mos_range,
    on_mos_scale,
    read_csv,
    unique_stimuli,
)
from train_iqa.model import MetricError, read_checkpoint
from train_iqa.scoring import MetricSpec, Scorer, add_cache_options, open_cache, score_pairs
from train_iqa.stats import MIN_UNITS, bootstrap, oriented, p_text, paired_srcc_test, units

DIMENSIONS = ("consistency_mos", "perception_mos")
GROUPS = ("mode", "model", "content_type")
DIRECTIONS = {"lower": True, "higher": False}
KINDS = {"fr": "FR", "nr": "NR"}


@dataclass
class Scored:
    """One metric's scores of the stimuli, with what the tables need to know of it."""

    label: str
    kind: str  # "FR" or "NR"
    lower_better: bool
    scores: pd.Series  # by stimulus
    how: str  # where the scores come from, in words


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = _metric_specs(args)
        csvs = [_scores_spec(text) for text in args.scores]
        if not metrics and not csvs:
            raise DataError("give at least one metric (--metric NAME[:CHECKPOINT], --scores CSV)")
        mos = _read_mos(args)
        dimensions = _dimensions(args, mos)
        only, where = _test_images(args, metrics)
        if only is not None:
            mos = mos[mos["stimulus"].isin(only)].reset_index(drop=True)
            if mos.empty:
                raise DataError(f"{args.mos}: none of the run's test images is in this MOS file")
        mos = mos[mos[dimensions].notna().any(axis=1)].reset_index(drop=True)
        scored = [_score_metric(args, spec, mos) for spec in metrics]
        scored += [_read_scores(spec, mos) for spec in csvs]
        _unique_labels(scored)
        report = validate(args, mos, scored, dimensions)
    except (DataError, MetricError, ImageReadError) as error:
        print(f"train_iqa.validate: error: {error}", file=sys.stderr)
        return 2
    report["images"] = where
    print(f"scored on: {where}")
    print(table2(report))
    if args.details:
        print(details(report))
    print(paired_lines(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m train_iqa.validate",
        description=__doc__.split("\n\n")[2].replace("\n", " "),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--mos", type=Path, required=True, help="mos.csv of the study")
    parser.add_argument(
        "--metric", action="append", default=[], metavar="[LABEL=]NAME[:CHECKPOINT]",
        help="a pyiqa metric (psnr, ssim, gmsd, lpips, topiq_nr, …) or a fine-tuned checkpoint "
        "of one (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--weights", action="append", default=[], type=Path,
        help="checkpoint of the n-th --metric (the same as NAME:CHECKPOINT)",
    )  # fmt: skip
    parser.add_argument(
        "--scores", action="append", default=[], metavar="[LABEL=]CSV[:lower][:nr]",
        help="a metric's scores as CSV (stimulus,score), repeatable; :lower if lower is better, "
        "else higher; :nr for a no-reference metric, else FR",
    )  # fmt: skip
    parser.add_argument("--no-pretrained", action="store_true", help="stock metrics at random")
    parser.add_argument("--images", type=Path, help="base folder of relative image paths")
    parser.add_argument(
        "--target", choices=DIMENSIONS,
        help="only this MOS dimension (default: every one the MOS file has)",
    )  # fmt: skip
    parser.add_argument(
        "--mos-range", type=mos_range, metavar="LOW:HIGH",
        help="the MOS file's scale, mapped to 0–5 (default: it is 0–5; other values refused)",
    )  # fmt: skip
    parser.add_argument(
        "--partial", action="store_true",
        help="validate a --scores CSV that lacks some stimuli on those it has, with the coverage "
        "in every table (default: an error naming the missing stimuli)",
    )  # fmt: skip
    parser.add_argument(
        "--test-of", type=Path, metavar="CHECKPOINT",
        help="only the test images of the train_iqa run that wrote this best.pt (the default "
        "for a fine-tuned --metric)",
    )  # fmt: skip
    parser.add_argument(
        "--all-images", action="store_true",
        help="every image of the MOS file, even those a fine-tuned metric trained on",
    )  # fmt: skip
    parser.add_argument(
        "--size", type=positive_int,
        help="resize every image's shorter side to this, keeping the aspect ratio (default: "
        "native size; a fine-tuned checkpoint's training size)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, …")
    add_cache_options(parser)
    parser.add_argument("--rounds", type=positive_int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--resample", choices=("auto", "reference", "image"), default="auto",
        help="bootstrap unit: whole references (images of one reference are not independent) or "
        "single images; auto: references when the MOS file gives them",
    )  # fmt: skip
    parser.add_argument(
        "--details", action="store_true", help="also each metric per mode / model / content type"
    )
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    return parser


def validate(args, mos: pd.DataFrame, scored: list[Scored], dimensions: list[str]) -> dict:
    """Every metric's figures against every dimension, and the paired tests: the report."""
    for dimension in dimensions:
        lacking = mos.loc[mos[dimension].isna(), "stimulus"].astype(str).tolist()
        report_left_out("train_iqa.validate", lacking, dimension)
    coverage = {m.label: _coverage(args, m, mos, dimensions) for m in scored}
    jobs = [(m, d, s) for m in scored for d in dimensions for s in _subsets(args, mos, d)]
    metrics = {
        m.label: {
            "label": m.label,
            "kind": m.kind,
            "lower_better": m.lower_better,
            "source": m.how,
            "dimensions": {},
        }  # fmt: skip
        for m in scored
    }
    warned: set[str] = set()
    for metric, dimension, (subset, rows) in tqdm(jobs, desc="bootstrap", unit="table"):
        frame = _paired_frame(mos.loc[rows], metric, dimension)
        entry = metrics[metric.label]["dimensions"].setdefault(
            dimension, {**coverage[metric.label][dimension], "results": {}}
        )
        if len(frame) < 3:
            continue
        groups = _groups(frame, args.resample)
        if subset == "all":
            trusted = units(groups, len(frame)) >= MIN_UNITS
            entry.update(n=len(frame), resampling=_resampling(groups, len(frame)), trusted=trusted)
            _warn_few(groups, len(frame), warned)
        entry["results"][subset] = bootstrap(
            frame["score"], frame["target"], metric.lower_better, args.rounds, groups=groups
        )
    paired = []
    for dimension in dimensions:
        for a, b in tqdm(list(itertools.combinations(scored, 2)), desc=f"paired tests "
                         f"({dimension})", unit="pair", disable=len(scored) < 2):  # fmt: skip
            test = _paired(args, mos, a, b, dimension)
            if test:
                paired.append(test)
    return {"rounds": args.rounds, "metrics": list(metrics.values()), "paired": paired}


def table2(report: dict) -> str:
    """The paper's Table 2: per metric (FR, then NR), SRCC / KRCC / PLCC per dimension."""
    metrics = report["metrics"]
    dimensions = list(dict.fromkeys(d for m in metrics for d in m["dimensions"]))
    header = ["metric", "n"] + [f"{d} {s}" for d in dimensions for s in ("SRCC", "KRCC", "PLCC")]
    first = next((m["dimensions"][d] for m in metrics for d in m["dimensions"]), {})
    caution = "" if first.get("trusted", True) else ": too few to trust the intervals"
    lines = [f"\nTable 2: agreement with the MOS (95% bootstrap intervals, {report['rounds']} "
             f"resamples of {first.get('resampling', 'images')}{caution})"]  # fmt: skip
    for kind in ("FR", "NR"):
        rows = [m for m in metrics if m["kind"] == kind]
        if not rows:
            continue
        lines += ["", f"{kind} metrics", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]  # fmt: skip
        for metric in rows:
            arrow = "↓" if metric["lower_better"] else "↑"
            cells = [f"{metric['label']} {arrow}", _n_cell(metric, dimensions)]
            for dimension in dimensions:
                results = metric["dimensions"].get(dimension, {}).get("results", {}).get("all")
                cells += [_cell(results, s) for s in ("srcc", "krcc", "plcc")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(report: dict) -> str:
    """Per metric and dimension: every subset's figures, RMSE included."""
    lines = []
    for metric in report["metrics"]:
        for dimension, entry in metric["dimensions"].items():
            lines += [f"\n{metric['label']} against {dimension} ({entry.get('n', 0)} images)", "",
                      "| subset | SRCC | KRCC | PLCC | RMSE |", "|---|---|---|---|---|"]  # fmt: skip
            for subset, figures in entry["results"].items():
                cells = [_cell(figures, s) for s in ("srcc", "krcc", "plcc", "rmse")]
                lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_lines(report: dict) -> str:
    """One line per pair of metrics and dimension: their SRCC difference and its p-value."""
    lines = ["\nPaired tests (SRCC difference, same images, paired bootstrap)"] * bool(
        report["paired"]
    )
    for test in report["paired"]:
        verdict = "differ" if test["p_value"] < 0.05 else "do not differ significantly"
        lines.append(
            f"{test['dimension']}: SRCC({test['a']}) − SRCC({test['b']}) = "
            f"{test['difference']:.4f} [{test['low']:.4f}, {test['high']:.4f}], "
            f"p {test['p']}: they {verdict} ({test['n']} images, resampling {test['resampling']})"
        )
    return "\n".join(lines)


def run_settings(path: Path) -> tuple[dict, dict]:
    """(settings, stimuli per split) stored in a train_iqa checkpoint; empty for other files
    (pyiqa's own weights), so that callers fall back to their defaults."""
    state = read_checkpoint(path)
    return state.get("settings") or {}, state.get("stimuli") or {}


def _metric_specs(args) -> list[MetricSpec]:
    specs = [MetricSpec.parse(text) for text in args.metric]
    if len(args.weights) > len(specs):
        raise DataError("more --weights than --metric")
    for i, weights in enumerate(args.weights):
        if specs[i].weights is not None:
            raise DataError(f"--metric {args.metric[i]} has a checkpoint already; drop --weights")
        specs[i] = MetricSpec.parse(f"{args.metric[i]}:{weights}")
    return specs


def _scores_spec(text: str) -> tuple[str, Path, bool, str]:
    """``[LABEL=]CSV[:lower|:higher][:fr|:nr]`` as (label, path, lower_better, kind)."""
    label, _, rest = text.rpartition("=") if "=" in text.split(":")[0] else ("", "", text)
    parts = rest.split(":")
    lower_better, kind = False, "FR"
    while len(parts) > 1 and parts[-1].lower() in {*DIRECTIONS, *KINDS}:
        word = parts.pop().lower()
        if word in DIRECTIONS:
            lower_better = DIRECTIONS[word]
        else:
            kind = KINDS[word]
    path = Path(":".join(parts))
    return label or path.stem, path, lower_better, kind


def _read_mos(args) -> pd.DataFrame:
    mos = read_csv(args.mos, "MOS")
    if "stimulus" not in mos.columns:
        raise DataError(f"{args.mos}: no column 'stimulus'")
    unique_stimuli(mos, args.mos)
    for dimension in DIMENSIONS:
        if dimension in mos.columns:
            finite_target(mos[mos[dimension].notna()], dimension, args.mos)
            mos = on_mos_scale(mos, dimension, args.mos, args.mos_range)
    return mos


def _dimensions(args, mos: pd.DataFrame) -> list[str]:
    dimensions = [args.target] if args.target else [d for d in DIMENSIONS if d in mos.columns]
    missing = [d for d in dimensions if d not in mos.columns]
    if missing or not dimensions:
        raise DataError(
            f"{args.mos}: no column {missing[0] if missing else ' or '.join(DIMENSIONS)}"
        )
    return dimensions


def _test_images(args, metrics: list[MetricSpec]) -> tuple[set[str] | None, str]:
    """The stimuli to validate on (None: all) and, in words, which they are."""
    if args.all_images:
        return None, "every image of the MOS file (--all-images)"
    checkpoints = [m.weights for m in metrics if m.weights is not None]
    runs = [args.test_of] if args.test_of else checkpoints
    only, where = None, "every image of the MOS file"
    for path in runs:
        stimuli = run_settings(Path(path))[1]
        if "test" in stimuli:
            only, where = set(stimuli["test"]), f"the {len(stimuli['test'])} test images of {path}"
            break
        if args.test_of:
            raise DataError(f"{path}: not a train_iqa checkpoint (no test split stored)")
    for path in checkpoints if only is not None else ():
        stimuli = run_settings(Path(path))[1]
        seen = only & set(stimuli.get("train", [])) | only & set(stimuli.get("val", []))
        if seen:  # its figures would not be test figures: another split (seed, fractions)
            raise DataError(
                f"{path} trained on (or selected on) {len(seen)} of {where}: its split differs; "
                "compare runs made with the same split (--seed, fractions), or use --all-images"
            )
    return only, where


def _score_metric(args, spec: MetricSpec, mos: pd.DataFrame) -> Scored:
    """A pyiqa metric's (or a checkpoint's) scores of every stimulus, through the cache."""
    scorer = Scorer(spec, not args.no_pretrained, args.device, args.size)
    frame = absolute_paths(mos, args.mos, args.images)
    values = score_pairs(
        scorer, frame["distorted_path"], frame["reference_path"], open_cache(args), args.batch_size
    )
    how = f"{'fine-tuned ' if scorer.fine_tuned else ''}pyiqa {spec.name}, {scorer.resize_note}"
    return Scored(spec.label, "FR" if scorer.full_reference else "NR", scorer.lower_better,
                  pd.Series(values, index=mos["stimulus"].to_numpy()), how)  # fmt: skip


def _read_scores(spec: tuple[str, Path, bool, str], mos: pd.DataFrame) -> Scored:
    label, path, lower_better, kind = spec
    scores = read_csv(path, "scores")
    if not {"stimulus", "score"} <= set(scores.columns):
        raise DataError(f"{path}: a scores CSV needs the columns stimulus and score")
    unique_stimuli(scores, path)
    numbers = pd.to_numeric(scores["score"], errors="coerce")
    bad = scores["stimulus"][~np.isfinite(numbers.to_numpy(float))]
    if len(bad):
        raise DataError(
            f"{path}: {len(bad)} missing or non-numeric score(s) (first: stimulus {bad.iloc[0]})"
        )
    series = pd.Series(numbers.to_numpy(float), index=scores["stimulus"].astype(str).to_numpy())
    direction = "lower" if lower_better else "higher"
    return Scored(label, kind, lower_better, series, f"{path} ({direction} is better, {kind})")


def _unique_labels(scored: list[Scored]) -> None:
    labels = [m.label for m in scored]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise DataError(f"metric label '{repeated[0]}' is given twice: name one LABEL=…")


def _coverage(args, metric: Scored, mos: pd.DataFrame, dimensions: list[str]) -> dict:
    """Per dimension: how many of the stimuli with that MOS the metric scored. Missing ones are
    an error naming them, unless ``--partial`` (then the tables show the coverage)."""
    result = {}
    for dimension in dimensions:
        wanted = mos.loc[mos[dimension].notna(), "stimulus"].astype(str)
        missing = wanted[~wanted.isin(metric.scores.index)]
        if len(missing) and not args.partial:
            raise DataError(
                f"{metric.label}: no score for {len(missing)} of the {len(wanted)} stimuli with a "
                f"{dimension} (first: {', '.join(missing.head(3))}); score them, or validate on "
                "the scored ones with --partial (the coverage is then shown in every table)"
            )
        result[dimension] = {"covered": len(wanted) - len(missing), "of": len(wanted)}
    return result


def _subsets(args, mos: pd.DataFrame, dimension: str) -> list[tuple[str, pd.Index]]:
    """("all", every row), then with --details one entry per mode / model / content type."""
    subsets = [("all", mos.index)]
    if args.details:
        for column in (c for c in GROUPS if c in mos.columns and mos[c].nunique() > 1):
            for group, part in mos.groupby(column):
                if part[dimension].notna().sum() >= 5:
                    subsets.append((f"{column}={group}", part.index))
    return subsets


def _paired_frame(rows: pd.DataFrame, metric: Scored, dimension: str) -> pd.DataFrame:
    """The rows the metric scored and that have a ``dimension`` MOS: stimulus, score, target,
    and the reference when known (the bootstrap's unit)."""
    rows = rows[rows[dimension].notna()]
    rows = rows[rows["stimulus"].astype(str).isin(metric.scores.index)]
    frame = pd.DataFrame({
        "stimulus": rows["stimulus"].astype(str).to_numpy(),
        "score": metric.scores.reindex(rows["stimulus"].astype(str)).to_numpy(float),
        "target": rows[dimension].to_numpy(float),
    })  # fmt: skip
    for column in ("reference", "reference_path"):
        if column in rows.columns:
            frame[column] = rows[column].astype(str).to_numpy()
    return frame


def _groups(frame: pd.DataFrame, choice: str):
    """Each image's reference for the bootstrap, or None to resample single images."""
    if choice == "image":
        return None
    column = next((c for c in ("reference", "reference_path") if c in frame.columns), None)
    if column is None:
        if choice == "reference":
            raise DataError("--resample reference: the MOS file has no reference column")
        return None
    groups = frame[column].astype(str).to_numpy()
    # One reference is no resampling unit: every draw would be the same set (a zero-width
    # interval). Its images are resampled instead, and the table says "images".
    return groups if len(np.unique(groups)) > 1 else None


def _resampling(groups, n: int) -> str:
    count = units(groups, n)
    return f"references ({count})" if groups is not None else f"images ({count})"


def _warn_few(groups, n: int, warned: set[str]) -> None:
    """Say once on stderr that a bootstrap over fewer than MIN_UNITS units cannot be trusted."""
    count, unit = units(groups, n), "references" if groups is not None else "images"
    if count < MIN_UNITS and f"{count} {unit}" not in warned:
        warned.add(f"{count} {unit}")
        print(
            f"train_iqa.validate: warning: the bootstrap resamples only {count} {unit}: its "
            f"intervals cannot be trusted (at least {MIN_UNITS} are needed)",
            file=sys.stderr,
        )


def _paired(args, mos: pd.DataFrame, a: Scored, b: Scored, dimension: str) -> dict | None:
    frame = _paired_frame(mos, a, dimension)
    frame = frame[frame["stimulus"].isin(b.scores.index)].reset_index(drop=True)
    if len(frame) < 5:
        return None
    groups = _groups(frame, args.resample)
    test = paired_srcc_test(
        oriented(frame["score"], a.lower_better),
        oriented(b.scores.reindex(frame["stimulus"]).to_numpy(float), b.lower_better),
        frame["target"], rounds=args.rounds, groups=groups,
    )  # fmt: skip
    return {"dimension": dimension, "a": a.label, "b": b.label, **test,
            "p": p_text(test["p_value"], args.rounds), "n": len(frame),
            "resampling": _resampling(groups, len(frame))}  # fmt: skip


def _n_cell(metric: dict, dimensions: list[str]) -> str:
    """The images a metric was validated on, as "n" or "covered/of" when some lack a score."""
    entries = [metric["dimensions"].get(d, {}) for d in dimensions]
    counts = {(e.get("covered"), e.get("of")) for e in entries}
    return " · ".join(f"{c}" if c == o else f"{c}/{o}" for c, o in sorted(counts))


def _cell(results: dict | None, statistic: str) -> str:
    if not results:
        return "–"
    value, low, high = results[statistic]
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


if __name__ == "__main__":
    sys.exit(main())
