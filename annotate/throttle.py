"""Rate limits counted in the study database, so every server process and a restart see them.

The online entry throttle (per client address), the display check's tries (per participant) and
the admin's failed logins (per client address) were kept in process memory: each worker process
counted on its own and a restart forgot them.
:class:`DatabaseThrottle` keeps each counted event as a row of ``throttle_events`` and counts the
rows of its moving window; limits are written as the ``limits`` library parses them
("30 per minute"). A check and its insert are one short transaction: simultaneous requests can
overshoot a limit by the few that count at the same instant, never by more.
"""

from __future__ import annotations

import datetime as dt
import re

from limits import parse
from sqlalchemy import Engine, delete, func, insert, select

from studydb.schema import ThrottleEvent

PRUNE_EVERY = 500
"""Events older than the window are deleted after this many hits of one throttle (per process)."""


class DatabaseThrottle:
    """A moving-window limit per key, e.g. ``DatabaseThrottle(engine, "online-entry",
    "30 per minute")``; raises ``ValueError`` for a limit ``limits`` cannot parse."""

    def __init__(self, engine: Engine, scope: str, limit: str) -> None:
        item = parse(limit)
        if item.amount < 1 or re.search(r"\bper\s+0+\s", limit):  # limits reads "per 0 s" as 1 s
            # "0 per minute" would refuse every event for good, "5 per 0 seconds" none at all
            raise ValueError(
                f"{limit!r}: a limit allows at least one event in a window of at least a second"
            )
        self.engine = engine
        self.scope = scope
        self.amount = item.amount
        self.window = dt.timedelta(seconds=item.get_expiry())
        self._hits = 0

    def test(self, key: str) -> bool:
        """Whether one more event of ``key`` is still within the limit (counts nothing)."""
        with self.engine.connect() as connection:
            return self._count(connection, key, _now()) < self.amount

    def hit(self, key: str) -> bool:
        """Count an event of ``key`` if the limit allows it: True if counted, False if over."""
        moment = _now()
        with self.engine.begin() as connection:
            if self._count(connection, key, moment) >= self.amount:
                return False
            connection.execute(
                insert(ThrottleEvent).values(scope=self.scope, key=key[:255], at=moment)
            )
        self._hits += 1
        if self._hits % PRUNE_EVERY == 0:
            self._prune(moment)
        return True

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may have one more event (0 if it may now): when the oldest
        event counted in the window leaves it."""
        moment = _now()
        with self.engine.connect() as connection:
            if self._count(connection, key, moment) < self.amount:
                return 0.0
            oldest = connection.scalar(
                select(func.min(ThrottleEvent.at)).where(
                    ThrottleEvent.scope == self.scope,
                    ThrottleEvent.key == key[:255],
                    ThrottleEvent.at > moment - self.window,
                )
            )
        if oldest is None:  # the events left the window since they were counted
            return 0.0
        if oldest.tzinfo is None:  # SQLite gives the stored UTC time back without its zone
            oldest = oldest.replace(tzinfo=dt.UTC)
        return max(0.0, (oldest + self.window - moment).total_seconds())

    def _count(self, connection, key: str, moment: dt.datetime) -> int:
        return connection.scalar(
            select(func.count()).where(
                ThrottleEvent.scope == self.scope,
                ThrottleEvent.key == key[:255],
                ThrottleEvent.at > moment - self.window,
            )
        )

    def _prune(self, moment: dt.datetime) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                delete(ThrottleEvent).where(
                    ThrottleEvent.scope == self.scope, ThrottleEvent.at <= moment - self.window
                )
            )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
