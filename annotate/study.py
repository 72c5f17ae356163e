"""The viewer's side: consent → registration → viewing environment → instructions → training →
trials (with enforced breaks) → done. The images are served by :mod:`annotate.media`.

Which viewer and which sitting a request belongs to comes only from the signed session cookie,
never from the form, so nobody can rate in someone else's sitting.
"""

from __future__ import annotations

import datetime as dt
import secrets
from functools import wraps

from flask import (
    Blueprint,
    current_app,
    redirect,
    render_template,
    session,
    url_for,
)
from sqlalchemy import select

from annotate import sittings
from annotate.db import get_db
from annotate.forms import ConsentForm, EnvironmentForm, RegisterForm, ResumeForm, TrialForm
from studydb import Session, Stimulus, Viewer

bp = Blueprint("study", __name__)

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read aloud


def viewer_required(view):
    @wraps(view)
    def wrapped(**kwargs):
        if current_viewer() is None:
            return redirect(url_for("study.index"))
        return view(**kwargs)

    return wrapped


def current_viewer() -> Viewer | None:
    viewer_id = session.get("viewer_id")
    return get_db().get(Viewer, viewer_id) if viewer_id is not None else None


def design() -> sittings.Design:
    return sittings.Design.from_config(current_app.config)


@bp.route("/")
def index():
    return render_template("index.html", resume=ResumeForm())


@bp.route("/consent", methods=["GET", "POST"])
def consent():
    form = ConsentForm()
    if form.validate_on_submit():
        session.clear()
        session["consented_at"] = sittings.now().isoformat()
        return redirect(url_for("study.register"))
    return render_template("consent.html", form=form, text=current_app.config["CONSENT_TEXT"])


@bp.route("/register", methods=["GET", "POST"])
def register():
    if "consented_at" not in session:
        return redirect(url_for("study.consent"))
    form = RegisterForm()
    if form.validate_on_submit():
        db = get_db()
        viewer = Viewer(
            code=_new_code(db),
            age=form.age.data,
            gender=form.gender.data,
            vision_screening=form.vision_screening.data,
            consented_at=dt.datetime.fromisoformat(session["consented_at"]),
        )
        db.add(viewer)
        db.commit()
        session["viewer_id"] = viewer.id
        return redirect(url_for("study.environment"))
    return render_template("register.html", form=form), 400 if form.errors else 200


@bp.route("/resume", methods=["POST"])
def resume():
    form = ResumeForm()
    if not form.validate_on_submit():
        return render_template("index.html", resume=form), 400
    code = form.code.data.strip().upper()
    viewer = get_db().scalar(select(Viewer).where(Viewer.code == code))
    if viewer is None:
        form.code.errors.append("No participant has this code.")
        return render_template("index.html", resume=form), 404
    session.clear()
    session["viewer_id"] = viewer.id
    if sittings.open_sitting(get_db(), viewer) is not None:
        return redirect(url_for("study.trial"))
    return redirect(url_for("study.environment"))


@bp.route("/environment", methods=["GET", "POST"])
@viewer_required
def environment():
    db = get_db()
    viewer = current_viewer()
    if sittings.open_sitting(db, viewer) is not None:
        return redirect(url_for("study.trial"))
    form = EnvironmentForm()
    if form.validate_on_submit():
        fields = ("screen_width", "screen_height", "device_pixel_ratio", "browser", "display")
        fields += ("viewing_distance", "lighting")
        try:
            sittings.start_sitting(
                db,
                viewer,
                design(),
                current_app.config["SEED"],
                {f: getattr(form, f).data for f in fields},
            )
        except sittings.StudyError as error:
            return render_template("done.html", viewer=viewer, message=str(error))
        session["device_pixel_ratio"] = form.device_pixel_ratio.data
        return redirect(url_for("study.instructions"))
    return render_template("environment.html", form=form, viewer=viewer), (
        400 if form.errors else 200
    )


@bp.route("/instructions")
@viewer_required
def instructions():
    return render_template("instructions.html", viewer=current_viewer())


