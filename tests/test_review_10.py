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
