"""Issue 19 item 7 through the Flask test client: the display check's minimum window follows the
study's largest pair under the presentation mode (device pixels, sliders included), an
unsuitable screen is refused before any sitting opens, and a phone is refused. Chromium at the
issue's window sizes and pixel ratios: tests/test_online_display_browser.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import func, select

from annotate.db import get_db
from annotate.display import TRIAL_CHROME_CSS, DisplayNeeds
from studydb import Session, Trial
from tests.annotate_helpers import Browser, import_study, make_app
from tests.test_online_app import GOOD_SCREEN, entry, shown_digits

CODES = {"paid": "C0DE42", "failed_checks": ""}
PHONE_LANDSCAPE = {  # a 393 × 851-point phone held sideways at pixel ratio 2.75
    "window_width": 2340,
    "window_height": 1000,
    "screen_width": 2340,
    "screen_height": 1081,
    "device_pixel_ratio": 2.75,
    "zoom": 1,
    "pointer": "coarse",
}


def sized_study(folder: Path, size: int) -> Path:
    """Two references of ``size`` × ``size`` pixels with two distorted images each (smooth, so
    that even 1024-px PNGs stay small)."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    rows = []
    for r in range(2):
        image = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                          np.full((size, size), 60 * r, np.uint8)], axis=2)  # fmt: skip
        Image.fromarray(image).save(folder / f"r{r}.png")
        for d in range(2):
            Image.fromarray(image // (d + 2)).save(folder / f"r{r}_d{d}.png")
            rows.append(
                {"id": f"r{r}_d{d}", "distorted_path": f"r{r}_d{d}.png",
                 "reference_path": f"r{r}.png", "reference": f"r{r}"}
            )  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def online_app(tmp_path: Path, size: int, **config):
    manifest = sized_study(tmp_path / f"images{size}", size)
    app = make_app(
        tmp_path / f"instance{size}",
        ONLINE=True,
        ONLINE_SITTING_PAIRS=2,
        COMPLETION_CODES=CODES,
        **config,
    )
    import_study(app, manifest)
    return app


def check(app, pid: str, screen: dict):
    """Enter, consent and post the display check with ``screen`` (the right digits)."""
    browser = Browser(app)
    browser.get(entry(pid))
    browser.get("/online/consent")
    browser.post("/online/consent", {"agree": "y"})
    page = browser.get("/online/display").get_data(as_text=True)
    response = browser.post(
        "/online/display", {**GOOD_SCREEN, **screen, "digits": shown_digits(app, browser)}
    )
    return page, response


def window(width: int, height: int, dpr: float = 1.0) -> dict:
    return {
        "window_width": round(width * dpr),
        "window_height": round(height * dpr),
        "screen_width": round(width * dpr),
        "screen_height": round((height + 80) * dpr),
        "device_pixel_ratio": dpr,
        "pointer": "fine",
    }


def sittings_and_trials(app) -> tuple[int, int]:
    with app.app_context():
        db = get_db()
        return db.scalar(select(func.count()).select_from(Session)), db.scalar(
            select(func.count()).select_from(Trial)
        )


@pytest.mark.parametrize(
    ("size", "presentation", "screen", "passes"),
    [
        (1024, "native", window(1920, 1000), False),  # the 1920×1000 window
        (1024, "native", window(1366, 768), False),  # the laptop
        (1024, "native", window(1920, 1000, 2.0), True),  # the same window on a retina screen
        (512, "native", window(1920, 1000), True),
        (512, "native", window(1366, 768), False),  # 512 + the sliders is taller than 768
        (1024, "scaled", window(1920, 1000), True),  # the pair at half size or more
        (1024, "scaled", window(1366, 768), False),
        (512, "native", PHONE_LANDSCAPE, False),  # the phone in landscape
    ],
)
def test_the_minimum_window_follows_the_largest_pair(tmp_path, size, presentation, screen, passes):
    app = online_app(tmp_path, size, PRESENTATION=presentation)
    page, response = check(app, "viewer1", screen)
    need = DisplayNeeds(pair=(2 * size, size), presentation=presentation).window(1.0)
    assert f"{need[0]} × {need[1]}" in page  # the page states this study's need
    if passes:
        assert response.status_code == 302, response.get_data(as_text=True)
        assert sittings_and_trials(app)[0] == 1
    else:
        assert response.status_code == 403
        assert sittings_and_trials(app) == (0, 0)  # refused before any sitting: nothing reserved
        text = response.get_data(as_text=True)
        if screen is PHONE_LANDSCAPE:
            assert "looks like a phone" in text
        else:
            assert "largest images need at least" in text


def test_the_need_is_in_device_pixels_with_the_controls(tmp_path):
    """1024-px pairs in native presentation: 2048 + the gap and margins wide, 1024 + the status
    bar, captions and sliders high, and twice those CSS allowances at pixel ratio 2."""
    needs = DisplayNeeds(pair=(2048, 1024))
    assert needs.window(1.0) == (2048 + TRIAL_CHROME_CSS[0], 1024 + TRIAL_CHROME_CSS[1])
    assert needs.window(2.0) == (2048 + 2 * TRIAL_CHROME_CSS[0], 1024 + 2 * TRIAL_CHROME_CSS[1])
    scaled = DisplayNeeds(pair=(2048, 1024), presentation="scaled", min_scale=0.5)
    assert scaled.window(1.0) == (1024 + TRIAL_CHROME_CSS[0], 512 + TRIAL_CHROME_CSS[1])
    floor = DisplayNeeds(pair=(100, 100), floor=(1280, 720))
    assert floor.window(1.0) == (1280, 720)


def test_a_touch_laptop_is_no_phone_but_a_small_touch_screen_is(tmp_path):
    app = online_app(tmp_path, 512)
    _, laptop = check(app, "touch1", {**window(1920, 1000), "pointer": "coarse"})
    assert laptop.status_code == 302  # a big touch screen: its shorter side is 1080 points
    _, phone = check(app, "phone1", {**window(844, 390, 3.0), "pointer": "coarse"})
    assert phone.status_code == 403 and "looks like a phone" in phone.get_data(as_text=True)
