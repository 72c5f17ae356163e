"""``python -m annotate import``: a generator manifest into the study database, split into groups."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from studydb import Stimulus, StudyGroup
from studydb.design import split_into_groups
from studydb.manifest import METADATA_COLUMNS, REQUIRED_COLUMNS, ManifestError, nsfw_flagged


def import_manifest(
    db: OrmSession,
    manifest: pd.DataFrame,
    group_size: int,
    rng: np.random.Generator,
    include_nsfw: bool = False,
) -> tuple[int, int]:
    """Add the manifest's images as stimuli in new groups; returns (added, already present).

    Images flagged by the safety checker (:func:`nsfw_flagged`) are left out unless
    ``include_nsfw``; the caller reports how many.

    Importing the same manifest twice adds nothing. An id already in the study with other image
    files is an error: silently re-pointing a rated stimulus would corrupt the study. Existing
    groups are never reshuffled, since viewers may already be rating them.
    """
    if not include_nsfw:
        manifest = manifest[~nsfw_flagged(manifest)]
    existing = {s.key: s for s in db.scalars(select(Stimulus))}
    new_rows = []
    for row in manifest.to_dict("records"):
        known = existing.get(row["id"])
        if known is None:
            new_rows.append(row)
        elif (known.distorted_path, known.reference_path) != (
            row["distorted_path"],
            row["reference_path"],
        ):
            raise ManifestError(
                f"image id {row['id']!r} is already in the study with other files "
                f"({known.distorted_path}); give the new image another id"
            )
    if not new_rows:
        return 0, len(manifest)
    first = (db.scalar(select(func.count()).select_from(StudyGroup)) or 0) + 1
    for offset, members in enumerate(split_into_groups(len(new_rows), group_size, rng)):
        group = StudyGroup(name=f"group-{first + offset}")
        db.add(group)
        db.flush()
        for index in members:
            db.add(_stimulus(new_rows[index], group.id))
    db.commit()
    return len(new_rows), len(manifest) - len(new_rows)


def _stimulus(row: dict, group_id: int) -> Stimulus:
    known = {c: _clean(row.get(c)) for c in METADATA_COLUMNS}
    extra = {
        k: _clean(v)
        for k, v in row.items()
        if k not in METADATA_COLUMNS and k not in REQUIRED_COLUMNS and _clean(v) is not None
    }
    return Stimulus(
        key=str(row["id"]),
        distorted_path=row["distorted_path"],
        reference_path=row["reference_path"],
        group_id=group_id,
        extra=extra or None,
        **known,
    )


def _clean(value):
    """Empty cells and NaN become NULL; numpy scalars become Python ones (for JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return value.item() if hasattr(value, "item") else value
