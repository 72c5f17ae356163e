"""Loading raw ratings — from a study database or a CSV — into integer-coded columns.

Everything downstream works on a :class:`RatingTable`: one row per rating, viewers / stimuli /
sessions as dense integer codes, one float array per score dimension. Reading is columnar (Arrow):
a SQLite study is read through the ADBC SQLite driver and a CSV through ``pyarrow.csv``, so that ten
million ratings load in seconds without a Python object per row. Any other SQLAlchemy URL
(PostgreSQL) is read through SQLAlchemy. Every input problem becomes an :class:`InputError` with a
one-line message naming it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import exists, or_, select
from sqlalchemy.exc import SQLAlchemyError

from mos.study_sql import (
    TRIAL_OF_RATING,
    IdError,
    PackedIds,
    fetch_sqlite_arrow,
    has_check_column,
    has_trials,
    id_column,
    qc_columns,
    rating_id_ranges,
    read_in_parallel,
    trial_columns,
)
from studydb import Rating, Session, Stimulus, Trial, Viewer, make_engine, missing_tables
from studydb.csvcells import RESTORE_PATTERN
from studydb.schema import SCORE_MAX, SCORE_MIN

__all__ = ["SCORE_MAX", "SCORE_MIN", "InputError", "RatingTable", "load_ratings", "load_study"]

DEFAULT_DIMENSIONS = ("consistency", "perception")
METADATA_COLUMNS = (
    "reference",
    "model",
    "mode",
    "strength",
    "content_type",
    "distorted_path",
    "reference_path",
)
QC_CSV_COLUMNS = {"check", "accept_low", "accept_high", "seconds"}
"""Quality-control columns of a raw-ratings CSV (see :mod:`mos.qc`): rows with a ``check`` are
gold or attention trials and never enter a MOS."""
_RESERVED_CSV_COLUMNS = {
    "viewer",
    "stimulus",
    "session",
    "nsfw",
    "repetition",
    "warmup",
    *QC_CSV_COLUMNS,
}


class InputError(Exception):
    """Bad input: reported to the user as one line, exit code 2."""


@dataclass
class RatingTable:
    """Raw ratings in long form, integer-coded.

    ``viewer``, ``stimulus`` and ``session`` are codes into ``viewer_ids``, ``stimulus_ids`` and
    ``n_sessions``; ``scores`` maps each dimension to a float array aligned with them.
    """

    viewer: np.ndarray
    stimulus: np.ndarray
    session: np.ndarray
    scores: dict[str, np.ndarray]
    nsfw: np.ndarray | None
    viewer_ids: np.ndarray
    stimulus_ids: np.ndarray
    n_sessions: int
    metadata: pd.DataFrame | None = None

    @property
    def n_viewers(self) -> int:
        return len(self.viewer_ids)

    @property
    def n_stimuli(self) -> int:
        return len(self.stimulus_ids)

    def __len__(self) -> int:
        return self.viewer.shape[0]


def load_ratings(
    source: str | Path,
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS,
    score_range: tuple[float, float] = (SCORE_MIN, SCORE_MAX),
) -> RatingTable:
    """Read a study database (path or SQLAlchemy URL) or a raw-ratings CSV, then validate it."""
    return load_study(source, dimensions, score_range)[0]


def load_study(
    source: str | Path,
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS,
    score_range: tuple[float, float] = (SCORE_MIN, SCORE_MAX),
    trials_of: str | None = None,
) -> tuple[RatingTable, pa.Table | None]:
    """:func:`load_ratings`, and the trials quality control (:mod:`mos.qc`) reads, from the same
    reading: for a CSV the Arrow table it was read from (formula escape undone,
    :func:`read_csv_table`), so that QC does not parse the file a second time; for a SQLite
    study, with ``trials_of`` (the score column QC judges, one of ``dimensions``), its trials in
    a CSV's columns, read in the same pass over the ratings. None otherwise (QC then reads the
    trials itself)."""
    if trials_of is not None and trials_of not in dimensions:
        raise ValueError(f"trials_of={trials_of!r} is not one of {dimensions}")
    text = str(source)
    path = Path(text).expanduser()
    if "://" in text:
        table, cells = _read_database_sqlalchemy(text, dimensions), None
    elif not path.exists():
        raise InputError(f"{text}: no such file")
    elif path.is_dir():
        raise InputError(f"{text}: is a folder, expected a study database or a CSV of ratings")
    elif _is_sqlite(path):
        table, cells = _read_sqlite(path, dimensions, trials_of)
    else:
        cells = read_csv_table(path)
        table = _ratings_from_csv(cells, path, dimensions)
    # Arrow's allocator keeps what it freed (the CSV reader's parse buffers are about twice the
    # file, the SQLite driver's batches): hand it back, so that the computation after this does
    # not stack on top of it.
    pa.default_memory_pool().release_unused()
    _validate(table, score_range)
    return table, cells


# --------------------------------------------------------------------------- database


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def _ratings_query(
    dimensions: tuple[str, ...],
    has_checks: bool = True,
    qc: tuple[bool, bool, bool] | None = None,
    rating_qc: bool = True,
):
    """The one query of the schema's ratings: submitted, non-warm-up, non-check trials.

    ``has_checks``: whether the database has ``ratings.check_kind`` (schema ≥ 4; an older study
    is read as it is, without an upgrade, and has no check trials). ``qc``: also read what
    quality control reads (:func:`mos.study_sql.qc_columns` for ``(has_checks,
    has_interaction, has_trials)``); the check trials are then kept, flagged in ``is_check``.
    ``rating_qc=False``: without what QC reads of the rating itself (its check flag, its
    interaction counts), for ratings that hold none of it (:func:`_rating_qc_probe`).

    No join to the sessions: each rating's viewer comes from its session in numpy, which is much
    cheaper than letting SQLite join ten million rows.
    """
    columns = []
    for name in dimensions:
        if name not in DEFAULT_DIMENSIONS:  # a study's score columns (not its ids or flags)
            known = ", ".join(DEFAULT_DIMENSIONS)
            raise InputError(f"unknown score column '{name}' (a study database has: {known})")
        columns.append(Rating.__table__.columns[name])
    query = select(
        Rating.stimulus_id.label("stimulus"),
        Rating.session_id.label("session"),
        Rating.nsfw.label("nsfw"),
        *columns,
    ).where(Rating.is_warmup.is_(False))
    if qc is not None:
        checks, interaction, trials = qc
        flag = (Rating.check_kind.is_not(None).label("is_check"),) if checks and rating_qc else ()
        query = query.add_columns(*flag, *qc_columns(checks, interaction and rating_qc, trials))
        if trials:  # the study has trials: their times, checks and ranges
            query = query.outerjoin(Trial, TRIAL_OF_RATING)
    elif has_checks:
        query = query.where(Rating.check_kind.is_(None))
    return query


def _rating_qc_probe(has_checks: bool, has_interaction: bool):
    """A function of an id range giving the query of whether any of its (non-warm-up) ratings
    holds a check kind or an interaction count (None when the schema has neither).

    A study without them (ratings imported from elsewhere, or from before schema 5) would
    otherwise have each of those empty columns decoded for every rating: a tenth of a second per
    million ratings and column, where this probe scans the range once in SQLite and stops at the
    first rating that holds one. Warm-ups are not told apart (one column fewer to decode per
    rating): one that holds a value only has its range read whole, which is always right."""
    columns = [Rating.check_kind] if has_checks else []
    if has_interaction:
        columns += [Rating.slider_events, Rating.first_input_at, Rating.shown_at]
    if not columns:
        return None
    held = or_(*(column.is_not(None) for column in columns))
    return lambda span: select(exists().where(Rating.id.between(*span), held))


def _sessions_query():
    return select(Session.id, Session.viewer_id)


def _stimuli_query():
    return select(Stimulus.id, Stimulus.key, *(getattr(Stimulus, c) for c in METADATA_COLUMNS))


def _viewers_query():
    return select(Viewer.id, Viewer.code)


def _check_study(engine, label: str) -> None:
    try:
        missing = missing_tables(engine)
    except SQLAlchemyError as error:
        raise InputError(f"{label}: cannot be read as a database ({first_line(error)})") from error
    if missing:
        raise InputError(
            f"{label}: not a cmc-lab study database (missing table(s): {', '.join(missing)})"
        )


def _read_sqlite(
    path: Path, dimensions: tuple[str, ...], trials_of: str | None
) -> tuple[RatingTable, pa.Table | None]:
    """Columnar read through ADBC, the ratings in parallel id ranges (:mod:`mos.study_sql`), and
    with ``trials_of`` the trials QC reads from the same rows (see :func:`load_study`)."""
    engine = make_engine(path, read_only=True)
    try:
        _check_study(engine, str(path))
        ranges = rating_id_ranges(engine)
        if not ranges:
            raise InputError(f"{path}: the study has no submitted ratings yet")
        has_checks = has_check_column(engine)
        qc = None
        if trials_of is not None:
            qc = (has_checks, has_check_column(engine, "slider_events"), has_trials(engine))
        sessions, viewers = (
            fetch_sqlite_arrow(path, query, engine.dialect)
            for query in (_sessions_query(), _viewers_query())
        )
        _check_sittings(sessions, viewers, str(path))
        packing = PackedIds.of_study(engine)
        read = _RangeReader(path, engine.dialect, dimensions, sessions, viewers, trials_of, packing)
        # The stimuli (half a million rows of text in a crowd study) are read beside the ratings.
        with ThreadPoolExecutor(1) as side:
            stimuli = side.submit(fetch_sqlite_arrow, path, _stimuli_query(), engine.dialect)
            try:
                query = _ratings_query(dimensions, has_checks, qc)
                probe = None if qc is None else _rating_qc_probe(has_checks, qc[1])
                lean = None
                if probe is not None:
                    lean = (probe, _ratings_query(dimensions, has_checks, qc, rating_qc=False))
                ratings, trials = read.all(ranges, query, with_trials=qc is not None, lean=lean)
            except Exception as error:
                if qc is None or isinstance(error, InputError | IdError):
                    raise  # a damaged study: no other reading mends it
                # ADBC's own errors (e.g. a time column typed differently in old rows): the
                # ratings alone here, and QC reads the trials through SQLAlchemy (mos.qc).
                query = _ratings_query(dimensions, has_checks)
                ratings, trials = read.all(ranges, query, with_trials=False)
            tables = (sessions, stimuli.result(), viewers)
    except InputError:
        raise
    except Exception as error:  # ADBC raises its own DB-API errors
        raise InputError(f"{path}: cannot read the study ({first_line(error)})") from error
    finally:
        engine.dispose()
    return _from_database_tables(ratings, *tables, label=str(path)), trials


class _RangeReader:
    """Reads a SQLite study's ratings (and QC's trials) range by range on every core; each range
    is copied into compact columns at once, so that the driver's batches (text times included)
    go as soon as their range is read. ``packing``: each rating's ids read as one value
    (:class:`mos.study_sql.PackedIds`), where the study allows it."""

    def __init__(
        self,
        path: Path,
        dialect,
        dimensions: tuple[str, ...],
        sessions: pa.Table,
        viewers: pa.Table,
        trials_of: str | None,
        packing: PackedIds | None,
    ) -> None:
        self.path, self.dialect, self.dimensions, self.trials_of, self.packing = (
            path, dialect, dimensions, trials_of, packing,
        )  # fmt: skip
        # A trial's participant: its session's viewer, as a position among the viewers' codes.
        ids = id_column(viewers, "id")
        position = _mapper(ids, np.arange(ids.size, dtype=np.int32))
        participant = position(id_column(sessions, "viewer_id"))
        self.sessions = sessions
        self.participant_of_session = _mapper(id_column(sessions, "id"), participant)
        self.codes = viewers.column("code").combine_chunks()

    def all(
        self, ranges, query, with_trials: bool, lean: tuple | None = None
    ) -> tuple[dict[str, np.ndarray], pa.Table | None]:
        """The ratings as numpy columns, and the trials when ``query`` reads them. ``lean``:
        (probe, query): a range where the probe (:func:`_rating_qc_probe`) finds nothing is
        read by the leaner query."""
        parts = read_in_parallel(lambda span: self._read(query, span, with_trials, lean), ranges)
        names = list(parts[0][0])
        with ThreadPoolExecutor(2) as pool:  # numpy's copies leave the interpreter free
            joined = pool.map(lambda name: np.concatenate([part[0][name] for part in parts]), names)
            ratings = dict(zip(names, joined, strict=True))
        trials = None
        if parts[0][1] is not None:
            tables = [part[1] for part in parts]
            del parts
            trials = _joined(tables)
        return ratings, trials

    def _fetch(self, query) -> pa.Table:
        """The rows of ``query``, its ids packed where the study allows it."""
        if self.packing is not None:
            raw = fetch_sqlite_arrow(self.path, self.packing.packed(query), self.dialect)
            raw = self.packing.unpack(raw)
            if raw is not None:
                return raw
        return fetch_sqlite_arrow(self.path, query, self.dialect)

    def _read(
        self, query, span: tuple[int, int], with_trials: bool, lean: tuple | None
    ) -> tuple[dict[str, np.ndarray], pa.Table | None]:
        if lean is not None:
            probe = fetch_sqlite_arrow(self.path, lean[0](span), self.dialect)
            if not probe.column(0)[0].as_py():
                query = lean[1]
        raw = self._fetch(query.where(Rating.id.between(*span)))
        trials = None
        if with_trials:
            sessions = id_column(raw, "session")
            check = None
            if "is_check" in raw.column_names:
                check = pc.fill_null(pc.not_equal(raw.column("is_check"), 0), False)
                # Check trials are in no MOS, whose sittings are checked after the reading: theirs
                # here, before the look-up table gives them whichever participant it holds there.
                checks = sessions[check.to_numpy(zero_copy_only=False)]
                _check_present("sitting", checks, np.unique(checks), self.sessions, str(self.path))
            participant = self.participant_of_session(sessions)
            viewer = pa.DictionaryArray.from_arrays(participant, self.codes)
            trials = trial_columns(raw, viewer, self.trials_of)
            if check is not None:
                raw = raw.filter(pc.invert(check))
        ratings = _numpy_columns(raw.select(["stimulus", "session", "nsfw", *self.dimensions]))
        # copies: a view would keep the driver's whole batch (and its text) alive
        return {name: np.array(values) for name, values in ratings.items()}, trials


def _joined(tables: list[pa.Table]) -> pa.Table:
    """The ranges' ``tables`` (emptied: this holds the only reference) as one, each column in
    one piece. A column a range lacks is empty there; one dictionary per column, as in a CSV.
    Each column is made whole and its pieces go at once: QC then reads the columns as they
    are, where columns in pieces would be copied whole beside them (~0.5 GB at 10 M trials)."""
    table = pa.concat_tables(tables, promote_options="default").unify_dictionaries()
    tables.clear()
    for i in range(table.num_columns):
        table = table.set_column(i, table.field(i), table.column(i).combine_chunks())
    return table


def _read_database_sqlalchemy(url: str, dimensions: tuple[str, ...]) -> RatingTable:
    try:
        engine = make_engine(url, read_only=True)
        _check_study(engine, url)
        queries = (
            _ratings_query(dimensions, has_check_column(engine)),
            _sessions_query(),
            _stimuli_query(),
            _viewers_query(),
        )
        with engine.connect() as connection:
            frames = [pd.read_sql(query, connection) for query in queries]
    except InputError:
        raise
    except (SQLAlchemyError, ImportError) as error:
        raise InputError(f"{url}: cannot read the study ({first_line(error)})") from error
    try:
        tables = [pa.Table.from_pandas(frame, preserve_index=False) for frame in frames]
        _check_sittings(tables[1], tables[3], url)
        ratings = _numpy_columns(tables[0])
    # e.g. an id stored as text or as a fraction by hand
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as error:
        raise InputError(f"{url}: cannot read the study ({first_line(error)})") from error
    return _from_database_tables(ratings, *tables[1:], label=url)


def _numpy_columns(ratings: pa.Table) -> dict[str, np.ndarray]:
    """One batch of ratings as numpy: int64 ids, a boolean NSFW flag, float64 scores."""
    columns = {
        "stimulus": id_column(ratings, "stimulus"),
        "session": id_column(ratings, "session"),
        "nsfw": _flag_column(ratings.column("nsfw")),
    }
    for name in ratings.column_names:
        if name not in columns:
            columns[name] = _float_column(ratings, name)
    return columns


def _flag_column(column: pa.ChunkedArray) -> np.ndarray:
    """A boolean flag as SQLite (0/1 integers) or PostgreSQL (booleans) stores it, or as a CSV
    holds it (true/false, 1/0: other text raises ArrowInvalid); NULL = False."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.bool_())
    elif not pa.types.is_boolean(column.type):
        column = pc.not_equal(column, 0)
    return pc.fill_null(column, False).to_numpy(zero_copy_only=False)


