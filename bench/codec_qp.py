"""Which fixed QP of each codec reaches the paper's 0.024 bpp, and each codec's coarsest rate.

Encodes the five demo images resized to ``--size`` (default 768×512) at full scale (no
downscaling) and prints, per codec:

* the finest QP whose rate is within ``--target`` (the bpp search's rule at scale 1), and its bpp;
* the bpp at the codec's coarsest QP (HEVC and AVC 51, AV1 63);
* the QP read back from each bitstream (it must be the QP asked for; AV1's is base_q_idx);
* the bytes the rate leaves out (x264's version SEI, AV1's temporal delimiter), as a share of
  the encoder's whole output at the coarsest QP;
* beside it, the encoder's default settings (what ``generate`` used before issue 21): the QP
  they code for the coarsest QP asked, and their bits (SEI included) against ours.

The QP scales differ between codecs, so the paper's VVC QP 53 says nothing about AV1's or HEVC's.

    python bench/codec_qp.py [--size 768x512] [--target 0.024] [--codecs av1,hevc,avc]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from generate import bitstream, codec

DEMO = Path(__file__).resolve().parents[1] / "annotate" / "demo_data"
DEFAULTS = {
    "av1": {"preset": "8", "qp": "{qp}"},
    "hevc": {"qp": "{qp}", "x265-params": "info=0:log-level=error"},
    "avc": {"qp": "{qp}"},
}
"""The encoder options before issue 21: the encoders' own I-frame QP offsets, every byte counted."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="768x512")
    parser.add_argument("--target", type=float, default=0.024)
    parser.add_argument("--codecs", default="av1,hevc,avc")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    paths = sorted(DEMO.glob("*.png"))
    images = [np.asarray(Image.open(p).convert("RGB").resize((width, height))) for p in paths]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}, "
          f"demo images {', '.join(p.stem for p in paths)} at {width}×{height}, "
          f"target {args.target} bpp")  # fmt: skip
    for name in args.codecs.split(","):
        if not codec.available(name):
            print(f"{name}: not available here")
            continue
        report(name, images, args.target)


def report(name: str, images: list[np.ndarray], target: float) -> None:
    """One codec's lines: QP within the target, the coarsest QP's rate, QPs read back, left out."""
    height, width, _ = images[0].shape
    pixels = height * width
    found = [codec._bisect_quality(image, target, name, 1.0) for image in images]
    fits = [c.bpp(height, width) <= target for c in found]
    qps = [c.settings["quality"] if fit else None for c, fit in zip(found, fits, strict=True)]
    within = [q for q in qps if q is not None]
    median = f"median QP {int(np.median(within))}" if within else "none fits at full size"
    print(f"{name}: finest QP within {target} bpp: {qps} → bpp "
          f"{[round(c.bpp(height, width), 4) for c in found]}; {median}")  # fmt: skip
    coarsest = codec.QP_LIMITS[name][1]
    top = [codec.encode_at_qp(image, coarsest, name) for image in images]
    rates = [c.bits / pixels for c in top]
    print(f"{name}: QP {coarsest} (coarsest) → {min(rates):.4f}–{max(rates):.4f} bpp "
          f"(median {np.median(rates):.4f})")  # fmt: skip
    coded = {bitstream.coded_qp(c.bitstream, name) for c in found + top}
    asked = {c.settings["quality"] for c in found + top}
    expected = {bitstream.AV1_QINDEX[q] for q in asked} if name == "av1" else asked
    print(f"{name}: coded QP read back {'=' if coded == expected else '≠'} asked "
          f"({'base_q_idx ' if name == 'av1' else ''}{sorted(coded)})")  # fmt: skip
    whole = [len(codec._encode_pyav(image, name, coarsest)) for image in images]
    dropped = [w - len(c.bitstream) for w, c in zip(whole, top, strict=True)]
    shares = [d / w for d, w in zip(dropped, whole, strict=True)]
    print(f"{name}: left out of the rate at QP {coarsest}: {min(dropped)}–{max(dropped)} bytes, "
          f"{min(shares):.0%}–{max(shares):.0%} of the encoder's output")  # fmt: skip
    before = [codec._encode_pyav(image, name, coarsest, DEFAULTS[name]) for image in images]
    coded_before = sorted({bitstream.coded_qp(b, name) for b in before})
    saved = [1 - c.bits / (8 * len(b)) for c, b in zip(top, before, strict=True)]
    print(f"{name}: the encoder's defaults code QP {coarsest} as {coded_before} at "
          f"{min(8 * len(b) for b in before) / pixels:.4f}–"
          f"{max(8 * len(b) for b in before) / pixels:.4f} bpp; the QP coded as asked, counted "
          f"as a decoder needs, is {min(saved):.0%}–{max(saved):.0%} fewer bits")  # fmt: skip


if __name__ == "__main__":
    main()
