"""Scoring throughput of ``train_iqa.scoring`` beside the reference implementations, same run.

    python bench/scoring_bench.py --images 8 --width 768 --height 512

Synthetic 768×512 pairs (a smooth picture and a noisy copy) are written as PNG, then scored:
SSIM by ``train_iqa.scoring`` (batched, separable window; images decoded ahead and scored
on every core) against scikit-image's
``structural_similarity`` (the anchor: Gaussian σ 1.5, on the same Y channel, from the same
decoded pixels) and pyiqa's own SSIM; PSNR and GMSD by ``train_iqa.scoring`` (pyiqa's networks)
against scikit-image's ``peak_signal_noise_ratio``; then a second, cached pass. Every metric
is built before the timings (validate builds each once for all images); decoding the PNGs is
timed for all. Each figure is
the median of ``--repeats`` passes (interleaved, so that a machine's varying load hits all alike);
the table is printed as Markdown for bench/README.md, with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studydb.images import read_rgb_array  # noqa: E402
from train_iqa.scoring import MetricSpec, ScoreCache, Scorer, score_pairs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-pyiqa-ssim", action="store_true", help="it takes seconds/image")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="scoring_bench_"))
    distorted, references = _pairs(folder, args.images, args.width, args.height)
    runs = {
        "ssim: train_iqa.scoring (batched, separable, every core)": _ours("ssim"),
        "ssim: scikit-image structural_similarity (anchor)": _skimage_ssim,
        "psnr: train_iqa.scoring (pyiqa's PSNR)": _ours("psnr"),
        "psnr: scikit-image peak_signal_noise_ratio (anchor)": _skimage_psnr,
        "gmsd: train_iqa.scoring (pyiqa's GMSD)": _ours("gmsd"),
    }
    if not args.skip_pyiqa_ssim:
        runs["ssim: pyiqa create_metric('ssim'), one image at a time"] = _pyiqa("ssim")
    for run in runs.values():  # imports and first calls out of the timings
        run(distorted[:1], references[:1])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(distorted, references)
            times[name].append((time.perf_counter() - start) / args.images)
    cache = ScoreCache(folder / "cache.sqlite")
    scorer = Scorer(MetricSpec.parse("ssim"))
    score_pairs(scorer, distorted, references, cache, progress=False)
    start = time.perf_counter()
    score_pairs(scorer, distorted, references, cache, progress=False)
    cached = (time.perf_counter() - start) / args.images
    print(f"{args.images} pairs of {args.width}×{args.height}, median of {args.repeats} passes, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| scoring | s / image | images / s |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {1 / median:.1f} |")
    print(f"| ssim: train_iqa.scoring, second pass (cache) | {cached:.4f} | {1 / cached:.0f} |")


def _pairs(folder: Path, n: int, width: int, height: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    distorted, references = [], []
    for i in range(n):
        picture = np.stack([np.sin(xx / (20 + 5 * i + c) + yy / 31) for c in range(3)], axis=-1)
        clean = ((picture + 1) * 127.5).astype(np.uint8)
        noisy = np.clip(clean + rng.normal(0, 4 + 2 * i, clean.shape), 0, 255).astype(np.uint8)
        references.append(str(folder / f"ref{i}.png"))
        distorted.append(str(folder / f"dist{i}.png"))
        Image.fromarray(clean).save(references[-1])
        Image.fromarray(noisy).save(distorted[-1])
    return distorted, references


def _ours(name: str):
    """Scoring with train_iqa.scoring, the metric built once (as validate builds it once for
    thousands of images), no cache."""
    scorer = Scorer(MetricSpec.parse(name))
    return lambda d, r: score_pairs(scorer, d, r, progress=False)


def _luma(path: str) -> np.ndarray:
    """pyiqa's Y (0.299 R + 0.587 G + 0.114 B, rounded) of the decoded image, in float64."""
    rgb = read_rgb_array(path).astype(np.float64)
    return np.round(rgb @ np.array([0.299, 0.587, 0.114]))


def _skimage_ssim(distorted: list[str], references: list[str]) -> list[float]:
    from skimage.metrics import structural_similarity

    return [
        structural_similarity(
            _luma(d),
            _luma(r),
            data_range=255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )  # fmt: skip
        for d, r in zip(distorted, references, strict=True)
    ]


def _skimage_psnr(distorted: list[str], references: list[str]) -> list[float]:
    from skimage.metrics import peak_signal_noise_ratio

    return [
        peak_signal_noise_ratio(read_rgb_array(r), read_rgb_array(d), data_range=255)
        for d, r in zip(distorted, references, strict=True)
    ]


def _pyiqa(name: str):
    import pyiqa

    metric = pyiqa.create_metric(name, device="cpu")
    return lambda d, r: [float(metric(a, b)) for a, b in zip(d, r, strict=True)]


if __name__ == "__main__":
    main()
