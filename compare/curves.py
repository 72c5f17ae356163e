"""Manifests → curves and points: which images make up each rate–quality point.

A curve is grouped by ``model`` (the ladder's AVC/HEVC/AV1/VVC, or a T2I model), prefixed by the
manifest's label when one is given; a point on it by ``mode``, ``codec_qp``,
``codec_target_bpp`` (a ladder or run made with a bpp search) and ``caption_words``, whichever
exist and are filled in. A point's rate is the mean bpp over its
images. Curves whose rows all have mode ``Codec`` are the anchors (traditional codecs); every
other curve is a CMC method, compared against each anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from studydb.manifest import ManifestError, nsfw_flagged, read_manifest

CURVE_BY = ("model",)
POINT_BY = ("mode", "codec_qp", "codec_target_bpp", "caption_words")
CODEC_MODE = "codec"
POINT_NAMES = {
    "codec_qp": "QP {}",
    "codec_target_bpp": "target {} bpp",
    "caption_words": "{} words",
}


class InputError(ValueError):
    """A manifest that cannot be compared; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """One manifest and the label that tells its curves apart from another run's."""

    path: Path
    label: str = ""


def load(
    sources: list[Source],
    curve_by: tuple[str, ...] = CURVE_BY,
    point_by: tuple[str, ...] = POINT_BY,
    anchors: tuple[str, ...] = (),
    include_nsfw: bool = False,
) -> pd.DataFrame:
    """Every image row of every manifest, with its ``curve``, ``point``, ``kind`` and ``bpp``.

    ``anchors`` names the codec curves explicitly; by default a curve is an anchor when all its
    rows have mode ``Codec``. A (curve, point) that two manifests both fill is refused: their
    images would be averaged together silently; a label per manifest keeps them apart.
    Images the safety checker blanked are left out unless ``include_nsfw``; their number is in
    ``rows.attrs["nsfw_skipped"]``.
    """
    if not sources:
        raise InputError("no manifest given")
    frames = []
    skipped = 0
    for number, source in enumerate(sources):
        try:
            frame = read_manifest(source.path)
        except ManifestError as error:
            raise InputError(str(error)) from error
        if not include_nsfw:
            blanked = nsfw_flagged(frame)
            skipped += int(blanked.sum())
            frame = frame[~blanked]
            if frame.empty:
                raise InputError(f"{source.path}: every image was blanked by the safety checker")
        frames.append(_annotate(frame, source, curve_by, point_by).assign(source=number))
    rows = pd.concat(frames, ignore_index=True)
    twice = rows.groupby(["curve", "point"])["source"].nunique()
    if (twice > 1).any():
        curve, point = twice[twice > 1].index[0]
        raise InputError(
            f"curve '{curve}' point '{point}' comes from more than one manifest: give each a "
            "label (--label NAME=PATH) or group differently (--curve-by)"
        )
    is_codec = rows["mode_value"].str.lower().eq(CODEC_MODE).groupby(rows["curve"]).all()
    if anchors:
        unknown = sorted(set(anchors) - set(rows["curve"]))
        if unknown:
            raise InputError(
                f"anchor curve '{unknown[0]}' is not among: {', '.join(sorted(set(rows['curve'])))}"
            )
        is_codec = pd.Series({curve: curve in anchors for curve in is_codec.index})
    rows["kind"] = rows["curve"].map(lambda c: "codec" if is_codec[c] else "cmc")
    rows = rows.drop(columns=["mode_value", "source"])
    rows.attrs["nsfw_skipped"] = skipped
    return rows


def _annotate(
    frame: pd.DataFrame, source: Source, curve_by: tuple[str, ...], point_by: tuple[str, ...]
) -> pd.DataFrame:
    """One manifest's rows with their curve and point names and a numeric bpp."""
    where = source.path
    if "bpp" not in frame.columns:
        raise InputError(f"{where}: no bpp column: the rate of every image is needed")
    bpp = pd.to_numeric(frame["bpp"], errors="coerce")
    bad = bpp.isna() | (bpp <= 0)
    if bad.any():
        raise InputError(
            f"{where}: image {frame['id'][bad].iloc[0]!r} has bpp "
            f"{frame['bpp'][bad].iloc[0]!r}, not a positive number"
        )
    missing = [c for c in curve_by if c not in frame.columns]
    if missing:
        raise InputError(f"{where}: no column {missing[0]!r} to group curves by (--curve-by)")
    curve_parts = [frame[c].astype(str) for c in curve_by]
    curve = curve_parts[0].str.cat(curve_parts[1:], sep=" ") if curve_parts else ""
    if source.label:
        curve = source.label + (" " + curve if curve_parts else "")
    point_columns = [c for c in point_by if c in frame.columns]
    return pd.DataFrame(
        {
            "manifest": str(where),
            "id": frame["id"],
            "distorted_path": frame["distorted_path"],
            "reference_path": frame["reference_path"],
            "reference": frame["reference"],
            "curve": curve,
            "point": [_point_name(row) for row in frame[point_columns].to_dict("records")]
            if point_columns
            else "all",
            "mode_value": frame["mode"].astype(str) if "mode" in frame.columns else "",
            "bpp": bpp,
        }
    )


def _point_name(values: dict) -> str:
    """'Full, QP 51, 20 words': the filled-in point columns, readable."""
    parts = []
    for column, value in values.items():
        text = str(value).strip()
        if text in ("", "nan", "None"):
            continue
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]  # a QP read back as a float
        parts.append(POINT_NAMES.get(column, "{}" if column == "mode" else column + "={}")
                     .format(text))  # fmt: skip
    return ", ".join(parts) or "all"
