"""The one schema: importable without Flask, upgraded in place without losing a study's data."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from studydb import SCHEMA_VERSION, create_study, upgrade
from studydb.db import schema_version
from studydb.design import order_without_repeats, split_into_groups

VERSION_1 = """
CREATE TABLE study_info (key VARCHAR(64) PRIMARY KEY, value TEXT);
INSERT INTO study_info VALUES ('schema_version', '1');
CREATE TABLE viewers (id INTEGER PRIMARY KEY, code VARCHAR(64) UNIQUE, age INTEGER,
  gender VARCHAR(32), vision_screening VARCHAR(255), consented_at DATETIME, created_at DATETIME);
CREATE TABLE study_groups (id INTEGER PRIMARY KEY, name VARCHAR(64));
CREATE TABLE stimuli (id INTEGER PRIMARY KEY, key VARCHAR(255), distorted_path TEXT,
  reference_path TEXT, reference VARCHAR(255), model VARCHAR(64), mode VARCHAR(16), strength FLOAT,
  content_type VARCHAR(16), caption TEXT, extra JSON, group_id INTEGER, withheld BOOLEAN);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, viewer_id INTEGER, group_id INTEGER,
  started_at DATETIME, ended_at DATETIME, environment JSON);
CREATE TABLE ratings (id INTEGER PRIMARY KEY, session_id INTEGER, stimulus_id INTEGER,
  position INTEGER, consistency FLOAT, perception FLOAT, nsfw BOOLEAN, nsfw_reason TEXT,
  is_warmup BOOLEAN, is_repeat BOOLEAN, shown_at DATETIME, first_input_at DATETIME,
  submitted_at DATETIME);
INSERT INTO viewers (id, code) VALUES (1, 'ABC');
INSERT INTO study_groups VALUES (1, 'group-1');
INSERT INTO stimuli (id, key, distorted_path, reference_path, group_id, withheld)
  VALUES (1, 'img1', 'd.png', 'r.png', 1, 0);
INSERT INTO sessions (id, viewer_id, group_id) VALUES (1, 1, 1);
INSERT INTO ratings (session_id, stimulus_id, position, consistency, perception, nsfw, is_warmup,
  is_repeat) VALUES (1, 1, 0, 3.5, 2.0, 0, 0, 0);
"""


def test_an_old_study_is_upgraded_in_place_and_keeps_its_ratings(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    engine = create_study(path)
    assert schema_version(engine) == SCHEMA_VERSION
    assert upgrade(engine) == []  # idempotent
    engine.dispose()
    with sqlite3.connect(path) as db:
        assert db.execute("select consistency, perception from ratings").fetchall() == [(3.5, 2.0)]
        columns = {row[1] for row in db.execute("pragma table_info(sessions)")}
        assert {"closed_reason", "break_due_at", "break_until"} <= columns
        assert db.execute("select count(*) from trials").fetchone() == (0,)


def test_a_newer_database_is_refused(tmp_path):
    engine = create_study(tmp_path / "new.db")
    with engine.begin() as connection:
        connection.exec_driver_sql("update study_info set value = '999'")
    with pytest.raises(RuntimeError, match="schema version 999"):
        upgrade(engine)


def test_schema_imports_without_flask():
    code = "import sys, studydb, mos.compute; assert 'flask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_orders_avoid_back_to_back_references_and_groups_partition():
    rng = np.random.default_rng(0)
    reference = np.repeat(np.arange(10), 4)  # 10 references × 4 distortions
    for _ in range(50):
        order = order_without_repeats(np.arange(40), reference, rng)
        assert sorted(order) == list(range(40))
        assert (reference[order[1:]] != reference[order[:-1]]).all()
    groups = split_into_groups(801, 400, rng)
    assert [len(g) for g in groups] == [267, 267, 267]
    assert sorted(np.concatenate(groups)) == list(range(801))
