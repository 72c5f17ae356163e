"""The lab app and ``mos.compute`` on PostgreSQL, for a lab that outgrows SQLite.

Runs when ``CMC_POSTGRES_URL`` names a *throwaway* database (its tables are dropped first), e.g.
``CMC_POSTGRES_URL=postgresql+psycopg://cmc:cmc@127.0.0.1/cmcstudy pytest tests/test_postgres.py``
with ``pip install "psycopg[binary]"``; skipped otherwise.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest

from mos.compute import main as mos_main
from studydb import Base, make_engine, upgrade
from tests.annotate_helpers import (
    ADMIN_PASSWORD,
    ENVIRONMENT,
    Browser,
    import_study,
    make_app,
    make_study,
)

URL = os.environ.get("CMC_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set CMC_POSTGRES_URL to a throwaway database")


@pytest.fixture
def fresh_database():
    engine = make_engine(URL)
    Base.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS study_info")
    engine.dispose()
    return URL


def test_a_study_on_postgresql_end_to_end(fresh_database, tmp_path):
    manifest = make_study(tmp_path / "images", references=2, per_reference=3)
    app = make_app(tmp_path / "instance", DATABASE=fresh_database, VIEWERS_PER_STIMULUS=3)
    import_study(app, manifest)
    # Each viewer skips the image it had as its warm-up: three viewers leave three images one
    # rating short, so a fourth is let in to make them up (issue 10), and a fifth is turned away.
    for _ in range(4):
        viewer = Browser(app)
        viewer.register()
        while (position := viewer.current_position()) is not None:
            scores = (1 + position % 4, 1 + position % 3)
            assert viewer.rate(position, *scores).status_code == 303
            assert viewer.rate(position, *scores).status_code == 303  # a resubmit adds nothing
    late = Browser(app)
    late.enrol()
    assert b"nothing left for you to rate" in late.post("/environment", ENVIRONMENT).data
    admin = Browser(app)
    admin.get("/admin/login")
    admin.post("/admin/login", {"password": ADMIN_PASSWORD})
    assert admin.get("/admin/").status_code == 200
    export = admin.get("/admin/export/trials.csv")
    assert (
        export.status_code == 200 and export.data.count(b"\n") == 1 + 4 * 6
    )  # a warm-up and 5 tests each
    assert admin.get("/admin/export/ratings.db").status_code == 404  # SQLite copies only
    out = tmp_path / "mos"
    assert mos_main([fresh_database, "--out", str(out), "--quiet", "--screening", "none"]) == 0
    mos = pd.read_csv(out / "mos.csv")
    assert len(mos) == 6 and (mos["consistency_n"] >= 3).all()
    assert upgrade(make_engine(fresh_database)) == []  # idempotent on PostgreSQL too
