"""``python -m train_iqa.leaderboard``: rank compression models with the fine-tuned indicators.

    python -m train_iqa.leaderboard --fr runs/topiq_fr/best.pt --nr runs/topiq_nr/best.pt \\
        --results out/ --out leaderboard.csv

Scores every decoded image of a benchmark run (the folder ``python -m generate run`` writes, with
its ``manifest.csv``) with the fine-tuned FR indicator (Consistency, against the reference) and
NR indicator (Perception), both on the 0–5 MOS scale, and prints the paper's table (Tables 3–5):
one row per model, columns mode × {FR, NR} × content type, and per mode the Overall score
2/3·FR + 1/3·NR (the paper weights consistency higher). ``--by`` chooses the rows (``model`` for
T2I decoders; any manifest column, e.g. an I2T captioner's name, otherwise).

Every score is turned back to the MOS's scale and direction (higher = better), also for a
lower-is-better indicator such as PieAPP (trained on 1 − MOS/5); each indicator scores at the
image size it was trained at, read from its checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from cmc_common.help import HelpFormatter
from train_iqa.cli import Parser, positive_int
from train_iqa.data import DataError, ImagePairs, read_csv
from train_iqa.model import Metric, MetricError, read_checkpoint
from train_iqa.train import TrainSettings, predict, to_mos

MODES = ("Full", "Image", "Pixel", "Text")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        frame = _manifest(args.results, args.references)
        if args.by not in frame.columns:
            raise DataError(f"{args.results / 'manifest.csv'}: no column '{args.by}' for --by")
        for column, checkpoint in (("FR", args.fr), ("NR", args.nr)):
            frame[column] = mos_scores(frame, checkpoint, args.size, args.device)
    except (DataError, MetricError) as error:
        print(f"train_iqa.leaderboard: error: {error}", file=sys.stderr)
        return 2
    table = leaderboard(frame, args.by)
    print(table.round(3).to_markdown() if _has_tabulate() else table.round(3).to_string())
    if args.out:
        table.to_csv(args.out)
        frame.to_csv(Path(args.out).with_suffix(".scores.csv"), index=False)
    return 0


def mos_scores(frame: pd.DataFrame, checkpoint: Path, size: int | None, device: str):
    """A fine-tuned indicator's scores of ``frame``'s images on the MOS scale (0–5, higher =
    better), at ``size`` or else the size it was trained at (384² for a checkpoint without one)."""
    metric, settings = indicator(checkpoint, device)
    size = size or settings.get("size") or 384
    data = ImagePairs(frame.assign(target=0.0), size, device)
    raw = predict(metric, data, TrainSettings(size=size, device=device))
    return to_mos(raw, metric.lower_better)


def indicator(checkpoint: Path, device: str) -> tuple[Metric, dict]:
    """The metric a train_iqa checkpoint holds, with its training settings."""
    state = read_checkpoint(checkpoint)
    name = state.get("metric")
    if not name or not isinstance(name, str):
        raise MetricError(f"{checkpoint}: not a train_iqa checkpoint (no metric name)")
    metric = Metric(name, pretrained=False, weights=checkpoint, device=device)
    return metric, state.get("settings") or {}


def leaderboard(frame: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """Mean FR and NR per row, mode and content type, and Overall = 2/3·FR + 1/3·NR per mode."""
    if by not in frame.columns:
        raise DataError(f"the manifest has no column '{by}'")
    if "content_type" not in frame.columns:
        frame = frame.assign(content_type="")
    types = [t for t in ("NSI", "SCI", "AIGI") if t in set(frame["content_type"])] or ["all"]
    if types == ["all"]:
        frame = frame.assign(content_type="all")
    long = frame.groupby([by, "mode", "content_type"])[["FR", "NR"]].mean()
    wide = long.unstack(["mode", "content_type"])
    wide.columns = [f"{mode}/{kind}/{content}" for kind, mode, content in wide.columns]
    for mode in MODES:
        fr = [c for c in wide.columns if c.startswith(f"{mode}/FR/")]
        nr = [c for c in wide.columns if c.startswith(f"{mode}/NR/")]
        if fr and nr:
            wide[f"{mode}/Overall"] = 2 / 3 * wide[fr].mean(axis=1) + 1 / 3 * wide[nr].mean(axis=1)
    ordered = [f"{m}/{k}/{t}" for m in MODES for k in ("FR", "NR") for t in types]
    ordered += [f"{m}/Overall" for m in MODES]
    return wide[[c for c in ordered if c in wide.columns]]


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m train_iqa.leaderboard",
        description="Score a benchmark run with fine-tuned FR/NR indicators and print the "
        "paper's table (Overall = 2/3 FR + 1/3 NR).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--fr", type=Path, required=True, help="FR checkpoint (best.pt)")
    parser.add_argument("--nr", type=Path, required=True, help="NR checkpoint (best.pt)")
    parser.add_argument("--results", type=Path, required=True, help="`generate run` output folder")
    parser.add_argument(
        "--references", type=Path, help="folder of the references, if they moved since the run"
    )
    parser.add_argument("--by", default="model", help="manifest column of the table's rows")
    parser.add_argument(
        "--size", type=positive_int,
        help="images are resized to size² (default: each checkpoint's training size)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="CSV of the table (and .scores.csv per image)")
    return parser


def _manifest(results: Path, references: Path | None) -> pd.DataFrame:
    path = results / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{results}: no manifest.csv (run python -m generate run first)")
    frame = read_csv(path, "manifest")
    text = frame.select_dtypes(exclude="number").columns  # empty text cells as "", numbers as NaN
    frame[text] = frame[text].fillna("")
    for column in ("distorted_path", "reference_path", "mode"):
        if column not in frame.columns:
            raise DataError(f"{path}: no column '{column}'")
    frame["distorted_path"] = [str(results / p) for p in frame["distorted_path"]]
    if references is not None:
        frame["reference_path"] = [str(references / Path(p).name) for p in frame["reference_path"]]
    missing = [p for p in frame["reference_path"] if not Path(p).is_file()]
    if missing:
        raise DataError(f"reference {missing[0]} not found: give --references")
    return frame


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
