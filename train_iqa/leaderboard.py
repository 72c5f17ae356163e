"""``python -m train_iqa.leaderboard``: rank compression models with fine-tuned indicators.

    python -m train_iqa.leaderboard --fr runs/topiq_fr/best.pt --nr runs/topiq_nr/best.pt \\
        --results out/ --out leaderboard.csv

Scores every decoded image of a benchmark run (the folder ``python -m generate run`` writes, with
its ``manifest.csv``) with fine-tuned FR indicators (Consistency, against the reference) and NR
indicators (Perception), any number of each, on the 0–5 MOS scale, and prints the paper's table
(Tables 3–5): one row per model, one column per mode × indicator × content type — every mode and
content type of the manifest, none hidden — and per mode the Overall score 2/3·FR + 1/3·NR, each
the mean of the cells shown (the paper weights consistency higher). ``--by`` chooses the rows
(``model`` for T2I decoders; any manifest column, e.g. an I2T captioner's name, otherwise).

Every score is turned back to the MOS's scale and direction (higher = better), also for a
lower-is-better indicator such as PieAPP (trained on 1 − MOS/5); a score the network puts
outside 0–5 is clipped to it, and said. Each indicator scores at the scale it was trained at
(its checkpoint's size, aspect ratio kept), through the score cache shared with ``validate``.
A stock metric has no MOS scale and is refused; an indicator given as --fr must be FR, as --nr NR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cmc_common.help import HelpFormatter
from studydb.images import ImageReadError
from train_iqa.cli import Parser, positive_int
from train_iqa.data import MOS_SCALE, DataError, read_csv
from train_iqa.model import MetricError, read_checkpoint
from train_iqa.scoring import (
    MetricSpec,
    ScoreCache,
    Scorer,
    add_cache_options,
    score_pairs,
)
from train_iqa.train import to_mos

MODES = ("Full", "Image", "Pixel", "Text")
"""The paper's modes, shown first in this order; any other mode of the manifest follows."""
CONTENT_TYPES = ("NSI", "SCI", "AIGI")
KIND = {"FR": True, "NR": False}  # column prefix → full reference


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        frame = _manifest(args.results, args.references)
        if args.by not in frame.columns:
            raise DataError(f"{args.results / 'manifest.csv'}: no column '{args.by}' for --by")
        cache = (
            None
            if args.no_cache
            else ScoreCache(args.cache)
            if args.cache
            else ScoreCache.default()
        )
        columns = []
        for kind, texts in (("FR", args.fr), ("NR", args.nr)):
            for text in texts:
                label, values = mos_scores(frame, text, kind, args.size, args.device, cache)
                frame[f"{kind} {label}"] = values
                columns.append(f"{kind} {label}")
    except (DataError, MetricError, ImageReadError) as error:
        print(f"train_iqa.leaderboard: error: {error}", file=sys.stderr)
        return 2
    table = leaderboard(frame, args.by, columns)
    print(table.round(3).to_markdown() if _has_tabulate() else table.round(3).to_string())
    if args.out:
        table.to_csv(args.out)
        frame.to_csv(Path(args.out).with_suffix(".scores.csv"), index=False)
    return 0


def mos_scores(frame: pd.DataFrame, text: str, kind: str, size: int | None, device: str,
               cache: ScoreCache | None) -> tuple[str, np.ndarray]:  # fmt: skip
    """(label, scores of ``frame``'s images on the MOS scale: 0–5, higher = better) of the
    fine-tuned indicator ``text`` (a train_iqa checkpoint, or NAME:CHECKPOINT), checked to be
    ``kind`` (FR / NR)."""
    scorer = indicator(text, device, size)
    if scorer.full_reference != KIND[kind]:
        other = "NR" if scorer.full_reference is False else "FR"
        raise MetricError(
            f"{text}: {scorer.name} is an {other} metric, given as --{kind.lower()}; "
            f"pass it as --{other.lower()}"
        )
    raw = score_pairs(scorer, frame["distorted_path"], frame["reference_path"], cache)
    values = to_mos(raw, scorer.lower_better)
    outside = (values < MOS_SCALE[0]) | (values > MOS_SCALE[1])
    if outside.any():
        print(
            f"train_iqa.leaderboard: note: {scorer.label}: {outside.sum()} of {len(values)} "
            f"scores outside the MOS scale ({values.min():.2f}–{values.max():.2f}) clipped to "
            f"{MOS_SCALE[0]:g}–{MOS_SCALE[1]:g} (an indicator trained too briefly?)",
            file=sys.stderr,
        )
    return scorer.label, np.clip(values, *MOS_SCALE)


