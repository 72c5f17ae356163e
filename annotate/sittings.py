"""Sittings (BT.500 sessions): assigning a group, drawing the order, timing, recording ratings.

Pure study logic on an ORM session, no Flask, so it is tested directly and shared by the web views
and the command line. All times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from studydb import Rating, Session, Stimulus, StudyGroup, Trial, Viewer
from studydb.design import order_without_repeats
from studydb.schema import CLOSED_REASONS, SCORE_MAX, SCORE_MIN


class StudyError(ValueError):
    """A request the study cannot honour; the message is shown to the person.

    ``status`` is the HTTP status a web view answers with: 400 for bad input, 409 when the
    request was fine but the sitting has moved on (closed, or another trial is current).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


PRESENTATIONS = ("native", "scaled")


@dataclass
class Design:
    """The parts of the configuration that shape a sitting."""

    warmup_trials: int = 3
    repeat_trials: int = 0
    viewers_per_stimulus: int = 20
    session_limit: dt.timedelta = dt.timedelta(minutes=60)
    break_after: dt.timedelta = dt.timedelta(minutes=30)
    break_length: dt.timedelta = dt.timedelta(minutes=3)
    idle_limit: dt.timedelta = dt.timedelta(minutes=20)
    grey: dt.timedelta = dt.timedelta(milliseconds=600)
    min_viewing: dt.timedelta = dt.timedelta(milliseconds=1000)
    presentation: str = "native"
    practice_keys: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Design:
        presentation = config.get("PRESENTATION", "native")
        if presentation not in PRESENTATIONS:
            raise ValueError(f"PRESENTATION must be one of {PRESENTATIONS}, not {presentation!r}")
        return cls(
            warmup_trials=int(config["WARMUP_TRIALS"]),
            repeat_trials=int(config["REPEAT_TRIALS"]),
            viewers_per_stimulus=int(config["VIEWERS_PER_STIMULUS"]),
            session_limit=dt.timedelta(minutes=config["SESSION_LIMIT_MINUTES"]),
            break_after=dt.timedelta(minutes=config["BREAK_AFTER_MINUTES"]),
            break_length=dt.timedelta(minutes=config["BREAK_MINUTES"]),
            idle_limit=dt.timedelta(minutes=config["SITTING_IDLE_MINUTES"]),
            grey=dt.timedelta(milliseconds=config["GREY_SCREEN_MS"]),
            min_viewing=dt.timedelta(milliseconds=config["MIN_VIEWING_MS"]),
            presentation=presentation,
            practice_keys=frozenset(config.get("TRAINING_STIMULI") or ()),
        )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(moment: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- starting a sitting


def open_sitting(
    db: OrmSession, viewer: Viewer, design: Design, moment: dt.datetime | None = None
) -> Session | None:
    """The viewer's sitting that is still open, if any (to resume it from any machine).

    A sitting left idle too long or past its time limit is closed first, so what comes back can
    really be continued.
    """
    sitting = db.scalar(
        select(Session).where(Session.viewer_id == viewer.id, Session.closed_reason.is_(None))
    )
    if sitting is None or overdue(sitting, design, moment or now()) is None:
        return sitting
    expire(db, design, moment or now(), viewer_id=viewer.id)
    return None


def expire(
    db: OrmSession, design: Design, moment: dt.datetime, viewer_id: int | None = None
) -> int:
    """Close open sittings past their time limit ('time limit') or idle for longer than
    ``design.idle_limit`` ('abandoned'); commits and returns how many were closed.

    Run before anything counts or resumes sittings: an abandoned sitting must neither hold a
    place among a group's viewers nor be resumed hours later as if nothing had happened.
    """
    query = select(Session).where(Session.closed_reason.is_(None))
    if viewer_id is not None:
        query = query.where(Session.viewer_id == viewer_id)
    closed = 0
    for sitting in db.scalars(query):
        reason = overdue(sitting, design, moment)
        if reason is not None:
            sitting.closed_reason = reason
            sitting.ended_at = min(moment, _deadline(sitting, design, reason))
            closed += 1
    if closed:
        db.commit()
    return closed


def overdue(sitting: Session, design: Design, moment: dt.datetime) -> str | None:
    """Why an open sitting must close now ('time limit' or 'abandoned'), or None."""
    if moment >= _deadline(sitting, design, "time limit"):
        return "time limit"
    if moment >= _deadline(sitting, design, "abandoned"):
        return "abandoned"
    return None


def _deadline(sitting: Session, design: Design, reason: str) -> dt.datetime:
    if reason == "time limit":
        return aware(sitting.started_at) + design.session_limit
    last = aware(sitting.last_active_at) or aware(sitting.started_at)
    # A rest is not idleness: the clock starts again when the break ends.
    until = aware(sitting.break_until)
    if until is not None and until > last:
        last = until
    return last + design.idle_limit


@dataclass
class Assignment:
    """What a viewer's next sitting covers: a group and the images of it still to rate."""

    group: StudyGroup
    stimuli: list[Stimulus]
    coverage: dict[int, int]  # stimulus id → viewers who rate it as a test item (so far)


def next_assignment(db: OrmSession, viewer: Viewer, design: Design) -> Assignment | None:
    """The group (and its images) the viewer would rate next, or None when nothing is left.

    Groups are balanced: among the groups the viewer has not finished, one with the fewest
    viewers, until every group has ``viewers_per_stimulus``. A group's viewers are those who
    completed it or are rating it now — abandoned sittings give their place back. A group the
    viewer began but did not finish (time limit, dropped out) is continued first, with only the
    images they have not rated yet — nor met as warm-ups: a stabilizing item is never shown to
    the same viewer again as a test item, in this sitting or a later one.
    """
    rated = set(
        db.scalars(
            select(Rating.stimulus_id)
            .join(Session, Rating.session_id == Session.id)
            .where(Session.viewer_id == viewer.id)
        )
    ) | set(
        db.scalars(
            select(Trial.stimulus_id)
            .join(Session, Trial.session_id == Session.id)
            .where(
                Session.viewer_id == viewer.id,
                Trial.is_warmup.is_(True),
                Trial.served_at.is_not(None),
            )
        )
    )
    coverage = stimulus_coverage(db)
    for group in _candidate_groups(db, viewer, design, coverage):
        stimuli = [
            s
            for s in db.scalars(
                select(Stimulus)
                .where(Stimulus.group_id == group.id, Stimulus.withheld.is_(False))
                .order_by(Stimulus.id)
            )
            if s.id not in rated and s.key not in design.practice_keys
        ]
        if stimuli:
            return Assignment(group, stimuli, {s.id: coverage.get(s.id, 0) for s in stimuli})
    return None


def stimulus_coverage(db: OrmSession) -> dict[int, int]:
    """Per stimulus, the viewers who rated it as a test item or have it planned as one in an
    open sitting (warm-ups do not count: they are left out of the MOS)."""
    rated = (
        select(Rating.stimulus_id, Session.viewer_id)
        .join(Session, Rating.session_id == Session.id)
        .where(Rating.is_warmup.is_(False))
    )
    planned = (
        select(Trial.stimulus_id, Session.viewer_id)
        .join(Session, Trial.session_id == Session.id)
        .where(Session.closed_reason.is_(None), Trial.is_warmup.is_(False))
    )
    both = rated.union(planned).subquery()
    return dict(
        db.execute(
            select(both.c.stimulus_id, func.count(func.distinct(both.c.viewer_id))).group_by(
                both.c.stimulus_id
            )
        ).all()
    )


def start_sitting(
    db: OrmSession,
    viewer: Viewer,
    design: Design,
    seed: int | None,
    environment: dict[str, Any],
) -> Session:
    """Open the viewer's next sitting and draw its order (commits); an open one is returned as is.

    With a ``seed`` the order is reproducible yet still different for every viewer and sitting
    (the generator is seeded with (seed, viewer, sitting number)); without one it is fresh.
    The database allows one open sitting per viewer: when a simultaneous request opened one
    first, this insert fails and that sitting is returned instead.
    """
    moment = now()
    expire(db, design, moment)
    existing = open_sitting(db, viewer, design, moment)
    if existing is not None:
        return existing
    assignment = next_assignment(db, viewer, design)
    if assignment is None:
        raise StudyError("There is nothing left for you to rate in this study. Thank you!")
    sittings_so_far = db.scalar(select(func.count()).where(Session.viewer_id == viewer.id)) or 0
    rng = np.random.default_rng(None if seed is None else [seed, viewer.id, sittings_so_far])
    sitting, opened = insert_sitting(
        db, viewer, design, moment, environment, group_id=assignment.group.id
    )
    if not opened:
        return sitting
    for trial in _plan(assignment.stimuli, design, rng, assignment.coverage):
        trial.session_id = sitting.id
        db.add(trial)
    db.commit()
    return sitting


def insert_sitting(
    db: OrmSession,
    viewer: Viewer,
    design: Design,
    moment: dt.datetime,
    environment: dict[str, Any],
    group_id: int | None = None,
) -> tuple[Session, bool]:
    """Insert the viewer's new open sitting (flushed, not committed): (sitting, True). The
    database allows one open sitting per viewer, so when a simultaneous request opened one
    first the insert fails and that sitting comes back instead: (theirs, False)."""
    sitting = Session(
        viewer_id=viewer.id,
        group_id=group_id,
        started_at=moment,
        last_active_at=moment,
        environment=environment,
        break_due_at=moment + design.break_after,
    )
    db.add(sitting)
    try:
        db.flush()
    except IntegrityError:  # another request opened this viewer's sitting a moment ago
        db.rollback()
        existing = open_sitting(db, viewer, design)
        if existing is None:
            raise
        return existing, False
    return sitting, True


def _candidate_groups(
    db: OrmSession, viewer: Viewer, design: Design, coverage: dict[int, int]
) -> list[StudyGroup]:
    """Groups in the order they should be offered: the viewer's unfinished ones, then open ones
    with the fewest viewers.

    A group is open while fewer than ``viewers_per_stimulus`` viewers completed it or are rating
    it — or, once that many have and none is rating it now, while one of its images still has
    fewer test ratings than that: each viewer's warm-ups are drawn from the group and not shown
    to them again as test items, so without this top-up those images would silently end the
    study short of the target.
    """
    completed = select(Session.group_id, Session.viewer_id).where(
        Session.closed_reason == "completed"
    )
    active = select(Session.group_id, Session.viewer_id).where(Session.closed_reason.is_(None))
    counted = completed.union(active).subquery()
    viewers_per_group = dict(
        db.execute(
            select(counted.c.group_id, func.count(func.distinct(counted.c.viewer_id))).group_by(
                counted.c.group_id
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
    target = design.viewers_per_stimulus
    running = set(db.scalars(select(Session.group_id).where(Session.closed_reason.is_(None))))
    short = _groups_short_of_target(
        db,
        [g.id for g in groups if viewers_per_group.get(g.id, 0) >= target and g.id not in running],
        coverage,
        design,
    )
    open_groups = sorted(
        (
            g
            for g in groups
            if g.id not in started and (viewers_per_group.get(g.id, 0) < target or g.id in short)
        ),
        key=lambda g: (viewers_per_group.get(g.id, 0), g.id),
    )
    return unfinished + open_groups


def _groups_short_of_target(
    db: OrmSession, group_ids: list[int], coverage: dict[int, int], design: Design
) -> set[int]:
    """Those of ``group_ids`` with a shown image (not withheld, not a practice stimulus) that
    fewer than ``viewers_per_stimulus`` viewers rate as a test item."""
    if not group_ids:
        return set()
    found = db.execute(
        select(Stimulus.group_id, Stimulus.id, Stimulus.key).where(
            Stimulus.group_id.in_(group_ids), Stimulus.withheld.is_(False)
        )
    )
    return {
        group_id
        for group_id, stimulus_id, key in found
        if key not in design.practice_keys
        and coverage.get(stimulus_id, 0) < design.viewers_per_stimulus
    }


def _plan(
    stimuli: list[Stimulus],
    design: Design,
    rng: np.random.Generator,
    coverage: dict[int, int] | None = None,
) -> list[Trial]:
    """Warm-ups, then a random order without back-to-back references, with planted repeats.

    Warm-up images are drawn from the sitting's images and left out of its test order, so no
    picture is first met as a stabilizing item and then rated again as a test item. They are
    drawn among the images with the most test ratings so far (``coverage``), so the viewers of a
    group skip different images, and the ones it leaves short are topped up by a further viewer
    (:func:`_candidate_groups`).
    """
    ids = np.array([s.id for s in stimuli])
    reference_of = {s.id: (s.reference or s.reference_path) for s in stimuli}
    references = {name: i for i, name in enumerate(sorted(set(reference_of.values())))}
    reference = np.zeros(ids.max() + 1, dtype=np.int64)
    for stimulus_id, name in reference_of.items():
        reference[stimulus_id] = references[name]
    n_warmups = max(0, min(design.warmup_trials, ids.size - 1))
    shuffled = rng.permutation(ids)
    covered = np.array([(coverage or {}).get(int(i), 0) for i in shuffled])
    warmups = [int(i) for i in shuffled[np.argsort(-covered, kind="stable")[:n_warmups]]]
    tests = ids[~np.isin(ids, warmups)]
    order = [int(i) for i in order_without_repeats(tests, reference, rng)]
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
    """'open', 'break' (an enforced rest is due or running) or 'closed' (closed, or overdue)."""
    if sitting.closed_reason is not None or overdue(sitting, design, moment) is not None:
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
        sitting.last_active_at = moment
        db.commit()


def close(db: OrmSession, sitting: Session, reason: str) -> None:
    """Close a sitting for one of :data:`CLOSED_REASONS` (commits); a closed one stays as it was."""
    if reason not in CLOSED_REASONS:
        raise ValueError(f"unknown reason {reason!r}")
    if sitting.closed_reason is None:
        sitting.closed_reason = reason
        sitting.ended_at = now()
        db.commit()


def record_environment(db: OrmSession, sitting: Session, environment: dict[str, Any]) -> None:
    """The machine a sitting continues on (a resume): it becomes the sitting's environment, the
    earlier ones are kept under ``earlier`` (commits)."""
    previous = dict(sitting.environment or {})
    earlier = previous.pop("earlier", [])
    sitting.environment = {**environment, "earlier": [*earlier, previous]}
    sitting.last_active_at = now()
    db.commit()


def serve(db: OrmSession, sitting: Session, trial: Trial, moment: dt.datetime) -> None:
    """Note that the trial's page goes out now (commits): a rating is accepted only after this.

    ``shown_at`` keeps the first serving; ``served_at`` the latest, from which the minimum
    viewing time runs — a reload shows the grey screen again, so the clock starts again too.
    """
    if trial.shown_at is None:
        trial.shown_at = moment
    trial.served_at = moment
    sitting.last_active_at = moment
    db.commit()


def _still_to_rate(sitting: Session):
    """The sitting's planned trials without a rating, less those of withheld images: withholding
    (an offensive image, or one whose file is lost) takes effect in open sittings at once. An
    online sitting's gold trials stay: their pairs are stored withheld only so that no design
    schedules them as test images; an attention check's image (the box drawn in) likewise."""
    rated = select(Rating.position).where(Rating.session_id == sitting.id)
    withheld = select(Stimulus.id).where(Stimulus.withheld.is_(True))
    return select(Trial).where(
        Trial.session_id == sitting.id,
        Trial.position.not_in(rated),
        or_(Trial.stimulus_id.not_in(withheld), Trial.check_kind.is_not(None)),
    )


def next_trial(db: OrmSession, sitting: Session) -> Trial | None:
    """The first planned trial still to rate: where the viewer resumes."""
    return db.scalar(_still_to_rate(sitting).order_by(Trial.position).limit(1))


def progress(db: OrmSession, sitting: Session) -> tuple[int, int]:
    """(trials rated, trials rated or still to rate) of a sitting."""
    done = db.scalar(select(func.count()).where(Rating.session_id == sitting.id)) or 0
    left = db.scalar(select(func.count()).select_from(_still_to_rate(sitting).subquery())) or 0
    return done, done + left


def missing_images(stimulus: Stimulus) -> list[str]:
    """The stimulus's image files that are not on disk (empty when both are there)."""
    return [p for p in (stimulus.distorted_path, stimulus.reference_path) if not Path(p).is_file()]


@dataclass
class Submission:
    """What the trial form sends; validated by :func:`record`."""

    position: int
    consistency: float
    perception: float
    nsfw: bool = False
    nsfw_reason: str | None = None
    first_input_ms: int | None = None
    reveal_ms: int | None = None
    scale: float | None = None
    slider_events: int = 0


def record(db: OrmSession, sitting: Session, submission: Submission, design: Design) -> bool:
    """Store one rating; True if stored now, False if that trial already holds these scores (a
    resubmit). Other scores for a rated trial (a second browser) raise a 409 :class:`StudyError`.

    Everything a scripted client could forge is checked against the server's own records: the
    stimulus comes from the plan, the trial must be the current one, its page must have been
    served and on screen for at least the grey screen plus ``design.min_viewing`` by the
    server's clock, and the sitting must be open and not resting. Each rating is committed at
    once, and the (session, position) key makes a double submit a no-op.
    """
    moment = now()
    current = state(sitting, design, moment)
    if current == "closed":
        if sitting.closed_reason is None:
            close(db, sitting, overdue(sitting, design, moment) or "time limit")
        raise StudyError(
            f"This sitting is closed ({sitting.closed_reason}); the rating was not stored.", 409
        )
    for name in ("consistency", "perception"):
        value = getattr(submission, name)
        if not SCORE_MIN <= value <= SCORE_MAX:
            raise StudyError(f"{name} must be between {SCORE_MIN:g} and {SCORE_MAX:g}")
    reason = (submission.nsfw_reason or "").strip()[:1000] if submission.nsfw else ""
    if submission.nsfw and not reason:
        raise StudyError("Please say briefly why the image is offensive.")
    scale = _checked_scale(submission.scale, design)
    trial = db.get(Trial, (sitting.id, submission.position))
    if trial is None:
        raise StudyError("No such trial in this sitting.")
    if current == "break" and not _shown_before_break(sitting, trial, moment):
        raise StudyError("A break is in progress; the rating was not stored.", status=409)
    if _already_rated(db, sitting, submission):
        return False
    expected = next_trial(db, sitting)
    if expected is None or expected.position != submission.position:
        raise StudyError("That trial is not the current one; reload the page.", status=409)
    served = aware(trial.served_at)
    if served is None:
        raise StudyError("That trial's page was never shown; reload the page.", status=409)
    earliest = served + design.grey + design.min_viewing
    if moment < earliest:
        wait = (earliest - moment).total_seconds()
        raise StudyError(
            f"Rated too soon: look at the pair for at least {design.min_viewing.total_seconds():g}"
            f" s after it appears ({wait:.1f} s to go); the rating was not stored.",
            status=409,
        )
    if missing_images(trial.stimulus):
        raise StudyError("This image could not be shown; please call the experimenter.", status=409)
    revealed = min(moment, served + max(design.grey, _ms(submission.reveal_ms)))
    first_input = None
    if submission.first_input_ms is not None:
        first_input = min(moment, revealed + _ms(submission.first_input_ms))
    db.add(
        Rating(
            session_id=sitting.id,
            stimulus_id=trial.stimulus_id,
            position=trial.position,
            consistency=round(submission.consistency, 1),
            perception=round(submission.perception, 1),
            nsfw=submission.nsfw,
            nsfw_reason=reason or None,
            is_warmup=trial.is_warmup,
            is_repeat=trial.is_repeat,
            shown_at=revealed,
            first_input_at=first_input,
            scale=scale,
            slider_events=submission.slider_events,
            submitted_at=moment,
            check_kind=trial.check_kind,
        )
    )
    sitting.last_active_at = moment
    try:
        db.commit()
    except IntegrityError:  # the same trial submitted twice at once: the first one won
        db.rollback()
        if _already_rated(db, sitting, submission):
            return False
        raise
    return True


def _already_rated(db: OrmSession, sitting: Session, submission: Submission) -> bool:
    """Whether the trial has a rating already: True when it holds these very scores (a double
    click, a resubmit after a lost answer); a :class:`StudyError` when it holds others — the
    same participant id rates in a second window or browser, and this rating is not stored."""
    stored = db.execute(
        select(Rating.consistency, Rating.perception, Rating.nsfw).where(
            Rating.session_id == sitting.id, Rating.position == submission.position
        )
    ).first()
    if stored is None:
        return False
    same = (
        stored.consistency == round(submission.consistency, 1)
        and stored.perception == round(submission.perception, 1)
        and bool(stored.nsfw) == bool(submission.nsfw)
    )
    if not same:
        raise StudyError(
            "This trial was already rated with other scores — your id is rating in another "
            "window or browser. This rating was not stored; please continue in one window only.",
            409,
        )
    return True


def _shown_before_break(sitting: Session, trial: Trial, moment: dt.datetime) -> bool:
    """Whether a trial is rated as the break comes due, on a page served before it did and with the
    rest not begun: the pair was seen, so the rating counts and the rest starts on the next page
    (at the 30-minute mark a viewer is nearly always in the middle of a trial)."""
    until = aware(sitting.break_until)
    if until is not None and moment < until:  # the rest is running
        return False
    served, due = aware(trial.served_at), aware(sitting.break_due_at)
    return served is not None and due is not None and served < due


def _checked_scale(scale: float | None, design: Design) -> float:
    """The common scale the pair was drawn at: exactly 1 in native presentation, (0, 1] scaled."""
    if design.presentation == "native":
        if scale is not None and abs(scale - 1) > 1e-6:
            raise StudyError("This study shows images 1:1 only; the pair must fit the window.")
        return 1.0
    if scale is None or not 0 < scale <= 1:
        raise StudyError("The scale the images were drawn at is missing or outside (0, 1].")
    return scale


def _ms(value: int | None) -> dt.timedelta:
    return dt.timedelta(milliseconds=max(0, value or 0))
