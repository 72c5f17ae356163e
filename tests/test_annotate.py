"""The lab app through Flask's test client: every route, the viewer flow, and bad input."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from annotate import sittings
from annotate.__main__ import main as annotate_main
from annotate.db import get_db
from annotate.importer import import_manifest
from mos.compute import main as mos_main
from studydb import Rating, Session, Stimulus, Trial
from studydb.manifest import read_manifest
from tests.annotate_helpers import (
    ADMIN_PASSWORD,
    ENVIRONMENT,
    Browser,
    import_study,
    make_app,
    make_study,
)


@pytest.fixture
def study(tmp_path):
    manifest = make_study(tmp_path / "images")
    app = make_app(tmp_path / "instance")
    import_study(app, manifest)
    return app


def ratings(app) -> list[Rating]:
    with app.app_context():
        return list(get_db().scalars(select(Rating).order_by(Rating.id)))


def rate_all(browser: Browser) -> int:
    count = 0
    while (position := browser.current_position()) is not None:
        assert browser.rate(position, 1 + position % 4, 4 - position % 4).status_code == 303
        count += 1
    return count


def test_whole_viewer_flow_stores_every_trial_once(study):
    browser = Browser(study)
    assert browser.get("/").status_code == 200
    browser.register(practise=False)
    assert b"Instructions" in browser.get("/instructions").data
    practice = browser.get("/training/0")
    assert practice.status_code == 200 and b"Practice" in practice.data
    assert browser.get("/training/99").status_code == 302  # no skipping ahead: back to step 0
    assert browser.get("/trial").headers["Location"].endswith("/instructions")
    browser.practise()
    assert ratings(study) == []  # practice stores nothing
    rated = rate_all(browser)
    assert rated == 12  # every stimulus once; the warm-up is one of them, not shown again
    stored = ratings(study)
    assert len(stored) == 12 and sum(r.is_warmup for r in stored) == 1
    assert [r.position for r in stored] == list(range(12))
    assert all(r.shown_at is not None and r.submitted_at >= r.shown_at for r in stored)
    assert browser.get("/trial").headers["Location"].endswith("/done")
    with study.app_context():
        assert get_db().scalar(select(Session.closed_reason)) == "completed"


def test_order_is_per_viewer_and_never_repeats_a_reference_back_to_back(study):
    orders = []
    for _ in range(2):
        browser = Browser(study)
        browser.register()
        with study.app_context():
            sitting = get_db().scalars(select(Session).order_by(Session.id.desc())).first()
            trials = sorted(sitting.trials, key=lambda t: t.position)
            references = [t.stimulus.reference for t in trials if not t.is_warmup]
            orders.append([t.stimulus_id for t in trials])
        assert all(a != b for a, b in zip(references, references[1:], strict=False))
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def test_double_submit_and_reload_never_duplicate_or_skip(study):
    browser = Browser(study)
    browser.register()
    first = browser.current_position()
    assert browser.current_position() == first  # a reload shows the same trial
    assert browser.rate(first).status_code == 303
    assert browser.rate(first).status_code == 303  # the double click: accepted, not stored twice
    assert len(ratings(study)) == 1
    assert browser.current_position() == first + 1


def test_resume_from_another_machine_with_the_code(study):
    browser = Browser(study)
    code = browser.register()
    for _ in range(3):
        browser.rate(browser.current_position())
    elsewhere = Browser(study)
    elsewhere.get("/")
    response = elsewhere.post("/resume", {"code": code.lower()})
    assert response.status_code == 302 and response.headers["Location"].endswith("/environment")
    elsewhere.get("/environment")  # the new machine is measured before the sitting goes on
    response = elsewhere.post("/environment", {**ENVIRONMENT, "device_pixel_ratio": 2})
    assert response.headers["Location"].endswith("/trial")
    assert elsewhere.current_position() == 3
    bad = Browser(study)
    bad.get("/")
    assert bad.post("/resume", {"code": "NOSUCHCODE"}).status_code == 404


@pytest.mark.parametrize(
    "change, status, message",
    [
        ({"consistency": 7}, 400, b"consistency"),
        ({"perception": -1}, 400, b"perception"),
        ({"perception": "nan"}, 400, b"perception"),
        ({"consistency": "good"}, 400, b"consistency"),
        ({"perception": None}, 400, b"perception"),
        ({"nsfw": "y"}, 400, b"offensive"),
        ({"position": 5}, 409, b"not the current one"),
        ({"position": 999}, 400, b"No such trial"),
        ({"position": "x"}, 400, b"position"),
    ],
)
def test_bad_trial_input_is_refused_and_changes_nothing(study, change, status, message):
    browser = Browser(study)
    browser.register()
    data = {"position": browser.current_position(), "consistency": 3, "perception": 3}
    data.update(change)
    response = browser.post("/trial", {k: v for k, v in data.items() if v is not None})
    assert response.status_code == status
    assert message in response.data
    assert ratings(study) == []


def test_nsfw_flag_with_reason_is_stored(study):
    browser = Browser(study)
    browser.register()
    position = browser.current_position()
    assert browser.rate(position, nsfw="y", nsfw_reason="gore").status_code == 303
    (rating,) = ratings(study)
    assert rating.nsfw and rating.nsfw_reason == "gore"


def test_forms_without_csrf_token_are_refused(study):
    browser = Browser(study)
    browser.register()
    position = browser.current_position()
    response = browser.post(
        "/trial", {"position": position, "consistency": 3, "perception": 3}, with_token=False
    )
    assert response.status_code == 400 and b"CSRF" in response.data
    assert ratings(study) == []
    assert Browser(study).post("/consent", {"agree": "y"}, with_token=False).status_code == 400


def test_a_viewer_only_ever_rates_in_their_own_sitting(study):
    alice, bob = Browser(study), Browser(study)
    alice.register()
    bob.register()
    alice.rate(alice.current_position())
    bob.rate(bob.current_position())
    with study.app_context():
        db = get_db()
        rows = db.execute(select(Rating.session_id, Rating.stimulus_id, Rating.position)).all()
        for session_id, stimulus_id, position in rows:
            assert db.get(Trial, (session_id, position)).stimulus_id == stimulus_id
    assert len({r.session_id for r in ratings(study)}) == 2
    assert Browser(study).get("/trial").status_code == 302  # no viewer: back to the start


def test_break_is_enforced_and_the_sitting_closes_at_the_hour(study, monkeypatch):
    study.config["SITTING_IDLE_MINUTES"] = 120  # this viewer is slow, not gone
    browser = Browser(study)
    browser.register()
    browser.rate(browser.current_position())
    start = sittings.now()
    monkeypatch.setattr(sittings, "now", lambda: start + dt.timedelta(minutes=31))
    response = browser.get("/trial")
    assert response.headers["Location"].endswith("/break")
    page = browser.get("/break")
    assert page.status_code == 200 and b"rest your eyes" in page.data
    monkeypatch.setattr(sittings, "now", lambda: start + dt.timedelta(minutes=35))
    assert browser.get("/break").headers["Location"].endswith("/trial")
    position = browser.current_position()
    assert position == 1
    monkeypatch.setattr(sittings, "now", lambda: start + dt.timedelta(minutes=61))
    refused = browser.rate(position)
    assert refused.status_code == 409 and b"closed" in refused.data
    assert browser.get("/trial").headers["Location"].endswith("/done")
    with study.app_context():
        assert get_db().scalar(select(Session.closed_reason)) == "time limit"
    assert len(ratings(study)) == 1


def test_a_timed_out_group_continues_with_only_the_unrated_images(study, monkeypatch):
    browser = Browser(study)
    browser.register()
    for _ in range(4):  # the warm-up and three images
        browser.rate(browser.current_position())
    start = sittings.now()
    monkeypatch.setattr(sittings, "now", lambda: start + dt.timedelta(minutes=61))
    browser.get("/trial")
    monkeypatch.undo()
    browser.get("/environment")
    browser.post("/environment", ENVIRONMENT)
    with study.app_context():
        first, second = get_db().scalars(select(Session).order_by(Session.id)).all()
        rated = {r.stimulus_id for r in first.ratings if not r.is_warmup}
        seen = {r.stimulus_id for r in first.ratings}  # the warm-up is not shown again as a test
        planned = {t.stimulus_id for t in second.trials}
    assert len(rated) == 3 and len(planned) == 12 - 4 and not planned & seen


def test_groups_are_balanced_across_viewers(tmp_path):
    manifest = make_study(tmp_path / "images", references=2, per_reference=4)
    app = make_app(tmp_path / "instance", VIEWERS_PER_STIMULUS=1)
    with app.app_context():
        import_manifest(get_db(), read_manifest(manifest), 4, np.random.default_rng(0))
    groups = []
    for _ in range(2):
        browser = Browser(app)
        browser.register()
        with app.app_context():
            groups.append(get_db().scalars(select(Session.group_id).order_by(Session.id)).all()[-1])
    assert sorted(groups) == [1, 2]
    late = Browser(app)
    late.get("/consent")
    late.post("/consent", {"agree": "y"})
    late.get("/register")
    late.post("/register", {"age": 40, "gender": "male", "vision_screening": "ok"})
    late.get("/environment")
    response = late.post("/environment", ENVIRONMENT)
    assert b"nothing left for you to rate" in response.data


def test_repeats_are_planted_and_flagged(tmp_path):
    manifest = make_study(tmp_path / "images")
    app = make_app(tmp_path / "instance", REPEAT_TRIALS=2)
    import_study(app, manifest)
    browser = Browser(app)
    browser.register()
    assert rate_all(browser) == 12 + 2
    repeats = [r for r in ratings(app) if r.is_repeat]
    assert len(repeats) == 2
    firsts = {r.stimulus_id: r.position for r in ratings(app) if not r.is_repeat}
    assert all(r.position > firsts[r.stimulus_id] for r in repeats)


def test_registration_and_environment_validate_their_input(study):
    browser = Browser(study)
    assert browser.get("/register").status_code == 302  # no consent yet
    browser.get("/consent")
    assert browser.post("/consent", {}).status_code == 200  # not ticked: asked again
    browser.post("/consent", {"agree": "y"})
    browser.get("/register")
    response = browser.post("/register", {"age": 7, "gender": "x", "vision_screening": ""})
    assert response.status_code == 400
    browser.post("/register", {"age": 30, "gender": "male", "vision_screening": "ok"})
    browser.get("/environment")
    response = browser.post(
        "/environment", {"screen_width": "wide", "screen_height": 1, "device_pixel_ratio": 1}
    )
    assert response.status_code == 400
    with study.app_context():
        assert get_db().scalar(select(func.count()).select_from(Session)) == 0


def login(app) -> Browser:
    admin = Browser(app)
    admin.get("/admin/login")
    assert admin.post("/admin/login", {"password": ADMIN_PASSWORD}).status_code == 302
    return admin


def test_admin_requires_a_password_and_has_no_default(tmp_path):
    app = make_app(tmp_path / "instance", ADMIN_PASSWORD_HASH=None)
    browser = Browser(app)
    assert browser.get("/admin/").status_code == 503
    assert browser.get("/admin/login").status_code == 503
    assert b"set-password" in browser.get("/admin/login").data


def test_admin_login_dashboard_and_logout(study):
    wrong = Browser(study)
    wrong.get("/admin/login")
    assert wrong.post("/admin/login", {"password": "admin"}).status_code == 403
    assert wrong.get("/admin/").status_code == 302
    viewer = Browser(study)
    code = viewer.register()
    rate_all(viewer)
    admin = login(study)
    page = admin.get("/admin/").get_data(as_text=True)
    assert code in page and "group-1" in page and 'id="screening"' in page
    assert "0 of 12 stimuli have reached 20 viewers" in page
    admin.post("/admin/logout", {})
    assert admin.get("/admin/").status_code == 302


def test_nsfw_queue_withholds_an_image_from_later_viewers(study):
    first = Browser(study)
    first.register()
    position = first.current_position()
    first.rate(position, nsfw="y", nsfw_reason="violence")
    flagged = ratings(study)[0].stimulus_id
    admin = login(study)
    page = admin.get("/admin/").get_data(as_text=True)
    assert "violence" in page
    assert admin.post(f"/admin/stimuli/{flagged}/withhold", {}).status_code == 303
    with study.app_context():
        assert get_db().get(Stimulus, flagged).withheld
    later = Browser(study)
    later.register()
    with study.app_context():
        sitting = get_db().scalars(select(Session).order_by(Session.id.desc())).first()
        assert flagged not in {t.stimulus_id for t in sitting.trials}
    assert admin.post(f"/admin/stimuli/{flagged}/withhold", {}, with_token=False).status_code == 400


def test_exports_are_readable_by_mos_compute(study, tmp_path):
    for _ in range(3):
        viewer = Browser(study)
        viewer.register()
        rate_all(viewer)
    admin = login(study)
    csv = admin.get("/admin/export/trials.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    frame = pd.read_csv(io.BytesIO(csv.data))
    assert len(frame) == 3 * 12 and frame["warmup"].sum() == 3
    (tmp_path / "trials.csv").write_bytes(csv.data)
    assert mos_main([str(tmp_path / "trials.csv"), "--out", str(tmp_path / "a"), "--quiet",
                     "--screening", "none"]) == 0  # fmt: skip
    copy = admin.get("/admin/export/ratings.db")
    assert copy.status_code == 200 and copy.data.startswith(b"SQLite format 3")
    (tmp_path / "copy.db").write_bytes(copy.data)
    assert mos_main([str(tmp_path / "copy.db"), "--out", str(tmp_path / "b"), "--quiet",
                     "--screening", "none"]) == 0  # fmt: skip
    a = pd.read_csv(tmp_path / "a" / "mos.csv").set_index("stimulus").sort_index()
    b = pd.read_csv(tmp_path / "b" / "mos.csv").set_index("stimulus").sort_index()
    pd.testing.assert_series_equal(a["consistency_mos"], b["consistency_mos"])
    # each viewer rates every image but their warm-up, which is not shown again as a test item
    assert (a["consistency_n"] <= 3).all() and a["consistency_n"].sum() == 3 * 11


def test_no_debug_and_safe_headers(study):
    assert not study.debug
    browser = Browser(study)
    assert browser.get("/console").status_code == 404
    response = browser.get("/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_cookies_are_secure_and_there_is_no_default_password(tmp_path):
    from annotate import create_app

    app = create_app(instance_path=str(tmp_path / "fresh"))
    assert app.config["SESSION_COOKIE_SECURE"] is None  # Secure exactly over HTTPS: test_lan.py
    assert app.config["SESSION_COOKIE_HTTPONLY"]
    assert app.config["ADMIN_PASSWORD_HASH"] is None
    assert (tmp_path / "fresh" / "secret_key").stat().st_mode & 0o077 == 0


def test_import_command(tmp_path, capsys):
    manifest = make_study(tmp_path / "images")
    instance = tmp_path / "instance"
    assert annotate_main(["--instance", str(instance), "import", str(manifest)]) == 0
    assert "imported 12 stimuli" in capsys.readouterr().out
    assert annotate_main(["--instance", str(instance), "import", str(manifest)]) == 0
    assert "imported 0 stimuli (12 already present)" in capsys.readouterr().out
    with sqlite3.connect(instance / "ratings.db") as db:
        extra = db.execute("select extra from stimuli where key='r0_d1'").fetchone()[0]
    assert '"seed": 1001' in extra


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.drop(columns=["reference_path"]), "missing column(s) reference_path"),
        (lambda f: f.assign(distorted_path="dist/none.png"), "image file(s) not found"),
        (lambda f: pd.concat([f, f.head(1)]), "appears more than once"),
        (lambda f: f.assign(strength="strong"), "is not a number"),
    ],
)
def test_import_refuses_bad_manifests(tmp_path, capsys, edit, message):
    manifest = make_study(tmp_path / "images")
    edit(pd.read_csv(manifest)).to_csv(manifest, index=False)
    assert annotate_main(["--instance", str(tmp_path / "i"), "import", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_import_refuses_an_id_that_now_points_elsewhere(tmp_path, capsys):
    manifest = make_study(tmp_path / "images")
    instance = tmp_path / "instance"
    annotate_main(["--instance", str(instance), "import", str(manifest)])
    frame = pd.read_csv(manifest)
    frame.loc[0, "distorted_path"] = frame.loc[1, "distorted_path"]
    frame.to_csv(manifest, index=False)
    assert annotate_main(["--instance", str(instance), "import", str(manifest)]) == 2
    assert "already in the study with other files" in capsys.readouterr().err


def test_set_password_stores_only_a_hash(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-enough-secret\n"))
    assert annotate_main(["--instance", str(tmp_path), "set-password", "--stdin"]) == 0
    stored = (tmp_path / "admin_password_hash").read_text()
    assert "a-long-enough-secret" not in stored and stored.startswith(("scrypt:", "pbkdf2:"))
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert annotate_main(["--instance", str(tmp_path), "set-password", "--stdin"]) == 2
