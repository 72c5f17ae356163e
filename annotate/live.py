"""The dashboard's figures over all ratings, computed in the background so a load never waits.

Reading every rating and ranking them takes about a second at the paper's size (80,000 trials);
doing that on each load of ``/admin/`` held a server thread for that long. Here one background
thread per app recomputes the live screening, the per-viewer progress and the coverage when
ratings have arrived since the last result, at most every ``SCREENING_REFRESH_SECONDS``; a
dashboard load reads the latest result and the highest rating id (one index look-up), and shows
how fresh the result is. The ratings are read by ``mos``'s own columnar reader.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from flask import Flask
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session as OrmSession

from annotate.background import LatestResult
from mos.observations import Observations
from mos.ratings import load_ratings
from mos.screening import LiveScreening
from studydb import Rating, Session, Stimulus, Viewer

DIMENSIONS = ("consistency", "perception")


@dataclass
class Snapshot:
    """One computed screening: the rows to show and what they cover."""

    rows: list[dict]  # per viewer: code, then per dimension srocc, shared, low, high, verdict
    viewers: list[dict]  # per viewer: code, sittings, ratings, last
    coverage: dict  # stimuli, reached, median, minimum
    last_rating: int  # every rating up to this id is included
    ratings: int  # non-warm-up ratings included
    computed_at: dt.datetime
    seconds: float  # how long the computation took

    @property
    def version(self) -> int:
        return self.last_rating


class LiveScreeningCache(LatestResult):
    """The latest screening of one app, refreshed by a background thread on demand (its
    version: the highest rating id included)."""

    def __init__(
        self,
        engine: Engine,
        database: str,
        screening: LiveScreening,
        target: int,
        refresh_seconds: float,
    ) -> None:
        super().__init__("screening", refresh_seconds)
        self.engine = engine
        self.database = database
        self.target = target
        self.screening = screening

    def compute(self) -> Snapshot:
        return compute(self.engine, self.database, self.screening, self.target)


def compute(engine: Engine, database: str, screening: LiveScreening, target: int) -> Snapshot:
    """Leave-one-out screening per viewer and dimension, progress and coverage, as of now."""
    started = time.perf_counter()
    with OrmSession(engine) as db:
        last = db.scalar(select(func.coalesce(func.max(Rating.id), 0)))
        scored = db.scalar(select(func.count()).where(Rating.is_warmup.is_(False)))
        viewers = viewer_progress(db)
        cover = coverage(db, target)
    rows: list[dict] = []
    count = 0
    if scored:
        table = load_ratings(database, DIMENSIONS)
        count = len(table)
        rows = [{"viewer": str(code)} for code in table.viewer_ids]
        for name in DIMENSIONS:
            obs = Observations(
                table.viewer, table.stimulus, table.scores[name], table.n_viewers, table.n_stimuli
            )
            frame: pd.DataFrame = screening.fit(obs)
            for row, stats in zip(rows, frame.to_dict("records"), strict=True):
                row[name] = stats
    return Snapshot(
        rows=rows,
        viewers=viewers,
        coverage=cover,
        last_rating=int(last),
        ratings=count,
        computed_at=dt.datetime.now(dt.UTC),
        seconds=time.perf_counter() - started,
    )


def viewer_progress(db: OrmSession) -> list[dict]:
    """Sittings, ratings and the last rating's time of every registered viewer."""
    found = db.execute(
        select(
            Viewer.code,
            func.count(func.distinct(Session.id)),
            func.count(Rating.id),
            func.max(Rating.submitted_at),
        )
        .select_from(Viewer)
        .outerjoin(Session, Session.viewer_id == Viewer.id)
        .outerjoin(Rating, Rating.session_id == Session.id)
        .group_by(Viewer.id)
        .order_by(Viewer.id)
    ).all()
    return [dict(code=c, sittings=s, ratings=r, last=last) for c, s, r, last in found]


def coverage(db: OrmSession, target: int) -> dict:
    """Ratings per stimulus (warm-ups left out) against the target."""
    counts = dict(
        db.execute(
            select(Rating.stimulus_id, func.count(func.distinct(Session.viewer_id)))
            .join(Session, Rating.session_id == Session.id)
            .where(Rating.is_warmup.is_(False))
            .group_by(Rating.stimulus_id)
        ).all()
    )
    ids = db.scalars(select(Stimulus.id)).all()
    per_stimulus = np.array([counts.get(i, 0) for i in ids]) if ids else np.zeros(0)
    return dict(
        stimuli=len(ids),
        reached=int((per_stimulus >= target).sum()),
        median=float(np.median(per_stimulus)) if ids else 0.0,
        minimum=int(per_stimulus.min()) if ids else 0,
    )


def init_app(app: Flask) -> None:
    """Attach one cache to the app (the screening thresholds come from its config)."""
    app.extensions["live_screening"] = LiveScreeningCache(
        app.extensions["study_engine"],
        app.config["DATABASE"],
        LiveScreening(
            threshold=app.config["SCREENING_THRESHOLD"],
            confidence=app.config["SCREENING_CONFIDENCE"],
        ),
        app.config["VIEWERS_PER_STIMULUS"],
        app.config["SCREENING_REFRESH_SECONDS"],
    )
