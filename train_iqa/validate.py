"""``python -m train_iqa.validate``: how well does a metric agree with the study's MOS?

    python -m train_iqa.validate --mos mos.csv --metric topiq_fr --weights runs/topiq_fr/best.pt
    python -m train_iqa.validate --mos mos.csv --scores mine.csv --scores theirs.csv

Scores every image with a pyiqa metric (fine-tuned or stock) or reads a metric's scores from a CSV
(``stimulus,score``), then reports SRCC / KRCC / PLCC / RMSE against the MOS with bootstrap 95%
intervals, overall and per mode / model / content type. Given two metrics it tests, on the same
images, whether their SRCCs differ (paired bootstrap). This is how a new IQA metric is validated
against the study.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cmc_common.help import HelpFormatter
from train_iqa.cli import Parser, positive_int, report_left_out
from train_iqa.data import (
    DEFAULT_TARGET,
    DataError,
    ImagePairs,
    drop_missing,
    finite_target,
    load_mos,
    read_csv,
    unique_stimuli,
)
from train_iqa.model import Metric, MetricError, read_checkpoint
from train_iqa.stats import bootstrap, oriented, paired_srcc_test, resampling
from train_iqa.train import TrainSettings, predict

GROUPS = ("mode", "model", "content_type")
DEFAULT_SIZE = 384


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sources = _sources(args)
        if not 1 <= len(sources) <= 2:
            raise DataError("give one or two metrics (--metric / --scores)")
        mos = read_csv(args.mos, "MOS")
        if "stimulus" not in mos.columns:
            raise DataError(f"{args.mos}: no column 'stimulus'")
        unique_stimuli(mos, args.mos)
        only, where = _test_images(args)
        results = [_evaluate(args, mos, source, only) for source in sources]
        if len(results) == 2:
            targets = [r["summary"]["target"] for r in results]
            if targets[0] != targets[1]:  # a paired test needs one MOS for both
                raise DataError(
                    f"the two metrics are scored against different targets ({targets[0]}, "
                    f"{targets[1]}): no paired test; choose one with --target"
                )
            paired = _paired(args, results)
    except (DataError, MetricError) as error:
        print(f"train_iqa.validate: error: {error}", file=sys.stderr)
        return 2
    print(f"scored on: {where}")
    report = {"images": where, "metrics": [r["summary"] for r in results]}
    for result in results:
        print(_markdown(result))
    if len(results) == 2:
        test, n = paired
        report["paired_test"] = test
        verdict = "differ" if test["p_value"] < 0.05 else "do not differ significantly"
        print(
            f"\nSRCC({results[0]['name']}) − SRCC({results[1]['name']}) = {test['difference']:.4f} "
            f"[{test['low']:.4f}, {test['high']:.4f}], p = {test['p_value']:.4f}: they {verdict} "
            f"(paired bootstrap on {n} images, resampling {test['resampling']})"
        )
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
    parser.add_argument("--metric", action="append", default=[], help="pyiqa metric (repeatable)")
    parser.add_argument("--weights", action="append", default=[], help="checkpoint per --metric")
    parser.add_argument("--no-pretrained", action="store_true", help="stock metric, random init")
    parser.add_argument("--scores", type=Path, action="append", default=[],
                        help="CSV with stimulus,score (repeatable)")  # fmt: skip
    parser.add_argument(
        "--lower-better", action="store_true", help="the CSV scores: lower = better"
    )
    parser.add_argument("--images", type=Path, help="base folder of relative image paths")
    parser.add_argument(
        "--target",
        help="MOS column (default: the checkpoint's, else by FR/NR; consistency for CSVs)",
    )
    parser.add_argument(
        "--test-of", type=Path, metavar="CHECKPOINT",
        help="score only the test images of the train_iqa run that wrote this best.pt (the "
        "default for a --weights that is one); needed to compare --scores on a run's test split",
    )  # fmt: skip
    parser.add_argument(
        "--all-images", action="store_true",
        help="score every image of the MOS file, even those a --weights checkpoint trained on",
    )  # fmt: skip
    parser.add_argument(
        "--size", type=positive_int,
        help=f"images are resized to size² (default: the checkpoint's training size, else "
        f"{DEFAULT_SIZE})",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=positive_int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--resample", choices=("auto", "reference", "image"), default="auto",
        help="bootstrap unit: whole references (images of one reference are not independent) or "
        "single images; auto: references when the MOS file gives them",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    return parser


def run_settings(path: Path) -> tuple[dict, dict]:
    """(settings, stimuli per split) stored in a train_iqa checkpoint; empty for other files
    (pyiqa's own weights), so that callers fall back to their defaults."""
    state = read_checkpoint(path)
    return state.get("settings") or {}, state.get("stimuli") or {}


def _sources(args) -> list[tuple[str, object]]:
    if len(args.weights) > len(args.metric):
        raise DataError("more --weights than --metric")
    weights = args.weights + [None] * (len(args.metric) - len(args.weights))
    return [("metric", (m, w)) for m, w in zip(args.metric, weights, strict=True)] + [
        ("scores", path) for path in args.scores
    ]


def _test_images(args) -> tuple[set[str] | None, str]:
    """The stimuli to score (None: all) and, in words, which they are."""
    if args.all_images:
        return None, "every image of the MOS file (--all-images)"
    runs = [args.test_of] if args.test_of else [w for w in args.weights if w]
    only, where = None, "every image of the MOS file"
    for path in runs:
        settings, stimuli = run_settings(Path(path))
        if "test" in stimuli:
            only, where = set(stimuli["test"]), f"the {len(stimuli['test'])} test images of {path}"
            break
        if args.test_of:
            raise DataError(f"{path}: not a train_iqa checkpoint (no test split stored)")
    for path in (w for w in args.weights if w) if only is not None else ():
        stimuli = run_settings(Path(path))[1]
        seen = only & set(stimuli.get("train", [])) | only & set(stimuli.get("val", []))
        if seen:  # its figures would not be test figures: another split (seed, fractions)
            raise DataError(
                f"{path} trained on (or selected on) {len(seen)} of {where}: its split differs; "
                "compare runs made with the same split (--seed, fractions), or use --all-images"
            )
    return only, where


def _evaluate(args, mos: pd.DataFrame, source, only: set[str] | None) -> dict:
    kind, value = source
    if kind == "metric":
        name, weights = value
        settings = run_settings(Path(weights))[0] if weights else {}
        metric = Metric(
            name, not args.no_pretrained, Path(weights) if weights else None, args.device
        )
        target = args.target or settings.get("target") or DEFAULT_TARGET[metric.full_reference]
        frame = load_mos(args.mos, target, args.images)
        frame = _restrict(frame, only, args.mos)
        size = args.size or settings.get("size") or DEFAULT_SIZE
        data = ImagePairs(frame, size, args.device)
        frame["score"] = predict(metric, data, TrainSettings(size=size, device=args.device))
        if not np.isfinite(frame["score"]).all():
            raise MetricError(f"{name}: the metric gave non-finite scores (a diverged checkpoint?)")
        lower_better = metric.lower_better
    else:
        name, target, lower_better = value.stem, args.target or "consistency_mos", args.lower_better
        scores = read_csv(value, "scores")
        if not {"stimulus", "score"} <= set(scores.columns):
            raise DataError(f"{value}: a scores CSV needs the columns stimulus and score")
        unique_stimuli(scores, value)
        numbers = pd.to_numeric(scores["score"], errors="coerce")
        bad = scores["stimulus"][~np.isfinite(numbers.to_numpy(float))]
        if len(bad):
            raise DataError(
                f"{value}: {len(bad)} missing or non-numeric score(s) (first: stimulus {bad.iloc[0]})"
            )
        if target not in mos.columns:
            raise DataError(f"{args.mos}: no column '{target}'")
        frame = mos.merge(scores[["stimulus", "score"]], on="stimulus", how="inner")
        frame = _restrict(drop_missing(frame, target), only, args.mos)
        finite_target(frame, target, args.mos)
        frame["target"] = frame[target].astype(float)
    report_left_out("train_iqa.validate", frame.attrs.get("left_out", []), target)
    if len(frame) < 3:  # fewer have no correlation (a small run's test split may hold 4)
        raise DataError(f"{name}: only {len(frame)} stimuli with a score and a '{target}'")
    groups = _groups(frame, args.resample)
    figures = {"all": bootstrap(frame["score"], frame["target"], lower_better, args.rounds,
                                groups=groups)}  # fmt: skip
    for column in GROUPS:
        if column in frame.columns and frame[column].nunique() > 1:
            for group, part in frame.groupby(column):
                if len(part) >= 5:
                    figures[f"{column}={group}"] = bootstrap(
                        part["score"], part["target"], lower_better, args.rounds,
                        groups=_groups(part, args.resample),
                    )  # fmt: skip
    summary = {"name": name, "target": target, "n": len(frame), "resampling": resampling(groups),
               "results": figures}  # fmt: skip
    keep = ["stimulus", "score", "target"] + (["reference"] if "reference" in frame else [])
    return {"name": name, "frame": frame[keep], "summary": summary, "lower_better": lower_better}


def _restrict(frame: pd.DataFrame, only: set[str] | None, path: Path) -> pd.DataFrame:
    if only is None:
        return frame
    kept = frame[frame["stimulus"].astype(str).isin(only)].reset_index(drop=True)
    kept.attrs = frame.attrs
    if kept.empty:
        raise DataError(f"{path}: none of the run's test images is in this MOS file")
    return kept


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


def _paired(args, results: list[dict]) -> tuple[dict, int]:
    a, b = (r["frame"] for r in results)
    common = a.merge(b.drop(columns=["reference"], errors="ignore"), on="stimulus",
                     suffixes=("_a", "_b"))  # fmt: skip
    if len(common) < 5:
        raise DataError(f"the two metrics share only {len(common)} scored images")
    groups = _groups(common, args.resample)
    test = paired_srcc_test(
        oriented(common["score_a"], results[0]["lower_better"]),
        oriented(common["score_b"], results[1]["lower_better"]),
        common["target_a"], rounds=args.rounds, groups=groups,
    )  # fmt: skip
    return {**test, "resampling": resampling(groups)}, len(common)


def _markdown(result: dict) -> str:
    summary = result["summary"]
    lines = [f"\n{summary['name']} against {summary['target']} ({summary['n']} images; "
             f"95% bootstrap intervals, resampling {summary['resampling']})", "",
             "| subset | SRCC | KRCC | PLCC | RMSE |", "|---|---|---|---|---|"]  # fmt: skip
    for subset, figures in summary["results"].items():
        cells = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
                 (figures[k] for k in ("srcc", "krcc", "plcc", "rmse"))]  # fmt: skip
        lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
