"""Pixel mode's compression ratio (caption + one quantized colour per 64 × 64 block) against the
paper's "around 5,000", for each quantizer and reference size, with the median caption of the
CMC-Bench GPT-4o captions (``../shared/data/cmc-bench/gpt4v.csv``).

    python bench/pixel_ratio.py [CAPTIONS.csv]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from generate import pixel
from generate.captions import text_bits

CAPTIONS = Path(__file__).resolve().parents[2] / "shared/data/cmc-bench/gpt4v.csv"
SIZES = ((512, 512), (768, 512), (1024, 768), (1024, 1024))


def main(captions: Path = CAPTIONS) -> None:
    bits = pd.read_csv(captions)["text"].astype(str).map(text_bits)
    caption = float(np.median(bits))
    print(f"median caption: {caption:.0f} bits ({len(bits)} captions)")
    print("bits/channel  bits/block  " + "  ".join(f"{w}x{h:<5}" for w, h in SIZES))
    for per_channel in (8, 4, 3, 2):
        ratios = []
        for width, height in SIZES:
            image = np.zeros((height, width, 3), np.uint8)
            hint_bits = pixel.encode(image, 64, per_channel).bits
            ratios.append(24 * width * height / (caption + hint_bits))
        print(
            f"{per_channel:>12}  {3 * per_channel:>10}  " + "  ".join(f"{r:>9,.0f}" for r in ratios)
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CAPTIONS)
