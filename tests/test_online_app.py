"""The app's online mode through Flask's test client: entry link to completion code."""

from __future__ import annotations

import hashlib
import hmac
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import select

from annotate.db import get_db
from mos.compute import main as mos_main
from studydb import Rating, Session, Stimulus, Trial
from tests.annotate_helpers import ADMIN_PASSWORD, Browser, import_study, make_app, make_study

ONLINE = {
    "ONLINE": True,
    "ONLINE_SITTING_PAIRS": 6,
    "ONLINE_GOLD_TRIALS": 2,
    "ONLINE_ATTENTION_CHECKS": 1,
    "COMPLETION_CODES": {"paid": "C0DE42", "failed_checks": "NOPAY7"},
    "COMPLETION_URL": "https://app.prolific.com/submissions/complete?cc={code}",
    # The test client answers at once: timing is judged with the app's clock in
    # test_online_honesty, not here.
    "QC_RULES": {"min_trials": 3, "max_fast_share": None, "min_time_spread": None},
}
GOOD_SCREEN = {
    "window_width": 1920,
    "window_height": 1000,
    "screen_width": 1920,
    "screen_height": 1080,
    "device_pixel_ratio": 1,
    "zoom": 1,
    "browser": "test",
}


@pytest.fixture
def app(tmp_path):
    manifest = make_study(tmp_path / "images", references=3, per_reference=4)
    app = make_app(tmp_path / "instance", **ONLINE)
    import_study(app, manifest)
    return app


def entry(pid: str, study: str = "STUDY1", session: str = "S1") -> str:
    return f"/online/start?PROLIFIC_PID={pid}&STUDY_ID={study}&SESSION_ID={session}"


def shown_digits(app, browser: Browser) -> str:
    """The contrast test's number, recomputed from the app's secret (the page never holds it)."""
    with browser.client.session_transaction() as stored:
        nonce = stored["display_nonce"]
    key = app.config["SECRET_KEY"].encode()
    digest = hmac.new(key, f"display:{nonce}".encode(), hashlib.sha256).hexdigest()
    return f"{int(digest[:8], 16) % 1000:03d}"


def enter(app, pid: str) -> Browser:
    """Entry link, consent and a passing display check: the sitting is open."""
    browser = Browser(app)
    response = browser.get(entry(pid))
    assert response.status_code == 302 and response.headers["Location"].endswith("/online/consent")
    browser.get("/online/consent")
    assert browser.post("/online/consent", {"agree": "y"}).status_code == 302
    browser.get("/online/display")
    response = browser.post(
        "/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, browser)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/instructions")
    return browser


def finish(app, browser: Browser, pid: str, attentive: bool = True) -> None:
    """Practice, then every trial as a careful participant would (gold pairs judged right,
    attention checks answered as asked); ``attentive=False`` misses the attention checks."""
    trials = {t.position: t for t in sitting_trials(app, pid)}
    keys = {position: t.stimulus.key for position, t in trials.items()}
    browser.practise()
    while (position := browser.current_position()) is not None:
        if trials[position].check_kind == "attention":  # the instruction is in the image
            asked = (trials[position].accept_low + trials[position].accept_high) / 2
            score = asked if attentive else (asked + 2.5) % 5
        elif keys[position].startswith("gold-same"):
            score = 4.8
        elif keys[position].startswith("gold-low"):
            score = 0.4
        else:
            score = 1.0 + position % 4
        response = browser.rate(position, consistency=score, perception=score)
        assert response.status_code == 303, response.get_data(as_text=True)


def sitting_trials(app, pid: str) -> list[Trial]:
    with app.app_context():
        db = get_db()
        sitting = db.scalar(
            select(Session).join(Session.viewer).where(Session.viewer.has(code=pid))
        )
        trials = list(db.scalars(select(Trial).where(Trial.session_id == sitting.id)))
        for t in trials:
            _ = t.stimulus.reference, t.stimulus.key  # load before the session closes
        return sorted(trials, key=lambda t: t.position)


