"""Issue 19 items 5, 6 and 8 through the Flask test client, on the app's own clock: completion
codes per outcome, normalised ids, controls a short script cannot pass (each script the issue
describes now gets the non-paying code), the practice's time floor, the sitting's real length in
the online texts, the entry link from ``serve``, and no import cycle media ↔ study."""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from annotate import sittings
from annotate.controls import contrast_pixels
from annotate.db import get_db
from studydb import Session, Stimulus, Trial, Viewer
from tests.annotate_helpers import ADMIN_PASSWORD, Browser, import_study, make_app, make_study
from tests.test_online_app import GOOD_SCREEN, entry, shown_digits

CODES = {"paid": "C0DE42", "failed_checks": "NOPAY7"}
HONEST = {
    "ONLINE": True,
    "ONLINE_SITTING_PAIRS": 8,
    "ONLINE_GOLD_TRIALS": 2,
    "ONLINE_ATTENTION_CHECKS": 2,
    "COMPLETION_CODES": CODES,
    "COMPLETION_URL": "https://app.prolific.com/submissions/complete?cc={code}",
    "GREY_SCREEN_MS": 600,
    "MIN_VIEWING_MS": 1000,
    "QC_RULES": {"min_trials": 3},  # the default rules otherwise: timing, slider use, checks
}
PROLIFIC_ID = "5f3a9c0e12ab34cd56ef7890"


class Clock:
    """The app's clock (``annotate.sittings.now``), moved by the test: timings are simulated."""

    def __init__(self, monkeypatch) -> None:
        self.moment = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
        monkeypatch.setattr(sittings, "now", lambda: self.moment)

    def advance(self, seconds: float) -> None:
        self.moment += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def study(tmp_path, **config):
    manifest = make_study(tmp_path / "images", references=4, per_reference=4)
    app = make_app(tmp_path / "instance", **{**HONEST, **config})
    import_study(app, manifest)
    return app


@pytest.fixture
def app(tmp_path, clock):
    return study(tmp_path)


def enter(app, clock: Clock, pid: str) -> Browser:
    """Entry link, consent, display check and practice (each page looked at for 3 s)."""
    browser = Browser(app)
    assert browser.get(entry(pid)).status_code == 302
    browser.get("/online/consent")
    browser.post("/online/consent", {"agree": "y"})
    browser.get("/online/display")
    response = browser.post(
        "/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, browser)}
    )
    assert response.headers["Location"].endswith("/instructions"), response.get_data(True)
    location = "/training/0"
    while "/training/" in location:
        page = browser.get(location)
        if page.status_code != 200:  # the practice is over
            location = page.headers["Location"]
            continue
        clock.advance(3)
        response = browser.post(location, {"consistency": "2.5", "perception": "2.5"})
        assert response.status_code == 303, response.get_data(as_text=True)
        location = response.headers["Location"]
    return browser


def planned(app, pid: str) -> dict[int, Trial]:
    with app.app_context():
        db = get_db()
        viewer = db.scalar(select(Viewer).where(Viewer.code == pid))
        sitting = db.scalar(select(Session).where(Session.viewer_id == viewer.id))
        trials = list(db.scalars(select(Trial).where(Trial.session_id == sitting.id)))
        for t in trials:
            _ = t.stimulus.key
        return {t.position: t for t in trials}


def image_urls(page: str) -> tuple[str, str]:
    return tuple(re.findall(r'id="(?:distorted|reference)" alt="[^"]+" src="(/media/\w+)"', page))


def sit(app, clock: Clock, pid: str, score, wait, fields=None) -> str:
    """One participant (or script) through the whole sitting: ``score(browser, page, trial)``
    gives the consistency, ``wait(i)`` the seconds from the page to the rating, ``fields(i)``
    what else the form sends; returns the end page."""
    browser = enter(app, clock, pid)
    trials = planned(app, pid)
    i = 0
    while (position := browser.current_position()) is not None:
        page = browser.get("/trial").get_data(as_text=True)
        value = score(browser, page, trials[position])
        clock.advance(wait(i))
        extra = fields(i) if fields else {}
        response = browser.rate(position, consistency=value, perception=value, **extra)
        assert response.status_code == 303, response.get_data(as_text=True)
        i += 1
    return browser.client.get("/done", follow_redirects=True).get_data(as_text=True)


