"""Sittings (BT.500 sessions): assigning a group, drawing the order, timing, recording ratings.

Pure study logic on an ORM session, no Flask, so it is tested directly and shared by the web views
and the command line. All times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from studydb import Rating, Session, Stimulus, StudyGroup, Trial, Viewer
from studydb.design import order_without_repeats
from studydb.schema import SCORE_MAX, SCORE_MIN


class StudyError(ValueError):
    """A request the study cannot honour; the message is shown to the person.

    ``status`` is the HTTP status a web view answers with: 400 for bad input, 409 when the
    request was fine but the sitting has moved on (closed, or another trial is current).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Design:
    """The parts of the configuration that shape a sitting."""

    warmup_trials: int = 3
    repeat_trials: int = 0
    viewers_per_stimulus: int = 20
    session_limit: dt.timedelta = dt.timedelta(minutes=60)
    break_after: dt.timedelta = dt.timedelta(minutes=30)
    break_length: dt.timedelta = dt.timedelta(minutes=3)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Design:
        return cls(
            warmup_trials=int(config["WARMUP_TRIALS"]),
            repeat_trials=int(config["REPEAT_TRIALS"]),
            viewers_per_stimulus=int(config["VIEWERS_PER_STIMULUS"]),
            session_limit=dt.timedelta(minutes=config["SESSION_LIMIT_MINUTES"]),
            break_after=dt.timedelta(minutes=config["BREAK_AFTER_MINUTES"]),
            break_length=dt.timedelta(minutes=config["BREAK_MINUTES"]),
        )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(moment: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- starting a sitting


def open_sitting(db: OrmSession, viewer: Viewer) -> Session | None:
    """The viewer's sitting that is still open, if any (to resume it from any machine)."""
    return db.scalar(
        select(Session)
        .where(Session.viewer_id == viewer.id, Session.closed_reason.is_(None))
        .order_by(Session.id.desc())
        .limit(1)
    )


def start_sitting(
    db: OrmSession,
    viewer: Viewer,
    design: Design,
    seed: int | None,
    environment: dict[str, Any],
) -> Session:
    """Assign the next group and draw this viewer's order for it; commits.

    With a ``seed`` the order is reproducible yet still different for every viewer and sitting
    (the generator is seeded with (seed, viewer, sitting number)); without one it is fresh.

    Groups are balanced: the viewer gets, among the groups they have not finished, one with the
    fewest viewers so far, until every group has ``viewers_per_stimulus`` viewers. A group cut
    short by the time limit is continued first, with only the images not yet rated.
    """
    group = _next_group(db, viewer, design)
    if group is None:
        raise StudyError("There is nothing left for you to rate in this study. Thank you!")
    rated = set(
        db.scalars(
            select(Rating.stimulus_id)
            .join(Session, Rating.session_id == Session.id)
            .where(Session.viewer_id == viewer.id, Rating.is_warmup.is_(False))
        )
    )
    stimuli = [
        s
        for s in db.scalars(
            select(Stimulus).where(Stimulus.group_id == group.id, Stimulus.withheld.is_(False))
        )
        if s.id not in rated
    ]
    if not stimuli:
        raise StudyError("This group has no images to show.")
    sittings_so_far = db.scalar(select(func.count()).where(Session.viewer_id == viewer.id)) or 0
    rng = np.random.default_rng(None if seed is None else [seed, viewer.id, sittings_so_far])
    start = now()
    sitting = Session(
        viewer_id=viewer.id,
        group_id=group.id,
        started_at=start,
        environment=environment,
        break_due_at=start + design.break_after,
    )
    db.add(sitting)
    db.flush()
    for trial in _plan(stimuli, design, rng):
        trial.session_id = sitting.id
        db.add(trial)
    db.commit()
    return sitting


def _next_group(db: OrmSession, viewer: Viewer, design: Design) -> StudyGroup | None:
    viewers_per_group = dict(
        db.execute(
            select(Session.group_id, func.count(func.distinct(Session.viewer_id))).group_by(
                Session.group_id
            )
        ).all()
    )
    mine = db.execute(
        select(Session.group_id, Session.closed_reason).where(Session.viewer_id == viewer.id)
    ).all()
    finished = {g for g, reason in mine if reason == "completed"}
    started = {g for g, _ in mine}
    groups = [
        g for g in db.scalars(select(StudyGroup).order_by(StudyGroup.id)) if g.id not in finished
    ]
    unfinished = [g for g in groups if g.id in started]
    if unfinished:
        return unfinished[0]
    open_groups = [
        g for g in groups if viewers_per_group.get(g.id, 0) < design.viewers_per_stimulus
    ]
    if not open_groups:
        return None
    return min(open_groups, key=lambda g: (viewers_per_group.get(g.id, 0), g.id))


def _plan(stimuli: list[Stimulus], design: Design, rng: np.random.Generator) -> list[Trial]:
    """Warm-ups, then a random order without back-to-back references, with planted repeats."""
    ids = np.array([s.id for s in stimuli])
    reference_of = {s.id: (s.reference or s.reference_path) for s in stimuli}
    references = {name: i for i, name in enumerate(sorted(set(reference_of.values())))}
    reference = np.zeros(ids.max() + 1, dtype=np.int64)
    for stimulus_id, name in reference_of.items():
        reference[stimulus_id] = references[name]
    order = [int(i) for i in order_without_repeats(ids, reference, rng)]
    warmups = [
        int(i) for i in rng.choice(ids, size=min(design.warmup_trials, ids.size), replace=False)
    ]
    planned = [(i, True, False) for i in warmups] + [(i, False, False) for i in order]
    for _ in range(min(design.repeat_trials, len(order))):
        # a repeat comes at least a quarter of the session after its first showing
        first = int(rng.integers(0, max(1, len(order) // 2)))
        at = len(warmups) + int(rng.integers(first + max(1, len(order) // 4), len(order) + 1))
        planned.insert(min(at, len(planned)), (order[first], False, True))
    return [
        Trial(position=p, stimulus_id=i, is_warmup=w, is_repeat=r)
        for p, (i, w, r) in enumerate(planned)
    ]


# --------------------------------------------------------------------------- during a sitting


def state(sitting: Session, design: Design, moment: dt.datetime) -> str:
    """'open', 'break' (an enforced rest is due or running) or 'closed'."""
    if sitting.closed_reason is not None:
        return "closed"
    if moment - aware(sitting.started_at) >= design.session_limit:
        return "closed"
    if sitting.break_until is not None and moment < aware(sitting.break_until):
        return "break"
    if sitting.break_due_at is not None and moment >= aware(sitting.break_due_at):
        return "break"
    return "open"


def begin_break_if_due(
    db: OrmSession, sitting: Session, design: Design, moment: dt.datetime
) -> None:
    """Start the enforced rest when it is due (commits)."""
    due = aware(sitting.break_due_at)
    until = aware(sitting.break_until)
    if due is not None and moment >= due and (until is None or until < due):
        sitting.break_until = moment + design.break_length
        sitting.break_due_at = moment + design.break_length + design.break_after
        db.commit()


def close(db: OrmSession, sitting: Session, reason: str) -> None:
    if sitting.closed_reason is None:
        sitting.closed_reason = reason
        sitting.ended_at = now()
        db.commit()


def next_trial(db: OrmSession, sitting: Session) -> Trial | None:
    """The first planned trial without a rating: where the viewer resumes."""
    rated = select(Rating.position).where(Rating.session_id == sitting.id)
    return db.scalar(
        select(Trial)
        .where(Trial.session_id == sitting.id, Trial.position.not_in(rated))
        .order_by(Trial.position)
        .limit(1)
    )


def progress(db: OrmSession, sitting: Session) -> tuple[int, int]:
    """(trials rated, trials planned) of a sitting."""
    done = db.scalar(select(func.count()).where(Rating.session_id == sitting.id)) or 0
    total = db.scalar(select(func.count()).where(Trial.session_id == sitting.id)) or 0
    return done, total


@dataclass
class Submission:
    """What the trial form sends; validated by :func:`record`."""

    position: int
    consistency: float
    perception: float
    nsfw: bool = False
    nsfw_reason: str | None = None
    first_input_ms: int | None = None


def record(db: OrmSession, sitting: Session, submission: Submission, design: Design) -> bool:
    """Store one rating; True if stored now, False if that trial was already rated (a resubmit).

    The stimulus is taken from the server's plan, never from the form. Each rating is committed
    at once, and the (session, position) key makes a double submit a no-op.
    """
    moment = now()
    if state(sitting, design, moment) == "closed":
        raise StudyError("This sitting is closed; the rating was not stored.", status=409)
    for name in ("consistency", "perception"):
        value = getattr(submission, name)
        if not SCORE_MIN <= value <= SCORE_MAX:
            raise StudyError(f"{name} must be between {SCORE_MIN:g} and {SCORE_MAX:g}")
    if submission.nsfw and not (submission.nsfw_reason or "").strip():
        raise StudyError("Please say briefly why the image is offensive.")
    trial = db.get(Trial, (sitting.id, submission.position))
    if trial is None:
        raise StudyError("No such trial in this sitting.")
    if db.scalar(
        select(Rating.id).where(
            Rating.session_id == sitting.id, Rating.position == submission.position
        )
    ):
        return False
    expected = next_trial(db, sitting)
    if expected is None or expected.position != submission.position:
        raise StudyError("That trial is not the current one; reload the page.", status=409)
    shown = aware(trial.shown_at)
    first_input = None
    if shown is not None and submission.first_input_ms is not None:
        first_input = shown + dt.timedelta(milliseconds=max(0, submission.first_input_ms))
    db.add(
        Rating(
            session_id=sitting.id,
            stimulus_id=trial.stimulus_id,
            position=trial.position,
            consistency=submission.consistency,
            perception=submission.perception,
            nsfw=submission.nsfw,
            nsfw_reason=(submission.nsfw_reason or "").strip()[:1000] or None,
            is_warmup=trial.is_warmup,
            is_repeat=trial.is_repeat,
            shown_at=shown,
            first_input_at=first_input,
            submitted_at=moment,
        )
    )
    try:
        db.commit()
    except IntegrityError:  # the same trial submitted twice at once: the first one won
        db.rollback()
        return False
    return True
