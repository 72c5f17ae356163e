"""One background worker at a time: how the dashboard keeps slow figures off a page load.

The live screening (:mod:`annotate.live`) and the stimulus-file check (:mod:`annotate.checks`)
both take longer at the paper's size than a page load may; each keeps its latest result, and a
load asks for a new one, which runs in a daemon thread unless one is already running.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("annotate")
FIRST_WAIT = 5.0  # seconds: the first load after a start waits for the first result this long


class BackgroundJob:
    """Runs ``self._run`` in at most one daemon thread at a time; subclasses define ``_run``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = 0.0  # time.monotonic() when the latest run began
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def refresh(self, wait: float | None = None) -> None:
        """Start a run unless one is going; ``wait``: join it that many seconds (None: to the
        end), so a small study's page shows figures that are current."""
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self.started = time.monotonic()
                self._worker = threading.Thread(target=self._run, daemon=True, name=self.name)
                self._worker.start()
            worker = self._worker
        if wait is None or wait > 0:
            worker.join(wait)

    def _run(self) -> None:
        raise NotImplementedError


class LatestResult(BackgroundJob):
    """The latest result of a computation over the whole study, recomputed in the background
    when the study has changed since (its ``version``: e.g. the highest rating id).

    Subclasses define ``compute() -> result``; a result has ``version`` and ``seconds`` (how
    long it took). Shared by the dashboard's live screening and the participants' roster.
    """

    def __init__(self, name: str, refresh_seconds: float) -> None:
        super().__init__(name)
        self.refresh_seconds = refresh_seconds
        self.snapshot: Any = None
        self.error: str | None = None

    def latest(self, version: Any, wait: float = 0.0):
        """The latest result, recomputed in the background when the study moved on since.

        A recomputation that took at most ``wait`` seconds last time is started at once and
        waited for (a small study is always up to date); a longer one at most every
        ``refresh_seconds``, not waited for (a big study answers at once with the previous
        result and its age). The first result after a start is waited for up to
        ``FIRST_WAIT`` seconds, so the first page has figures.
        """
        current = self.snapshot
        if current is None:
            self.refresh(wait=FIRST_WAIT)
        elif current.version != version:
            quick = current.seconds <= wait
            if quick or time.monotonic() - self.started >= self.refresh_seconds:
                self.refresh(wait=wait if quick else 0)
        return self.snapshot

    def compute(self) -> Any:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self.snapshot = self.compute()
            self.error = None
        except Exception as error:  # shown on the dashboard, never a crash of the server
            log.exception("%s failed", self.name)
            self.error = f"{type(error).__name__}: {error}"
