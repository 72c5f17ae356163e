"""Review of issue 19 items 1–4 (incremental tally, throttles, several workers, admin at crowd
size), probed black-box as a crowd researcher and as an attacker would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
from sqlalchemy import delete, select

from annotate.db import get_db
from annotate.online import OnlineSettings, allocation_state
from annotate.sittings import Design
from studydb import Rating, Stimulus
from tests.test_crowd_scale import add_participants, full_recomputation, study  # noqa: F401
from tests.test_crowd_servers import ROOT, study_instance


def _agrees_with_full_recomputation(app) -> None:
    with app.app_context():
        db = get_db()
        plan = Design.from_config(app.config)
        config = OnlineSettings.from_config(app.config)
        new = allocation_state(db, plan, config)
        ids, _, precision, _ = full_recomputation(db, plan, config)
        assert np.array_equal(new.stimuli, ids)
        assert np.array_equal(new.precision.n, precision.n)
        np.testing.assert_allclose(new.precision.quality, precision.quality, rtol=1e-12)


def test_the_tally_follows_a_restore_that_takes_rating_ids_backwards(study):  # noqa: F811
    """A researcher restores the database from a backup (or removes a bad batch of ratings)
    while the server runs: rating ids go backwards and new ratings reuse them. The tally must
    not keep counting the ratings that are gone, nor skip the new ones under reused ids."""
    _add(study, seed=5, first=0, count=8)
    _agrees_with_full_recomputation(study)
    _remove(study, lambda top, _: Rating.id > top - 15)  # back to an earlier backup
    _agrees_with_full_recomputation(study)
    _add(study, seed=6, first=100, count=3)  # ids reused
    _agrees_with_full_recomputation(study)


def test_the_tally_sees_a_batch_removed_below_its_highest_rating(study, monkeypatch):  # noqa: F811
    """A bad batch removed from the middle of the study (the highest id stays): the count that
    notices it runs beside the requests, and the next sitting open acts on it."""
    import time

    import annotate.tally

    monkeypatch.setattr(annotate.tally, "RECOUNT_S", 0.0)
    _add(study, seed=7, first=0, count=8)
    _agrees_with_full_recomputation(study)
    _remove(study, lambda _, ids: Rating.id.between(ids[10], ids[30]))
    deadline = time.monotonic() + 10
    while True:
        try:
            _agrees_with_full_recomputation(study)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _add(app, seed: int, first: int, count: int) -> None:
    """``count`` completed participants straight into the study's database."""
    with app.app_context():
        db = get_db()
        stimuli = list(db.scalars(select(Stimulus.id)))
        add_participants(db, np.random.default_rng(seed), stimuli, first, count)


def _remove(app, which) -> None:
    """Delete the ratings ``which(highest id, sorted ids)`` selects, as a researcher would."""
    with app.app_context():
        db = get_db()
        ids = sorted(db.scalars(select(Rating.id)))
        db.execute(delete(Rating).where(which(ids[-1], ids)))
        db.commit()


def _serve(instance, *options: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "serve", "--http",
         *options],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_serve_workers_on_a_port_in_use_says_so_in_one_line(tmp_path):
    """gunicorn retried the bind for five seconds, logged ten lines and exited 0 after `serve`
    had announced the study; waitress's path says it in one line with exit 2."""
    instance = study_instance(tmp_path, f"sqlite:///{tmp_path / 'study.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _serve(instance, "--workers", "2", "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("annotate: error: cannot listen")
    assert "serving the online study" not in done.stdout


def test_serve_refuses_more_workers_than_the_machine_can_run(tmp_path):
    """--workers 100000 forked worker after worker until the machine stalled: more than four
    per core is refused before anything starts."""
    done = _serve(tmp_path, "--workers", str(4 * (os.cpu_count() or 1) + 1), "--port", "0")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("annotate: error: --workers")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_tolerated_attention_failure_is_no_ground_for_a_rejection():
    """A study that tolerates one failed attention check (QC_RULES max_attention_failures=1)
    and a participant excluded for a gold trial who failed one: the export said *reject*, on the
    attention ground the study's own rules do not count. It is for review; two failures are a
    rejection."""
    import pandas as pd

    from annotate.roster import participant_table

    viewers = pd.DataFrame({"viewer_id": [1, 2], "participant": ["tolerated", "twice"]})
    table = pd.DataFrame(
        {"id": [1, 2], "viewer_id": [1, 2], "state": "completed", "outcome": "failed_checks",
         "rated": 60, "planned": 60, "last": pd.Timestamp("2026-01-01", tz="UTC")}
    )  # fmt: skip
    verdicts = pd.DataFrame(
        {"viewer_id": [1, 2], "trials": 60, "gold_failures": [1, 0], "attention_failures": [1, 2],
         "gold_trials": 2, "attention_trials": 2, "fast_trials": 0, "excluded": True,
         "reasons": ["failed 1 gold trial(s)", "failed 2 attention check(s)"]}
    )  # fmt: skip
    people = participant_table(viewers, table, verdicts, max_attention_failures=1)
    assert dict(zip(people["participant"], people["action"], strict=True)) == {
        "tolerated": "review",
        "twice": "reject",
    }


def test_a_filter_value_the_table_cannot_have_is_a_400(study):  # noqa: F811
    """`?state=complete` (a typo of completed) or `?excluded=true` showed an empty table as if
    no participant matched; the docs promise a 400 for a value the tables cannot use."""
    from tests.annotate_helpers import ADMIN_PASSWORD, Browser

    admin = Browser(study)
    admin.get("/admin/login")
    admin.post("/admin/login", {"password": ADMIN_PASSWORD})
    for bad in ("state=complete", "action=pay", "excluded=true", "state=%27%20OR%201=1--"):
        answer = admin.get(f"/admin/quality?{bad}")
        assert answer.status_code == 400, bad
        assert "choose one of" in answer.get_data(as_text=True)
    assert admin.get("/admin/?state=paid").status_code == 400
    for good in ("state=completed", "action=approve", "excluded=True", "state=no+sitting"):
        assert admin.get(f"/admin/quality?{good}").status_code == 200, good
    assert admin.get("/admin/?state=time+limit").status_code == 200
