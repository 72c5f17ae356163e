"""The app's link to the study database: one engine per app, one ORM session per request."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session as OrmSession

from annotate.tally import TrialTally
from studydb import create_study


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
