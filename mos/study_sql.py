"""Reading a study database: the SQL of its trials (shared with the app) and the columnar reading
of a SQLite study through ADBC.

The queries are compiled from the schema's own models (:mod:`studydb`), so ``mos`` and the app
judge the same rows. A SQLite study is read as Arrow through the ADBC SQLite driver, by ranges of
rating ids on every core (SQLite decodes rows on one core per connection), each range made compact
at once: ten million ratings in seconds, no Python object per row.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import and_, case, func, inspect, select, true

from studydb import Rating, Session, Trial, Viewer

BUSY_TIMEOUT_MS = 30_000
READ_CHUNK = 1_000_000
"""The most rating ids one range of a SQLite study's reading spans."""
READERS = max(1, min(4, os.cpu_count() or 1))
"""Ranges read at once: SQLite decodes rows on one core per connection."""

OPTIONAL_COLUMNS = (
    "check", "accept_low", "accept_high", "seconds", "slider_events", "first_input_seconds",
)  # fmt: skip
"""QC columns a source may lack (an older study, a CSV of ratings only): unknown, never failed."""

DURATIONS = {
    "seconds": ("served_at", "submitted_at"),
    "first_input_seconds": ("revealed_at", "first_input_at"),
}
"""The durations QC reads, as the (start, end) times of :func:`qc_columns` they span."""


def trials_query(has_checks: bool = True, has_interaction: bool = True, warmups: bool = False):
    """The SQL of every submitted non-warm-up trial with what quality control needs.

    Shared by ``mos.compute --exclude`` and the app (admin QC page, online allocation), so both
    judge participants on the same rows. ``has_checks``: schema ≥ 4 (an older study has none);
    ``has_interaction``: schema ≥ 5 (the slider moves counted on the page). ``warmups``: include
    the warm-up trials too (flagged in ``warmup``), for a reader that must know every rating id
    it has seen (:mod:`annotate.tally`).
    """
    return (
        select(
            Rating.id.label("rating_id"),
            Rating.session_id,
            Rating.position,
            Session.viewer_id,
            Viewer.code.label("participant"),
            Rating.stimulus_id.label("stimulus"),
            Rating.consistency,
            Rating.perception,
            Rating.is_warmup.label("warmup"),
            *qc_columns(has_checks, has_interaction),
        )
        .join(Session, Session.id == Rating.session_id)
        .join(Viewer, Viewer.id == Session.viewer_id)
        .outerjoin(Trial, TRIAL_OF_RATING)
        .where(true() if warmups else Rating.is_warmup.is_(False))
    )


def qc_columns(has_checks: bool, has_interaction: bool, has_trials: bool = True) -> tuple:
    """What QC reads of a rating besides its scores (the query must outer-join
    :data:`TRIAL_OF_RATING`): the times it was served and submitted, the trial's check kind and
    accepted range, and the page's interaction counts. ``has_trials=False``: a study without
    trial rows (ratings imported from elsewhere), whose serving times, checks and ranges are all
    unknown, so neither they nor the submission times are read."""
    served = Trial.served_at if has_checks else Trial.shown_at
    times = (Rating.submitted_at, served.label("served_at")) if has_trials else ()
    checks = (
        (Trial.check_kind.label("check"), Trial.accept_low, Trial.accept_high)
        if has_checks and has_trials
        else ()
    )
    interaction = (
        (Rating.slider_events, Rating.first_input_at, Rating.shown_at.label("revealed_at"))
        if has_interaction
        else ()
    )
    return (*times, *checks, *interaction)


def has_trials(engine) -> bool:
    """Whether the study has trial rows at all (one look at the primary key): a study the app
    ran has one per page served; ratings imported from elsewhere have none."""
    with engine.connect() as connection:
        return connection.execute(select(Trial.session_id).limit(1)).first() is not None


TRIAL_OF_RATING = and_(Trial.session_id == Rating.session_id, Trial.position == Rating.position)
"""The join of a rating to the trial it answers."""


