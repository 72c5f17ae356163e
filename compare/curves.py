"""Manifests → curves and points: which images make up each rate–quality point.

A curve is grouped by ``model`` (the ladder's AVC/HEVC/AV1/VVC, or a T2I model), prefixed by the
manifest's label when one is given; a point on it by ``mode``, ``codec_qp``,
``codec_target_bpp`` (a ladder or run made with a bpp search) and ``caption_words``, whichever
exist and are filled in. A point's rate is the mean bpp over its
images. Curves whose rows all have mode ``Codec`` are the anchors (traditional codecs); every
other curve is a CMC method, compared against each anchor.

What would make a curve quietly mean something else is refused: a curve made of two manifests
(two ladders from two folders are two curves: label them), and a point holding one reference
twice (rows of different settings averaged into one point: group by the setting that differs).
A codec row's point always keeps its rate (``codec_qp``, ``codec_target_bpp``), whatever
``--point-by`` says, so a ladder stays a curve of its rates. Each row carries its reference's
*content* digest (``reference_key``): one picture in two folders is one reference, two pictures
of one name are two.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from compare.defaults import CURVE_BY, POINT_BY, RATE_COLUMNS

CODEC_MODE = "codec"
KEPT = ("mode", "strength", "codec", "codec_qp", "codec_target_bpp", "codec_bits", "caption_words")
"""Manifest columns carried with each row (the sweeps' settings), as text; empty when absent."""
POINT_NAMES = {
    "codec_qp": "QP {}",
    "codec_target_bpp": "target {} bpp",
    "caption_words": "{} words",
    "strength": "strength {}",
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
    mode: str = "",
) -> pd.DataFrame:
    """Every image row of every manifest, with its ``curve``, ``point``, ``kind`` and ``bpp``.

    ``anchors`` names the codec curves explicitly; by default a curve is an anchor when all its
    rows have mode ``Codec``. A (curve, point) that two manifests both fill is refused: their
    images would be averaged together silently; a label per manifest keeps them apart.
    Images the safety checker blanked are left out unless ``include_nsfw``; their number is in
    ``rows.attrs["nsfw_skipped"]``. ``mode`` keeps the rows of that mode only (Table A1, the
    strength sweeps), before the checks: another mode's settings cannot clash with this one's.
    """
    from studydb.manifest import ManifestError, nsfw_flagged, read_manifest

    if not sources:
        raise InputError("no manifest given")
    frames = []
    skipped = 0
    for number, source in enumerate(sources):
        try:
            frame = read_manifest(source.path)
        except ManifestError as error:
            raise InputError(str(error)) from error
        if mode:
            frame = _of_mode(frame, mode, source.path)
        if not include_nsfw:
            blanked = nsfw_flagged(frame)
            skipped += int(blanked.sum())
            frame = frame[~blanked]
            if frame.empty:
                raise InputError(f"{source.path}: every image was blanked by the safety checker")
        frames.append(_annotate(frame, source, curve_by, point_by).assign(source=number))
    rows = pd.concat(frames, ignore_index=True)
    _one_source_per_curve(rows)
    rows["reference_key"] = [reference_key(path) for path in rows["reference_path"]]
    _one_image_per_reference(rows)
    is_codec = rows["mode"].str.lower().eq(CODEC_MODE).groupby(rows["curve"]).all()
    if anchors:
        unknown = sorted(set(anchors) - set(rows["curve"]))
        if unknown:
            raise InputError(
                f"anchor curve '{unknown[0]}' is not among: {', '.join(sorted(set(rows['curve'])))}"
            )
        is_codec = pd.Series({curve: curve in anchors for curve in is_codec.index})
    rows["kind"] = rows["curve"].map(lambda c: "codec" if is_codec[c] else "cmc")
    rows = rows.drop(columns=["source"])
    rows.attrs["nsfw_skipped"] = skipped
    return rows


def _of_mode(frame: pd.DataFrame, mode: str, where: Path) -> pd.DataFrame:
    modes = frame["mode"].astype(str) if "mode" in frame.columns else pd.Series("", frame.index)
    chosen = frame[modes.str.lower() == mode.lower()]
    if chosen.empty:
        raise InputError(f"{where}: no {mode}-mode rows (it has {', '.join(sorted(set(modes)))})")
    return chosen


def reference_key(path: str) -> str:
    """The first 16 hex digits of the reference file's SHA-256 (once per path, size and mtime)."""
    stat = Path(path).stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=65536)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def _one_source_per_curve(rows: pd.DataFrame) -> None:
    """Refuses a curve whose rows come from two manifests: never merged into one curve."""
    sources = rows.groupby("curve")["source"].nunique()
    merged = sources[sources > 1].index
    if not merged.empty:
        paths = rows.loc[rows["curve"] == merged[0], "manifest"].unique()
        raise InputError(
            f"curve '{merged[0]}' comes from more than one manifest "
            f"({', '.join(paths) if len(paths) > 1 else f'{paths[0]}, given twice'}): curves of different sources are not merged; give "
            "each a label (--label NAME=PATH) or group differently (--curve-by)"
        )


def _one_image_per_reference(rows: pd.DataFrame) -> None:
    """Refuses a point that holds one reference twice: it would average two settings."""
    twice = rows.duplicated(["curve", "point", "reference_key"], keep=False)
    if not twice.any():
        return
    first = rows[twice].iloc[0]
    same = rows[twice & rows["curve"].eq(first["curve"]) & rows["point"].eq(first["point"])
                & rows["reference_key"].eq(first["reference_key"])]  # fmt: skip
    differ = [c for c in KEPT if same[c].nunique() > 1] or ["(no setting compare reads)"]
    raise InputError(
        f"curve '{first['curve']}' point '{first['point']}' holds reference "
        f"{first['reference']!r} {len(same)} times, differing in {', '.join(differ)}: a point "
        "averages one image per reference; group by the setting that differs (--point-by; "
        "figure-a7: --curve-by)"
    )


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
    kept = {c: frame[c].astype(str) if c in frame.columns else "" for c in KEPT}
    codec = pd.Series(kept["mode"], index=frame.index).str.lower().eq(CODEC_MODE)
    point = [_point_name(row, point_by + RATE_COLUMNS if is_codec else point_by)
             for row, is_codec in zip(frame.to_dict("records"), codec, strict=True)]  # fmt: skip
    return pd.DataFrame(
        {
            "manifest": str(where),
            "id": frame["id"],
            "distorted_path": frame["distorted_path"],
            "reference_path": frame["reference_path"],
            "reference": frame["reference"],
            "curve": curve,
            "point": point,
            **kept,
            "bpp": bpp,
        }
    )


def _point_name(row: dict, columns: tuple[str, ...]) -> str:
    """'Full, QP 51, 20 words': the row's filled-in point columns, readable."""
    parts = []
    for column in dict.fromkeys(columns):
        text = str(row.get(column, "")).strip()
        if text in ("", "nan", "None"):
            continue
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]  # a QP read back as a float
        parts.append(POINT_NAMES.get(column, "{}" if column == "mode" else column + "={}")
                     .format(text))  # fmt: skip
    return ", ".join(parts) or "all"
