"""The admin's live screening, computed in the background so the dashboard never waits for it.

Reading every rating and ranking them takes about a second at the paper's size (80,000 trials);
doing that on each load of ``/admin/`` held a server thread for that long. Here one background
thread per app recomputes the screening when ratings have arrived since the last result, at most
every ``SCREENING_REFRESH_SECONDS``; a dashboard load only reads the latest result and the
highest rating id (one index look-up), and shows how fresh the result is.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from flask import Flask
from sqlalchemy import Engine, func, select

from mos.observations import Observations
from mos.screening import LiveScreening
from studydb import Rating, Session, Viewer

log = logging.getLogger("annotate")
DIMENSIONS = ("consistency", "perception")


@dataclass
class Snapshot:
    """One computed screening: the rows to show and what they cover."""

    rows: list[dict]
    last_rating: int  # highest rating id included
    ratings: int  # non-warm-up ratings included
    computed_at: dt.datetime
    seconds: float  # how long the computation took


class LiveScreeningCache:
    """The latest screening of one app, refreshed by a background thread on demand."""

    def __init__(self, engine: Engine, screening: LiveScreening, refresh_seconds: float) -> None:
        self.engine = engine
        self.screening = screening
        self.refresh_seconds = refresh_seconds
        self.snapshot: Snapshot | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._started = 0.0

    def latest(self, last_rating: int, wait: float = 0.0) -> Snapshot | None:
        """The latest result. When it is out of date, a recomputation starts in the background
        (at most every ``refresh_seconds``, at once when there is none yet), and this call
        waits for it ``wait`` seconds at most — a small study is then always up to date, a big
        one shows the previous result with its age."""
        current = self.snapshot
        due = current is None or (
            current.last_rating < last_rating
            and time.monotonic() - self._started >= self.refresh_seconds
        )
        if due:
            self.refresh(wait=wait)
        return self.snapshot

    def refresh(self, wait: float | None = None) -> None:
        """Start a recomputation unless one is running; ``wait``: join it that many seconds."""
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._started = time.monotonic()
                self._worker = threading.Thread(target=self._run, daemon=True, name="screening")
                self._worker.start()
            worker = self._worker
        if wait is None or wait > 0:
            worker.join(wait)

    def _run(self) -> None:
        try:
            self.snapshot = compute(self.engine, self.screening)
            self.error = None
        except Exception as error:  # shown on the dashboard, never a crash of the server
            log.exception("live screening failed")
            self.error = f"{type(error).__name__}: {error}"


def compute(engine: Engine, screening: LiveScreening) -> Snapshot:
    """Leave-one-out screening of every viewer, per dimension, from the database as it is now."""
    started = time.perf_counter()
    with engine.connect() as connection:
        last = connection.scalar(select(func.coalesce(func.max(Rating.id), 0)))
        rows = connection.execute(
            select(Session.viewer_id, Rating.stimulus_id, Rating.consistency, Rating.perception)
            .join(Session, Rating.session_id == Session.id)
            .where(Rating.is_warmup.is_(False), Rating.id <= last)
        ).all()
        codes = dict(connection.execute(select(Viewer.id, Viewer.code)).all())
    result: list[dict] = []
    if rows:
        data = np.array(rows, dtype=float)
        viewer_ids, viewer = np.unique(data[:, 0].astype(int), return_inverse=True)
        _, stimulus = np.unique(data[:, 1].astype(int), return_inverse=True)
        table = {int(v): {"viewer": codes.get(int(v), str(v))} for v in viewer_ids}
        for column, name in enumerate(DIMENSIONS, start=2):
            scores = data[:, column]
            present = ~np.isnan(scores)
            obs = Observations(
                viewer[present],
                stimulus[present],
                scores[present],
                len(viewer_ids),
                int(stimulus.max()) + 1,
            )
            frame: pd.DataFrame = screening.fit(obs)
            for index, v in enumerate(viewer_ids):
                table[int(v)][name] = frame.iloc[index].to_dict()
        result = list(table.values())
    return Snapshot(
        rows=result,
        last_rating=int(last),
        ratings=len(rows),
        computed_at=dt.datetime.now(dt.UTC),
        seconds=time.perf_counter() - started,
    )


def init_app(app: Flask) -> None:
    """Attach one cache to the app (the screening thresholds come from its config)."""
    app.extensions["live_screening"] = LiveScreeningCache(
        app.extensions["study_engine"],
        LiveScreening(
            threshold=app.config["SCREENING_THRESHOLD"],
            confidence=app.config["SCREENING_CONFIDENCE"],
        ),
        app.config["SCREENING_REFRESH_SECONDS"],
    )