def careful(browser, page, trial: Trial) -> float:
    """A careful person: sees the gold pairs for what they are, reads the boxes in images."""
    if trial.check_kind == "attention":
        return (trial.accept_low + trial.accept_high) / 2
    if trial.stimulus.key.startswith("gold-same"):
        return 4.6
    if trial.stimulus.key.startswith("gold-low"):
        return 0.6
    return 1.0 + int(trial.stimulus.key[-1])  # r<ref>_d<level>: more noise, lower score


def human_wait(i: int) -> float:
    return 3.0 + (i * 7919 % 13) * 0.6  # seconds; people vary from page to page


def outcome(app, pid: str) -> tuple[str, str]:
    with app.app_context():
        sitting = get_db().scalar(
            select(Session).join(Viewer).where(Viewer.code == pid).order_by(Session.id.desc())
        )
        return sitting.outcome, sitting.outcome_reasons


# --------------------------------------------------------------------------- honest pay (item 5)


def test_a_careful_participant_is_paid_and_a_careless_one_gets_the_other_code(app, clock):
    page = sit(app, clock, "careful1", careful, human_wait)
    assert "C0DE42" in page and "complete?cc=C0DE42" in page and "NOPAY7" not in page
    assert outcome(app, "careful1") == ("paid", "")

    def careless(browser, page, trial):  # misses both attention checks, as if not looking
        asked = (trial.accept_low + trial.accept_high) / 2 if trial.check_kind else None
        return (asked + 2.5) % 5 if trial.check_kind == "attention" else careful(0, 0, trial)

    page = sit(app, clock, "careless1", careless, human_wait)
    assert "NOPAY7" in page and "C0DE42" not in page and "did not pass the checks" in page
    assert "complete?cc=NOPAY7" in page
    verdict, reasons = outcome(app, "careless1")
    assert verdict == "failed_checks" and "attention" in reasons
    # Coming back: the same outcome's code, never the paying one.
    again = Browser(app).get(entry("careless1", session="S2")).get_data(as_text=True)
    assert "NOPAY7" in again and "C0DE42" not in again
    # The admin sees per participant the sitting's state and its outcome.
    admin = Browser(app)
    admin.get("/admin/login")
    admin.post("/admin/login", {"password": ADMIN_PASSWORD})
    table = admin.get("/admin/quality").get_data(as_text=True)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>(\w+)</td>.*?</tr>", table, re.S)}
    assert '<td class="state">completed</td><td class="outcome">paid</td>' in rows["careful1"]
    assert (
        '<td class="state">completed</td><td class="outcome">failed_checks</td>'
        in rows["careless1"]
    )


def test_without_a_failed_checks_code_the_participant_is_asked_to_return(tmp_path, clock):
    app = study(tmp_path, COMPLETION_CODES={"paid": "C0DE42", "failed_checks": ""})
    page = sit(app, clock, "constant1", lambda *_: 2.5, human_wait)
    assert "C0DE42" not in page and "return the study" in page
    assert 'http-equiv="refresh"' not in page  # no code: nowhere to send them
    assert outcome(app, "constant1")[0] == "failed_checks"


