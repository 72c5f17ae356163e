"""SSIM as pyiqa defines it, computed with a separable window: about scikit-image's speed.

pyiqa's ``ssim`` (Y channel of YIQ rounded to 0–255, an 11×11 Gaussian of σ 1.5, 'valid'
filtering, float64, negative contrast-structure clipped at 0) convolves with the full 11×11
window in float64, for which PyTorch has no fast CPU kernel: about 2.4 s per 768×512 image. The
Gaussian window is the outer product of a 1-D Gaussian with itself, so two 11-tap passes give
the same filter with 11/60 of the multiplications, and the images of a batch are scored one per
core (scipy's filters release the GIL); ``bench/scoring_bench.py`` times it beside
scikit-image. Scores agree with pyiqa's within 1e-5 (``tests/test_scoring.py``; ~2e-6 measured
on 768×512 images): pyiqa computes the Y channel in float32, which rounds a few pixels per image
the other way; here it is computed exactly from the 8-bit values.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import ndimage

WINDOW, SIGMA = 11, 1.5
DATA_RANGE = 255.0
C1, C2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2


class SeparableSSIM(torch.nn.Module):
    """pyiqa's ``ssim`` metric (its default settings), batched: (N, H, W, 3) uint8 pixels, or
    (N, 3, H, W) floats in [0, 1] as pyiqa takes them → (N,)."""

    takes_uint8 = True

    def __init__(self) -> None:
        super().__init__()
        half = (WINDOW - 1) / 2
        taps = np.exp(-(np.arange(-half, half + 1) ** 2) / (2 * SIGMA**2))
        self.taps = taps / taps.sum()

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        pairs = zip(distorted.detach().cpu().numpy(), reference.detach().cpu().numpy(), strict=True)
        # scipy's filters and numpy's arithmetic release the GIL: one image per core at a time.
        with ThreadPoolExecutor(max(1, min(len(distorted), os.cpu_count() or 1))) as pool:
            score = list(pool.map(lambda pair: self._ssim(*(luma(p) for p in pair)), pairs))
        return torch.tensor(score, dtype=torch.float64, device=distorted.device)

    def _ssim(self, x: np.ndarray, y: np.ndarray) -> float:
        """One image pair's SSIM (2-D Y channels, float64): one image at a time keeps the
        five filtered maps in the CPU's cache."""
        mu_x, mu_y, xx, yy, xy = (self._filter(m) for m in (x, y, x * x, y * y, x * y))
        mu_xy = mu_x * mu_y
        mu_x *= mu_x
        mu_y *= mu_y
        xx -= mu_x  # σx²
        yy -= mu_y  # σy²
        xy -= mu_xy  # σxy
        contrast_structure = np.maximum((2 * xy + C2) / (xx + yy + C2), 0)
        luminance = (2 * mu_xy + C1) / (mu_x + mu_y + C1)
        return float((luminance * contrast_structure).mean())

    def _filter(self, maps: np.ndarray) -> np.ndarray:
        """'valid' Gaussian filtering of every map: rows, then columns, by scipy's 1-D
        correlation in float64 (as scikit-image's SSIM filters): PyTorch's float64 convolutions
        are slow on the CPU. Its border mode only touches the margin cut away."""
        maps = ndimage.correlate1d(maps, self.taps, axis=-1, mode="nearest")
        maps = ndimage.correlate1d(maps, self.taps, axis=-2, mode="nearest")
        margin = WINDOW // 2
        return maps[..., margin:-margin, margin:-margin]


LUMA = np.array([0.299, 0.587, 0.114])
"""The Y row of pyiqa's RGB → YIQ matrix."""


def luma(image: np.ndarray) -> np.ndarray:
    """(H, W) float64: pyiqa's Y channel of one image, round(0.299 R + 0.587 G + 0.114 B) on
    the 0–255 scale, computed exactly from the 8-bit values (pyiqa computes it in float32, which
    rounds the few pixels whose Y falls within float32's error of a half the other way).
    ``image``: (H, W, 3) uint8 pixels, or (3, H, W) floats in [0, 1] as pyiqa takes them."""
    if image.dtype == np.uint8:
        channels = [image[..., c] for c in range(3)]
    else:  # floats: back to their 8-bit values
        planes = np.rint(image.astype(np.float32) * np.float32(DATA_RANGE))
        channels = [planes[c] for c in range(3)]
    y = LUMA[0] * channels[0] + LUMA[1] * channels[1] + LUMA[2] * channels[2]
    return np.round(y, out=y)
