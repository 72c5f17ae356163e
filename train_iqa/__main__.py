"""``python -m train_iqa --metric topiq_fr --mos mos.csv``: fine-tune a pyiqa metric on the MOS."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cmc_common.help import HelpFormatter
from train_iqa.cli import (
    Parser,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    report_left_out,
)
from train_iqa.data import DEFAULT_TARGET, DataError, load_mos, mos_range
from train_iqa.model import Metric, MetricError
from train_iqa.train import TrainSettings, seed_everything, train


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        seed_everything(args.seed)  # before the metric: its initialization is random
        metric = Metric(args.metric, not args.no_pretrained, args.weights, _device(args.device))
        target = args.target or DEFAULT_TARGET[metric.full_reference]
        frame = load_mos(args.mos, target, args.images, args.mos_range)
        report_left_out("train_iqa", frame.attrs.get("left_out", []), target)
        settings = TrainSettings(
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, size=args.size,
            test_fraction=args.test_fraction, val_fraction=args.val_fraction,
            select_on=args.select_on, by_content=args.split == "content", seed=args.seed,
            device=_device(args.device), amp=args.amp, workers=args.workers,
            save_every=args.save_every, metric=args.metric, target=target,
            pretrained=not args.no_pretrained,
            weights=str(args.weights.resolve()) if args.weights else None,
        )  # fmt: skip
        out = args.out or Path("runs") / args.metric
        best = train(metric, frame, settings, out, resume=args.resume)
    except (MetricError, DataError) as error:
        print(f"train_iqa: error: {error}", file=sys.stderr)
        return 2
    final = json.loads((out / "metrics.json").read_text())["final"]
    print(json.dumps({"metric": args.metric, "target": target, "selected_on": args.select_on,
                      "final": final, "best": best}))  # fmt: skip
    print(f"checkpoint: {out / 'best.pt'}; figures: {out / 'metrics.json'}, {out / 'scatter.png'}")
    return 0


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m train_iqa",
        description="Fine-tune a pyiqa metric on a study's MOS (CMC-Bench A.3 defaults: Adam, "
        "lr 2e-5, MSE, 50 epochs, 80/20 split), reporting SRCC/KRCC/PLCC/RMSE on a validation "
        "split carved from training (which chooses best.pt) and on the untouched test split "
        "every epoch. The same command with the same --seed on the same machine gives the same "
        "numbers. Validation and the leaderboard: python -m train_iqa.validate / .leaderboard.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--metric", required=True, help="pyiqa name: topiq_fr, topiq_nr, …")
    parser.add_argument(
        "--mos", type=Path, required=True, help="mos.csv from python -m mos.compute"
    )
    parser.add_argument("--images", type=Path, help="base folder of relative image paths")
    parser.add_argument(
        "--target", help="MOS column (default: consistency_mos for FR, perception_mos for NR)"
    )
    parser.add_argument(
        "--mos-range", type=mos_range, metavar="LOW:HIGH",
        help="the MOS file's scale, mapped to 0–5 (default: it is 0–5; other values refused)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=positive_int, default=50, help="passes over the data")
    parser.add_argument("--lr", type=positive_float, default=2e-5, help="Adam learning rate")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per step")
    parser.add_argument(
        "--size",
        type=positive_int,
        default=384,
        help="shorter side resized to this (aspect ratio kept), then the centre size² cropped",
    )
    parser.add_argument(
        "--test-fraction", type=fraction, default=0.2, help="share of the data held out to test"
    )
    parser.add_argument(
        "--val-fraction", type=fraction, default=0.1,
        help="share of the training images held out to choose best.pt",
    )  # fmt: skip
    parser.add_argument(
        "--select-on", choices=("val", "test"), default="val",
        help="split whose SRCC chooses best.pt; test is the paper's choice (optimistic: the test "
        "figures then no longer measure unseen data), and trains on all non-test images",
    )  # fmt: skip
    parser.add_argument(
        "--split",
        choices=("content", "random"),
        default="content",
        help="content: all images of a reference on one side (honest); random: the paper's",
    )
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed of the splits, the initialization, the shuffle order and dropout",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="run folder (default: runs/METRIC)")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from the run's last.pt exactly where it stopped (refused if any setting "
        "but --epochs, --device, --workers, --save-every differs)",
    )  # fmt: skip
    parser.add_argument(
        "--save-every", type=non_negative_int, default=0,
        help="also save last.pt every this many steps (0: at the end of each epoch)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--amp", action="store_true", help="bf16 mixed precision on CUDA")
    parser.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader workers")
    parser.add_argument(
        "--no-pretrained", action="store_true", help="random init of head and backbone (offline)"
    )
    parser.add_argument("--weights", type=Path, help="start from this checkpoint (strict keys)")
    return parser


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
