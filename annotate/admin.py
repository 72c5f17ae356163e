"""The experimenter's side: live progress, viewer screening, the NSFW queue, and exports.

Protected by a password whose hash lives in the instance folder; there is no default password —
without one, the admin pages say how to set it and stay closed.
"""

from __future__ import annotations

import io
import tempfile
from functools import wraps
from pathlib import Path

import numpy as np
from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    send_file,
    session,
    url_for,
)
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from annotate import sittings
from annotate.checks import file_problems
from annotate.db import get_db
from annotate.export import copy_database, trials_frame
from annotate.forms import ActionForm, LoginForm
from mos.observations import Observations
from mos.screening import SroccScreening
from studydb import Rating, Session, Stimulus, StudyGroup, Trial, Viewer

bp = Blueprint("admin", __name__, url_prefix="/admin")


def admin_required(view):
    @wraps(view)
    def wrapped(**kwargs):
        if not current_app.config.get("ADMIN_PASSWORD_HASH"):
            return render_template("admin/no_password.html"), 503
        if not session.get("admin"):
            return redirect(url_for("admin.login"))
        return view(**kwargs)

    return wrapped


@bp.route("/login", methods=["GET", "POST"])
def login():
    stored = current_app.config.get("ADMIN_PASSWORD_HASH")
    if not stored:
        return render_template("admin/no_password.html"), 503
    form = LoginForm()
    if form.validate_on_submit():
        if check_password_hash(stored, form.password.data):
            session.clear()
            session["admin"] = True
            return redirect(url_for("admin.dashboard"))
        form.password.errors.append("Wrong password.")
        return render_template("admin/login.html", form=form), 403
    return render_template("admin/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    ActionForm().validate_on_submit() or abort(400)
    session.clear()
    return redirect(url_for("study.index"))


@bp.route("/")
@admin_required
def dashboard():
    db = get_db()
    target = current_app.config["VIEWERS_PER_STIMULUS"]
    return render_template(
        "admin/dashboard.html",
        viewers=_viewer_progress(db),
        groups=_group_progress(db, target),
        coverage=_coverage(db, target),
        screening=_live_srocc(db),
        flagged=_flagged(db),
        sittings=_sittings(db),
        missing_files=file_problems(db),
        action=ActionForm(),
        target=target,
    )


@bp.route("/sittings/<int:sitting_id>/close", methods=["POST"])
@admin_required
def close_sitting(sitting_id: int):
    """Close a sitting by hand (a viewer who left, a broken machine): its unrated images go back
    to the pool, and the viewer continues with what is left in a new sitting."""
    if not ActionForm().validate_on_submit():
        abort(400)
    db = get_db()
    sitting = db.get(Session, sitting_id) or abort(404)
    sittings.close(db, sitting, "closed by experimenter")
    return redirect(url_for("admin.dashboard") + "#sittings", code=303)


@bp.route("/stimuli/<int:stimulus_id>/withhold", methods=["POST"])
@admin_required
def withhold(stimulus_id: int):
    """Toggle: a withheld image is left out of every sitting drawn from now on."""
    if not ActionForm().validate_on_submit():
        abort(400)
    db = get_db()
    stimulus = db.get(Stimulus, stimulus_id) or abort(404)
    stimulus.withheld = not stimulus.withheld
    db.commit()
    return redirect(url_for("admin.dashboard") + "#nsfw", code=303)


@bp.route("/export/trials.csv")
@admin_required
def export_csv():
    text = trials_frame(get_db()).to_csv(index=False)
    return send_file(
        io.BytesIO(text.encode()),
        mimetype="text/csv",
        as_attachment=True,
        download_name="trials.csv",
    )


@bp.route("/export/ratings.db")
@admin_required
def export_db():
    engine = current_app.extensions["study_engine"]
    if engine.dialect.name != "sqlite":
        abort(404, description="database copies are offered for SQLite studies only")
    folder = Path(tempfile.mkdtemp(prefix="cmc-export-"))
    path = copy_database(engine, folder / "ratings.db")
    data = path.read_bytes()
    path.unlink()
    folder.rmdir()
    return send_file(
        io.BytesIO(data),
        mimetype="application/vnd.sqlite3",
        as_attachment=True,
        download_name="ratings.db",
    )


def _sittings(db) -> list[dict]:
    """Every sitting, newest first, with how far it got and why it closed (open ones first
    expire, so an abandoned sitting shows as such)."""
    sittings.expire(db, sittings.Design.from_config(current_app.config), sittings.now())
    rated = dict(
        db.execute(select(Rating.session_id, func.count()).group_by(Rating.session_id)).all()
    )
    planned = dict(
        db.execute(select(Trial.session_id, func.count()).group_by(Trial.session_id)).all()
    )
    codes = dict(db.execute(select(Viewer.id, Viewer.code)).all())
    return [
        dict(
            id=s.id,
            viewer=codes.get(s.viewer_id),
            group=s.group_id,
            started=s.started_at,
            last=s.last_active_at,
            rated=rated.get(s.id, 0),
            planned=planned.get(s.id, 0),
            reason=s.closed_reason,
        )
        for s in db.scalars(select(Session).order_by(Session.id.desc()))
    ]


def _viewer_progress(db) -> list[dict]:
    rows = db.execute(
        select(
            Viewer.code,
            func.count(func.distinct(Session.id)),
            func.count(Rating.id),
            func.max(Rating.submitted_at),
        )
        .select_from(Viewer)
        .outerjoin(Session, Session.viewer_id == Viewer.id)
        .outerjoin(Rating, Rating.session_id == Session.id)
        .group_by(Viewer.id)
        .order_by(Viewer.id)
    ).all()
    return [dict(code=c, sittings=s, ratings=r, last=last) for c, s, r, last in rows]


def _group_progress(db, target: int) -> list[dict]:
    groups = db.scalars(select(StudyGroup).order_by(StudyGroup.id)).all()
    size = dict(
        db.execute(select(Stimulus.group_id, func.count()).group_by(Stimulus.group_id)).all()
    )
    finished = dict(
        db.execute(
            select(Session.group_id, func.count(func.distinct(Session.viewer_id)))
            .where(Session.closed_reason == "completed")
            .group_by(Session.group_id)
        ).all()
    )
    running = dict(
        db.execute(
            select(Session.group_id, func.count())
            .where(Session.closed_reason.is_(None))
            .group_by(Session.group_id)
        ).all()
    )
    return [
        dict(
            name=g.name,
            size=size.get(g.id, 0),
            finished=finished.get(g.id, 0),
            running=running.get(g.id, 0),
            target=target,
        )
        for g in groups
    ]


def _coverage(db, target: int) -> dict:
    """Ratings per stimulus (warm-ups left out) against the target."""
    counts = dict(
        db.execute(
            select(Rating.stimulus_id, func.count(func.distinct(Session.viewer_id)))
            .join(Session, Rating.session_id == Session.id)
            .where(Rating.is_warmup.is_(False))
            .group_by(Rating.stimulus_id)
        ).all()
    )
    ids = db.scalars(select(Stimulus.id)).all()
    per_stimulus = np.array([counts.get(i, 0) for i in ids]) if ids else np.zeros(0)
    return dict(
        stimuli=len(ids),
        reached=int((per_stimulus >= target).sum()),
        median=float(np.median(per_stimulus)) if ids else 0.0,
        minimum=int(per_stimulus.min()) if ids else 0,
    )


def _live_srocc(db) -> list[dict]:
    """Each viewer's SRoCC with the running average, per dimension (the paper's screening)."""
    rows = db.execute(
        select(Session.viewer_id, Rating.stimulus_id, Rating.consistency, Rating.perception)
        .join(Session, Rating.session_id == Session.id)
        .where(Rating.is_warmup.is_(False))
    ).all()
    if not rows:
        return []
    data = np.array(rows, dtype=float)
    viewer_ids, viewer = np.unique(data[:, 0].astype(int), return_inverse=True)
    _, stimulus = np.unique(data[:, 1].astype(int), return_inverse=True)
    codes = dict(db.execute(select(Viewer.id, Viewer.code)).all())
    screening = SroccScreening()
    result = {int(v): {"viewer": codes[int(v)]} for v in viewer_ids}
    for column, name in ((2, "consistency"), (3, "perception")):
        obs = Observations(
            viewer, stimulus, data[:, column], len(viewer_ids), int(stimulus.max()) + 1
        )
        outcome = screening.fit(obs)
        for index, v in enumerate(viewer_ids):
            result[int(v)][name] = outcome.stats["srocc"].iloc[index]
            result[int(v)][f"{name}_low"] = bool(outcome.rejected[index])
    return list(result.values())


def _flagged(db) -> list[dict]:
    """Stimuli with NSFW reports, most reported first, with the viewers' reasons."""
    reports: dict[int, list[str]] = {}
    for stimulus_id, reason in db.execute(
        select(Rating.stimulus_id, Rating.nsfw_reason).where(Rating.nsfw.is_(True))
    ):
        reports.setdefault(stimulus_id, []).append(reason or "")
    ranked = sorted(reports.items(), key=lambda item: -len(item[1]))
    return [
        dict(stimulus=db.get(Stimulus, stimulus_id), reports=len(r), reasons=" | ".join(r))
        for stimulus_id, r in ranked
    ]
