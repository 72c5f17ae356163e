"""The app's link to the study database: one engine per app, one ORM session per request, and
the values the pages derive from the stimuli table, kept per app while it is unchanged."""

from __future__ import annotations

import time

from flask import Flask, current_app, g
from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from annotate.tally import TrialTally
from studydb import Stimulus, create_study


def init_app(app: Flask) -> None:
    """Open (create or upgrade) the study database and close each request's session after it."""
    app.extensions["study_engine"] = create_study(app.config["DATABASE"])
    app.extensions["trial_tally"] = TrialTally(app.extensions["study_engine"])
    app.teardown_appcontext(_close)


def get_db() -> OrmSession:
    """This request's ORM session."""
    if "db" not in g:
        g.db = OrmSession(current_app.extensions["study_engine"], expire_on_commit=False)
    return g.db


def per_stimuli_set(name: str, db: OrmSession, compute):
    """``compute()``, kept in the app until the study's stimuli change (those to rate: their
    number, highest id and id sum — ``annotate import`` adds rows, the admin withholds or
    restores one; the check pairs the online mode adds, kept out of every plan, do not count):
    what every participant's pages derive from the stimuli is computed once, not on every
    request. The stimuli are looked at once every :data:`STIMULI_RECHECK_S` at most.

    The values of one set of stimuli live in their own dict: a computation that began before a
    change lands in the old set's dict, never under the new key."""
    holder = current_app.extensions.setdefault("per_stimuli_set", {})
    state = holder.get("state")  # (looked at, key, values)
    moment = time.monotonic()
    if state is None or moment - state[0] > STIMULI_RECHECK_S:
        to_rate = Stimulus.withheld.is_(False)
        key = tuple(
            db.execute(
                select(func.count(), func.max(Stimulus.id), func.sum(Stimulus.id)).where(to_rate)
            ).one()
        )
        values = state[2] if state is not None and state[1] == key else {}
        holder["state"] = state = (moment, key, values)
    values = state[2]
    if name not in values:
        values[name] = compute()
    return values[name]


STIMULI_RECHECK_S = 1.0
"""How stale the per-stimuli values may be: an import shows within a second."""


def _close(_error: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def check_writable(engine) -> str | None:
    """Why the study database cannot be written, or None: a rolled-back no-op update.

    ``serve`` calls this before it opens its doors, so a read-only file or a full disk is
    reported at once instead of as the first viewer's lost rating.
    """
    from sqlalchemy import update
    from sqlalchemy.exc import SQLAlchemyError

    from studydb.schema import StudyInfo

    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(
                update(StudyInfo)
                .where(StudyInfo.key == "schema_version")
                .values(value=StudyInfo.value)
            )
            transaction.rollback()
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error
        return str(cause).strip().splitlines()[0]
    return None
