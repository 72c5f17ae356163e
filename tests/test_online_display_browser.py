"""Issue 19 item 7 in Chromium (Playwright + Debian's Chromium, loopback only), at the window
sizes and pixel ratios of the issue: a screen the study's pairs do not fit on is refused by the
display check before any sitting opens, a phone in landscape is refused, and a screen that
passes shows the largest pair whole, 1:1, with the sliders (the trial page's own fit check
stays silent)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from annotate.db import get_db
from studydb import Session
from tests.test_browser import CHROMIUM
from tests.test_browser_presentation import chromium  # noqa: F401 (the shared browser fixture)
from tests.test_online_browser import digits_for
from tests.test_online_display import online_app

if CHROMIUM is None:
    pytestmark = pytest.mark.skipif(True, reason="Chromium is not installed")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One served study of 512-px and one of 1024-px images (native presentation)."""
    running = {}
    for size in (512, 1024):
        app = online_app(tmp_path_factory.mktemp(f"s{size}"), size, GREY_SCREEN_MS=100)
        http = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        running[size] = (app, f"http://127.0.0.1:{http.server_port}", http)
    yield {size: (app, base) for size, (app, base, _) in running.items()}
    for _, _, http in running.values():
        http.shutdown()


PHONE = dict(viewport={"width": 851, "height": 393}, device_scale_factor=2.75, is_mobile=True,
             has_touch=True)  # fmt: skip


@pytest.mark.parametrize(
    ("size", "context", "passes"),
    [
        (1024, {"viewport": {"width": 1920, "height": 1000}}, False),
        (1024, {"viewport": {"width": 1366, "height": 768}}, False),
        (1024, {"viewport": {"width": 1920, "height": 1000}, "device_scale_factor": 2}, True),
        (512, {"viewport": {"width": 1920, "height": 1000}}, True),
        (512, {"viewport": {"width": 1366, "height": 768}}, False),
        (512, PHONE, False),
    ],
    ids=[
        "1024-1920x1000",
        "1024-1366x768",
        "1024-1920x1000@2",
        "512-1920x1000",
        "512-1366x768",
        "512-phone-landscape",
    ],  # fmt: skip
)
def test_the_display_check_in_chromium(servers, chromium, size, context, passes):  # noqa: F811
    app, base = servers[size]
    pid = f"w{size}x{context['viewport']['width']}x{context.get('device_scale_factor', 1)}"
    with app.app_context():
        before = get_db().scalar(select(func.count()).select_from(Session))
    browser = chromium.new_context(**context)
    page = browser.new_page()
    page.goto(f"{base}/online/start?PROLIFIC_PID={pid}&STUDY_ID=S&SESSION_ID=1")
    page.check("#agree")
    page.click("#consent-continue")
    page.fill("#digits", digits_for(app, browser))
    page.click("#display-continue")
    with app.app_context():
        opened = get_db().scalar(select(func.count()).select_from(Session)) - before
    if not passes:
        problems = page.text_content("#problems")
        assert "largest images need at least" in problems or "phone" in problems
        if context.get("is_mobile"):
            assert "looks like a phone" in problems
        assert opened == 0  # refused before any sitting: no image reserved
        browser.close()
        return
    assert opened == 1 and page.url.endswith("/instructions")
    page.click("#start-training")
    page.wait_for_selector("#grey.hidden", state="attached")
    assert page.is_hidden("#warning"), page.text_content("#warning")
    dpr = context.get("device_scale_factor", 1)
    widths = page.eval_on_selector_all("#pair img", "els => els.map(e => e.clientWidth)")
    assert widths == [size / dpr, size / dpr]  # 1:1 in device pixels
    page.focus("#consistency-slider")
    page.keyboard.press("3")
    page.focus("#perception-slider")
    page.keyboard.press("3")
    page.wait_for_function("!document.getElementById('submit').disabled")  # rating possible
    browser.close()
