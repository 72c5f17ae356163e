"""The online display check: the window this study's pairs need, and which screens are refused.

A fixed minimum window lets through screens on which the study's own pairs do not fit (and
rating is then blocked in a sitting already open), or refuses screens that would do. The need
follows the study instead: the largest pair a participant can be shown (the two images side by
side, the taller one's height) under the presentation mode — 1:1 in ``native``, down to
``DISPLAY_MIN_SCALE`` in ``scaled`` — plus what the trial page puts around it (the gap, the
captions, the status bar and the rating controls), in the device pixels of the participant's
screen. A phone (touch as the primary pointer, a small screen) is refused whatever it measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

TRIAL_CHROME_CSS = (68, 320)
"""CSS pixels the trial page needs beside the pair. Width: the 24-px gap, trial.js's 48-px
allowance and a scroll bar. Height: the status bar, captions and rating controls (the form is
237 px high in Chromium at every width from 800 to 1920, plus trial.js's 70-px allowance,
rounded up for other fonts)."""
PHONE_SCREEN_CSS = 600
"""A touch-first device whose screen's shorter side is below this many CSS pixels is a phone."""


@dataclass(frozen=True)
class DisplayNeeds:
    """What the study asks of a screen."""

    pair: tuple[int, int]
    """The largest pair in image pixels: (both widths together, the taller height)."""
    presentation: str = "native"
    min_scale: float = 0.5
    floor: tuple[int, int] = (0, 0)
    dpr_range: tuple[float, float] = (1.0, 3.0)

    @classmethod
    def from_config(cls, config: Any, pair: tuple[int, int]) -> DisplayNeeds:
        """Raises ValueError on a setting that cannot work (checked at start-up)."""
        floor = config.get("DISPLAY_MIN_WINDOW") or (0, 0)
        min_scale = float(config.get("DISPLAY_MIN_SCALE", 0.5))
        if not 0 < min_scale <= 1:
            raise ValueError("DISPLAY_MIN_SCALE must lie in (0, 1]")
        if len(floor) != 2 or min(floor) < 0:
            raise ValueError("DISPLAY_MIN_WINDOW must be None or (width, height) in pixels")
        low, high = config["DISPLAY_DPR_RANGE"]
        if not 0 < low <= high:
            raise ValueError("DISPLAY_DPR_RANGE must be (low, high) with 0 < low ≤ high")
        return cls(
            pair,
            config.get("PRESENTATION", "native"),
            min_scale,
            (int(floor[0]), int(floor[1])),
            (float(low), float(high)),
        )

    def window(self, dpr: float) -> tuple[int, int]:
        """The smallest browser window (device pixels) that shows the largest pair, sliders
        included, on a screen of pixel ratio ``dpr``."""
        factor = 1.0 if self.presentation == "native" else self.min_scale
        width = math.ceil(factor * self.pair[0] + TRIAL_CHROME_CSS[0] * dpr)
        height = math.ceil(factor * self.pair[1] + TRIAL_CHROME_CSS[1] * dpr)
        return max(width, self.floor[0]), max(height, self.floor[1])

    def problems(self, measured: dict[str, Any], digits_read: bool) -> list[str]:
        """Why this screen is unsuitable (empty: it is fine). Sizes are in device pixels."""
        problems = []
        dpr = float(measured["device_pixel_ratio"])
        if _is_phone(measured):
            problems.append(
                "this looks like a phone (a touch screen whose shorter side is under "
                f"{PHONE_SCREEN_CSS} points): the study needs a computer screen"
            )
        width, height = self.window(dpr)
        if measured["window_width"] < width or measured["window_height"] < height:
            problems.append(
                f"the browser window is {measured['window_width']} × "
                f"{measured['window_height']} pixels; this study's largest images need at least "
                f"{width} × {height} (with the rating controls): use a larger screen or maximise "
                "the window"
            )
        low, high = self.dpr_range
        if not low <= dpr <= high:
            problems.append(
                f"the display's pixel ratio is {dpr:g}; the study needs {low:g}–{high:g} (a "
                "computer screen, not a phone)"
            )
        if abs(measured["zoom"] - 1) > 0.1:
            problems.append(
                f"the page is zoomed to {measured['zoom']:.0%}: reset the zoom to 100% (Ctrl+0)"
            )
        if not digits_read:
            problems.append(
                "the number in the grey box was not read correctly: the screen's contrast may "
                "be too low, or the room too bright"
            )
        return problems


def _is_phone(measured: dict[str, Any]) -> bool:
    shorter = min(measured["screen_width"], measured["screen_height"])
    return (
        measured.get("pointer") == "coarse"
        and shorter / measured["device_pixel_ratio"] < PHONE_SCREEN_CSS
    )


def largest_pair(pairs: list[tuple[str, str]]) -> tuple[int, int]:
    """(widest pair's two widths together, tallest image's height) over ``pairs`` of image
    paths (distorted, reference); unreadable files are left out (the file check lists them)."""
    width = height = 0
    for distorted, reference in pairs:
        sizes = [image_size(distorted), image_size(reference)]
        if None in sizes:
            continue
        width = max(width, sizes[0][0] + sizes[1][0])
        height = max(height, sizes[0][1], sizes[1][1])
    return width, height


@lru_cache(maxsize=65536)
def image_size(path: str) -> tuple[int, int] | None:
    """An image's (width, height) from its header (cached: a study's files do not change)."""
    try:
        with Image.open(Path(path)) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None
