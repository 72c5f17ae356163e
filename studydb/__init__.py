"""The one study-database schema, shared by the annotation app (which writes it) and `mos` (which reads it).

It imports SQLAlchemy only — never Flask — so every stage can read a study without the web app.
"""

from studydb.db import create_study, database_url, make_engine, missing_tables, upgrade
from studydb.schema import (
    SCHEMA_VERSION,
    Base,
    Rating,
    Session,
    Stimulus,
    StudyGroup,
    StudyInfo,
    Trial,
    Viewer,
)

__all__ = [
    "create_study",
    "database_url",
    "make_engine",
    "missing_tables",
    "SCHEMA_VERSION",
    "Base",
    "Rating",
    "Session",
    "Stimulus",
    "StudyGroup",
    "StudyInfo",
    "Trial",
    "Viewer",
    "upgrade",
]
