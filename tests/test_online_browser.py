"""The online flow in a real browser (Playwright + Debian's Chromium, loopback only): entry link →
consent → display check (an unsuitable window refused first) → practice → the allocator's
sitting with its gold and attention trials → completion code → redirect to the platform."""

from __future__ import annotations

import hashlib
import hmac
import threading

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from annotate.db import get_db
from studydb import Rating, Session, Trial
from tests.annotate_helpers import import_study, make_app, make_study
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, rate_current

if CHROMIUM is None:
    pytestmark = pytest.mark.skipif(True, reason="Chromium is not installed")


@pytest.fixture
def online_server(tmp_path):
    manifest = make_study(tmp_path / "images", references=3, per_reference=2)
    app = make_app(
        tmp_path / "instance",
        ONLINE=True,
        ONLINE_SITTING_PAIRS=4,
        ONLINE_GOLD_TRIALS=2,
        ONLINE_ATTENTION_CHECKS=1,
        GREY_SCREEN_MS=150,
        COMPLETION_CODES={"paid": "C0DE42", "failed_checks": "NOPAY7"},
        QC_RULES={"min_trials": 3, "max_fast_share": None, "min_time_spread": None},
    )
    import_study(app, manifest)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{http.server_port}"
    # The platform's completion page, here a loopback address of the app itself.
    app.config["COMPLETION_URL"] = base + "/static/favicon.svg?cc={code}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield app, base
    http.shutdown()


def digits_for(app, context) -> str:
    """The contrast test's number, from the browser's session cookie and the app's secret."""
    cookie = next(c["value"] for c in context.cookies() if c["name"] == "session")
    nonce = app.session_interface.get_signing_serializer(app).loads(cookie)["display_nonce"]
    digest = hmac.new(
        app.config["SECRET_KEY"].encode(), f"display:{nonce}".encode(), hashlib.sha256
    ).hexdigest()
    return f"{int(digest[:8], 16) % 1000:03d}"


def test_online_flow_from_entry_link_to_completion_redirect(online_server):
    from playwright.sync_api import expect, sync_playwright

    app, base = online_server
    link = f"{base}/online/start?PROLIFIC_PID=BROWSER1&STUDY_ID=STUDY&SESSION_ID=SES1"
    csp_errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        # The study's pairs are 64 × 48 pixels: with the sliders they need 196 × 368.
        small = browser.new_context(viewport={"width": 300, "height": 340})
        page = small.new_page()
        page.goto(link.replace("BROWSER1", "SMALL1"))
        page.check("#agree")
        page.click("#consent-continue")
        page.fill("#digits", digits_for(app, small))
        page.click("#display-continue")
        assert "window is 300 × 340" in page.text_content("#problems")
        small.close()

        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.on(
            "console", lambda m: csp_errors.append(m.text) if "Content Security" in m.text else 0
        )
        page.goto(link)
        page.check("#agree")
        page.click("#consent-continue")
        # the page's script measures the window once loaded: wait for it (retrying), not a race
        expect(page.locator("#window_width")).to_have_value("1400")
        assert page.input_value("#window_width") == "1400"
        assert page.input_value("#zoom") == "1"
        page.fill("#digits", digits_for(app, context))
        page.click("#display-continue")
        page.click("#start-training")
        while "/training/" in page.url:
            rate_current(page, "3", "3")
        assert page.url.endswith("/trial")

        with app.app_context():
            db = get_db()
            sitting = db.scalar(select(Session).where(Session.closed_reason.is_(None)))
            planned = list(db.scalars(select(Trial).where(Trial.session_id == sitting.id)))
            keys = {t.position: t.stimulus.key for t in planned}
            asked = {
                t.position: (t.accept_low + t.accept_high) / 2
                for t in planned
                if t.check_kind == "attention"
            }
        asked_seen = 0
        while page.url.endswith("/trial"):
            page.wait_for_selector("#grey.hidden", state="attached")
            position = int(page.get_attribute("input[name=position]", "value"))
            key = str(2 + position % 3)  # a careful rater's scores vary
            assert not page.locator("#instruction").count()  # never in the page's text
            if position in asked:  # drawn into the image to rate
                key, asked_seen = str(int(asked[position]) + 1), asked_seen + 1
            elif keys[position].startswith("gold-same"):
                key = "5"
            elif keys[position].startswith("gold-low"):
                key = "1"
            rate_current(page, key, key)
        assert asked_seen == 1
        assert "/online/complete" in page.url and page.text_content("#completion-code") == "C0DE42"
        page.wait_for_url("**/static/favicon.svg?cc=C0DE42", timeout=10_000)
        browser.close()
    assert not csp_errors, csp_errors

    with app.app_context():
        db = get_db()
        ratings = db.scalars(select(Rating)).all()
        assert len(ratings) == len(keys)  # one warm-up, 4 test pairs, 2 gold, 1 attention
        checks = [r for r in ratings if r.check_kind is not None]
        assert sorted(r.check_kind for r in checks) == ["attention", "gold", "gold"]
        sittings = db.scalars(select(Session)).all()
        assert [s.closed_reason for s in sittings] == ["completed"]  # the small screen got none
