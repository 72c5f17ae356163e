"""Where the time of one ``mos.compute`` run goes, stage by stage.

    python bench/mos_stages.py bench/out/ratings_10000000/study_app.db --exclude

Runs ``python -m mos.compute`` in this process with the arguments given (``--out`` defaults to
a temporary folder, ``--quiet`` is added) and prints, for each stage — the reading of the study
(``load_study``), quality control's trials and exclusion (``--exclude``), the fit, the writing
of the tables and the report — its wall time and the process's user and system CPU seconds
over it, then the whole run's. On this 2-core machine a stage whose CPU seconds are twice its
wall time keeps both cores busy: only less CPU makes it faster. The stages are timed by
wrapping ``mos.compute``'s own calls, so the run is the command's, unchanged.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from unittest import mock

import mos.compute as compute
from mos.pipeline import MosPipeline

STAGES = ("load_study", "load_trials", "_apply_exclusion", "write_outputs")
"""``mos.compute``'s calls timed, besides :meth:`MosPipeline.fit`."""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as scratch, _stages_timed(rows):
        chosen = any(word == "--out" or word.startswith("--out=") for word in argv)
        extra = ["--quiet"] if chosen else ["--quiet", "--out", scratch]
        with _measured("whole run", rows):
            status = compute.main([*argv, *extra])
    print("| stage | wall s | user CPU s | system CPU s |")
    print("|---|---|---|---|")
    for name, wall, user, system in rows:
        print(f"| {name} | {wall:.2f} | {user:.2f} | {system:.2f} |")
    return status


@contextmanager
def _stages_timed(rows: list):
    """``mos.compute``'s stages timed into ``rows`` while inside, as they were after."""
    owners = [(compute, name) for name in STAGES] + [(MosPipeline, "fit")]
    with ExitStack() as patches:
        for owner, name in owners:
            timed = _timed(name, getattr(owner, name), rows)
            patches.enter_context(mock.patch.object(owner, name, timed))
        yield


def _timed(name: str, function: Callable, rows: list) -> Callable:
    def timed(*args, **kwargs):
        with _measured(name, rows):
            return function(*args, **kwargs)

    return timed


@contextmanager
def _measured(name: str, rows: list):
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    try:
        yield
    finally:
        after = resource.getrusage(resource.RUSAGE_SELF)
        rows.append(
            (
                name,
                time.perf_counter() - started,
                after.ru_utime - before.ru_utime,
                after.ru_stime - before.ru_stime,
            )
        )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
