"""Review of issue 10 (black-box): defects found by probing the lab app as a viewer, a scripted
client and an experimenter would, each pinned by a test."""

from __future__ import annotations

from sqlalchemy import select

from annotate.db import get_db
from studydb import Rating, Session
from tests.annotate_helpers import ENVIRONMENT, Browser
from tests.test_lifecycle import Clock, build


def test_warm_ups_of_an_earlier_sitting_are_not_rated_again_as_test_items(tmp_path, monkeypatch):
    """A viewer whose first sitting hit the time limit continues the group in a second one: the
    images they met as warm-ups (stabilizing, left out of the MOS) must not come back to them as
    test items — the README: warm-ups are "not shown again as test items"."""
    app = build(tmp_path, WARMUP_TRIALS=3, VIEWERS_PER_STIMULUS=2, SESSION_LIMIT_MINUTES=60)
    clock = Clock(monkeypatch)
    viewer = Browser(app)
    viewer.register()
    for _ in range(4):  # three warm-ups and one test item, then the time runs out
        assert viewer.rate(viewer.current_position()).status_code == 303
    clock.advance(minutes=61)
    viewer.get("/environment")
    assert viewer.post("/environment", ENVIRONMENT).headers["Location"].endswith("/instructions")
    viewer.practise()
    while (position := viewer.current_position()) is not None:
        assert viewer.rate(position).status_code == 303
    with app.app_context():
        db = get_db()
        assert list(db.scalars(select(Session.closed_reason).order_by(Session.id))) == [
            "time limit",
            "completed",
        ]
        ratings = db.execute(select(Rating.stimulus_id, Rating.is_warmup)).all()
        warm = {stimulus for stimulus, is_warmup in ratings if is_warmup}
        test = [stimulus for stimulus, is_warmup in ratings if not is_warmup]
        assert len(warm) >= 3
        assert not warm & set(test), "a warm-up image came back as a test item"
        assert len(test) == len(set(test))


def test_a_pair_served_before_the_break_came_due_can_still_be_rated(tmp_path, monkeypatch):
    """The break comes due while a viewer looks at a pair (at the 30-minute mark that is almost
    always so): their honest rating of a pair shown before it must not be refused with an error
    page; the break then starts on the next page. Once it runs, nothing is stored."""
    app = build(tmp_path, BREAK_AFTER_MINUTES=30, BREAK_MINUTES=3, SITTING_IDLE_MINUTES=60)
    clock = Clock(monkeypatch)
    viewer = Browser(app)
    viewer.register()
    clock.advance(minutes=29, seconds=58)
    position = viewer.current_position()  # served at 29:58
    clock.advance(seconds=5)  # rated at 30:03, the break came due at 30:00
    assert viewer.rate(position).status_code == 303
    assert viewer.get("/trial").headers["Location"].endswith("/break")
    clock.advance(seconds=5)
    refused = viewer.rate(position + 1)  # a scripted post during the running break
    assert refused.status_code == 409 and b"break" in refused.data
    with app.app_context():
        assert [r.position for r in get_db().scalars(select(Rating))] == [position]


def test_a_lost_image_file_does_not_strand_the_viewer(tmp_path, monkeypatch):
    """An image file that is gone for good stops its trial with "please call the experimenter";
    the experimenter must then be able to let the viewer go on: the dashboard's missing-file list
    withholds the broken stimuli, which takes effect in the open sitting at once (before, the
    viewer stayed on the error page, and a new sitting planned the same broken image again)."""
    from pathlib import Path

    from studydb import Stimulus, Trial
    from tests.test_annotate import login

    app = build(tmp_path, WARMUP_TRIALS=1)
    clock = Clock(monkeypatch)
    viewer = Browser(app)
    viewer.register()
    assert viewer.rate(viewer.current_position()).status_code == 303  # the warm-up
    with app.app_context():
        sitting = get_db().scalar(select(Session))
        trial = get_db().get(Trial, (sitting.id, 1))
        broken = trial.stimulus_id
        Path(trial.stimulus.distorted_path).unlink()
    stuck = viewer.get("/trial")
    assert stuck.status_code == 503 and b"could not be shown" in stuck.data
    admin = login(app)
    page = admin.get("/admin/").get_data(as_text=True)
    assert 'action="/admin/stimuli/withhold-missing"' in page
    assert admin.post("/admin/stimuli/withhold-missing", {}).status_code == 303
    with app.app_context():
        assert get_db().get(Stimulus, broken).withheld
    clock.advance(seconds=1)
    rated = 0
    while (position := viewer.current_position()) is not None:
        assert viewer.rate(position).status_code == 303
        rated += 1
    assert rated == 4  # the six images less the warm-up and the broken one
    with app.app_context():
        db = get_db()
        assert db.scalar(select(Session.closed_reason)) == "completed"
        assert broken not in set(db.scalars(select(Rating.stimulus_id)))


