"""End to end in a real browser (Playwright driving Debian's Chromium), as a participant would:
consent → registration → training → trials with both sliders and the NSFW flag → reload → resume
on a fresh browser → finish; then the admin export computes a MOS. Screenshots of the trial page
go to tests/artifacts/.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
from werkzeug.serving import make_server

from mos.compute import main as mos_main
from tests.annotate_helpers import ADMIN_PASSWORD, import_study, make_app, make_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

if CHROMIUM is None:
    pytestmark = pytest.mark.skipif(
        not os.environ.get("CMC_REQUIRE_BROWSER"), reason="Chromium is not installed"
    )


@pytest.fixture
def server(tmp_path):
    manifest = make_study(tmp_path / "images", references=3, per_reference=2)
    app = make_app(tmp_path / "instance", GREY_SCREEN_MS=150, WARMUP_TRIALS=1)
    import_study(app, manifest)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()


def rate_current(page, consistency: str, perception: str, nsfw_reason: str | None = None):
    page.wait_for_selector("#grey.hidden", state="attached")
    page.focus("#consistency-slider")
    page.keyboard.press(consistency)
    page.focus("#perception-slider")
    page.keyboard.press(perception)
    if nsfw_reason:
        page.check("#nsfw")
        assert "blurred" in page.get_attribute("#pair", "class")
        page.fill("#nsfw_reason", nsfw_reason)
    with page.expect_navigation():
        page.click("#submit")


def test_participant_journey_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server + "/")
        page.click("#start")
        page.check("#agree")
        page.click("#consent-continue")
        page.fill("#age", "29")
        page.select_option("#gender", "female")
        page.fill("#vision_screening", "Snellen 20/20, Ishihara 38/38")
        page.click("#register")
        code = page.text_content("#code")
        # the page's script measures the screen once loaded: wait for it (retrying), not a race
        expect(page.locator("#device_pixel_ratio")).to_have_value("1")
        assert page.input_value("#device_pixel_ratio") == "1"
        page.fill("#display", "Dell U2720Q, sRGB")
        page.fill("#viewing_distance", "60 cm")
        page.fill("#lighting", "dim, 15 lux")
        page.click("#environment-continue")
        page.click("#start-training")
        while "/training/" in page.url:  # practice: sliders must be moved before going on
            page.wait_for_selector("#grey.hidden", state="attached")
            assert page.is_disabled("#submit")
            rate_current(page, "1", "4")
        assert page.url.endswith("/trial")

        page.wait_for_selector("#grey.hidden", state="attached")
        page.screenshot(path=str(ARTIFACTS / "trial.png"))
        sizes = page.evaluate(
            "Array.from(document.querySelectorAll('.pair img')).map(i => "
            "[i.getBoundingClientRect().width * devicePixelRatio, i.naturalWidth])"
        )
        assert all(abs(shown - natural) < 0.5 for shown, natural in sizes)  # 1:1 pixels
        assert page.is_hidden("#warning")
        assert page.is_disabled("#submit")
        page.focus("#consistency-slider")
        page.keyboard.press("3")
        assert page.is_disabled("#submit")  # one slider is not enough
        page.focus("#perception-slider")
        page.keyboard.press("2")
        page.keyboard.press("n")  # the NSFW flag from the keyboard
        page.wait_for_selector("#nsfw_reason", state="visible")
        page.screenshot(path=str(ARTIFACTS / "trial_nsfw.png"))
        page.fill("#nsfw_reason", "disturbing content")
        with page.expect_navigation():
            page.click("#submit")
        rate_current(page, "4", "4")

        before = page.text_content("#progress")
        page.reload()
        assert page.text_content("#progress") == before  # a reload neither skips nor repeats

        fresh = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        fresh.goto(server + "/")
        fresh.fill("#code", code)
        fresh.click("#resume")
        assert fresh.is_visible("#resuming")  # the new machine is measured first
        for field in ("#display", "#viewing_distance", "#lighting"):
            fresh.fill(field, "unknown")
        fresh.click("#environment-continue")
        assert fresh.text_content("#progress") == before  # resumed exactly where they stopped
        while fresh.url.endswith("/trial"):
            rate_current(fresh, "2", "3")
        assert fresh.url.endswith("/done") and code in fresh.text_content("#message")

        admin = browser.new_context().new_page()
        admin.goto(server + "/admin/login")
        admin.fill("#password", ADMIN_PASSWORD)
        admin.click("#login")
        assert "disturbing content" in admin.content()
        export = admin.request.get(server + "/admin/export/trials.csv")
        assert export.ok
        (tmp_path / "trials.csv").write_bytes(export.body())
        browser.close()

    trials = pd.read_csv(tmp_path / "trials.csv")
    # six images, one of them the warm-up, which is not shown again as a test item
    assert len(trials) == 6 and trials["nsfw"].sum() == 1 and trials["warmup"].sum() == 1
    assert trials["position"].tolist() == list(range(6))
    assert mos_main([str(tmp_path / "trials.csv"), "--out", str(tmp_path / "mos"), "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "mos" / "mos.csv")) == 5
