"""Exports of a study: a tidy CSV of every trial and a consistent copy of the database.

Both are readable by ``python -m mos.compute``: the CSV has its columns (viewer, stimulus, session,
consistency, perception, nsfw, warmup) and the stimulus metadata, which ``mos`` carries along.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session as OrmSession

from studydb import Rating, Session, Stimulus, Viewer

TRIAL_COLUMNS = [
    "viewer", "session", "group", "position", "stimulus", "consistency", "perception", "nsfw",
    "nsfw_reason", "warmup", "repeat", "shown_at", "first_input_at", "submitted_at",
    "reference", "model", "mode", "strength", "content_type",
]  # fmt: skip


def trials_frame(db: OrmSession) -> pd.DataFrame:
    """One row per submitted trial, warm-ups included (flagged), in submission order."""
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
            Stimulus.reference,
            Stimulus.model,
            Stimulus.mode,
            Stimulus.strength,
            Stimulus.content_type,
        )
        .join(Session, Rating.session_id == Session.id)
        .join(Viewer, Session.viewer_id == Viewer.id)
        .join(Stimulus, Rating.stimulus_id == Stimulus.id)
        .order_by(Rating.id)
    ).all()
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def copy_database(engine: Engine, target: Path) -> Path:
    """A consistent snapshot of a SQLite study (SQLite's online backup), safe while it is in use."""
    if engine.dialect.name != "sqlite":
        raise ValueError("a database copy is only offered for SQLite studies; use pg_dump")
    source = engine.url.database
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    return target
