"""Checking the stimulus files before and while a study is served.

A missing or unreadable image must never reach a viewer as an endless grey screen: the admin's
dashboard lists missing files, and ``python -m annotate check`` opens every file before a study
starts.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session as OrmSession
from tqdm import tqdm

from annotate.background import BackgroundJob
from studydb import Stimulus

log = logging.getLogger("annotate")
FIRST_WAIT = 5.0  # seconds: the first dashboard load waits this long for the first check


@dataclass(frozen=True)
class FileProblem:
    """One stimulus file that cannot be shown."""

    stimulus: str
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.stimulus}: {self.path}: {self.problem}"


def file_problems(
    db: OrmSession, decode: bool = False, progress: bool = False
) -> list[FileProblem]:
    """Every stimulus file that is missing (or, with ``decode``, not a readable image).

    Without ``decode`` only the file system is asked, which is cheap enough for a dashboard;
    with it every image is decoded, as a browser would.
    """
    stimuli = db.execute(
        select(Stimulus.key, Stimulus.distorted_path, Stimulus.reference_path).order_by(Stimulus.id)
    ).all()
    files = {}
    for key, distorted, reference in stimuli:
        files.setdefault(distorted, key)
        files.setdefault(reference, key)
    problems = []
    for path, key in tqdm(files.items(), desc="checking images", unit="file", disable=not progress):
        problem = _problem(Path(path), decode)
        if problem is not None:
            problems.append(FileProblem(key, path, problem))
    return problems


def _problem(path: Path, decode: bool) -> str | None:
    if not path.is_file():
        return "missing"
    if not decode:
        return None
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return f"unreadable ({error})"
    return None


@dataclass
class FileCheck:
    """One pass of :func:`file_problems` over the study, with when it ran and how long it took."""

    problems: list[FileProblem]
    files: int
    checked_at: dt.datetime
    seconds: float


class FileCheckCache(BackgroundJob):
    """The dashboard's list of missing files, checked in a background thread.

    One stat per stimulus file is 8,000 file-system calls at the paper's size (more on a
    network share): too slow for every load of ``/admin/``. A load reads the latest check and
    starts a new one when it is older than ``every_seconds``; a check that took at most
    ``wait`` seconds last time is waited for (a small study is always current), a longer one
    runs behind the page, whose freshness line says when the files were last checked.
    """

    def __init__(self, engine: Engine, every_seconds: float) -> None:
        super().__init__("file-check")
        self.engine = engine
        self.every_seconds = every_seconds
        self.result: FileCheck | None = None
        self.error: str | None = None

    def latest(self, wait: float = 0.0) -> FileCheck | None:
        current = self.result
        if current is None:
            self.refresh(wait=FIRST_WAIT)
        elif (dt.datetime.now(dt.UTC) - current.checked_at).total_seconds() >= self.every_seconds:
            self.refresh(wait=wait if current.seconds <= wait else 0)
        return self.result

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            with OrmSession(self.engine) as db:
                files = len(
                    set(db.scalars(select(Stimulus.distorted_path)))
                    | set(db.scalars(select(Stimulus.reference_path)))
                )
                problems = file_problems(db)
            self.result = FileCheck(
                problems, files, dt.datetime.now(dt.UTC), time.perf_counter() - started
            )
            self.error = None
        except Exception as error:  # shown on the dashboard, never a crash of the server
            log.exception("file check failed")
            self.error = f"{type(error).__name__}: {error}"
