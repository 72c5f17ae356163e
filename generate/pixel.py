"""Pixel mode's hint: each block of the reference averaged to one quantized colour.

The decoder receives ``blocks × 3 × bits`` bits — a thumbnail — and upsamples it as the img2img
start image (CMC-Bench 3.2, *Pixel*). With 64 × 64 blocks and 8 bits a channel that is
24 / 4096 ≈ 0.006 bits per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class PixelHint:
    """The transmitted thumbnail and what it costs."""

    thumbnail: np.ndarray
    """(rows, cols, 3) uint8: one quantized colour per block, de-quantized back to 0–255."""
    bits: int
    """blocks × 3 × bits per channel."""


def encode(image: np.ndarray, block: int = 64, bits_per_channel: int = 8) -> PixelHint:
    """Average each ``block`` × ``block`` tile (edge tiles: what is there) and quantize it."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected an RGB image of shape (height, width, 3)")
    if not 1 <= bits_per_channel <= 8 or block < 1:
        raise ValueError("bits per channel must be 1–8 and the block at least 1 pixel")
    height, width, _ = image.shape
    row_starts, col_starts = np.arange(0, height, block), np.arange(0, width, block)
    rows, cols = len(row_starts), len(col_starts)
    # Integer sums in float64 are exact, so the block means do not depend on the summing order.
    sums = np.add.reduceat(np.add.reduceat(image.astype(np.float64), row_starts, axis=0),
                           col_starts, axis=1)  # fmt: skip
    counts = np.outer(np.diff([*row_starts, height]), np.diff([*col_starts, width]))
    mean = sums / counts[:, :, None]
    levels = (1 << bits_per_channel) - 1
    quantized = np.round(mean / 255.0 * levels)
    thumbnail = np.round(quantized / levels * 255.0).astype(np.uint8)
    return PixelHint(thumbnail=thumbnail, bits=rows * cols * 3 * bits_per_channel)


def start_image(hint: PixelHint, size: tuple[int, int]) -> np.ndarray:
    """The img2img start image: the thumbnail upsampled (bicubic) to ``size`` = (width, height)."""
    return np.asarray(Image.fromarray(hint.thumbnail).resize(size, Image.Resampling.BICUBIC))
