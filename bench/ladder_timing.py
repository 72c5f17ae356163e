"""CPU time of ``python -m generate ladder`` — every reference through each codec at each QP.

Synthetic references: the five demo images (``annotate/demo_data``) resized to ``--size``
(default 768×512) and varied by flips and crops, ``--references`` of them. Times each codec's
ladder separately (``--workers`` processes, default: all CPUs of this machine), prints seconds
per image and, when fewer than 100 references were timed, a linear extrapolation to 100 (said so
in the output). VVC is timed only when ``vvencapp`` and ``vvdecapp`` are on PATH.

    python bench/ladder_timing.py --references 10 --qps 37,42,47,51
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from generate import codec, ladder
from generate.plan import list_references

DEMO = Path(__file__).resolve().parents[1] / "annotate" / "demo_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=10)
    parser.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of each reference")
    parser.add_argument("--qps", default="37,42,47,51")
    parser.add_argument("--codecs", default="avc,hevc,av1,vvc")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    qps = [int(q) for q in args.qps.split(",")]
    wanted = [c for c in args.codecs.split(",") if c]
    with tempfile.TemporaryDirectory(prefix="ladder-bench-") as folder:
        refs = synthetic(Path(folder) / "refs", args.references, width, height)
        print(f"{args.references} references {width}×{height}, QPs {qps}, "
              f"{args.workers} worker(s) on {os.cpu_count()} CPUs")  # fmt: skip
        total = 0.0
        for name in wanted:
            if not codec.available(name):
                print(f"{name}: not available here (vvc needs vvencapp/vvdecapp) — not timed")
                continue
            todo = ladder.points(list_references(refs), [name], qps)
            start = time.perf_counter()
            ladder.run_ladder(todo, Path(folder) / name, args.workers)
            seconds = time.perf_counter() - start
            total += seconds
            print(
                f"{name}: {len(todo)} images in {seconds:.1f} s ({seconds / len(todo):.3f} s/image)"
            )
        print(f"all timed codecs: {total:.1f} s for {args.references} references")
        if args.references != 100:
            print(f"extrapolated linearly to 100 references: {total * 100 / args.references:.0f} s")


def synthetic(folder: Path, count: int, width: int, height: int) -> Path:
    folder.mkdir(parents=True)
    sources = sorted(DEMO.glob("*.png"))
    for index in range(count):
        image = Image.open(sources[index % len(sources)]).convert("RGB")
        variant = index // len(sources)
        if variant % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop = 0.1 * (variant % 3)  # a different framing of the same picture
        w, h = image.size
        image = image.crop((int(crop * w), int(crop * h), w, h)).resize((width, height))
        image.save(folder / f"NSI_synthetic_{index:03d}.png")
    return folder


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
