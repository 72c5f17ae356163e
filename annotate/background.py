"""One background worker at a time: how the dashboard keeps slow figures off a page load.

The live screening (:mod:`annotate.live`) and the stimulus-file check (:mod:`annotate.checks`)
both take longer at the paper's size than a page load may; each keeps its latest result, and a
load asks for a new one, which runs in a daemon thread unless one is already running.
"""

from __future__ import annotations

import threading
import time


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
