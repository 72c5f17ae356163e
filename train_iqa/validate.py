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

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from train_iqa.data import DEFAULT_TARGET, DataError, ImagePairs, load_mos
from train_iqa.model import Metric, MetricError
from train_iqa.stats import bootstrap, oriented, paired_srcc_test
from train_iqa.train import TrainSettings, predict

GROUPS = ("mode", "model", "content_type")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sources = _sources(args)
        if not 1 <= len(sources) <= 2:
            raise DataError("give one or two metrics (--metric / --scores)")
        mos = pd.read_csv(args.mos) if args.mos.is_file() else None
        if mos is None:
            raise DataError(f"{args.mos}: no such MOS file")
        results = [_evaluate(args, mos, source) for source in sources]
    except (DataError, MetricError) as error:
        print(f"train_iqa.validate: error: {error}", file=sys.stderr)
        return 2
    report = {"metrics": [r["summary"] for r in results]}
    for result in results:
        print(_markdown(result))
    if len(results) == 2:
        a, b = (r["frame"] for r in results)
        common = a.merge(b, on="stimulus", suffixes=("_a", "_b"))
        test = paired_srcc_test(
            oriented(common["score_a"], results[0]["lower_better"]),
            oriented(common["score_b"], results[1]["lower_better"]),
            common["target_a"], rounds=args.rounds,
        )  # fmt: skip
        report["paired_test"] = test
        verdict = "differ" if test["p_value"] < 0.05 else "do not differ significantly"
        print(
            f"\nSRCC({results[0]['name']}) − SRCC({results[1]['name']}) = {test['difference']:.4f} "
            f"[{test['low']:.4f}, {test['high']:.4f}], p = {test['p_value']:.4f}: they {verdict} "
            f"(paired bootstrap on {len(common)} images)"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train_iqa.validate",
        description=__doc__.split("\n\n")[2].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    parser.add_argument("--target", help="MOS column (default by FR/NR, consistency for CSVs)")
    parser.add_argument("--size", type=int, default=384, help="images are resized to size²")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    return parser


def _sources(args) -> list[tuple[str, object]]:
    if len(args.weights) > len(args.metric):
        raise DataError("more --weights than --metric")
    weights = args.weights + [None] * (len(args.metric) - len(args.weights))
    return [("metric", (m, w)) for m, w in zip(args.metric, weights, strict=True)] + [
        ("scores", path) for path in args.scores
    ]


def _evaluate(args, mos: pd.DataFrame, source) -> dict:
    kind, value = source
    if kind == "metric":
        name, weights = value
        metric = Metric(
            name, not args.no_pretrained, Path(weights) if weights else None, args.device
        )
        target = args.target or DEFAULT_TARGET[metric.full_reference]
        frame = load_mos(args.mos, target, args.images)
        data = ImagePairs(frame, args.size, args.device)
        frame["score"] = predict(metric, data, TrainSettings(size=args.size, device=args.device))
        lower_better = metric.lower_better
    else:
        name, target, lower_better = value.stem, args.target or "consistency_mos", args.lower_better
        if not value.is_file():
            raise DataError(f"{value}: no such scores file")
        scores = pd.read_csv(value)
        if not {"stimulus", "score"} <= set(scores.columns):
            raise DataError(f"{value}: a scores CSV needs the columns stimulus and score")
        if target not in mos.columns:
            raise DataError(f"{args.mos}: no column '{target}'")
        frame = mos.merge(scores[["stimulus", "score"]], on="stimulus", how="inner")
        if len(frame) < 5:
            raise DataError(f"{value}: only {len(frame)} stimuli match the MOS file")
        frame["target"] = frame[target].astype(float)
    rows = {"all": bootstrap(frame["score"], frame["target"], lower_better, args.rounds)}
    for column in GROUPS:
        if column in frame.columns and frame[column].nunique() > 1:
            for group, part in frame.groupby(column):
                if len(part) >= 5:
                    rows[f"{column}={group}"] = bootstrap(
                        part["score"], part["target"], lower_better, args.rounds
                    )
    summary = {"name": name, "target": target, "n": len(frame), "results": rows}
    return {"name": name, "frame": frame[["stimulus", "score", "target"]], "summary": summary,
            "lower_better": lower_better}  # fmt: skip


def _markdown(result: dict) -> str:
    summary = result["summary"]
    lines = [f"\n{summary['name']} against {summary['target']} ({summary['n']} images; "
             "95% bootstrap intervals)", "", "| subset | SRCC | KRCC | PLCC | RMSE |",
             "|---|---|---|---|---|"]  # fmt: skip
    for subset, figures in summary["results"].items():
        cells = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
                 (figures[k] for k in ("srcc", "krcc", "plcc", "rmse"))]  # fmt: skip
        lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
