"""Issue 10 points 3–5 (server side) and issue 11 point 7: a rating counts only for a pair the
viewer saw long enough; missing images stop the trial; practice, scores, environment and the
done page are what the protocol says; every page is valid HTML."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import html5lib
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from annotate import sittings
from annotate.__main__ import main as annotate_main
from annotate.db import get_db
from studydb import Rating, Session, Stimulus, Trial
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
    manifest = make_study(tmp_path / "images", references=2, per_reference=3)
    app = make_app(tmp_path / "instance", GREY_SCREEN_MS=600, MIN_VIEWING_MS=1000)
    import_study(app, manifest)
    return app


@pytest.fixture
def clock(monkeypatch):
    class Clock:
        moment = dt.datetime.now(dt.UTC)

        def advance(self, **delta) -> None:
            self.moment += dt.timedelta(**delta)

    c = Clock()
    monkeypatch.setattr(sittings, "now", lambda: c.moment)
    return c


def stored(app) -> list[Rating]:
    with app.app_context():
        return list(get_db().scalars(select(Rating).order_by(Rating.id)))


def test_a_rating_needs_a_served_page_and_the_minimum_viewing_time(study, clock):
    viewer = Browser(study)
    viewer.register()
    with study.app_context():
        first = get_db().scalar(select(Trial).order_by(Trial.position))
    unseen = viewer.rate(first.position)  # posted without the page ever being served
    assert unseen.status_code == 409 and b"never shown" in unseen.data
    position = viewer.current_position()
    clock.advance(milliseconds=100)  # a key pressed under the grey screen
    early = viewer.rate(position)
    assert early.status_code == 409 and b"too soon" in early.data
    clock.advance(milliseconds=1499)  # 1.599 s < 0.6 s grey + 1 s viewing
    assert viewer.rate(position).status_code == 409
    assert stored(study) == []
    clock.advance(milliseconds=2)
    assert viewer.rate(position).status_code == 303
    assert len(stored(study)) == 1


def test_a_reload_restarts_the_viewing_clock_and_never_moves_shown_at_back(study, clock):
    viewer = Browser(study)
    viewer.register()
    position = viewer.current_position()
    first_served = clock.moment
    clock.advance(seconds=30)
    assert viewer.current_position() == position  # the reload
    with study.app_context():
        trial = get_db().get(Trial, (1, position))
        assert sittings.aware(trial.shown_at) == first_served  # the first showing is kept
    clock.advance(seconds=1)
    assert viewer.rate(position).status_code == 409  # 1 s after the reload is too soon
    clock.advance(seconds=1)
    response = viewer.rate(position, first_input_ms=400, reveal_ms=900)
    assert response.status_code == 303
    rating = stored(study)[0]
    served_again = first_served + dt.timedelta(seconds=30)
    assert sittings.aware(rating.shown_at) == served_again + dt.timedelta(milliseconds=900)
    assert sittings.aware(rating.first_input_at) == sittings.aware(rating.shown_at) + dt.timedelta(
        milliseconds=400
    )
    assert sittings.aware(rating.first_input_at) <= sittings.aware(rating.submitted_at)


def test_no_rating_during_a_break_or_after_the_time_limit(study, clock):
    study.config.update(BREAK_AFTER_MINUTES=5, SITTING_IDLE_MINUTES=60)
    viewer = Browser(study)
    viewer.register()
    position = viewer.current_position()
    clock.advance(minutes=6)
    # (a pair served before the break came due may still be rated: tests/test_review_10.py)
    assert viewer.get("/trial").headers["Location"].endswith("/break")  # the rest begins
    resting = viewer.rate(position)
    assert resting.status_code == 409 and b"break" in resting.data
    assert viewer.rate(position).status_code == 409
    clock.advance(minutes=55)
    late = viewer.rate(position)
    assert late.status_code == 409 and b"closed" in late.data
    assert stored(study) == []


@pytest.mark.parametrize(
    "value",
    ["2.55", "٣", "3.", "+3", "3e0", "5.1", "0x1", "nan"],
)
def test_scores_are_on_the_slider_grid_in_ascii_digits(study, clock, value):
    viewer = Browser(study)
    viewer.register()
    position = viewer.current_position()
    clock.advance(seconds=2)
    response = viewer.rate(position, consistency=value)
    assert response.status_code == 400 and b"steps of 0.1" in response.data
    assert viewer.rate(position, consistency="4.7", perception="0").status_code == 303
    assert (stored(study)[0].consistency, stored(study)[0].perception) == (4.7, 0.0)


def test_the_nsfw_reason_is_stored_only_with_the_flag(study, clock):
    viewer = Browser(study)
    viewer.register()
    for nsfw in (False, True):
        position = viewer.current_position()
        clock.advance(seconds=2)
        extra = {"nsfw": "y"} if nsfw else {}
        viewer.rate(position, nsfw_reason="left over text", **extra)
    assert [(r.nsfw, r.nsfw_reason) for r in stored(study)] == [
        (False, None),
        (True, "left over text"),
    ]


def test_the_scale_is_stored_and_checked_against_the_presentation(study, clock):
    viewer = Browser(study)
    viewer.register()
    position = viewer.current_position()
    clock.advance(seconds=2)
    assert viewer.rate(position, scale="0.5").status_code == 400  # native: 1:1 only
    study.config["PRESENTATION"] = "scaled"
    assert viewer.rate(position).status_code == 400  # scaled: the factor is required
    assert viewer.rate(position, scale="0.5").status_code == 303
    assert stored(study)[0].scale == 0.5


def test_a_missing_image_stops_the_trial_and_is_listed(study, clock, tmp_path, capsys):
    instance = tmp_path / "instance"
    viewer = Browser(study)
    viewer.register()
    with study.app_context():
        sitting = get_db().scalar(select(Session))
        trial = get_db().get(Trial, (sitting.id, 0))
        victim = Path(trial.stimulus.distorted_path)
        key = trial.stimulus.key
    hidden = victim.with_suffix(".gone")
    victim.rename(hidden)
    page = viewer.get("/trial")
    assert page.status_code == 503 and "could not be shown" in page.get_data(as_text=True)
    clock.advance(seconds=5)
    assert viewer.rate(0).status_code == 409  # never served, never stored
    admin = Browser(study)
    admin.get("/admin/login")
    admin.post("/admin/login", {"password": ADMIN_PASSWORD})
    listed = admin.get("/admin/").get_data(as_text=True)
    assert key in listed and str(victim) in listed
    assert annotate_main(["--instance", str(instance), "check"]) == 1
    assert f"{key}: {victim}: missing" in capsys.readouterr().err
    victim.write_bytes(b"not a png")  # present but unreadable
    assert annotate_main(["--instance", str(instance), "check"]) == 1
    assert "unreadable" in capsys.readouterr().err
    hidden.rename(victim)
    assert annotate_main(["--instance", str(instance), "check"]) == 0
    assert "all image files of 6 stimuli open" in capsys.readouterr().out
    assert viewer.current_position() == 0
    assert stored(study) == []


def test_check_on_an_empty_study_is_a_one_line_error(tmp_path, capsys):
    assert annotate_main(["--instance", str(tmp_path / "empty"), "check"]) == 2
    assert "no stimuli" in capsys.readouterr().err


def test_practice_is_posted_cannot_be_skipped_and_uses_no_test_stimulus(study):
    viewer = Browser(study)
    viewer.enrol()
    viewer.post("/environment", ENVIRONMENT)
    assert viewer.get("/trial").headers["Location"].endswith("/instructions")
    assert viewer.get("/training/3").headers["Location"].endswith("/training/0")
    page = viewer.get("/training/0").get_data(as_text=True)
    assert 'method="post"' in page and "/practice/0/distorted" in page and "/media/" not in page
    refused = viewer.post("/training/0", {"consistency": "2.5", "perception": "2.5"}, False)
    assert refused.status_code == 400  # no CSRF token
    assert viewer.post("/training/0", {"consistency": "9"}).status_code == 400
    viewer.practise()
    assert viewer.current_position() == 0
    # Five levels of damage to one reference, worst first: a quality range, not stimuli.
    images = [
        np.asarray(Image.open(Path(study.instance_path) / "practice" / "r0" / f"level{i}.png"))
        for i in range(5)
    ]
    reference = np.asarray(Image.open(Path(study.instance_path).parent / "images/ref/r0.png"))
    errors = [np.abs(image.astype(float) - reference).mean() for image in images]
    assert all(worse > better for worse, better in zip(errors, errors[1:], strict=False))
    with study.app_context():
        assert get_db().query(Stimulus).count() == 6


def test_configured_practice_stimuli_are_never_test_items(tmp_path):
    manifest = make_study(tmp_path / "images", references=2, per_reference=3)
    app = make_app(tmp_path / "instance", TRAINING_STIMULI=["r0_d2", "r1_d0"])
    import_study(app, manifest)
    viewer = Browser(app)
    viewer.register()
    with app.app_context():
        planned = {t.stimulus.key for t in get_db().scalars(select(Trial))}
    assert planned and not planned & {"r0_d2", "r1_d0"}


def test_warm_ups_are_not_shown_again_as_test_items(tmp_path):
    manifest = make_study(tmp_path / "images", references=3, per_reference=4)
    app = make_app(tmp_path / "instance", WARMUP_TRIALS=3)
    import_study(app, manifest)
    for _ in range(3):
        Browser(app).register()
    with app.app_context():
        for sitting in get_db().scalars(select(Session)):
            warm = [t.stimulus_id for t in sitting.trials if t.is_warmup]
            test = [t.stimulus_id for t in sitting.trials if not t.is_warmup]
            assert len(warm) == 3 and not set(warm) & set(test)
            assert len(warm) + len(test) == 12


@pytest.mark.parametrize("missing", ["display", "viewing_distance", "lighting"])
def test_environment_notes_are_required_with_an_explicit_unknown(study, missing):
    viewer = Browser(study)
    viewer.enrol()
    refused = viewer.post("/environment", {**ENVIRONMENT, missing: "  "})
    assert refused.status_code == 400 and b"unknown" in refused.data
    assert viewer.post("/environment", {**ENVIRONMENT, missing: "unknown"}).status_code == 302


def test_the_done_page_says_how_the_sitting_ended_and_offers_only_what_is_left(study, clock):
    study.config["SITTING_IDLE_MINUTES"] = 120
    viewer = Browser(study)
    viewer.register()
    clock.advance(minutes=61)
    page = viewer.get("/done").get_data(as_text=True)
    assert "time limit" in page and 'id="next-sitting"' in page
    viewer.get("/environment")
    viewer.post("/environment", ENVIRONMENT)
    viewer.practise()
    while (position := viewer.current_position()) is not None:
        clock.advance(seconds=2)
        assert viewer.rate(position).status_code == 303
    page = viewer.get("/done").get_data(as_text=True)
    assert "completed this sitting" in page
    assert 'id="next-sitting"' not in page and "nothing left" in page


def test_every_page_is_valid_html_with_a_favicon(study):
    parser = html5lib.HTMLParser(strict=True)
    viewer = Browser(study)
    pages = {url: viewer.get(url) for url in ("/", "/consent")}
    viewer.enrol()
    pages["/environment"] = viewer.get("/environment")
    viewer.post("/environment", ENVIRONMENT)
    for url in ("/instructions", "/training/0"):
        pages[url] = viewer.get(url)
    viewer.practise()
    pages["/trial"] = viewer.get("/trial")
    pages["error"] = viewer.rate(999)
    admin = Browser(study)
    admin.get("/admin/login")
    admin.post("/admin/login", {"password": ADMIN_PASSWORD})
    pages["/admin/"] = admin.get("/admin/")
    for url, response in pages.items():
        text = response.get_data(as_text=True)
        parser.parse(text)  # raises html5lib.html5parser.ParseError on invalid markup
        assert 'rel="icon"' in text, url
    assert viewer.get("/static/favicon.svg").status_code == 200
    with pytest.raises(html5lib.html5parser.ParseError):
        parser.parse("<!doctype html><title>x</title><p>a</form>")  # the old index page's slip
