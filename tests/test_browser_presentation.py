"""Issue 10 points 3–5 in a real browser: nothing responds under the grey screen, a broken image
stops the trial, a pair wider than the window is never cut off (native: warning pinned and rating
blocked; scaled: one common factor, stored), no anchor before the first input, keys mean the
middle of a category, and the labels sit where the thumb does."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import select
from werkzeug.serving import make_server

from annotate.db import get_db
from studydb import Rating
from tests.annotate_helpers import import_study, make_app
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

if CHROMIUM is None:
    import os

    pytestmark = pytest.mark.skipif(
        not os.environ.get("CMC_REQUIRE_BROWSER"), reason="Chromium is not installed"
    )


def big_study(folder: Path, size: int = 1024) -> Path:
    """Two 1024×1024 stimuli of one reference: a pair 2048 pixels wide."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(reference).save(folder / "ref.png")
    rows = []
    for d in range(2):
        Image.fromarray(reference // (d + 2)).save(folder / f"d{d}.png")
        rows.append(
            {"id": f"d{d}", "distorted_path": f"d{d}.png", "reference_path": "ref.png"}
            | {"reference": "ref"}
        )
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(**config):
        manifest = big_study(tmp_path / f"images{len(servers)}")
        settings = {"GREY_SCREEN_MS": 300, "MIN_VIEWING_MS": 200, "WARMUP_TRIALS": 0}
        app = make_app(tmp_path / f"instance{len(servers)}", **(settings | config))
        import_study(app, manifest)
        http = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        servers.append(http)
        return app, f"http://127.0.0.1:{http.server_port}", Path(manifest).parent

    yield start
    for http in servers:
        http.shutdown()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def enter_study(page, url: str, practise: bool = True) -> None:
    """Consent, register, environment, then the practice up to the first trial (or only to the
    first practice pair: the same page, and where a pair too wide for the window stops)."""
    page.goto(url + "/consent")
    page.check("#agree")
    page.click("#consent-continue")
    page.fill("#age", "30")
    page.fill("#vision_screening", "ok")
    page.click("#register")
    for field in ("#display", "#viewing_distance", "#lighting"):
        page.fill(field, "unknown")
    page.click("#environment-continue")
    page.click("#start-training")
    while practise and "/training/" in page.url:
        page.wait_for_selector("#grey.hidden", state="attached")
        page.keyboard.press("3")
        page.keyboard.press("Tab")
        page.keyboard.press("3")
        with page.expect_navigation():
            page.click("#submit")


def image_boxes(page) -> list[dict]:
    return page.evaluate(
        "Array.from(document.querySelectorAll('.pair img')).map(i => {"
        " const r = i.getBoundingClientRect();"
        " return {left: r.left + scrollX, width: r.width, natural: i.naturalWidth}; })"
    )


@pytest.mark.parametrize(
    "width, height, dpr",
    [(1280, 720, 1), (1920, 1080, 1), (1280, 720, 2)],
)
def test_native_presentation_never_hides_a_stimulus(serve, chromium, width, height, dpr):
    app, url, _ = serve(PRESENTATION="native")
    context = chromium.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=dpr
    )
    page = context.new_page()
    enter_study(page, url, practise=False)
    page.wait_for_selector("#grey.hidden", state="attached")
    boxes = image_boxes(page)
    assert all(abs(b["width"] * dpr - b["natural"]) < 0.5 for b in boxes)  # 1:1 pixels
    assert min(b["left"] for b in boxes) >= 0  # nothing cut off on the left
    fits = 2 * 1024 / dpr + 48 <= width
    if not fits or 1024 / dpr > height:
        assert page.is_visible("#warning")
        page.mouse.wheel(0, 2000)
        top = page.evaluate("document.getElementById('warning').getBoundingClientRect().top")
        assert abs(top) < 1  # pinned: still at the top after scrolling
        page.keyboard.press("3")
        page.keyboard.press("Tab")
        page.keyboard.press("3")
        page.wait_for_timeout(400)
        assert page.is_disabled("#submit")  # rating waits until the pair fits
    context.close()


@pytest.mark.parametrize("width, height, dpr", [(1280, 720, 1), (1280, 720, 2)])
def test_scaled_presentation_fits_the_pair_and_stores_the_factor(
    serve, chromium, width, height, dpr
):
    app, url, _ = serve(PRESENTATION="scaled")
    context = chromium.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=dpr
    )
    page = context.new_page()
    enter_study(page, url)
    page.wait_for_selector("#grey.hidden", state="attached")
    boxes = image_boxes(page)
    scale = float(page.input_value("#scale"))
    assert 0 < scale < 1 and abs(boxes[0]["width"] - boxes[1]["width"]) < 0.5  # one factor
    assert all(abs(b["width"] - b["natural"] / dpr * scale) < 1 for b in boxes)
    assert min(b["left"] for b in boxes) >= 0
    assert max(b["left"] + b["width"] for b in boxes) <= width
    assert page.is_hidden("#warning")
    page.keyboard.press("2")
    page.keyboard.press("Tab")
    page.keyboard.press("5")
    with page.expect_navigation():
        page.click("#submit")
    with app.app_context():
        rating = get_db().scalar(select(Rating))
        assert rating.scale == pytest.approx(scale, abs=1e-4)
        assert (rating.consistency, rating.perception) == (1.5, 4.5)  # keys: the middles
    context.close()


def test_the_scale_has_no_anchor_and_labels_sit_under_the_thumb(serve, chromium):
    app, url, _ = serve(PRESENTATION="scaled", GREY_SCREEN_MS=1500)
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    enter_study(page, url)
    # Under the grey screen keys do nothing.
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    assert page.text_content("#consistency-value") == "—"
    page.wait_for_selector("#grey.hidden", state="attached")
    # No visible anchor before the first input: the thumb is not drawn (style.css, .unset).
    assert "unset" in page.get_attribute("#consistency-slider", "class")
    # A click on each label boundary sets the value of that boundary (1, 2, 3, 4).
    spans = page.evaluate(
        "Array.from(document.querySelectorAll('#consistency-labels span')).map(s => {"
        " const r = s.getBoundingClientRect(); return [r.left, r.right, r.top]; })"
    )
    slider = page.evaluate(
        "(() => { const r = document.getElementById('consistency-slider')"
        ".getBoundingClientRect(); return r.top + r.height / 2; })()"
    )
    for boundary, (_, right, _) in enumerate(spans[:-1], start=1):
        page.mouse.click(right, slider)
        value = float(page.input_value("#consistency"))
        assert abs(value - boundary) <= 0.1, (boundary, value)
    assert "unset" not in page.get_attribute("#consistency-slider", "class")


def test_a_broken_image_stops_the_trial_in_the_page(serve, chromium):
    app, url, folder = serve(PRESENTATION="scaled")
    for name in ("d0.png", "d1.png"):  # the test images (practice uses the reference only)
        (folder / name).write_bytes(b"garbage, not an image")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    enter_study(page, url)
    page.wait_for_selector("#failed", state="visible")
    assert "could not be shown" in page.text_content("#failed")
    page.keyboard.press("3")
    page.keyboard.press("Tab")
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert page.is_disabled("#submit") and page.url.endswith("/trial")
    with app.app_context():
        assert get_db().scalar(select(Rating)) is None