def test_online_pages_exist_only_in_online_mode(tmp_path):
    lab = make_app(tmp_path / "lab")
    assert lab.test_client().get(entry("abc")).status_code == 404
    with pytest.raises(ValueError, match="allocation policy"):
        make_app(tmp_path / "bad", ONLINE=True, ALLOCATION="greedy")


def test_entry_link_needs_a_clean_participant_id(app):
    client = app.test_client()
    assert client.get("/online/start").status_code == 400
    assert client.get("/online/start?PROLIFIC_PID=%3Cscript%3E").status_code == 400
    assert client.get(entry("abc", study="x y")).status_code == 400
    mturk = client.get("/online/start?workerId=W1&assignmentId=A1&hitId=H1")
    assert mturk.status_code == 302
    # The lab's own entry pages are closed: no code can be typed in to take over a sitting.
    for url in ("/", "/consent", "/register", "/environment"):
        assert client.get(url).status_code in (404, 302), url
    assert client.get("/").status_code == 404


def test_unsuitable_screens_are_refused_before_any_rating(app):
    browser = Browser(app)
    browser.get(entry("small"))
    browser.get("/online/consent")
    browser.post("/online/consent", {"agree": "y"})
    browser.get("/online/display")
    png = browser.get("/online/display-check.png")
    assert png.headers["Cache-Control"] == "no-store"
    grey = np.asarray(Image.open(io.BytesIO(png.data)))
    assert set(np.unique(grey)) > {128}  # faint digits on mid-grey
    for bad, reason in [
        ({"window_width": 800, "window_height": 300}, "window"),  # the pairs need 196 × 368
        ({"device_pixel_ratio": 0.5}, "pixel ratio"),
        ({"zoom": 1.5}, "zoom"),
        ({}, "number in the grey box"),
    ]:
        digits = shown_digits(app, browser)
        wrong = f"{(int(digits) + 1) % 1000:03d}" if not bad else digits
        response = browser.post("/online/display", {**GOOD_SCREEN, **bad, "digits": wrong})
        assert response.status_code == 403
        assert reason in response.get_data(as_text=True)
        browser.get("/online/display")
    with app.app_context():
        assert get_db().scalar(select(Session)) is None
    # Four tries so far; the fifth is the last, then the check is closed to this browser.
    wrong = f"{(int(shown_digits(app, browser)) + 1) % 1000:03d}"
    assert browser.post("/online/display", {**GOOD_SCREEN, "digits": wrong}).status_code == 403
    response = browser.post(
        "/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, browser)}
    )
    assert response.status_code == 429


def test_an_online_sitting_from_entry_link_to_completion_code(app, tmp_path):
    browser = enter(app, "pid001")
    trials = sitting_trials(app, "pid001")
    kinds = [t.check_kind for t in trials]
    assert kinds.count("gold") == 2 and kinds.count("attention") == 1
    assert sum(t.is_warmup for t in trials) == 1 and trials[0].is_warmup
    tests = [t for t in trials if t.check_kind is None and not t.is_warmup]
    assert len(tests) == 6 and len({t.stimulus_id for t in tests}) == 6
    refs = [t.stimulus.reference for t in tests]
    assert all(a != b for a, b in zip(refs, refs[1:], strict=False))
    gold_keys = {t.stimulus.key.split(":")[0] for t in trials if t.check_kind == "gold"}
    assert gold_keys == {"gold-same", "gold-low"}
    assert trials[1].check_kind is None  # a sitting never opens with a check

    finish(app, browser, "pid001")
    done = browser.get("/trial")
    assert done.headers["Location"].endswith("/done")
    complete = browser.client.get("/done", follow_redirects=True).get_data(as_text=True)
    assert "C0DE42" in complete
    assert 'http-equiv="refresh"' in complete and "complete?cc=C0DE42" in complete

    # The same participant id cannot take the sitting again, from any browser.
    again = Browser(app).get(entry("pid001", session="S2"))
    assert again.status_code == 409 and "already taken part" in again.get_data(as_text=True)

    with app.app_context():
        db = get_db()
        stored = list(db.scalars(select(Rating)))
        assert {r.check_kind for r in stored} == {None, "gold", "attention"}
        gold = db.scalars(select(Stimulus).where(Stimulus.key.like("gold-%"))).all()
        assert gold and all(s.withheld for s in gold)
    db_path = app.config["DATABASE"]
    out = tmp_path / "mos"
    # The test client answers at once: timing is judged in the browser test, not here.
    rules = ["--min-trials", "3", "--max-fast-share", "off", "--min-time-spread", "off"]
    assert (
        mos_main([db_path, "--exclude", *rules, "--out", str(out), "--quiet", "--no-report"]) == 0
    )
    qc = pd.read_csv(out / "participants_qc.csv")
    assert qc["participant"].tolist() == ["pid001"]
    assert qc.loc[0, "gold_trials"] == 2 and qc.loc[0, "attention_failures"] == 0
    assert len(pd.read_csv(out / "mos.csv")) == 6  # checks and gold pairs are no MOS stimuli


