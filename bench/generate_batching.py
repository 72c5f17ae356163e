"""How many pipeline calls a study plan takes at a given ``--batch-size`` (no model, no GPU).

    python bench/generate_batching.py                 # the paper's plan: 100 references × 40
    python bench/generate_batching.py --batch 8

Makes the paper's study plan (``generate plan``'s code: 40/30/30 content mix, strengths drawn
from U[0.2, 0.9]) over synthetic references of one size, and groups it into calls exactly as
``python -m generate run`` does (:func:`generate.run.batches`): same model, mode, working size and
number of denoising steps. Prints calls and images per call, img2img and Text apart (AnimateDiff
and the external restoration models take one image per call).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from generate.decode import Decoder
from generate.plan import choose_references, configurations, make_plan
from generate.registry import GENERATIVE, RESTORATION, load_registry
from generate.run import batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="images per call (--batch-size)")
    parser.add_argument("--size", default="1024x768", help="the references' WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0, help="the plan's seed")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    registry = load_registry()
    with tempfile.TemporaryDirectory() as folder:
        references = _references(Path(folder), (width, height))
        chosen = choose_references(references, 100, np.random.default_rng(args.seed))
        plan = make_plan(chosen, configurations(registry, [*GENERATIVE, *RESTORATION]), "study",
                         args.seed)  # fmt: skip
        counts = {"img2img": [0, 0], "Text": [0, 0]}
        for model, rows in plan.groupby("model", sort=False):
            decoder = Decoder(registry[model], "cpu")
            for call in batches(rows, decoder, args.batch):
                tally = counts["Text" if call[0].mode == "Text" else "img2img"]
                tally[0] += len(call) if decoder.one_per_call else 1
                tally[1] += len(call)
    print(f"study plan, {len(plan)} images, references {width}×{height}, --batch-size {args.batch}")
    for kind, (calls, images) in counts.items():
        print(f"{kind}: {images} images in {calls} calls ({images / calls:.2f} per call)")
    return 0


def _references(folder: Path, size: tuple[int, int]) -> list[Path]:
    """Blank references named for the 40/30/30 mix: only their names and size matter here."""
    paths = []
    for kind, count in (("NSI", 400), ("SCI", 300), ("AIGI", 300)):
        for i in range(count):
            paths.append(folder / f"{kind}_{i:04d}.png")
            Image.new("RGB", size).save(paths[-1])
    return paths


if __name__ == "__main__":
    sys.exit(main())
