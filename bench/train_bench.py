"""Training throughput of TOPIQ-FR and TOPIQ-NR: image pairs per second, forward + backward + Adam.

    python bench/train_bench.py                     # CPU here: 384² (the paper's), batch 8
    python bench/train_bench.py --device cuda --batch 32 --amp

Random-initialized networks (``--no-pretrained`` equivalents: the speed does not depend on the
weights) on random tensors already on the device — the cached-tensor pipeline of ``train_iqa``,
so this measures the model, not decoding. Prints training pairs/s (forward + backward + Adam, as
``train_iqa`` runs it: frozen BatchNorms in eval mode) and what the paper's schedule (3,200
training pairs × 50 epochs) would take at that rate; then, for TOPIQ-FR, scoring pairs/s and the
share of a scoring forward pass spent on the reference image's backbone features — what caching
those features per reference could save when scoring (validation, leaderboard). In training the
backbone's weights change every step, so reference features cannot be reused there.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from train_iqa.model import Metric


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    args = parser.parse_args()
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device: {card}; {args.size}², batch {args.batch}, {torch.get_num_threads()} threads")
    print("| metric | pairs/s | paper schedule (160,000 pairs) |")
    print("|---|---|---|")
    for name in ("topiq_fr", "topiq_nr"):
        metric = Metric(name, pretrained=False, weights=None, device=args.device)
        metric.train_mode()
        if args.device.startswith("cuda"):
            metric.net.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(metric.net.parameters(), lr=2e-5)
        x = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
        y = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
        target = torch.rand(args.batch, device=args.device)
        for step in range(args.steps + 2):
            if step == 2:
                _sync(args.device)
                began = time.perf_counter()
            with torch.autocast("cuda", torch.bfloat16, enabled=args.amp):
                loss = torch.nn.functional.mse_loss(metric(x, y), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(args.device)
        rate = args.steps * args.batch / (time.perf_counter() - began)
        print(f"| {name} | {rate:.1f} | {160_000 / rate / 60:.0f} min |")
        if name == "topiq_fr":
            scoring = _scoring(metric, x, y, args)
    whole, reference = scoring
    print(f"\ntopiq_fr scoring: {args.batch / whole:.1f} pairs/s; the reference's backbone "
          f"features take {reference / whole:.0%} of it (the most caching them could save)")  # fmt: skip
    return 0


@torch.inference_mode()
def _scoring(metric: Metric, x: torch.Tensor, y: torch.Tensor, args) -> tuple[float, float]:
    """Seconds per batch of a scoring forward pass, and of the reference backbone alone in it."""
    metric.net.eval()
    net = metric.net

    def whole() -> None:
        metric(x, y)

    def reference() -> None:
        net.semantic_model(net.preprocess(y))

    return _timed(whole, args), _timed(reference, args)


def _timed(step, args) -> float:
    for _ in range(2):
        step()
    _sync(args.device)
    began = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(args.device)
    return (time.perf_counter() - began) / args.steps


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