@bp.route("/training/<int:step>")
@viewer_required
def training(step: int):
    """Example pairs across the range, in the real trial page; nothing is stored."""
    examples = _training_examples()
    if not examples:
        return redirect(url_for("study.trial"))
    if step >= len(examples):
        return redirect(url_for("study.trial"))
    return render_template(
        "trial.html",
        training=True,
        stimulus=examples[step],
        upcoming=examples[step + 1] if step + 1 < len(examples) else None,
        step=step,
        total=len(examples),
        next_url=url_for("study.training", step=step + 1),
        form=TrialForm(),
        grey_ms=current_app.config["GREY_SCREEN_MS"],
        dpr=session.get("device_pixel_ratio"),
    )


@bp.route("/trial", methods=["GET", "POST"])
@viewer_required
def trial():
    db = get_db()
    viewer = current_viewer()
    sitting = sittings.open_sitting(db, viewer)
    if sitting is None:
        return redirect(url_for("study.done"))
    plan = design()
    moment = sittings.now()
    form = TrialForm()
    if form.is_submitted():
        return _submit(db, sitting, form, plan)
    current = sittings.state(sitting, plan, moment)
    if current == "closed":
        sittings.close(db, sitting, "time limit")
        return redirect(url_for("study.done"))
    if current == "break":
        sittings.begin_break_if_due(db, sitting, plan, moment)
        return redirect(url_for("study.rest"))
    upcoming = sittings.next_trial(db, sitting)
    if upcoming is None:
        sittings.close(db, sitting, "completed")
        return redirect(url_for("study.done"))
    if upcoming.shown_at is None:
        upcoming.shown_at = moment
        db.commit()
    done, total = sittings.progress(db, sitting)
    following = db.get(type(upcoming), (sitting.id, upcoming.position + 1))
    return render_template(
        "trial.html",
        training=False,
        stimulus=upcoming.stimulus,
        upcoming=following.stimulus if following is not None else None,
        position=upcoming.position,
        step=done,
        total=total,
        form=form,
        grey_ms=current_app.config["GREY_SCREEN_MS"],
        dpr=(sitting.environment or {}).get("device_pixel_ratio"),
    )


def _submit(db, sitting: Session, form: TrialForm, plan: sittings.Design):
    if not form.validate():
        problems = "; ".join(f"{name}: {', '.join(errors)}" for name, errors in form.errors.items())
        return render_template("error.html", message=f"Rating not saved — {problems}"), 400
    submission = sittings.Submission(
        position=form.position.data,
        consistency=form.consistency.data,
        perception=form.perception.data,
        nsfw=form.nsfw.data,
        nsfw_reason=form.nsfw_reason.data,
        first_input_ms=form.first_input_ms.data,
    )
    try:
        sittings.record(db, sitting, submission, plan)
    except sittings.StudyError as error:
        return render_template("error.html", message=f"Rating not saved — {error}"), error.status
    return redirect(url_for("study.trial"), code=303)


@bp.route("/break")
@viewer_required
def rest():
    db = get_db()
    sitting = sittings.open_sitting(db, current_viewer())
    if sitting is None:
        return redirect(url_for("study.done"))
    plan = design()
    moment = sittings.now()
    sittings.begin_break_if_due(db, sitting, plan, moment)
    until = sittings.aware(sitting.break_until)
    if until is None or moment >= until:
        return redirect(url_for("study.trial"))
    return render_template("break.html", seconds=int((until - moment).total_seconds()) + 1)


@bp.route("/done")
@viewer_required
def done():
    viewer = current_viewer()
    return render_template("done.html", viewer=viewer, message=None)


def _training_examples() -> list[Stimulus]:
    db = get_db()
    keys = current_app.config["TRAINING_STIMULI"]
    if keys:
        found = {s.key: s for s in db.scalars(select(Stimulus).where(Stimulus.key.in_(keys)))}
        return [found[k] for k in keys if k in found]
    return list(db.scalars(select(Stimulus).order_by(Stimulus.id).limit(4)))


def _new_code(db) -> str:
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        if db.scalar(select(Viewer.id).where(Viewer.code == code)) is None:
            return code