def test_the_allocator_spreads_simultaneous_participants_and_resumes_open_sittings(app):
    first = enter(app, "p1")
    second = enter(app, "p2")
    one = {t.stimulus_id for t in sitting_trials(app, "p1") if not (t.check_kind or t.is_warmup)}
    two = {t.stimulus_id for t in sitting_trials(app, "p2") if not (t.check_kind or t.is_warmup)}
    assert not one & two  # 12 images, 6 each: the second gets the ones nobody has yet
    # Re-entering with an open sitting resumes it (no second sitting, nothing lost).
    again = Browser(app)
    assert again.get(entry("p1")).headers["Location"].endswith("/online/display")
    again.get("/online/display")
    response = again.post("/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, again)})
    assert response.headers["Location"].endswith("/trial")
    with app.app_context():
        assert len(get_db().scalars(select(Session)).all()) == 2
    del first, second


def test_careless_participant_is_flagged_in_the_admin(app, tmp_path):
    finish(app, enter(app, "careful1"), "careful1")
    finish(app, enter(app, "careless"), "careless", attentive=False)
    admin = Browser(app)
    admin.get("/admin/login")
    admin.post("/admin/login", {"password": ADMIN_PASSWORD})
    page = admin.get("/admin/quality").get_data(as_text=True)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>(\w+)</td>.*?</tr>", page, re.S)}
    assert "attention check" in rows["careless"] and ">yes<" in rows["careless"]
    assert ">no<" in rows["careful1"]
    assert 'id="quality-link"' in admin.get("/admin/").get_data(as_text=True)
    # The trials export carries the checks and timing: mos.compute excludes from it alike.
    export = tmp_path / "trials.csv"
    export.write_bytes(admin.get("/admin/export/trials.csv").data)
    assert {"check", "accept_low", "accept_high", "seconds"} <= set(pd.read_csv(export).columns)
    rules = ["--min-trials", "3", "--max-fast-share", "off", "--min-agreement", "off"]
    rules += ["--min-time-spread", "off"]
    out = tmp_path / "mos"
    assert (
        mos_main([str(export), "--exclude", *rules, "--out", str(out), "--quiet", "--no-report"])
        == 0
    )
    qc = pd.read_csv(out / "participants_qc.csv").set_index("participant")
    assert qc["excluded"].to_dict() == {"careful1": False, "careless": True}
    assert len(pd.read_csv(out / "mos.csv")) <= 12  # test images only, never a gold pair


def test_entry_link_is_throttled_per_address(tmp_path):
    app = make_app(tmp_path / "instance", **ONLINE, ONLINE_ENTRY_LIMIT="3 per minute")
    client = app.test_client()
    codes = [client.get(entry(f"P{i}")).status_code for i in range(4)]
    assert codes == [302, 302, 302, 429]


def test_adaptive_allocation_in_the_app_takes_the_most_disputed_image(app):
    """Six participants rated all 12 images; they disagree only on one: it comes first."""
    from annotate import sittings as lab
    from annotate.online import OnlineSettings, allocation_state, start_online_sitting
    from studydb import Viewer

    rng = np.random.default_rng(5)
    with app.app_context():
        db = get_db()
        stimuli = db.scalars(select(Stimulus).order_by(Stimulus.id)).all()
        disputed = stimuli[7].id
        truth = {s.id: 0.5 + 4 * i / len(stimuli) for i, s in enumerate(stimuli)}
        for person in range(6):
            viewer = Viewer(code=f"R{person}")
            db.add(viewer)
            db.flush()
            sitting = Session(viewer_id=viewer.id, closed_reason="completed")
            db.add(sitting)
            db.flush()
            for position, s in enumerate(stimuli):
                spread = 2.0 if s.id == disputed else 0.1
                score = float(np.clip(truth[s.id] + spread * rng.standard_normal(), 0, 5))
                db.add(Trial(session_id=sitting.id, position=position, stimulus_id=s.id))
                db.add(
                    Rating(
                        session_id=sitting.id,
                        stimulus_id=s.id,
                        position=position,
                        consistency=round(score, 1),
                        perception=2.5,
                    )
                )
        db.commit()
        config = OnlineSettings.from_config({**app.config, "ONLINE_SITTING_PAIRS": 5})
        config.target_ci = 0.3
        plan = lab.Design.from_config(app.config)
        state = allocation_state(db, plan, config)
        widest = state.stimuli[np.argmax(state.precision.ci95)]
        assert widest == disputed and not state.signals["excluded"].any()
        newcomer = Viewer(code="NEW1")
        db.add(newcomer)
        db.commit()
        sitting = start_online_sitting(db, newcomer, plan, config, {}, rng)
        tests = [t.stimulus_id for t in sitting.trials if not (t.check_kind or t.is_warmup)]
        assert disputed in tests and len(tests) == 5
        # A one-pair sitting without bands is exactly the widest image (uniform: any of 12).
        lab.close(db, sitting, "completed")
        config.pairs, config.quality_bins = 1, 1
        solo = Viewer(code="NEW2")
        db.add(solo)
        db.commit()
        sitting = start_online_sitting(db, solo, plan, config, {}, rng)
        tests = [t.stimulus_id for t in sitting.trials if not (t.check_kind or t.is_warmup)]
        assert tests == [disputed]


def test_online_pages_are_valid_html(app):
    import html5lib

    parser = html5lib.HTMLParser(strict=True)
    browser = Browser(app)
    browser.get(entry("markup1"))
    pages = {"/online/consent": browser.get("/online/consent")}
    browser.post("/online/consent", {"agree": "y"})
    pages["/online/display"] = browser.get("/online/display")
    pages["incomplete form"] = browser.post("/online/display", GOOD_SCREEN)
    small = {**GOOD_SCREEN, "window_width": 10, "digits": shown_digits(app, browser)}
    pages["refused"] = browser.post("/online/display", small)
    browser.get("/online/display")
    browser.post("/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, browser)})
    finish(app, browser, "markup1")
    pages["/online/complete"] = browser.get("/online/complete")
    admin = Browser(app)
    admin.get("/admin/login")
    admin.post("/admin/login", {"password": ADMIN_PASSWORD})
    pages["/admin/quality"] = admin.get("/admin/quality")
    for url, response in pages.items():
        assert response.status_code in (200, 400, 403), url
        parser.parse(response.get_data(as_text=True))  # raises ParseError on invalid markup


def test_no_new_sitting_once_every_image_is_on_target(tmp_path):
    manifest = make_study(tmp_path / "images", references=3, per_reference=4)
    settings = {**ONLINE, "ONLINE_SITTING_PAIRS": 12, "ALLOCATION_MIN_RATINGS": 1}
    app = make_app(tmp_path / "instance", **settings, ALLOCATION_TARGET_CI=100.0)
    import_study(app, manifest)
    finish(app, enter(app, "first"), "first")  # rates all 12 images: every CI is within 100
    late = Browser(app)
    late.get(entry("late"))
    late.get("/online/consent")
    late.post("/online/consent", {"agree": "y"})
    late.get("/online/display")
    response = late.post("/online/display", {**GOOD_SCREEN, "digits": shown_digits(app, late)})
    assert response.status_code == 409
    assert "all the ratings it needs" in response.get_data(as_text=True)
