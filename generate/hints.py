"""The codec hints' bookkeeping: a cache key that cannot go stale, and the check of the rate.

A codec hint (Image / Full modes) is cached in ``hints/`` under a key made of the reference's
*content* (a SHA-256 of its bytes) and every setting that changes the bitstream (codec, fixed QP
or target bpp). Two references with the same file stem in different folders, or a reference
edited between two runs, therefore never share a hint.

A bpp search can miss its target: a small reference (128×96, say) cannot be coded at 0.024 bpp
by any quantizer and scale (the smallest bitstream is already larger), so the hint overshoots;
and the best encode within a target can lie well below it when the next finer quantizer is above.
Each hint's achieved bpp is compared to the target (:func:`rate_warning`), and a run ends with
the spread over all its hints (:func:`rate_summary`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

RATE_TOLERANCE = 0.10
"""A hint further than this (relative) from its target bpp is reported as it is made."""


@lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def content_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (memoised per path, size and mtime)."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def codec_key(path: Path, codec: str, qp: int | None, target_bpp: float) -> str:
    """The cache stem of one reference's codec hint: content + codec + its rate setting."""
    rate = f"qp{qp}" if qp is not None else f"{target_bpp:g}bpp"
    return f"{Path(path).stem}_{content_digest(path)}_{codec}_{rate}"


def rate_warning(
    name: str, achieved_bpp: float, target_bpp: float, within_target: bool = True
) -> str | None:
    """A one-line warning when a bpp search missed its target by more than RATE_TOLERANCE:
    above it (no setting fits), or far below it (no setting lands nearer within it)."""
    miss = achieved_bpp / target_bpp - 1
    if within_target and abs(miss) <= RATE_TOLERANCE:
        return None
    why = (
        "no setting fits: the smallest encode of a small reference is above a low target"
        if not within_target
        else "the best encode within the target: the next finer setting is above it, or the "
        "finest searched is below it"
    )
    return (
        f"generate: warning: {name}: codec hint at {achieved_bpp:.4f} bpp, {miss:+.0%} from the "
        f"{target_bpp:g} bpp target ({why})"
    )


def rate_summary(achieved: list[float], target_bpp: float | None) -> str:
    """The spread of the codec hints' bpp (and, under a target, how many missed it)."""
    values = np.asarray(achieved, dtype=float)
    spread = (
        f"codec hints: {len(values)} at {values.min():.4f}–{values.max():.4f} bpp "
        f"(median {np.median(values):.4f})"
    )
    if target_bpp is None:
        return spread + " at a fixed QP"
    misses = np.abs(values / target_bpp - 1) > RATE_TOLERANCE
    return (
        f"{spread} against a {target_bpp:g} bpp target; {int(misses.sum())} off by more than "
        f"{RATE_TOLERANCE:.0%}"
    )
