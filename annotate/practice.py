"""Practice pairs: shown before every sitting, never stored, never test stimuli.

BT.500 asks for a training phase that spans the quality range. When the lab names its own
practice stimuli (``TRAINING_STIMULI``), those are used and left out of every test plan. Otherwise
one of the study's references is damaged at five levels (JPEG at falling quality after a falling
resolution), from near-perfect to very bad: none of them is a stimulus anyone rates.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from annotate.db import get_db
from annotate.stimuli_set import per_stimuli_set
from studydb import Stimulus
from studydb.images import read_rgb

LEVELS = ((0.25, 8), (0.4, 15), (0.6, 30), (0.8, 55), (1.0, 92))
"""(resolution factor, JPEG quality) of the default practice pairs, worst first."""


@dataclass(frozen=True)
class PracticePair:
    """One practice pair: the image to rate and its reference, as files on the server."""

    distorted_path: str
    reference_path: str
    stimulus_id: int | None = None  # set when a configured stimulus is used


def study_practice_pairs() -> list[PracticePair]:
    """This app's practice pairs (``TRAINING_STIMULI``, or pairs made in the instance folder):
    what the training pages show, the media server lets a viewer fetch and the display check
    measures. Kept per process while the stimuli table is unchanged (every practice page asks)."""
    db = get_db()
    return per_stimuli_set(
        "practice_pairs",
        db,
        lambda: practice_pairs(
            db,
            list(current_app.config["TRAINING_STIMULI"]),
            Path(current_app.instance_path) / "practice",
        ),
    )


def practice_pairs(db: OrmSession, keys: list[str], folder: Path) -> list[PracticePair]:
    """The practice pairs in order: the configured stimuli, or pairs made under ``folder``."""
    if keys:
        found = {s.key: s for s in db.scalars(select(Stimulus).where(Stimulus.key.in_(keys)))}
        return [
            PracticePair(found[k].distorted_path, found[k].reference_path, found[k].id)
            for k in keys
            if k in found
        ]
    reference = db.scalar(
        select(Stimulus.reference_path).order_by(Stimulus.reference_path).limit(1)
    )
    if reference is None or not Path(reference).is_file():
        return []
    return made_pairs(Path(reference), folder)


def made_pairs(reference: Path, folder: Path) -> list[PracticePair]:
    """Damaged copies of ``reference`` at :data:`LEVELS`, written once under ``folder``."""
    target = folder / reference.stem
    paths = [target / f"level{i}.png" for i in range(len(LEVELS))]
    if not all(p.is_file() for p in paths):
        target.mkdir(parents=True, exist_ok=True)
        image = read_rgb(reference)
        for path, (factor, quality) in zip(paths, LEVELS, strict=True):
            # Written aside, then renamed: a parallel request never reads a half-written file.
            partial = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.png")
            _damaged(image, factor, quality).save(partial)
            partial.replace(path)
    return [PracticePair(str(p), str(reference)) for p in paths]


def _damaged(image: Image.Image, factor: float, quality: int) -> Image.Image:
    small = image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))),
        Image.Resampling.BILINEAR,
    )
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as coded:
        return coded.convert("RGB").resize(image.size, Image.Resampling.BILINEAR)