def test_a_short_completed_sitting_is_paid_though_too_short_for_the_mos(tmp_path, clock):
    """The server sets a sitting's length: fewer test trials than ``min_trials`` keep a
    participant out of the MOS, never out of their pay."""
    app = study(tmp_path, QC_RULES={"min_trials": 50})
    assert "C0DE42" in sit(app, clock, "short1", careful, human_wait)
    assert outcome(app, "short1") == ("paid", "")


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"COMPLETION_CODES": {"paid": "A1", "failed_checks": "A1"}}, "must differ"),
        ({"COMPLETION_CODES": {"paid": "A1"}}, "exactly the outcomes"),
        ({"COMPLETION_CODES": {"paid": "A 1", "failed_checks": ""}}, "letters, digits"),
        ({"COMPLETION_CODE": "OLD1"}, "replaced by COMPLETION_CODES"),
        ({"ONLINE_ID_PATTERNS": {"prolific": "[0-9a-f{24}"}}, "ONLINE_ID_PATTERNS"),
        ({"ONLINE_ID_PATTERNS": {"qualtrics": ".*"}}, "unknown platform"),
        ({"ONLINE_ID_CASE": {"prolific": "title"}}, "'lower' or 'upper'"),
        ({"ONLINE_CONSENT_TEXT": "takes {minutes} minutes"}, "ONLINE_CONSENT_TEXT"),
        ({"DISPLAY_MIN_SCALE": 0}, "DISPLAY_MIN_SCALE"),
    ],
)
def test_pay_and_text_settings_are_checked_at_start_up(tmp_path, config, needle):
    with pytest.raises(ValueError, match=needle):
        make_app(tmp_path / "bad", **{**HONEST, **config})


def test_participant_ids_are_normalised_and_checked_against_the_pattern(tmp_path, clock):
    patterns = {"prolific": r"[0-9a-f]{24}", "mturk": r"[0-9A-Z]+", "generic": r".+"}
    app = study(tmp_path, ONLINE_ID_PATTERNS=patterns)
    client = app.test_client()
    for spelling in (PROLIFIC_ID.upper(), f"%20{PROLIFIC_ID}%20", PROLIFIC_ID):
        assert client.get(entry(spelling)).status_code == 302, spelling
        with client.session_transaction() as stored:
            assert stored["online"]["participant"] == PROLIFIC_ID
    refused = client.get(entry("not-a-prolific-id"))
    assert refused.status_code == 400 and "not a valid prolific id" in refused.get_data(True)
    # MTurk ids fold to upper case; a panel's own ids are kept as they are.
    assert client.get("/online/start?workerId=a1b2c3&hitId=H&assignmentId=A").status_code == 302
    with client.session_transaction() as stored:
        assert stored["online"]["participant"] == "A1B2C3"
    assert client.get("/online/start?participant=MiXeD&study=s&session=x").status_code == 302
    with client.session_transaction() as stored:
        assert stored["online"]["participant"] == "MiXeD"
    # Two spellings of one id are one participant: the second cannot sit again.
    sit(app, clock, PROLIFIC_ID, careful, human_wait)
    again = Browser(app).get(entry(PROLIFIC_ID.upper(), session="S2"))
    assert again.status_code == 409 and "already taken part" in again.get_data(as_text=True)


# --------------------------------------------------------------------------- the scripts (item 6)


def test_an_instant_constant_score_script_gets_the_non_paying_code(app, clock):
    """It answers 2.5 everywhere as soon as the server allows (1.6 s), sends no slider moves."""
    page = sit(
        app, clock, "script1", lambda *_: 2.5, lambda i: 1.61, lambda i: {"slider_events": ""}
    )
    assert "NOPAY7" in page and "C0DE42" not in page
    verdict, reasons = outcome(app, "script1")
    assert verdict == "failed_checks"
    for rule in ("gold", "faster than", "too regular", "straight-lining", "slider move"):
        assert rule in reasons, rule


def test_a_head_request_gold_finder_finds_nothing_and_is_not_paid(app, clock):
    """It sends HEAD requests for both images and scores a pair of equal length (or ETag) as
    identical, every other one as damaged; it waits like a person and moves the sliders."""
    found = []

    def finder(browser, page, trial):
        heads = [browser.client.head(url) for url in image_urls(page)]
        lengths = [h.content_length or len(browser.client.get(u).data) for h, u in
                   zip(heads, image_urls(page), strict=True)]  # fmt: skip
        if lengths[0] == lengths[1] or heads[0].headers["ETag"] == heads[1].headers["ETag"]:
            found.append(trial.stimulus.key)
            return 5.0
        if trial.stimulus.key.startswith("gold-same"):
            bodies = [browser.client.get(url).data for url in image_urls(page)]
            assert bodies[0] != bodies[1] and len(bodies[0]) != len(bodies[1])
        return 1.0 + len(found) % 2  # "damaged"

    page = sit(app, clock, "finder1", finder, human_wait)
    # The same-image gold pair is never byte-identical, nor of equal length: what the finder
    # finds are ordinary pairs (these test images are noise: equal lengths mean nothing).
    assert not [key for key in found if key.startswith("gold-same")]
    assert "NOPAY7" in page
    verdict, reasons = outcome(app, "finder1")
    assert verdict == "failed_checks" and "gold" in reasons


