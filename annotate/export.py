"""Exports of a study: a tidy CSV of every trial, one of the viewers, a consistent database copy.

The trials CSV and the copy are readable by ``python -m mos.compute``: the CSV has its columns
(viewer, stimulus, session, consistency, perception, nsfw, warmup) and the stimulus metadata,
which ``mos`` carries along. Every CSV is safe to open in a spreadsheet: a text cell that a
spreadsheet would run as a formula (OWASP "CSV injection": a leading ``=``, ``+``, ``-``, ``@``,
tab or carriage return) gets a leading apostrophe, which spreadsheets show as text and which
``mos`` removes again when it reads the file (:func:`studydb.csvcells.restore`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import Session as OrmSession

from studydb import Rating, Session, Stimulus, Trial, Viewer
from studydb.csvcells import neutralise

VIEWER_COLUMNS = [
    "viewer", "age", "gender", "vision_screening", "consented_at", "registered_at", "sittings",
]  # fmt: skip

TRIAL_COLUMNS = [
    "viewer", "session", "group", "position", "stimulus", "consistency", "perception", "nsfw",
    "nsfw_reason", "warmup", "repeat", "shown_at", "first_input_at", "submitted_at", "scale",
    "reference", "model", "mode", "strength", "content_type",
    "check", "accept_low", "accept_high", "seconds", "slider_events", "first_input_seconds",
]  # fmt: skip
"""The last six are the online studies' quality control (docs/annotate.md, "Online studies"): a check trial's kind
and accepted range, the seconds from the page's latest serving to the rating, the slider moves
the page counted and the seconds from the pair's reveal to the first one, which ``mos.compute
--exclude`` reads; check rows never enter a MOS."""


def trials_frame(db: OrmSession) -> pd.DataFrame:
    """One row per submitted trial, warm-ups included (flagged), in submission order, with the
    common factor the pair was drawn at (`scale`: 1 in native presentation)."""
    rows = db.execute(
        select(
            Viewer.code.label("viewer"),
            Rating.session_id.label("session"),
            Session.group_id.label("group"),
            Rating.position,
            Stimulus.key.label("stimulus"),
            Rating.consistency,
            Rating.perception,
            Rating.nsfw,
            Rating.nsfw_reason,
            Rating.is_warmup.label("warmup"),
            Rating.is_repeat.label("repeat"),
            Rating.shown_at,
            Rating.first_input_at,
            Rating.submitted_at,
            Rating.scale,
            Stimulus.reference,
            Stimulus.model,
            Stimulus.mode,
            Stimulus.strength,
            Stimulus.content_type,
            Trial.check_kind,
            Trial.accept_low,
            Trial.accept_high,
            Trial.served_at,
            Rating.slider_events,
        )
        .join(Session, Rating.session_id == Session.id)
        .join(Viewer, Session.viewer_id == Viewer.id)
        .join(Stimulus, Rating.stimulus_id == Stimulus.id)
        .outerjoin(
            Trial, and_(Trial.session_id == Rating.session_id, Trial.position == Rating.position)
        )
        .order_by(Rating.id)
    ).all()
    frame = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS[:-3], "served_at", "slider_events"])
    served = pd.to_datetime(frame.pop("served_at"), utc=True, format="mixed")
    submitted = pd.to_datetime(frame["submitted_at"], utc=True, format="mixed")
    frame.insert(
        len(TRIAL_COLUMNS) - 3, "seconds", (submitted - served).dt.total_seconds().round(3)
    )
    revealed = pd.to_datetime(frame["shown_at"], utc=True, format="mixed")
    first = pd.to_datetime(frame["first_input_at"], utc=True, format="mixed")
    frame["first_input_seconds"] = (first - revealed).dt.total_seconds().round(3)
    return frame


def viewers_frame(db: OrmSession) -> pd.DataFrame:
    """One row per registered viewer: what staff entered at registration, and their sittings."""
    sittings = (
        select(Session.viewer_id, func.count().label("sittings"))
        .group_by(Session.viewer_id)
        .subquery()
    )
    rows = db.execute(
        select(
            Viewer.code,
            Viewer.age,
            Viewer.gender,
            Viewer.vision_screening,
            Viewer.consented_at,
            Viewer.created_at,
            func.coalesce(sittings.c.sittings, 0),
        )
        .outerjoin(sittings, sittings.c.viewer_id == Viewer.id)
        .order_by(Viewer.id)
    ).all()
    return pd.DataFrame(rows, columns=VIEWER_COLUMNS)


def to_safe_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text with every formula-like text cell neutralised."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(lambda v: neutralise(v) if isinstance(v, str) else v)
    return safe.to_csv(index=False)


def copy_database(engine: Engine, target: Path) -> Path:
    """A consistent snapshot of a SQLite study (SQLite's online backup), safe while it is in use."""
    if engine.dialect.name != "sqlite":
        raise ValueError("a database copy is only offered for SQLite studies; use pg_dump")
    source = engine.url.database
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    return target