def indicator(text: str, device: str, size: int | None = None) -> Scorer:
    """The fine-tuned metric ``text`` names: a train_iqa checkpoint file (its metric read from
    it) or NAME:CHECKPOINT. A stock metric is refused: its scores have no MOS scale."""
    if Path(text).is_file():
        state = read_checkpoint(Path(text))
        name = state.get("metric")
        if not name or not isinstance(name, str):
            raise MetricError(f"{text}: not a train_iqa checkpoint (no metric name)")
        spec = MetricSpec(f"{name}:{Path(text).stem}", name, Path(text))
    else:
        spec = MetricSpec.parse(text)
    if spec.weights is None:
        raise MetricError(
            f"{text}: a stock metric's scores are not on the MOS scale; give a fine-tuned "
            "checkpoint (python -m train_iqa), or compare stock metrics with train_iqa.validate"
        )
    scorer = Scorer(spec, pretrained=False, device=device, size=size)
    if not scorer.fine_tuned:
        raise MetricError(f"{text}: not a train_iqa checkpoint (no training settings)")
    return scorer


def leaderboard(frame: pd.DataFrame, by: str = "model", columns: list[str] | None = None):
    """Mean score per row, mode, indicator and content type, and per mode Overall = 2/3 · the
    mean of its FR cells + 1/3 · the mean of its NR cells (every cell shown counts, none else).

    ``columns`` are the frame's indicator columns, named "FR label" / "NR label"."""
    if by not in frame.columns:
        raise DataError(f"the manifest has no column '{by}'")
    columns = columns or [c for c in frame.columns if c.split(" ")[0] in KIND]
    frame = frame.assign(content_type=frame.get("content_type", "all"))
    for column in ("mode", "content_type"):  # an empty cell is a group of its own, not dropped
        frame[column] = frame[column].fillna("").astype(str).replace("", "(none)")
    modes = _ordered(frame["mode"], MODES)
    types = _ordered(frame["content_type"], CONTENT_TYPES)
    long = frame.groupby([by, "mode", "content_type"])[columns].mean()
    wide = long.unstack(["mode", "content_type"])
    wide.columns = [f"{mode}/{column}/{content}" for column, mode, content in wide.columns]
    for mode in modes:
        fr = [c for c in wide.columns if c.startswith(f"{mode}/FR ")]
        nr = [c for c in wide.columns if c.startswith(f"{mode}/NR ")]
        if fr and nr:
            wide[f"{mode}/Overall"] = 2 / 3 * wide[fr].mean(axis=1) + 1 / 3 * wide[nr].mean(axis=1)
    ordered = [f"{m}/{c}/{t}" for m in modes for c in columns for t in types]
    ordered += [f"{m}/Overall" for m in modes]
    return wide[[c for c in ordered if c in wide.columns]]


def _ordered(values: pd.Series, known: tuple[str, ...]) -> list[str]:
    """Every distinct value: the paper's ``known`` ones first, in its order, then the others
    in the order they appear."""
    seen = list(dict.fromkeys(values))
    return [v for v in known if v in seen] + [v for v in seen if v not in known]


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m train_iqa.leaderboard",
        description="Score a benchmark run with fine-tuned FR/NR indicators and print the "
        "paper's table (Overall = 2/3 FR + 1/3 NR).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--fr", action="append", default=[], metavar="CHECKPOINT",
        help="fine-tuned FR indicator: a best.pt, or [LABEL=]NAME:CHECKPOINT (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--nr", action="append", default=[], metavar="CHECKPOINT",
        help="fine-tuned NR indicator, as --fr (repeatable)",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, required=True, help="`generate run` output folder")
    parser.add_argument(
        "--references", type=Path, help="folder of the references, if they moved since the run"
    )
    parser.add_argument("--by", default="model", help="manifest column of the table's rows")
    parser.add_argument(
        "--size", type=positive_int,
        help="shorter side resized to this, aspect ratio kept (default: each checkpoint's "
        "training size)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda, …")
    add_cache_options(parser)
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