def has_check_column(engine, column: str = "check_kind") -> bool:
    """Whether the study's ratings have ``column``: ``check_kind`` (check trials, schema ≥ 4) by
    default, ``slider_events`` (the page's interaction counts, schema ≥ 5)."""
    return column in {c["name"] for c in inspect(engine).get_columns("ratings")}


# --------------------------------------------------------------------------- SQLite through ADBC


def rating_id_ranges(engine) -> list[tuple[int, int]]:
    """The ratings' id span cut into ranges of at most :data:`READ_CHUNK` ids, or of ratings
    where the ids lie far apart (empty for a study without ratings): a SQLite study is read range
    by range, on every core, each range turned into compact columns at once, so that the driver's
    buffers stay small and memory peaks at the size of the result, not twice that. The ranges
    are of one size and as many as a multiple of the readers (:func:`even_ranges`), so that no
    reader is left alone with the last range while the others idle."""
    with engine.connect() as connection:
        # Two scalar subqueries: SQLite answers each from the primary key without a scan.
        low, high = connection.execute(
            select(
                select(func.min(Rating.id)).scalar_subquery(),
                select(func.max(Rating.id)).scalar_subquery(),
            )
        ).one()
        if low is None:
            return []
        if (high - low) // READ_CHUNK < MAX_EVEN_RANGES:
            return even_ranges(low, high, READ_CHUNK, READERS)
        return _stepped_ranges(connection, low, high, READ_CHUNK)


MAX_EVEN_RANGES = 256
"""Beyond this many ranges of :data:`READ_CHUNK` ids, the ids are stepped through instead
(:func:`_stepped_ranges`): a few ids far from the others (an import, a hand edit) would
otherwise cut the span into millions of empty ranges."""