def test_the_trials_export_carries_the_scale_each_pair_was_drawn_at(tmp_path, monkeypatch):
    """In "scaled" presentation the common factor is stored with each rating; the tidy CSV of every
    trial (the researcher's export) must carry it too, and mos.compute still reads the file."""
    import io

    import pandas as pd

    from mos.compute import main as mos_main
    from tests.test_annotate import login

    app = build(tmp_path, PRESENTATION="scaled", WARMUP_TRIALS=1)
    Clock(monkeypatch)
    viewers = [Browser(app) for _ in range(3)]
    for number, viewer in enumerate(viewers):
        viewer.register()
        for step in range(4):
            score = str((number + 2 * step) % 5 + 0.5)
            response = viewer.rate(viewer.current_position(), score, score, scale="0.5")
            assert response.status_code == 303
    export = login(app).get("/admin/export/trials.csv")
    frame = pd.read_csv(io.BytesIO(export.data))
    assert list(frame["scale"]) == [0.5] * 12
    (tmp_path / "trials.csv").write_bytes(export.data)
    out = tmp_path / "mos"
    assert (
        mos_main([str(tmp_path / "trials.csv"), "--out", str(out), "--quiet", "--no-report"]) == 0
    )


def test_practice_is_activity_and_keeps_the_sitting_open(tmp_path, monkeypatch):
    """The sitting opens with the environment form and practice follows: a viewer who answers a
    practice pair every few minutes (the experimenter explaining the scale) is not idle, so the
    sitting must not be closed as abandoned under them."""
    app = build(tmp_path, SITTING_IDLE_MINUTES=20, BREAK_AFTER_MINUTES=45)
    clock = Clock(monkeypatch)
    viewer = Browser(app)
    viewer.register(practise=False)
    location = "/training/0"
    while "/training/" in location:  # five pairs, 30 minutes in all, none idle for 20
        clock.advance(minutes=6)
        viewer.get(location)
        response = viewer.post(location, {"consistency": "2.5", "perception": "2.5"})
        assert response.status_code in (302, 303)
        location = response.headers["Location"]
    assert location.endswith("/trial")
    with app.app_context():
        assert get_db().scalar(select(Session.closed_reason)) is None
    assert viewer.current_position() == 0


def test_check_help_says_what_the_command_does(capsys):
    import pytest

    from annotate.__main__ import main as annotate_main

    with pytest.raises(SystemExit):
        annotate_main(["check", "--help"])
    assert "missing or unreadable" in capsys.readouterr().out


def test_the_done_page_counts_an_abandoned_sitting_as_gone(tmp_path, monkeypatch):
    """The done page offers a next sitting when something is left; a sitting idle past
    SITTING_IDLE_MINUTES no longer holds its group's place there either (before, only starting a
    sitting closed it, so the page said "nothing left" while the study had a place)."""
    app = build(tmp_path, group_size=3, VIEWERS_PER_STIMULUS=1, SITTING_IDLE_MINUTES=20)
    clock = Clock(monkeypatch)
    dropout, finisher = Browser(app), Browser(app)
    dropout.register()  # takes one group and leaves
    finisher.register()  # takes the other
    rated = 0
    while (position := finisher.current_position()) is not None:
        clock.advance(minutes=8)  # the finisher is active; the drop-out idles past 20 minutes
        assert finisher.rate(position).status_code == 303
        rated += 1
    assert rated == 3
    with app.app_context():
        assert list(get_db().scalars(select(Session.closed_reason).order_by(Session.id))) == [
            None,  # idle 24 minutes, but nothing has closed it yet
            "completed",
        ]
    page = finisher.get("/done").get_data(as_text=True)
    assert 'id="next-sitting"' in page, page
