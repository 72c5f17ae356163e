"""The manifest: the CSV that ``generate`` writes and ``annotate import`` reads, one row per image.

Required columns: ``id`` (unique image id), ``distorted_path`` and ``reference_path`` (relative
to the manifest's folder, or absolute). Known metadata columns fill the stimulus table's own
columns; every other column (seed, codec, bits, bpp, …) is kept in the stimulus's ``extra`` JSON.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REQUIRED_COLUMNS = ("id", "distorted_path", "reference_path")
METADATA_COLUMNS = ("reference", "model", "mode", "strength", "content_type", "caption")


class ManifestError(ValueError):
    """A manifest that cannot be imported; the message names the problem."""


def read_manifest(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a manifest; image paths come back absolute."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype={"id": str, "reference": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ManifestError(f"{path}: not a readable CSV ({error})") from error
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(frame.columns)})"
        )
    if frame.empty:
        raise ManifestError(f"{path}: no rows")
    duplicated = frame["id"][frame["id"].duplicated()]
    if not duplicated.empty:
        raise ManifestError(f"{path}: image id {duplicated.iloc[0]!r} appears more than once")
    if "strength" in frame.columns:
        strength = pd.to_numeric(frame["strength"].replace("", None), errors="coerce")
        bad = frame["strength"].ne("") & strength.isna()
        if bad.any():
            raise ManifestError(
                f"{path}: strength {frame['strength'][bad].iloc[0]!r} is not a number"
            )
        frame["strength"] = strength
    for column in ("distorted_path", "reference_path"):
        frame[column] = [str((path.parent / p).resolve()) for p in frame[column]]
        if check_files:
            absent = [p for p in frame[column] if not Path(p).is_file()]
            if absent:
                raise ManifestError(
                    f"{path}: {len(absent)} image file(s) not found (first: {absent[0]})"
                )
    if "reference" not in frame.columns:  # distortions of one picture share its reference file
        frame["reference"] = [Path(p).stem for p in frame["reference_path"]]
    return frame


def nsfw_flagged(manifest: pd.DataFrame) -> pd.Series:
    """Rows the decoder's safety checker blanked (``nsfw_detected`` true): black images, no
    stimuli. The paper kept the SD safety checker in decoding and let viewers flag offensive
    images; ``annotate import`` leaves blanked images out of the study and ``compare`` out of
    its curves (a black image would drag a model's quality down for a reason that is not its
    compression), each saying how many."""
    if "nsfw_detected" not in manifest.columns:
        return pd.Series(False, index=manifest.index)
    return manifest["nsfw_detected"].map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))
