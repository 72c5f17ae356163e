"""The viewer's side: consent → registration → viewing environment → instructions → training →
trials (with enforced breaks) → done. The images are served by :mod:`annotate.media`.

Which viewer and which sitting a request belongs to comes only from the signed session cookie,
never from the form, so nobody can rate in someone else's sitting.
"""

from __future__ import annotations

import datetime as dt
import secrets
from functools import wraps
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select

from annotate import sittings
from annotate.db import get_db
from annotate.forms import (
    ConsentForm,
    EnvironmentForm,
    PracticeForm,
    RegisterForm,
    ResumeForm,
    TrialForm,
)
from annotate.length import SittingLength
from annotate.media import media_url, send_image
from annotate.practice import PracticePair, study_practice_pairs
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
    """The viewer the signed session names, loaded once per request: the ORM session holds
    loaded rows only while something refers to them, so the check of :func:`viewer_required`
    and the view itself each asked the database (two round trips per page on PostgreSQL).
    Kept in the request's WSGI environment, which no other request shares (``flask.g`` lives
    as long as the app context, which may outlast a request)."""
    viewer_id = session.get("viewer_id")
    if viewer_id is None:
        return None
    loaded = request.environ.get(_LOADED_VIEWER)
    if loaded is None or loaded[0] != viewer_id:  # a view may sign in another viewer
        loaded = request.environ[_LOADED_VIEWER] = (viewer_id, get_db().get(Viewer, viewer_id))
    return loaded[1]


_LOADED_VIEWER = "cmc_lab.viewer"


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
    # Every machine is measured: an open sitting continues with this machine's environment.
    return redirect(url_for("study.environment"))


ENVIRONMENT_FIELDS = (
    "screen_width",
    "screen_height",
    "device_pixel_ratio",
    "browser",
    "display",
    "viewing_distance",
    "lighting",
)


@bp.route("/environment", methods=["GET", "POST"])
@viewer_required
def environment():
    """Measure the machine; then open the next sitting, or continue the open one on it."""
    db = get_db()
    viewer = current_viewer()
    plan = design()
    sitting = sittings.open_sitting(db, viewer, plan)
    form = EnvironmentForm()
    if form.validate_on_submit():
        measured = {f: getattr(form, f).data for f in ENVIRONMENT_FIELDS}
        if sitting is not None:
            sittings.record_environment(db, sitting, measured)
            return redirect(url_for("study.trial"))
        try:
            sittings.start_sitting(db, viewer, plan, current_app.config["SEED"], measured)
        except sittings.StudyError as error:
            return render_template("done.html", viewer=viewer, message=str(error))
        session["practice_step"] = 0
        return redirect(url_for("study.instructions"))
    return render_template(
        "environment.html", form=form, viewer=viewer, resuming=sitting is not None
    ), (400 if form.errors else 200)


@bp.route("/instructions")
@viewer_required
def instructions():
    online = current_app.config["ONLINE"]
    length = SittingLength.from_config(current_app.config) if online else None
    return render_template("instructions.html", viewer=current_viewer(), length=length)


@bp.route("/training/<int:step>", methods=["GET", "POST"])
@viewer_required
def training(step: int):
    """Practice pairs across the range, in the real trial page; nothing is stored.

    Practice is a POSTed form per pair and the server keeps the step, so it can be neither
    skipped by typing a URL nor replayed; the sitting's trials open once it is done. Each
    answer needs the trials' time floor (grey screen plus minimum viewing, by the server's clock
    from the page's serving, kept in the signed cookie): practice cannot be clicked through.
    """
    db = get_db()
    sitting = sittings.open_sitting(db, current_viewer(), design())
    if sitting is None:
        return redirect(url_for("study.done"))
    pairs = study_practice_pairs()
    reached = int(session.get("practice_step", 0))
    if sitting.trained_at is not None or reached >= len(pairs):
        return _finish_practice(db, sitting)
    if step != reached:
        return redirect(url_for("study.training", step=reached))
    form = PracticeForm()
    if form.is_submitted():
        if not form.validate():
            return _form_error(form)
        problem = _practice_too_soon(step)
        if problem:
            return render_template("error.html", message=f"Answer not taken — {problem}"), 409
        moment = sittings.now()  # practice is activity: not an idle sitting (minutes apart,
        last = sittings.aware(sitting.last_active_at)  # so a write every 30 s says it)
        if last is None or moment - last > ACTIVITY_WRITES:
            sitting.last_active_at = moment
            db.commit()
        session["practice_step"] = step + 1
        return redirect(url_for("study.training", step=step + 1), code=303)
    session["practice_served"] = [step, sittings.now().isoformat()]
    return render_template(
        "trial.html",
        training=True,
        images=_pair_urls(pairs[step], step),
        preload=_pair_urls(pairs[step + 1], step + 1) if step + 1 < len(pairs) else {},
        step=step,
        total=len(pairs),
        action=url_for("study.training", step=step),
        form=form,
        **_viewing(sitting),
    )


ACTIVITY_WRITES = dt.timedelta(seconds=30)
"""How often practice answers write the sitting's last activity (idle sittings close after
SITTING_IDLE_MINUTES): a launch's practice pages do not each wait for a database write."""


def _practice_too_soon(step: int) -> str | None:
    """Why this practice answer comes too soon (None: it may be taken)."""
    served = session.get("practice_served")
    if not served or served[0] != step:
        return "this practice page was not shown; reload it."
    plan = design()
    earliest = dt.datetime.fromisoformat(served[1]) + plan.grey + plan.min_viewing
    if sittings.now() < earliest:
        return (
            f"look at the pair for at least {plan.min_viewing.total_seconds():g} s after it "
            "appears, then answer."
        )
    return None


