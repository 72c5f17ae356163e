"""The experimenter's side: live progress, viewer screening, the NSFW queue, and exports.

Protected by a password whose hash lives in the instance folder; there is no default password —
without one, the admin pages say how to set it and stay closed. Following OWASP's authentication
guidance: failed logins are counted per client address and, past ``ADMIN_LOGIN_LIMIT``, refused
with 429 for the rest of the window (even with the right password) and every failure is logged;
an admin session carries the *admin epoch* of :mod:`annotate.private`, so logout, a new password
and each demo start revoke every session issued before (a copied cookie included), and it expires
after ``ADMIN_SESSION_MINUTES``. Admin pages and exports are never cached (``no-store``).
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
from contextlib import contextmanager
from functools import wraps
from pathlib import Path

import numpy as np
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from annotate import live, sittings
from annotate.checks import FileCheckCache, file_problems
from annotate.db import get_db
from annotate.export import copy_database, to_safe_csv, trials_frame, viewers_frame
from annotate.forms import ActionForm, LoginForm
from annotate.private import PASSWORD_FILE, current_epoch, read_optional, rotate_epoch
from annotate.roster import ACTIONS, STATES, RosterCache
from annotate.tables import BadQuery, table_page
from annotate.throttle import DatabaseThrottle
from mos.qc import SIGNAL_COLUMNS, ExclusionRules
from studydb import Rating, Session, Stimulus, StudyGroup

bp = Blueprint("admin", __name__, url_prefix="/admin")
log = logging.getLogger("annotate")
MISSING_FILES_SHOWN = 50  # the dashboard lists this many; `python -m annotate check` lists all
MAX_ID = 2**63 - 1  # larger ids cannot be in the database (and would overflow SQLite): 404


class AddressLocks:
    """One lock per client address while it is in use: an address's password checks run one at
    a time, so guesses posted at once (one per server thread) cannot all pass the throttle before
    the first failure is counted. Other addresses (the experimenter's) are not held up."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # address -> [lock, holders and waiters]

    @contextmanager
    def hold(self, address: str):
        with self._guard:
            entry = self._locks.setdefault(address, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[address]


def init_app(app: Flask) -> None:
    """The login throttle (in the study database: every server process and a restart count
    the same failures) and live screening."""
    try:
        app.extensions["login_throttle"] = DatabaseThrottle(
            app.extensions["study_engine"], "admin-login", app.config["ADMIN_LOGIN_LIMIT"]
        )
    except ValueError as error:
        raise ValueError(f"ADMIN_LOGIN_LIMIT = {error}") from None
    app.extensions["login_locks"] = AddressLocks()
    live.init_app(app)
    app.extensions["roster"] = RosterCache(
        app.extensions["study_engine"],
        app.extensions["trial_tally"],
        ExclusionRules(**dict(app.config["QC_RULES"])),
        sittings.Design.from_config(app.config),
        app.config["SCREENING_REFRESH_SECONDS"],
    )
    app.extensions["file_check"] = FileCheckCache(
        app.extensions["study_engine"], app.config["FILE_CHECK_SECONDS"]
    )


def password_hash() -> str | None:
    """The configured hash, else the one in the instance folder, read now: a new password
    (``set-password``) takes effect without a restart."""
    configured = current_app.config.get("ADMIN_PASSWORD_HASH")
    return configured or read_optional(Path(current_app.instance_path) / PASSWORD_FILE)


def admin_epoch() -> str:
    """The epoch in force, read once per request (a dashboard builds many image URLs)."""
    if "admin_epoch" not in g:
        g.admin_epoch = current_epoch(Path(current_app.instance_path))
    return g.admin_epoch


def admin_session_valid() -> bool:
    """Signed in under the current epoch, and not longer ago than ``ADMIN_SESSION_MINUTES``."""
    since = session.get("admin_since")
    if session.get("admin") != admin_epoch() or not isinstance(since, int | float):
        return False
    return time.time() - since < 60 * current_app.config["ADMIN_SESSION_MINUTES"]


def admin_required(view):
    @wraps(view)
    def wrapped(**kwargs):
        if not password_hash():
            return render_template("admin/no_password.html"), 503
        if not admin_session_valid():
            session.pop("admin", None)
            session.pop("admin_since", None)
            return redirect(url_for("admin.login"))
        return view(**kwargs)

    return wrapped


@bp.after_request
def _never_cache(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/login", methods=["GET", "POST"])
def login():
    stored = password_hash()
    if not stored:
        return render_template("admin/no_password.html"), 503
    throttle = current_app.extensions["login_throttle"]
    address = request.remote_addr or "unknown"
    form = LoginForm()
    if request.method == "POST" and not throttle.test(address):
        return _locked_out(throttle, address)
    if form.validate_on_submit():
        # Test, check and count as one step per address (see AddressLocks).
        with current_app.extensions["login_locks"].hold(address):
            if not throttle.test(address):
                return _locked_out(throttle, address)
            right = check_password_hash(stored, form.password.data)
            if not right:
                throttle.hit(address)
        if right:
            session.clear()
            session["admin"] = admin_epoch()
            session["admin_since"] = time.time()
            log.info("admin login from %s", address)
            return redirect(url_for("admin.dashboard"))
        log.warning("failed admin login from %s", address)
        form.password.errors.append("Wrong password.")
        return render_template("admin/login.html", form=form), 403
    return render_template("admin/login.html", form=form)


def _locked_out(throttle: DatabaseThrottle, address: str):
    """429 for the rest of the window, with when to try again."""
    wait = throttle.retry_after(address)
    minutes = max(1, int(np.ceil(wait / 60)))
    log.warning("admin login refused (locked out): %s", address)
    response = render_template("admin/locked.html", minutes=minutes)
    return response, 429, {"Retry-After": str(max(1, int(np.ceil(wait))))}


@bp.route("/logout", methods=["POST"])
def logout():
    """Log out everywhere: a new epoch refuses every admin session issued before."""
    ActionForm().validate_on_submit() or abort(400)
    if admin_session_valid():
        g.admin_epoch = rotate_epoch(Path(current_app.instance_path))
    session.clear()
    return redirect(url_for("study.index"))


@bp.route("/")
@admin_required
def dashboard():
    """Summary first, then one page of the sittings (sortable, filterable), the live screening
    and the NSFW queue; the per-sitting and per-participant figures come from the background
    :class:`annotate.roster.Roster`, so a load never reads every rating."""
    db = get_db()
    target = current_app.config["VIEWERS_PER_STIMULUS"]
    cache = current_app.extensions["live_screening"]
    last_rating = db.scalar(select(func.coalesce(func.max(Rating.id), 0)))
    wait = current_app.config["SCREENING_WAIT_SECONDS"]
    snapshot = cache.latest(last_rating, wait=wait)
    roster = _roster(db)
    table = _page(
        roster.sittings if roster else None, SITTING_COLUMNS, {"state": STATES}, "id", "desc"
    )
    return render_template(
        "admin/dashboard.html",
        groups=_group_progress(db, target),
        screening=snapshot,
        screening_error=cache.error,
        screening_behind=(last_rating - snapshot.last_rating) if snapshot else None,
        live=cache.screening,
        flagged=_flagged(db),
        roster=roster,
        roster_error=current_app.extensions["roster"].error,
        table=table,
        states=STATES,
        files=current_app.extensions["file_check"].latest(wait=wait),
        files_error=current_app.extensions["file_check"].error,
        files_shown=MISSING_FILES_SHOWN,
        shown=SHOWN,
        action=ActionForm(),
        target=target,
    )


SITTING_COLUMNS = ("id", "participant", "group", "started", "last", "rated", "state")
PARTICIPANT_COLUMNS = (
    "participant",
    "state",
    "rated",
    *(c for c in SIGNAL_COLUMNS if c not in ("participant", "gold_trials", "attention_trials")),
    "outcome",
    "excluded",
    "action",
    "last",
)
"""The quality table's sortable columns: the sitting, mos.qc's signals (the counts of check
trials show beside their failures), the pay outcome, the verdict and the platform action."""
SHOWN = 50  # rows of the dashboard's per-viewer screening and progress lists


def _roster(db):
    """The latest background roster (recomputed at once when it is quick and out of date)."""
    from annotate.roster import version

    wait = current_app.config["SCREENING_WAIT_SECONDS"]
    return current_app.extensions["roster"].latest(version(db), wait=wait)


def _page(frame, sortable, filters, default_sort, default_order="asc"):
    """One page of ``frame`` by this request's query string (400 for a value it cannot use)."""
    if frame is None:
        return None
    try:
        return table_page(
            frame, request.args, sortable, filters, default_sort=default_sort,
            default_order=default_order,
        )  # fmt: skip
    except BadQuery as error:
        abort(400, description=str(error))


@bp.route("/sittings/<int:sitting_id>/close", methods=["POST"])
@admin_required
def close_sitting(sitting_id: int):
    """Close a sitting by hand (a viewer who left, a broken machine): its unrated images go back
    to the pool, and the viewer continues with what is left in a new sitting."""
    if not ActionForm().validate_on_submit():
        abort(400)
    if sitting_id > MAX_ID:
        abort(404)
    db = get_db()
    sitting = db.get(Session, sitting_id) or abort(404)
    sittings.close(db, sitting, "closed by experimenter")
    current_app.extensions["roster"].refresh(wait=current_app.config["SCREENING_WAIT_SECONDS"])
    return redirect(url_for("admin.dashboard") + "#sittings", code=303)


@bp.route("/stimuli/<int:stimulus_id>/withhold", methods=["POST"])
@admin_required
def withhold(stimulus_id: int):
    """Toggle: a withheld image is shown in no sitting from now on, open ones included."""
    if not ActionForm().validate_on_submit():
        abort(400)
    if stimulus_id > MAX_ID:
        abort(404)
    db = get_db()
    stimulus = db.get(Stimulus, stimulus_id) or abort(404)
    stimulus.withheld = not stimulus.withheld
    db.commit()
    return redirect(url_for("admin.dashboard") + "#nsfw", code=303)


@bp.route("/stimuli/withhold-missing", methods=["POST"])
@admin_required
def withhold_missing():
    """Withhold every stimulus with a missing image file (checked now): a viewer stopped at one
    goes on with the next trial, and no later sitting plans it. 'show again' undoes it."""
    if not ActionForm().validate_on_submit():
        abort(400)
    db = get_db()
    broken = {problem.path for problem in file_problems(db)}
    for stimulus in db.scalars(select(Stimulus).where(Stimulus.withheld.is_(False))):
        if stimulus.distorted_path in broken or stimulus.reference_path in broken:
            stimulus.withheld = True
    db.commit()
    current_app.extensions["file_check"].refresh(wait=0)
    return redirect(url_for("admin.dashboard") + "#missing", code=303)


@bp.route("/quality")
@admin_required
def quality():
    """Per participant: the sitting's state, completion, the QC signals and verdict (mos.qc) and
    the platform action — summary first, one sortable, filterable page at a time."""
    db = get_db()
    roster = _roster(db)
    table = _page(
        roster.participants if roster else None,
        PARTICIPANT_COLUMNS,
        {"state": STATES, "action": ACTIONS, "excluded": ("True", "False")},
        "participant",
    )
    return render_template(
        "admin/quality.html",
        roster=roster,
        roster_error=current_app.extensions["roster"].error,
        table=table,
        rules=current_app.extensions["roster"].rules,
        states=STATES,
        actions=ACTIONS,
    )


@bp.route("/export/prolific.csv")
@admin_required
def export_prolific():
    """Every participant with the action to take and why, computed now (not the background
    roster): participant_id, action (approve / reject / review), state, the completion code's
    outcome (paid / failed_checks), reasons."""
    people = current_app.extensions["roster"].compute().participants
    frame = people.rename(columns={"participant": "participant_id", "why": "reasons"})[
        ["participant_id", "action", "state", "outcome", "reasons"]
    ]
    return _csv_download(frame, "prolific_actions.csv")


@bp.route("/export/prolific-<action>.txt")
@admin_required
def export_prolific_ids(action: str):
    """The participant ids of one action, one per line: what Prolific's bulk approve / reject
    box takes (paste, or upload as a list). Only completed sittings are approved or rejected."""
    if action not in ACTIONS:
        abort(404)
    people = current_app.extensions["roster"].compute().participants
    ids = people.loc[people["action"] == action, "participant"].astype(str)
    return send_file(
        io.BytesIO("".join(f"{i}\n" for i in ids).encode()),
        mimetype="text/plain",
        as_attachment=True,
        download_name=f"prolific_{action.replace(' ', '_')}.txt",
    )


@bp.route("/export/trials.csv")
@admin_required
def export_csv():
    return _csv_download(trials_frame(get_db()), "trials.csv")


@bp.route("/export/viewers.csv")
@admin_required
def export_viewers():
    return _csv_download(viewers_frame(get_db()), "viewers.csv")


def _csv_download(frame, name: str):
    return send_file(
        io.BytesIO(to_safe_csv(frame).encode()),
        mimetype="text/csv",
        as_attachment=True,
        download_name=name,
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


def _flagged(db) -> list[dict]:
    """Stimuli with NSFW reports, most reported first, with the viewers' reasons (one query)."""
    reports: dict[int, list[str]] = {}
    stimuli: dict[int, Stimulus] = {}
    for stimulus, reason in db.execute(
        select(Stimulus, Rating.nsfw_reason)
        .join(Rating, Rating.stimulus_id == Stimulus.id)
        .where(Rating.nsfw.is_(True))
    ):
        stimuli[stimulus.id] = stimulus
        reports.setdefault(stimulus.id, []).append(reason or "")
    ranked = sorted(reports.items(), key=lambda item: -len(item[1]))
    return [
        dict(stimulus=stimuli[stimulus_id], reports=len(r), reasons=" | ".join(r))
        for stimulus_id, r in ranked
    ]