def _from_database_tables(
    ratings: dict[str, np.ndarray],
    sessions: pa.Table,
    stimuli: pa.Table,
    viewers: pa.Table,
    label: str,
) -> RatingTable:
    """The :class:`RatingTable` of a study's ratings (numpy columns) and its other tables.

    Ids are checked and mapped on their distinct values: each rating's session and stimulus id
    is turned into a dense code once, and everything else — whether the id is in the study, a
    session's viewer — is looked up among the few thousand distinct ids. The stimuli (codes and
    metadata) are done on a second core while the sittings and viewers are done here."""
    if ratings["session"].size == 0:
        raise InputError(f"{label}: the study has no submitted ratings yet")
    session_ids = ratings.pop("session")
    with ThreadPoolExecutor(1) as pool:
        of_stimuli = pool.submit(_stimulus_codes, ratings.pop("stimulus"), stimuli, label)
        session_codes, session_rows = dense_codes(session_ids)
        _check_present("sitting", session_ids, session_rows, sessions, label)
        del session_ids
        viewer_of_session = _mapper(id_column(sessions, "id"), id_column(sessions, "viewer_id"))
        viewer_rows, viewer_of_code = np.unique(
            viewer_of_session(session_rows), return_inverse=True
        )
        viewer = viewer_of_code.astype(np.intp, copy=False)[session_codes]
        stimulus_codes, metadata = of_stimuli.result()
    viewer_code_of_id = dict(
        zip(viewers.column("id").to_pylist(), viewers.column("code").to_pylist(), strict=True)
    )
    nsfw = ratings.pop("nsfw")
    scores = ratings  # what is left: the score columns
    return RatingTable(
        viewer=viewer,
        stimulus=stimulus_codes,
        session=session_codes,
        scores=scores,
        nsfw=nsfw,
        viewer_ids=np.array([viewer_code_of_id[i] for i in viewer_rows.tolist()], dtype=object),
        stimulus_ids=metadata.index.to_numpy(dtype=object),
        n_sessions=len(session_rows),
        metadata=metadata.dropna(axis=1, how="all"),
    )


