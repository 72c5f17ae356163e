"""Which fixed QP of each codec lands nearest the paper's 0.024 bpp (VVC's QP 53 there).

Runs the bpp search at full scale (no downscaling) on the five demo images resized to
``--size`` (default 768×512) and prints, per codec, the QP each image lands on and its bpp.
The QP scales differ between codecs, so the paper's VVC QP 53 says nothing about AV1's or HEVC's.

    python bench/codec_qp.py [--size 768x512] [--target 0.024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from generate import codec

DEMO = Path(__file__).resolve().parents[1] / "annotate" / "demo_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="768x512")
    parser.add_argument("--target", type=float, default=0.024)
    parser.add_argument("--codecs", default="av1,hevc,avc")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    images = [
        np.asarray(Image.open(p).convert("RGB").resize((width, height)))
        for p in sorted(DEMO.glob("*.png"))
    ]
    for name in args.codecs.split(","):
        if not codec.available(name):
            print(f"{name}: not available here")
            continue
        found = [codec._bisect_quality(image, args.target, name, 1.0) for image in images]
        qps = [c.settings["quality"] for c in found]
        bpps = [c.bpp(height, width) for c in found]
        print(f"{name}: QP {qps} → bpp {[round(b, 4) for b in bpps]}; median QP "
              f"{int(np.median(qps))} (target {args.target} at {width}×{height})")  # fmt: skip


if __name__ == "__main__":
    main()
