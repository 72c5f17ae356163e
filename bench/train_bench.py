"""Training throughput of TOPIQ-FR and TOPIQ-NR: image pairs per second, forward + backward + Adam.

    python bench/train_bench.py                     # CPU here: 224², batch 8
    python bench/train_bench.py --device cuda --size 384 --batch 32 --amp

Random-initialized networks (``--no-pretrained`` equivalents: the speed does not depend on the
weights) on random tensors already on the device — the cached-tensor pipeline of ``train_iqa``,
so this measures the model, not decoding. Prints pairs/s and what the paper's schedule
(3,200 training pairs × 50 epochs) would take at that rate.
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
    parser.add_argument("--size", type=int, default=224)
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
        metric.net.train()
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
    return 0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