def test_a_psnr_scorer_with_fixed_waits_is_caught_by_its_timing(app, clock):
    """Scores each pair by the PSNR of the two images (it passes the gold pairs: they are what
    PSNR measures), waits 2.05 s per page and sends plausible slider fields — its waits are
    too regular, so it gets the non-paying code, while a person rating alike is paid."""

    def psnr_score(browser, page, trial):
        images = [
            np.asarray(Image.open(io.BytesIO(browser.client.get(url).data)).convert("RGB"), float)
            for url in image_urls(page)
        ]
        mse = float(np.mean((images[0] - images[1]) ** 2))
        psnr = 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)
        return float(np.clip(round((psnr - 15) / 5, 1), 0, 5))

    page = sit(app, clock, "psnr1", psnr_score, lambda i: 2.05,
               lambda i: {"slider_events": 2, "first_input_ms": 700})  # fmt: skip
    assert "NOPAY7" in page and "C0DE42" not in page
    verdict, reasons = outcome(app, "psnr1")
    assert verdict == "failed_checks" and "too regular" in reasons
    assert "gold" not in reasons, "the PSNR script passes the gold pairs; timing catches it"
    person = sit(app, clock, "person1", careful, human_wait)
    assert "C0DE42" in person and outcome(app, "person1")[0] == "paid"


def test_a_gold_pair_made_before_schema_5_gets_its_own_image(app, clock):
    """A study that began before this version holds "same" gold pairs whose image is the
    reference's own file: the next sitting that draws one re-encodes it first."""
    with app.app_context():
        db = get_db()
        for ref in sorted(set(db.scalars(select(Stimulus.reference_path)))):
            db.add(Stimulus(key=f"gold-same:{ref}", distorted_path=ref, reference_path=ref,
                            withheld=True))  # fmt: skip
        db.commit()
    enter(app, clock, "later1")
    same = [t.stimulus for t in planned(app, "later1").values()
            if t.stimulus.key.startswith("gold-same")]  # fmt: skip
    assert same
    for stimulus in same:
        shown, reference = Path(stimulus.distorted_path), Path(stimulus.reference_path)
        assert shown.parent.name == "controls" and shown.read_bytes() != reference.read_bytes()


def test_the_attention_instruction_is_drawn_into_the_image_not_the_page(app, clock):
    browser = enter(app, clock, "reader1")
    trials = planned(app, "reader1")
    attention = [t for t in trials.values() if t.check_kind == "attention"]
    assert len(attention) == 2
    with app.app_context():
        db = get_db()
        for trial in attention:
            drawn = db.get(Stimulus, trial.stimulus_id)
            assert drawn.withheld and drawn.key.startswith("attention:")
            source = db.scalar(select(Stimulus).where(Stimulus.key == drawn.key.split(":")[2]))
            shown = np.asarray(Image.open(drawn.distorted_path).convert("RGB"))
            plain = np.asarray(Image.open(source.distorted_path).convert("RGB"))
            assert shown.shape == plain.shape and (shown != plain).any(axis=2).mean() > 0.1
            assert ((shown == (255, 210, 77)).all(axis=2)).sum() > 50  # the yellow box
            assert "attention" not in Path(drawn.distorted_path).name  # the name tells nothing
    while (position := browser.current_position()) is not None:
        page = browser.get("/trial").get_data(as_text=True)
        assert "ttention" not in page and "Set Consistency" not in page
        clock.advance(human_wait(position))
        browser.rate(position, consistency=careful(0, 0, trials[position]), perception=2.5)
    assert "C0DE42" in browser.client.get("/done", follow_redirects=True).get_data(as_text=True)
    assert outcome(app, "reader1")[0] == "paid"