def _stimulus_codes(
    stimulus_ids: np.ndarray, stimuli: pa.Table, label: str
) -> tuple[np.ndarray, pd.DataFrame]:
    """Each rating's stimulus as a dense code, and the metadata of the coded stimuli in the
    codes' order (indexed by the stimulus key)."""
    codes, present = dense_codes(stimulus_ids)
    _check_present("stimulus", stimulus_ids, present, stimuli, label)
    metadata = stimuli.to_pandas().set_index("id").loc[present].set_index("key")
    metadata.index.name = "stimulus"
    return codes, metadata


def _check_present(
    what: str, ids: np.ndarray, present: np.ndarray, table: pa.Table, label: str
) -> None:
    """Whether the distinct ``present`` ids (of the ratings' ``ids``) are all rows of ``table``:
    a rating naming a sitting or stimulus that is not in the study is one line, not a traceback."""
    if not _member(present, id_column(table, "id")).all():
        unknown = ~_member(ids, id_column(table, "id"))  # once, for the message
        raise InputError(
            f"{label}: {int(unknown.sum())} rating(s) name a {what} that is not in the study "
            f"(first: id {ids[unknown][0]})"
        )


def _check_sittings(sessions: pa.Table, viewers: pa.Table, label: str) -> None:
    """A sitting whose viewer is not in the study (a hand-edited or damaged database: SQLite
    enforces no foreign key on what was written without it) is one line, not a traceback.
    Checked by each reader as soon as it has the two tables, before it maps a rating's sitting
    to its viewer."""
    unknown = ~_member(id_column(sessions, "viewer_id"), id_column(viewers, "id"))
    if unknown.any():
        raise InputError(
            f"{label}: {int(unknown.sum())} sitting(s) name a viewer that is not in the study"
        )


