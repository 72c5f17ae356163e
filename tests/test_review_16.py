"""Review of issue 16 (online studies): defects found by probing the app as a participant and
as an attacker, each pinned by a test."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from annotate.db import get_db
from studydb import Rating, Session
from tests.annotate_helpers import Browser, make_app
from tests.test_online_app import (  # noqa: F401
    GOOD_SCREEN,
    app,
    enter,
    entry,
    finish,
    shown_digits,
)


def test_display_tries_cannot_be_reset_by_replaying_the_session_cookie(app):  # noqa: F811
    """The cookie is client-side: an attacker who keeps the cookie from before a failed try and
    sends it again must not get a fresh allowance of tries (the contrast number is 1 of 1000)."""
    browser = Browser(app)
    browser.get(entry("replayer"))
    browser.get("/online/consent")
    browser.post("/online/consent", {"agree": "y"})
    browser.get("/online/display")
    cookie = browser.client.get_cookie("session").value
    right = shown_digits(app, browser)
    statuses = []
    for guess in range(12):
        browser.client.set_cookie("session", cookie)  # the cookie as it was before any try
        wrong = f"{(int(right) + 1 + guess) % 1000:03d}"
        statuses.append(
            browser.post("/online/display", {**GOOD_SCREEN, "digits": wrong}).status_code
        )
    assert statuses.count(403) <= 5 and statuses[-1] == 429, statuses
    browser.client.set_cookie("session", cookie)
    response = browser.post("/online/display", {**GOOD_SCREEN, "digits": right})
    assert response.status_code == 429
    with app.app_context():
        assert get_db().scalar(select(Session)) is None


def test_gold_trials_are_shown_and_rated_in_the_app(app):  # noqa: F811
    """Gold pairs are stored withheld (no design schedules them as test images), but the
    sitting's own gold trials must still be shown: withholding must not skip them."""
    browser = enter(app, "goldpid")
    finish(app, browser, "goldpid")
    with app.app_context():
        kinds = [r.check_kind for r in get_db().scalars(select(Rating))]
    assert kinds.count("gold") == 2 and kinds.count("attention") == 1, kinds


def test_timing_check_can_fire_in_the_app_as_configured_by_default(tmp_path):
    """The server refuses a rating sooner than GREY_SCREEN_MS + MIN_VIEWING_MS (1.6 s by
    default) after serving, so a 'too fast' threshold at or below that floor never fires: a
    clicker who submits as soon as the server allows must count as too fast."""
    import pandas as pd

    from annotate import config as defaults
    from mos.qc import ExclusionRules, qc_signals

    floor = (defaults.GREY_SCREEN_MS + defaults.MIN_VIEWING_MS) / 1000
    rules = ExclusionRules()
    clicker = pd.DataFrame(
        {
            "participant": ["p"] * 20,
            "stimulus": range(20),
            "score": [1.0, 4.0] * 10,
            "seconds": [floor + 0.1] * 20,
            "check": [""] * 20,
            "low": [float("nan")] * 20,
            "high": [float("nan")] * 20,
        }
    )
    verdict = rules.apply(qc_signals(clicker, rules.fast_seconds))
    assert verdict.loc[0, "fast_trials"] == 20 and verdict.loc[0, "excluded"]
    # A configuration whose threshold the server's floor makes unreachable is refused.
    with pytest.raises(ValueError, match="fast"):
        make_app(
            tmp_path / "dead",
            ONLINE=True,
            GREY_SCREEN_MS=600,
            MIN_VIEWING_MS=1000,
            QC_RULES={"fast_seconds": 1.5},
        )


def test_resuming_from_another_browser_cannot_skip_the_display_check(app):  # noqa: F811
    """An open sitting is resumed from any browser, but only after that browser's screen has
    passed the check: the entry link alone must not open the trial pages."""
    first = enter(app, "resumer")
    first.practise()
    position = first.current_position()
    assert first.rate(position, consistency=2.0, perception=2.0).status_code == 303
    phone = Browser(app)
    assert phone.get(entry("resumer")).headers["Location"].endswith("/online/display")
    for url in ("/trial", "/instructions", "/training/0"):
        response = phone.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].endswith("/online/display"), url
    assert phone.rate(position + 1, consistency=2.0, perception=2.0).status_code in (302, 400)
    with app.app_context():
        assert len(get_db().scalars(select(Rating)).all()) == 1
    # Once this browser passes the check, it goes on where the sitting stopped.
    phone.get("/online/display")
    response = phone.post("/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, phone)})
    assert response.status_code == 302 and response.headers["Location"].endswith("/trial")
    assert phone.current_position() is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://app.prolific.com/submissions/complete?cc={code}&a={assignmentId}",
        "https://example.org/done?cc={0}",
        "javascript:alert(1)//{code}",
        "//evil.example/{code}",
    ],
)
def test_a_completion_url_that_cannot_work_is_refused_at_start_up(tmp_path, url):
    """COMPLETION_URL is formatted only when a participant completes: a placeholder other than
    {code} would be a 500 at the very end of every sitting (no code, no pay), and the redirect
    must go to an absolute http(s) address."""
    with pytest.raises(ValueError, match="COMPLETION_URL"):
        make_app(tmp_path / "bad", ONLINE=True, COMPLETION_URL=url)


def test_a_completer_who_lost_the_code_page_gets_the_code_again(app):  # noqa: F811
    """A crowd worker whose tab closed on the completion page must not be left without the
    code (unpaid): the 'already taken part' answer repeats it, but only after a completed
    sitting. The code is the study's one static code, so this reveals nothing new."""
    finish(app, enter(app, "lostcode"), "lostcode")
    again = Browser(app).get(entry("lostcode"))
    page = again.get_data(as_text=True)
    assert again.status_code == 409 and "already taken part" in page
    assert "C0DE42" in page and "complete?cc=C0DE42" in page
    # A participant whose sitting closed otherwise gets no code.
    quitter = enter(app, "quitter")
    with app.app_context():
        db = get_db()
        sitting = db.scalar(select(Session).where(Session.viewer.has(code="quitter")))
        sitting.closed_reason = "abandoned"
        db.commit()
    del quitter
    refused = Browser(app).get(entry("quitter")).get_data(as_text=True)
    assert "already taken part" in refused and "C0DE42" not in refused
