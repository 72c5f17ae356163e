"""Pixel mode's hint: each block of the reference averaged to one quantized colour.

The decoder receives ``blocks × 3 × bits`` bits — a thumbnail — and upsamples it as the img2img
start image (CMC-Bench 3.2, *Pixel*: "a CR of around 5,000").

The default is 3 bits a channel, 9 bits a block (512 colours): with 64 × 64 blocks that is
9 / 4096 ≈ 0.0022 bpp, about what the paper's 20-word captions cost (0.0024 bpp, its Text mode's
10,000×), so caption + pixels land near the paper's 5,000× — 5,020× on a 768 × 512 reference with
the median GPT-4o caption of the CMC-Bench set, 3,952× at 512 × 512, 6,878× at 1024 × 768
(``python bench/pixel_ratio.py``). 8 bits a channel (24 bits a block) gives 2,843× at 768 × 512.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT_BITS = 3
"""Bits per channel of the default quantizer: 9 bits a block, near the paper's 5,000×."""


@dataclass
class PixelHint:
    """The transmitted thumbnail and what it costs."""

    thumbnail: np.ndarray
    """(rows, cols, 3) uint8: one quantized colour per block, de-quantized back to 0–255."""
    bits: int
    """blocks × 3 × bits per channel."""
    block: int = 64
    """The block side: where each colour sits in the image (the decoder knows it)."""


def encode(image: np.ndarray, block: int = 64, bits_per_channel: int = DEFAULT_BITS) -> PixelHint:
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
    return PixelHint(thumbnail=thumbnail, bits=rows * cols * 3 * bits_per_channel, block=block)


def start_image(hint: PixelHint, size: tuple[int, int]) -> np.ndarray:
    """The img2img start image of ``size`` = (width, height): the thumbnail upsampled (bicubic)
    onto the whole-block grid it came from, then cropped to the image.

    Stretching the thumbnail straight to ``size`` would squeeze the grid wherever the last
    blocks are partial, moving content by up to half a block (26 px at the edge of a 320 × 216
    image); on the grid, each colour sits over the block it averages.
    """
    rows, cols, _ = hint.thumbnail.shape
    grid = (cols * hint.block, rows * hint.block)
    upsampled = Image.fromarray(hint.thumbnail).resize(grid, Image.Resampling.BICUBIC)
    return np.asarray(upsampled)[: size[1], : size[0]]