def _member(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per id, whether it is among ``known``: a lookup table where the ids are compact and not
    negative, else a sorted search."""
    top = int(max(ids.max(initial=-1), known.max(initial=-1)))
    negative = min(ids.min(initial=0), known.min(initial=0)) < 0
    if negative or not _compact(top, known.size):
        return np.isin(ids, known)
    table = np.zeros(top + 1, dtype=bool)
    table[known] = True
    return table[ids]


def _mapper(keys: np.ndarray, values: np.ndarray):
    """A function from ids (each one of ``keys``) to their ``values``: a dense table indexed by
    id when the keys are compact, as the app's ids are (O(n)); else a search among the sorted
    keys (ids an import or a hand edit made sparse: a dense table of a 10¹² id would not fit)."""
    if _compact(int(keys.max(initial=-1)), keys.size) and keys.min(initial=0) >= 0:
        # Sized by the largest key of the table, not of the ratings: in a live study the newest
        # sittings (just opened, warm-ups only, abandoned) have ids above every rated one.
        table = np.zeros(int(keys.max(initial=-1)) + 1, dtype=values.dtype)
        table[keys] = values
        return table.__getitem__
    order = np.argsort(keys, kind="stable")
    ordered_keys, ordered_values = keys[order], values[order]
    return lambda ids: ordered_values[np.searchsorted(ordered_keys, ids)]


def _compact(top: int, count: int) -> bool:
    """Whether ids up to ``top`` for ``count`` items are dense enough for a lookup table."""
    return top < 4 * count + (1 << 20)


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    return pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)


def compact_codes(ids: np.ndarray) -> np.ndarray:
    """Codes that group the rows as ``ids`` do, small enough to count by (``np.bincount``, an
    array as long as the largest code): the ids themselves where they are non-negative and below
    a quarter of the rows (or a million), as a study's stimulus ids are; else :func:`dense_codes`."""
    if ids.min(initial=0) >= 0 and int(ids.max(initial=-1)) < (ids.size >> 2) + (1 << 20):
        return ids
    return dense_codes(ids)[0]


def dense_codes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map integer ids to codes 0..k-1 in the order of the ids, and the k distinct ids: with a
    lookup table where they are compact and non-negative (O(n), no sort), else (see
    :func:`_mapper`) by sorting."""
    if ids.min(initial=0) < 0 or not _compact(int(ids.max(initial=-1)), ids.size):
        present, codes = np.unique(ids, return_inverse=True)
        return codes.astype(np.intp, copy=False), present
    present = np.flatnonzero(np.bincount(ids))
    lookup = np.empty(int(ids.max()) + 1, dtype=np.intp)  # intp: bincount takes it without a copy
    lookup[present] = np.arange(present.shape[0], dtype=np.intp)
    return lookup[ids], present


# --------------------------------------------------------------------------- CSV


def read_csv_table(path: Path) -> pa.Table:
    """A raw-ratings CSV as Arrow, text columns dictionary-encoded, the exports' formula escape
    undone (:mod:`studydb.csvcells`): the one reader of the CSV for the MOS and for QC, so both
    see the same viewer codes."""
    try:
        header = _csv_header(path)
        options = pacsv.ConvertOptions(
            column_types={c: TEXT for c in ("viewer", "stimulus", "session") if c in header},
            auto_dict_encode=True,  # every other text column too, however many values it has
            auto_dict_max_cardinality=2**31 - 1,
        )
        table = pacsv.read_csv(path, convert_options=options).unify_dictionaries()
        pa.default_memory_pool().release_unused()  # the reader's parse buffers
        twice = sorted({name for name in table.column_names if header.count(name) > 1})
        if twice:
            raise InputError(f"{path}: column(s) named twice in the header: {', '.join(twice)}")
        return _restore_text_cells(table)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV of ratings ({first_line(error)})") from error


def _ratings_from_csv(table: pa.Table, path: Path, dimensions: tuple[str, ...]) -> RatingTable:
    """The ratings of a CSV read by :func:`read_csv_table`; text columns stay dictionary-encoded.

    Everything done to text (undoing the exports' formula escape, telling viewers, stimuli and
    sessions apart, checking that a metadata column holds one value per stimulus) is done once
    per distinct value or on the integer codes, never once per rating.
    """
    columns = table.column_names
    for required in ("viewer", "stimulus", *dimensions):
        if required not in columns:
            raise InputError(
                f"{path}: no column '{required}' (columns are: {', '.join(columns)}); "
                "choose score columns with --dimensions"
            )
    if table.num_rows == 0:
        raise InputError(f"{path}: no ratings")
    try:
        rows = _test_rows(table)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InputError(
            f"{path}: 'warmup' or 'check' column unreadable ({first_line(error)})"
        ) from error
    if rows is not None and rows.size == 0:
        raise InputError(f"{path}: no test ratings (every rating is a warm-up or a check trial)")
    # The steps are numpy, pandas and Arrow passes that mostly leave the interpreter free: each
    # runs on one of two cores, and their results (and errors) are taken in this order.
    with ThreadPoolExecutor(2) as pool:
        factorized = {
            name: pool.submit(_factorize, table.column(name), rows)
            for name in ("viewer", "stimulus", "session")
            if name in columns
        }
        values = {name: pool.submit(_score_column, table, name, rows) for name in dimensions}
        viewer, viewer_ids, viewer_codes = factorized["viewer"].result()
        stimulus, stimulus_ids, _ = factorized["stimulus"].result()
        metadata_columns = [c for c in columns if c not in _RESERVED_CSV_COLUMNS | set(dimensions)]
        metadata = pool.submit(
            _per_stimulus_metadata, table, metadata_columns, rows, stimulus, stimulus_ids
        )
        for name, ids, codes in (
            ("viewer", viewer_ids, viewer),
            ("stimulus", stimulus_ids, stimulus),
        ):
            empty = np.flatnonzero(ids == "")  # the reader keeps an empty text cell as ""
            if empty.size:
                count = int(np.count_nonzero(codes == empty[0]))
                raise InputError(f"{path}: {count} rating(s) have an empty {name}")
        if "session" in factorized:  # a session is a (viewer, session) pair
            _, _, session_codes = factorized["session"].result()
            pair = viewer_codes.astype(np.int64)  # in place: one array of ratings, not three
            pair *= int(session_codes.max(initial=0)) + 1
            pair += session_codes
            session, session_ids = pd.factorize(pair)
            del pair
            session = session.astype(np.intp, copy=False)
        else:  # one session per viewer
            session, session_ids = viewer, viewer_ids
        scores = {}
        for name, job in values.items():
            try:
                scores[name] = job.result()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise InputError(f"{path}: column '{name}' is not numeric") from error
        nsfw = None
        if "nsfw" in columns:
            try:
                nsfw = take_rows(_flag_column(_plain(table.column("nsfw"))), rows)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise InputError(
                    f"{path}: column 'nsfw' holds a value that is no flag ({first_line(error)})"
                ) from error
        return RatingTable(
            viewer=viewer,
            stimulus=stimulus,
            session=session,
            scores=scores,
            nsfw=nsfw,
            viewer_ids=viewer_ids,
            stimulus_ids=stimulus_ids,
            n_sessions=len(session_ids),
            metadata=metadata.result(),
        )


def _score_column(table: pa.Table, name: str, rows: np.ndarray | None) -> np.ndarray:
    """A score column as floats over ``rows`` (Arrow raises for text that is no number)."""
    values = pc.cast(_plain(table.column(name)), pa.float64())
    return take_rows(values.to_numpy(zero_copy_only=False), rows)


TEXT = pa.dictionary(pa.int32(), pa.string())
"""How the CSV reader keeps text: one copy of each distinct value, an integer code per cell."""


def _restore_text_cells(table: pa.Table) -> pa.Table:
    """Undo the exports' spreadsheet-formula escape (:mod:`studydb.csvcells`) in text columns.

    The escape is undone in each column's dictionary (its distinct values, shared by every chunk
    after ``unify_dictionaries``); two raw values that become one text get one code.
    """
    for index, name in enumerate(table.column_names):
        column = table.column(index)
        if not pa.types.is_dictionary(column.type) or column.num_chunks == 0:
            continue
        dictionary = column.chunk(0).dictionary
        restored = pc.replace_substring_regex(
            dictionary, RESTORE_PATTERN, r"\1", max_replacements=1
        )
        if restored.equals(dictionary):
            continue
        merged, uniques = pd.factorize(restored.to_numpy(zero_copy_only=False))
        new_dictionary = pa.array(uniques, type=dictionary.type)
        chunks = [_recoded(chunk, merged, new_dictionary) for chunk in column.chunks]
        table = table.set_column(index, name, pa.chunked_array(chunks, type=column.type))
    return table


def _recoded(
    chunk: pa.DictionaryArray, merged: np.ndarray, dictionary: pa.Array
) -> pa.DictionaryArray:
    """``chunk`` over ``dictionary``, its old codes mapped through ``merged``."""
    if len(dictionary) == len(merged):  # nothing merged: the codes stay
        return pa.DictionaryArray.from_arrays(chunk.indices, dictionary)
    codes = merged[pc.fill_null(chunk.indices, 0).to_numpy(zero_copy_only=False)]
    valid = chunk.indices.is_valid().to_numpy(zero_copy_only=False)
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32(), mask=~valid), dictionary)


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column decoded to its values (for casts that want plain arrays)."""
    if pa.types.is_dictionary(column.type):
        return pc.cast(column, column.type.value_type)
    return column


