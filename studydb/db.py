"""Opening and creating study databases: a SQLite path or any SQLAlchemy URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.orm import Session as OrmSession

from studydb.schema import SCHEMA_VERSION, Base, StudyInfo

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
    engine = create_engine(url)
    if engine.dialect.name == "sqlite" and not read_only:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    return engine


def create_study(location: str | Path) -> Engine:
    """Create every table of an empty study (idempotent) and record the schema version."""
    engine = make_engine(location)
    Base.metadata.create_all(engine)
    with OrmSession(engine) as db, db.begin():
        if db.get(StudyInfo, "schema_version") is None:
            db.add(StudyInfo(key="schema_version", value=str(SCHEMA_VERSION)))
    return engine


def missing_tables(engine: Engine) -> list[str]:
    """The study tables this database lacks: a foreign database lacks them all."""
    present = set(inspect(engine).get_table_names())
    return [name for name in REQUIRED_TABLES if name not in present]


def schema_version(engine: Engine) -> int | None:
    """The schema version recorded in the database, or None for a database that records none."""
    with OrmSession(engine) as db:
        value = db.scalar(select(StudyInfo.value).where(StudyInfo.key == "schema_version"))
    return int(value) if value is not None else None