def _finish_practice(db, sitting: Session):
    if sitting.trained_at is None:
        sitting.trained_at = sittings.now()
        db.commit()
    return redirect(url_for("study.trial"))


@bp.route("/practice/<int:step>/<which>")
@viewer_required
def practice_image(step: int, which: str):
    """A practice image (made pairs live in the instance folder, not in the stimulus table)."""
    pairs = study_practice_pairs()
    if which not in ("distorted", "reference") or step >= len(pairs):
        abort(404)
    return send_image(Path(getattr(pairs[step], f"{which}_path")), etag=f"practice-{step}-{which}")


@bp.route("/trial", methods=["GET", "POST"])
@viewer_required
def trial():
    db = get_db()
    viewer = current_viewer()
    plan = design()
    sitting = sittings.open_sitting(db, viewer, plan)
    form = TrialForm()
    if sitting is None:
        if form.is_submitted():  # a rating for a sitting that has just closed is not stored
            message = "Rating not saved — this sitting is closed."
            return render_template("error.html", message=message), 409
        return redirect(url_for("study.done"))
    moment = sittings.now()
    if form.is_submitted():
        return _submit(db, sitting, form, plan)
    if sitting.trained_at is None:
        return redirect(url_for("study.instructions"))
    current = sittings.state(sitting, plan, moment)
    if current == "break":
        sittings.begin_break_if_due(db, sitting, plan, moment)
        return redirect(url_for("study.rest"))
    upcoming = sittings.next_trial(db, sitting)
    if upcoming is None:
        sittings.close(db, sitting, "completed")
        return redirect(url_for("study.done"))
    missing = sittings.missing_images(upcoming.stimulus)
    if missing:
        current_app.logger.error("stimulus %s: missing %s", upcoming.stimulus.key, missing)
        current_app.extensions["file_check"].refresh(wait=0)  # the dashboard lists it soon
        return render_template("error.html", message=IMAGE_FAILED, broken=True), 503
    sittings.serve(db, sitting, upcoming, moment)
    done, total = sittings.progress(db, sitting)
    following = db.get(type(upcoming), (sitting.id, upcoming.position + 1))
    return render_template(
        "trial.html",
        training=False,
        images=_pair_urls(upcoming.stimulus),
        preload=_pair_urls(following.stimulus) if following is not None else {},
        position=upcoming.position,
        step=done,
        total=total,
        action=url_for("study.trial"),
        form=form,
        **_viewing(sitting),
    )


IMAGE_FAILED = "This image could not be shown — please call the experimenter."


def _viewing(sitting: Session) -> dict:
    """What the trial page's script needs to present a pair as the protocol says."""
    config = current_app.config
    return dict(
        grey_ms=config["GREY_SCREEN_MS"],
        min_viewing_ms=config["MIN_VIEWING_MS"],
        presentation=config["PRESENTATION"],
        dpr=(sitting.environment or {}).get("device_pixel_ratio"),
        image_failed=IMAGE_FAILED,
    )


def _form_error(form):
    problems = "; ".join(f"{name}: {', '.join(errors)}" for name, errors in form.errors.items())
    return render_template("error.html", message=f"Rating not saved — {problems}"), 400


def _submit(db, sitting: Session, form: TrialForm, plan: sittings.Design):
    if not form.validate():
        return _form_error(form)
    submission = sittings.Submission(
        position=form.position.data,
        consistency=form.consistency.data,
        perception=form.perception.data,
        nsfw=form.nsfw.data,
        nsfw_reason=form.nsfw_reason.data,
        first_input_ms=form.first_input_ms.data,
        reveal_ms=form.reveal_ms.data,
        scale=form.scale.data,
        slider_events=form.slider_events.data or 0,  # none sent: no move made on the page
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
    plan = design()
    sitting = sittings.open_sitting(db, current_viewer(), plan)
    if sitting is None:
        return redirect(url_for("study.done"))
    moment = sittings.now()
    sittings.begin_break_if_due(db, sitting, plan, moment)
    until = sittings.aware(sitting.break_until)
    if until is None or moment >= until:
        return redirect(url_for("study.trial"))
    return render_template("break.html", seconds=int((until - moment).total_seconds()) + 1)


@bp.route("/done")
@viewer_required
def done():
    """The end of a sitting: how it ended, and whether another one is waiting for the viewer."""
    db = get_db()
    viewer = current_viewer()
    plan = design()
    if sittings.open_sitting(db, viewer, plan) is not None:
        return redirect(url_for("study.trial"))
    sittings.expire(db, plan, sittings.now())  # an abandoned sitting holds no group's place
    if current_app.config["ONLINE"]:
        return redirect(url_for("online.complete"))
    last = db.scalar(
        select(Session).where(Session.viewer_id == viewer.id).order_by(Session.id.desc()).limit(1)
    )
    return render_template(
        "done.html",
        viewer=viewer,
        message=None,
        reason=last.closed_reason if last is not None else None,
        more=sittings.next_assignment(db, viewer, plan) is not None,
    )


def _pair_urls(pair: Stimulus | PracticePair, step: int | None = None) -> dict[str, str]:
    """The one place the viewer's pages get image URLs from: {"distorted": …, "reference": …}."""
    stimulus_id = pair.id if isinstance(pair, Stimulus) else pair.stimulus_id
    if stimulus_id is None:
        return {w: url_for("study.practice_image", step=step, which=w) for w in IMAGES}
    return {w: media_url(stimulus_id, w) for w in IMAGES}


IMAGES = ("distorted", "reference")


def _new_code(db) -> str:
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        if db.scalar(select(Viewer.id).where(Viewer.code == code)) is None:
            return code
