"""Opening and creating study databases: a SQLite path or any SQLAlchemy URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, inspect, select
from sqlalchemy.orm import Session as OrmSession

from studydb.schema import ONE_OPEN_SITTING, SCHEMA_VERSION, Base, StudyInfo

REQUIRED_TABLES = ("viewers", "stimuli", "sessions", "ratings")


def database_url(location: str | Path) -> str:
    """Turn a filesystem path into a SQLite URL; leave anything with a scheme (``postgresql://``) as is."""
    text = str(location)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def make_engine(location: str | Path, read_only: bool = False) -> Engine:
    """An engine on the study database; for writing, SQLite gets WAL and enforced foreign keys.

    WAL lets the analysis read a live study while the lab app keeps writing to it. A reader
    (``read_only``) changes nothing in the file, not even its journal mode.
    """
    url = database_url(location)
    # A server database (PostgreSQL) may restart or drop connections: each pooled connection is
    # checked before use, so a blip costs the requests during it (a 503), not every later one.
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite" and not read_only:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL's recommended setting: a commit no longer waits for an fsync (~10 ms each,
            # several per participant page), yet a crashed or killed server loses nothing
            # committed; only a power cut can drop the last transactions (never corrupts).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def create_study(location: str | Path) -> Engine:
    """Open a study database, creating it or upgrading an older one in place (idempotent)."""
    engine = make_engine(location)
    upgrade(engine)
    return engine


def upgrade(engine: Engine) -> list[str]:
    """Bring a study database to the current schema without touching its data.

    Schema changes are kept additive — new tables, new nullable columns — so an upgrade only ever
    creates: missing tables, then missing columns (``ALTER TABLE … ADD COLUMN``). Returns what it
    added. A database newer than this code is refused rather than guessed at.
    """
    found = schema_version(engine) if "study_info" in inspect(engine).get_table_names() else None
    if found is not None and found > SCHEMA_VERSION:
        raise RuntimeError(
            f"this study database has schema version {found}; this cmc-lab knows up to "
            f"{SCHEMA_VERSION}: upgrade cmc-lab"
        )
    added = []
    present = set(inspect(engine).get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in present:
            added.append(f"table {table.name}")
    Base.metadata.create_all(engine)
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            existing = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in existing:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                connection.exec_driver_sql(
                    f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'
                )
                added.append(f"column {table.name}.{column.name}")
        present_indexes = {
            name: {index["name"] for index in inspect(connection).get_indexes(name)}
            for name in inspect(connection).get_table_names()
        }
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                if index.name in present_indexes.get(table.name, set()):
                    continue
                if index.name == ONE_OPEN_SITTING:
                    _close_all_but_newest_open_sitting(connection)
                index.create(connection)
                added.append(f"index {index.name}")
    with OrmSession(engine) as db, db.begin():
        db.merge(StudyInfo(key="schema_version", value=str(SCHEMA_VERSION)))
    return added


def _close_all_but_newest_open_sitting(connection) -> None:
    """Before v3 nothing stopped a viewer from holding two open sittings; the older ones were
    already dead ends, so they are closed as abandoned and the newest stays resumable."""
    sessions = Base.metadata.tables["sessions"]
    newest = (
        select(func.max(sessions.c.id))
        .where(sessions.c.closed_reason.is_(None))
        .group_by(sessions.c.viewer_id)
    )
    connection.execute(
        sessions.update()
        .where(sessions.c.closed_reason.is_(None), sessions.c.id.not_in(newest))
        .values(closed_reason="abandoned")
    )


def missing_tables(engine: Engine) -> list[str]:
    """The study tables this database lacks: a foreign database lacks them all."""
    present = set(inspect(engine).get_table_names())
    return [name for name in REQUIRED_TABLES if name not in present]


def schema_version(engine: Engine) -> int | None:
    """The schema version recorded in the database, or None for a database that records none."""
    with OrmSession(engine) as db:
        value = db.scalar(select(StudyInfo.value).where(StudyInfo.key == "schema_version"))
    return int(value) if value is not None else None
