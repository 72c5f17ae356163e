"""The time ``python -m generate run`` spends per image outside the decoder (no GPU, no weights).

    python bench/generate_overhead.py               # 1024×768 references, decoder 0.6 s/image
    python bench/generate_overhead.py --decoder-seconds 0

On a GPU the decoder's ≤ 0.6 s/image is the goal; whatever the run does besides (the encoder side,
resizing back, writing the PNG and its metadata) adds to it unless it overlaps the next call. This
runs the real ``run_plan`` on the demo photos at 1024×768 (every mode of one model, `--batch-size
4`) with the decoder replaced by a stand-in that waits ``--decoder-seconds`` per image, as a busy
GPU would, and returns a photo. The codec hints are made once beforehand and cached, as in a study
(each reference's hint serves its 40 images). Prints wall seconds per image and the part beyond
the stand-in's wait, and the codec hints' time per reference in line and with one worker process
per CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from PIL import Image

from generate.captions import CsvCaptions
from generate.decode import Decoded, Decoder
from generate.plan import configurations, make_plan
from generate.registry import load_registry
from generate.run import Hints, RunSettings, cpu_share, run_plan

DEMO = Path(__file__).resolve().parents[1] / "annotate" / "demo_data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decoder-seconds", type=float, default=0.6,
                        help="the stand-in decoder's time per image")  # fmt: skip
    parser.add_argument("--copies", type=int, default=4, help="plan copies (5 × 4 × copies images)")
    parser.add_argument("--size", default="1024x768", help="the references' WIDTHxHEIGHT")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        plan, captions = _inputs(work, args.copies, size)
        settings = RunSettings(batch_size=4)
        registry = load_registry()
        photo = np.asarray(Image.open(DEMO / "chelsea.png").convert("RGB"))

        def stand_in(self, mode, requests):
            time.sleep(args.decoder_seconds * len(requests))
            return [Decoded(_fit(photo, r.size), 40, 20, False) for r in requests]

        # The codec hints, timed in line and with a worker process per CPU; the second set is
        # the run's cache, as a study's hints are made once and serve 40 images a reference.
        references = [(Path(p), None) for p in dict.fromkeys(plan["reference_path"])]
        hint_seconds = {}
        for workers, hints in ((1, work / "scratch"), (cpu_share(), work / "out" / "hints")):
            hints.mkdir(parents=True)
            began = time.perf_counter()
            Hints(hints, settings, None).prepare_codec(references, workers)
            hint_seconds[workers] = (time.perf_counter() - began) / len(references)
        with mock.patch.object(Decoder, "batch", stand_in):
            began = time.perf_counter()
            made = run_plan(plan, work / "out", registry, captions, settings)
            seconds = (time.perf_counter() - began) / made
    print(f"{made} images of {size[0]}×{size[1]}, --batch-size 4, stand-in decoder "
          f"{args.decoder_seconds:g} s/image")  # fmt: skip
    print(f"wall: {seconds:.3f} s/image; beyond the decoder: {seconds - args.decoder_seconds:.3f}")
    for workers, per_reference in hint_seconds.items():
        print(f"codec hints (AV1 bitrate search): {per_reference:.2f} s/reference, "
              f"{workers} worker process(es)")  # fmt: skip
    return 0


def _inputs(
    work: Path, copies: int, size: tuple[int, int]
) -> tuple[pd.DataFrame, CsvCaptions]:  # fmt: skip
    """The five demo photos at ``size`` as references, a plan of SD15's four modes, captions."""
    references = work / "references"
    references.mkdir()
    for path in sorted(DEMO.glob("*.png")):
        image = Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        image.save(references / f"NSI_{path.stem}.png")
    names = sorted(p.name for p in references.iterdir())
    pd.DataFrame({"name": names, "text": ["A photograph."] * len(names)}).to_csv(
        work / "captions.csv", index=False
    )
    paths = sorted(references.iterdir())
    one = make_plan(paths, configurations(load_registry(), ["SD15"]), "benchmark", 0)
    plan = pd.concat([one.assign(id=one["id"] + f"_{k}") for k in range(copies)], ignore_index=True)
    return plan, CsvCaptions(work / "captions.csv")


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


if __name__ == "__main__":
    sys.exit(main())
