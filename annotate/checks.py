"""Checking the stimulus files before and while a study is served.

A missing or unreadable image must never reach a viewer as an endless grey screen: the admin's
dashboard lists missing files, and ``python -m annotate check`` opens every file before a study
starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession
from tqdm import tqdm

from studydb import Stimulus


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