def test_the_contrast_test_is_not_solved_by_one_grey_threshold():
    """At every threshold the bright pixels are mostly background (the gradient), never the
    digits: the best overlap with the digits stays far from a reading; yet every digit pixel
    is ``level`` grey levels above its own background, as the eye sees it."""
    pixels, mask = contrast_pixels("482", 12, seed=7)
    best = 0.0
    for threshold in range(256):
        bright = pixels > threshold
        for picked in (bright, ~bright):
            overlap = (picked & mask).sum() / max(1, (picked | mask).sum())
            best = max(best, overlap)
    assert best < 0.25, best
    # Locally the digits stand out by the configured step (background estimated per column).
    background = np.where(mask, np.nan, pixels.astype(float))
    column_mean = np.nanmean(background, axis=0)
    lift = (pixels - column_mean[None, :])[mask].mean()
    assert 9 < lift < 15
    assert (contrast_pixels("482", 12, seed=8)[0] != pixels).any()  # a new picture each try


def test_practice_answers_need_the_time_floor(app, clock):
    """Five practice pages in 0.4 s were possible: each answer now waits for the grey screen
    and the minimum viewing time, by the server's clock."""
    browser = Browser(app)
    browser.get(entry("hasty1"))
    browser.get("/online/consent")
    browser.post("/online/consent", {"agree": "y"})
    browser.get("/online/display")
    browser.post("/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, browser)})
    answer = {"consistency": "2.5", "perception": "2.5"}
    assert browser.post("/training/0", answer).status_code == 409  # the page was never shown
    browser.get("/training/0")
    clock.advance(0.08)
    early = browser.post("/training/0", answer)
    assert early.status_code == 409 and "at least 1 s" in early.get_data(as_text=True)
    clock.advance(1.6)
    assert browser.post("/training/0", answer).headers["Location"].endswith("/training/1")


# --------------------------------------------------------------------------- texts (item 8)


def test_online_consent_and_instructions_state_the_real_length(tmp_path, clock):
    app = study(tmp_path, ONLINE_SITTING_PAIRS=56, WARMUP_TRIALS=3, ONLINE_DECISION_SECONDS=4)
    browser = Browser(app)
    browser.get(entry("reader2"))
    consent = browser.get("/online/consent").get_data(as_text=True)
    # 5 practice pairs, then 3 + 56 + 2 + 2 = 63 pages at 0.6 + 1 + 4 s each: 6.3 -> 7 minutes.
    assert "about 7 minutes" in consent and "63 pages" in consent and "3 warm-up" in consent
    assert "5 practice pairs" in consent and "one hour" not in consent
    browser.post("/online/consent", {"agree": "y"})
    browser.get("/online/display")
    browser.post("/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, browser)})
    instructions = browser.get("/instructions").get_data(as_text=True)
    assert "about 7 minutes" in instructions and "63 pages" in instructions
    assert "after about 30 minutes" not in instructions and "an hour" not in instructions
    shorter = study(tmp_path / "short", ONLINE_SITTING_PAIRS=10, WARMUP_TRIALS=1)
    shorter_consent = Browser(shorter)
    shorter_consent.get(entry("reader3"))
    text = shorter_consent.get("/online/consent").get_data(as_text=True)
    assert "15 pages" in text and "about 2 minutes" in text  # (5 + 15) × 5.6 s


def test_serve_prints_the_entry_link_in_online_mode(tmp_path, monkeypatch, capsys):
    from annotate import __main__ as cli

    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text("ONLINE = True\n")
    monkeypatch.setattr(cli, "_http_server", lambda app, args: lambda: None)
    assert cli.main(["--instance", str(instance), "serve", "--port", "5123"]) == 0
    out = capsys.readouterr().out
    link = "http://127.0.0.1:5123/online/start?PROLIFIC_PID={{%PROLIFIC_PID%}}"
    assert link in out and "&SESSION_ID={{%SESSION_ID%}}" in out
    assert "serving the study at" not in out  # / is closed in online mode


def test_media_and_study_import_without_a_cycle():
    code = (
        "import sys, annotate.media; assert 'annotate.study' not in sys.modules, 'cycle'; "
        "import annotate.study"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
