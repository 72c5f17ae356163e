"""``python -m train_iqa --metric topiq_fr --mos mos.csv``: fine-tune a pyiqa metric on the MOS."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train_iqa.data import DEFAULT_TARGET, DataError, load_mos
from train_iqa.model import Metric, MetricError
from train_iqa.train import TrainSettings, train


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metric = Metric(args.metric, not args.no_pretrained, args.weights, _device(args.device))
        target = args.target or DEFAULT_TARGET[metric.full_reference]
        frame = load_mos(args.mos, target, args.images)
        settings = TrainSettings(
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, size=args.size,
            test_fraction=args.test_fraction, by_content=args.split == "content", seed=args.seed,
            device=_device(args.device), amp=args.amp, workers=args.workers,
        )  # fmt: skip
        out = args.out or Path("runs") / args.metric
        best = train(metric, frame, settings, out, resume=args.resume)
    except (MetricError, DataError) as error:
        print(f"train_iqa: error: {error}", file=sys.stderr)
        return 2
    final = json.loads((out / "metrics.json").read_text())["final"]
    print(json.dumps({"metric": args.metric, "target": target, "final": final, "best": best}))
    print(f"checkpoint: {out / 'best.pt'}; figures: {out / 'metrics.json'}, {out / 'scatter.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train_iqa",
        description="Fine-tune a pyiqa metric on a study's MOS (CMC-Bench A.3 defaults: Adam, "
        "lr 2e-5, MSE, 50 epochs, 80/20 split), reporting SRCC/KRCC/PLCC/RMSE on the test split "
        "every epoch. Validation and the leaderboard: python -m train_iqa.validate / .leaderboard.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--metric", required=True, help="pyiqa name: topiq_fr, topiq_nr, …")
    parser.add_argument(
        "--mos", type=Path, required=True, help="mos.csv from python -m mos.compute"
    )
    parser.add_argument("--images", type=Path, help="base folder of relative image paths")
    parser.add_argument(
        "--target", help="MOS column (default: consistency_mos for FR, perception_mos for NR)"
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lr", type=float, default=2e-5, help="Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=384, help="images are resized to size²")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument(
        "--split",
        choices=("content", "random"),
        default="content",
        help="content: all images of a reference on one side (honest); random: the paper's",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/METRIC)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--amp", action="store_true", help="bf16 mixed precision on CUDA")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
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