def _test_rows(table: pa.Table) -> np.ndarray | None:
    """Indices of the rows that are test trials (no warm-up, no check); None when all are."""
    keep = ~warmup_flags(table)
    if "check" in table.column_names:
        check = pc.not_equal(pc.cast(_plain(table.column("check")), pa.string()), "")
        keep &= ~pc.fill_null(check, False).to_numpy(zero_copy_only=False)
    return None if keep.all() else np.flatnonzero(keep)


def warmup_flags(table: pa.Table) -> np.ndarray:
    """Per row of a CSV table, whether it is a warm-up trial (all False without a column)."""
    if "warmup" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return pc.cast(_plain(table.column("warmup")), pa.bool_()).to_numpy(zero_copy_only=False)


def take_rows(values: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """``values[rows]``; all of them (no copy) when ``rows`` is None."""
    return values if rows is None else values[rows]


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as handle:
        return [name.strip() for name in handle.readline().rstrip("\r\n").split(",")]


def _factorize(
    column: pa.ChunkedArray, rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of a dictionary-encoded text column over ``rows``, numbered in order of first
    appearance; the distinct texts in that order; and the column's own dictionary codes."""
    if column.null_count:
        raise InputError(f"{column.null_count} rating(s) have an empty viewer, stimulus or session")
    codes = take_rows(dictionary_codes(column), rows)
    dense, order = pd.factorize(codes)
    dictionary = column.chunk(0).dictionary
    names = np.asarray(dictionary.take(pa.array(order)).to_pylist(), dtype=object)
    return dense.astype(np.intp, copy=False), names, codes


def dictionary_codes(column: pa.ChunkedArray) -> np.ndarray:
    """The dictionary codes of every cell of a (unified) dictionary-encoded column; -1 if empty."""
    parts = [  # a view of each chunk's codes where it has no empty cell: one copy, not two
        (pc.fill_null(chunk.indices, -1) if chunk.null_count else chunk.indices).to_numpy(
            zero_copy_only=False
        )
        for chunk in column.chunks
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)


def _per_stimulus_metadata(
    table: pa.Table,
    columns: list[str],
    rows: np.ndarray | None,
    stimulus: np.ndarray,
    stimulus_ids: np.ndarray,
) -> pd.DataFrame | None:
    """Extra CSV columns that hold one value per stimulus (e.g. sureal's ``content``).

    A column is kept when every rating of a stimulus has the value of its first rating (missing
    values counting as one value); it is compared on integer codes (:func:`_one_per_stimulus`).
    """
    if not columns:
        return None
    # stimulus codes are numbered in order of first appearance: each new code marks a first row
    running = np.maximum.accumulate(stimulus)
    first = np.flatnonzero(np.concatenate(([True], running[1:] > running[:-1])))
    first_rows = first if rows is None else rows[first]
    kept = {}
    for name in columns:
        column = table.column(name)
        if _one_per_stimulus(_value_codes(column), rows, first_rows, stimulus):
            kept[name] = _plain(column).take(pa.array(first_rows)).to_pandas()
    if not kept:
        return None
    return pd.DataFrame(kept).set_axis(pd.Index(stimulus_ids, name="stimulus"))


def _one_per_stimulus(
    codes: np.ndarray,
    rows: np.ndarray | None,
    first_rows: np.ndarray,
    stimulus: np.ndarray,
    step: int = 1 << 20,
) -> bool:
    """Whether the code of each of ``rows`` (all when None) is that of its stimulus's first row,
    compared a slice of ratings at a time: a column that changes from one rating to the next (a
    trial's position) is told at the first slice, and no temporary spans the whole study."""
    first = codes[first_rows]
    for start in range(0, stimulus.size, step):
        part = slice(start, start + step)
        own = codes[part] if rows is None else codes[rows[part]]
        if not np.array_equal(own, first[stimulus[part]]):
            return False
    return True


def _value_codes(column: pa.ChunkedArray) -> np.ndarray:
    """Per cell, an array equal exactly where the values are (missing values all equal)."""
    if pa.types.is_dictionary(column.type):
        return dictionary_codes(column)
    kind = column.type
    if (pa.types.is_integer(kind) or pa.types.is_boolean(kind)) and not column.null_count:
        return column.to_numpy()
    codes, _ = pd.factorize(column.to_numpy(), use_na_sentinel=False)
    return codes


# --------------------------------------------------------------------------- validation


def _validate(table: RatingTable, score_range: tuple[float, float]) -> None:
    low, high = score_range
    for name, values in table.scores.items():
        bad = np.isnan(values)
        if bad.any():
            where = _describe_row(table, int(np.flatnonzero(bad)[0]))
            raise InputError(f"{bad.sum()} '{name}' score(s) are missing or NaN (first: {where})")
        outside = (values < low) | (values > high)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise InputError(
                f"{outside.sum()} '{name}' score(s) lie outside {low:g}–{high:g} "
                f"(first: {values[first]:g}, {_describe_row(table, first)})"
            )


def _describe_row(table: RatingTable, row: int) -> str:
    return (
        f"viewer {table.viewer_ids[table.viewer[row]]}, "
        f"stimulus {table.stimulus_ids[table.stimulus[row]]}"
    )


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