def _stepped_ranges(connection, low: int, high: int, rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges of ``rows`` ratings each, whatever the gaps between their ids: each
    range ends at the id ``rows`` places after its start (stepping through the primary key
    only, ~10 ns a rating in SQLite)."""
    ranges, start = [], low
    while True:
        end = connection.execute(
            select(Rating.id)
            .where(Rating.id >= start)
            .order_by(Rating.id)
            .limit(1)
            .offset(rows - 1)
        ).scalar()
        if end is None or end >= high:
            ranges.append((start, high))
            return ranges
        ranges.append((start, end))
        start = end + 1


def even_ranges(low: int, high: int, largest: int, readers: int) -> list[tuple[int, int]]:
    """``low..high`` cut into consecutive ranges of one size, at most ``largest``, as many as a
    multiple of ``readers`` (fewer only where the span has fewer ids)."""
    span = high - low + 1
    count = readers * _ceil_div(span, readers * largest)
    size = _ceil_div(span, count)
    return [(a, min(a + size - 1, high)) for a in range(low, high + 1, size)]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def read_in_parallel(read, ranges: list[tuple[int, int]]) -> list:
    """``read(range)`` for every range of :func:`rating_id_ranges`, on every core, in order."""
    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(read, ranges))


def fetch_sqlite_arrow(path: Path, query, dialect, batch_rows: int = READ_CHUNK) -> pa.Table:
    """``query`` (SQLAlchemy, compiled for ``dialect`` with its values inlined) run on a SQLite
    study through ADBC, as one Arrow table: no Python object per row."""
    import adbc_driver_sqlite.dbapi as adbc

    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    with adbc.connect(f"file:{path}?mode=ro") as connection, connection.cursor() as cursor:
        # Wait for a writer (the live lab app) instead of failing with "database is locked".
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.fetchall()
        # Whole chunks in one Arrow batch: columns then convert to numpy without copying (and the
        # driver infers each column's type from the whole batch, not its first NULLs).
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        cursor.execute(sql)
        return cursor.fetch_arrow_table()


PACKED = ("stimulus", "session", "nsfw")
"""The rating columns :class:`PackedIds` reads as one value."""


@dataclass(frozen=True)
class PackedIds:
    """A rating's sitting, stimulus and NSFW flag read from a SQLite study as one integer,
    ``session · 2^(b+1) + stimulus · 2 + flag`` (b: the bits of the largest stimulus id).

    The ADBC driver's cost is per value it decodes (a type check, a mutex and a validity bit
    each), hardly per byte: three values in one take a fifth off the reading of ten million
    ratings. Used only where the ratings' own indexes show every id a non-negative integer and
    the key fits in 63 bits (:meth:`of_study`, no scan). The key is plain arithmetic, so that an
    id SQLite holds as a REAL or NULL (written by hand: the schema stores integers) makes it a
    REAL or NULL; :meth:`unpack` then gives None and that range is read unpacked, as without
    packing. A flag stored by hand as text or a blob (which the unpacked reading refuses) is
    seen the same way, by the index: no packing then."""

    stimulus_bits: int

    @classmethod
    def of_study(cls, engine) -> PackedIds | None:
        """The packing of this study's ratings, or None where the ids do not allow one (a
        negative id, ids too large together, a text id), a flag is text, or an index to bound
        them is missing."""
        indexed = {index["column_names"][0] for index in inspect(engine).get_indexes("ratings")}
        if not {"session_id", "stimulus_id", "nsfw"} <= indexed:
            return None  # bounding the values would scan every rating
        # One scalar subquery per bound: SQLite answers each from an index without a scan.
        # min() skips NULLs; text and blobs sort after every number, so max() shows them.
        bounds = [select(bound(column)).scalar_subquery() for bound, column in _BOUNDS]
        flag = func.typeof(select(func.max(Rating.nsfw)).scalar_subquery())
        with engine.connect() as connection:
            *ids, flag_type = connection.execute(select(*bounds, flag)).one()
        if not all(type(value) is int for value in ids) or min(ids) < 0:
            return None
        if flag_type not in ("integer", "real", "null"):
            return None
        _, last_session, _, last_stimulus = ids
        # A sitting takes one bit at least, so that the multiplier stays below 2^63 (SQLite
        # would write a larger one as a REAL, and every range would be read twice).
        session_bits = max(last_session.bit_length(), 1)
        stimulus_bits = last_stimulus.bit_length()
        return cls(stimulus_bits) if session_bits + stimulus_bits + 1 <= 63 else None

    def packed(self, query):
        """``query`` (of :data:`PACKED`'s columns among others) reading them as one ``key``."""
        flag = case((Rating.nsfw != 0, 1), else_=0)  # NULL: not flagged, as when unpacked
        key = Rating.session_id * (1 << (self.stimulus_bits + 1)) + Rating.stimulus_id * 2 + flag
        kept = [column for column in query.selected_columns if column.key not in PACKED]
        return query.with_only_columns(key.label("key"), *kept)

    def unpack(self, raw: pa.Table) -> pa.Table | None:
        """The rows of :meth:`packed`'s query with :data:`PACKED`'s columns back in place of the
        key (None where a key is not an integer: read that range unpacked)."""
        key = raw.column("key")
        if not pa.types.is_int64(key.type) or key.null_count:
            return None
        key = key.to_numpy()
        columns = {
            "stimulus": (key >> 1) & ((1 << self.stimulus_bits) - 1),
            "session": key >> (self.stimulus_bits + 1),
            "nsfw": (key & 1).astype(bool),
        }
        raw = raw.drop_columns(["key"])
        for name, values in columns.items():
            raw = raw.append_column(name, pa.array(values))
        return raw


_BOUNDS = tuple(
    (bound, column)
    for column in (Rating.session_id, Rating.stimulus_id)
    for bound in (func.min, func.max)
)
"""The bounds :meth:`PackedIds.of_study` reads, in this order: the sittings' least and largest
id, the stimuli's least and largest."""


def trial_columns(raw: pa.Table, viewer: pa.DictionaryArray, dimension: str) -> pa.Table:
    """One range of :func:`qc_columns` rows as QC reads a raw-ratings CSV (``mos.qc``): the
    viewer (codes over the participants' codes), stimulus id, the score ``dimension``, and each
    optional column that holds a value here, times turned into seconds. Every column is a copy
    (:func:`owned`), so the driver's batch can go."""
    columns = {
        "viewer": viewer,
        "stimulus": np.array(id_column(raw, "stimulus")),
        dimension: owned(raw.column(dimension), np.float64),
    }
    for name in OPTIONAL_COLUMNS:
        column = raw.column(name) if name in raw.column_names else None
        if column is not None and column.null_count < len(column):  # else unknown here
            columns[name] = (
                pc.dictionary_encode(column.cast(pa.string())).combine_chunks()
                if name == "check"
                else owned(column, np.float64)
            )
    names = set(raw.column_names)
    for name, (start, end) in DURATIONS.items():
        if {start, end} <= names and all(raw.column(t).null_count < len(raw) for t in (start, end)):
            seconds = pd.Series(utc_times(raw.column(end)) - utc_times(raw.column(start)))
            columns[name] = pa.array(seconds.dt.total_seconds().to_numpy(dtype=float))
    return pa.table(columns)


def owned(column: pa.ChunkedArray, dtype) -> np.ndarray:
    """A copy of a column the driver returned, as numpy ``dtype`` (NULL: NaN). A view would keep
    the driver's whole batch alive (its buffers are released together): ~100 MB per range."""
    return np.array(column.to_numpy(zero_copy_only=False), dtype=dtype)


def id_column(table: pa.Table, name: str) -> np.ndarray:
    """A table's column of ids as int64 (:func:`whole_ids`); a view where it already is one."""
    return whole_ids(table.column(name).to_numpy(), name)


def whole_ids(values: np.ndarray, name: str) -> np.ndarray:
    """A column of ids (``name``) as int64. An id stored by hand as a fraction (3.5), left
    empty, or beyond 64 bits names no row of the study: an :class:`IdError` naming it, where a
    cast would have made it the id 3, or an id of −2⁶³."""
    if values.dtype.kind == "f":
        whole = (np.abs(values) < 2.0**63) & (np.trunc(values) == values)  # NaN: False
        if not whole.all():
            bad = values[~whole]
            first = "empty" if np.isnan(bad[0]) else repr(float(bad[0]))
            raise IdError(
                f"{name}: {bad.size} stored id(s) are empty or not whole numbers (first: {first})"
            )
    return values.astype(np.int64, copy=False)


class IdError(ValueError):
    """A stored id that names no row (:func:`whole_ids`): the study is damaged, which no other
    way of reading it mends."""


# --------------------------------------------------------------------------- stored times


ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")
"""The end of an ISO time that names its zone."""


def utc_times(column: pa.ChunkedArray) -> np.ndarray:
    """Stored times (ISO 8601 text, UTC with or without its zone) as numpy UTC times: parsed by
    Arrow when the whole column has one of the two forms the app and its tools write, else by
    pandas' ISO 8601 parser. Anything else (numbers, text in no ISO form) raises ValueError: the
    caller then reads the study through SQLAlchemy, which takes a stored time as the app does."""
    if not pa.types.is_string(column.type):
        raise ValueError(f"stored times are {column.type}, not text")
    forms = [pa.timestamp("us"), pa.timestamp("us", tz="UTC")]
    if ZONE.search(_first_text(column)):
        forms.reverse()  # the first time names its zone: try that form first (a failed cast
        # of 10 M values takes seconds)
    for form in forms:
        try:
            return pc.cast(column, form).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    times = pd.to_datetime(column.to_pandas(), utc=True, format="ISO8601")
    if int(times.isna().sum()) > column.null_count:  # e.g. an empty text: no time
        raise ValueError("a stored time is empty text")
    return times.dt.tz_localize(None).to_numpy()


def _first_text(column: pa.ChunkedArray) -> str:
    for chunk in column.chunks:
        first = pc.index(chunk.is_valid(), True).as_py()
        if first >= 0:
            return str(chunk[first])
    return ""
