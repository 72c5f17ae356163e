"""Online mode (``ONLINE = True``): crowd participants from Prolific, MTurk or any panel.

Entry link → consent → display check → short practice → one short sitting whose pairs the
server picks with :class:`studydb.allocation.Allocator` (the code ``mos.online_study`` simulates)
plus gold trials and attention checks → completion code and redirect to the platform.

- **Entry** ``/online/start?PROLIFIC_PID=…&STUDY_ID=…&SESSION_ID=…`` (MTurk: ``workerId``,
  ``assignmentId``, ``hitId``; any panel: ``participant``, ``study``, ``session``). The
  participant id becomes the viewer's code; the lab's own entry pages are closed in this mode, so
  a code can be neither typed in nor guessed from the lab's resume form. Entries are throttled per
  address (``ONLINE_ENTRY_LIMIT``).
- **One sitting per id**: a participant id whose sitting closed (completed, abandoned, time
  limit) cannot take it again (``ONLINE_SITTINGS_PER_PARTICIPANT``); an open one is resumed.
- **Display check** before any rating: the window (in device pixels), the device pixel ratio,
  the browser's zoom, and three low-contrast digits the participant must read. Unsuitable screens
  are refused with the reasons; nothing is rated, no code is given.
- **Checks** (stored as trials with ``check_kind``, see :mod:`studydb.schema` v4): a reference
  against itself (must score ≥ 3 on consistency), a strongly degraded pair (≤ 2), and attention
  checks that ask for a given consistency score. They never enter a MOS; :mod:`mos.qc` turns them,
  the timing and each participant's agreement into the admin's QC table and the exclusions.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession
from wtforms import FloatField, HiddenField, IntegerField, StringField
from wtforms.validators import InputRequired, Length, NumberRange

from annotate import sittings
from annotate.db import get_db
from annotate.forms import ConsentForm, finite
from annotate.practice import made_pairs
from mos.qc import ExclusionRules, qc_signals, trials_frame, trials_query
from studydb import Rating, Session, Stimulus, Trial, Viewer
from studydb.allocation import Allocator, Precision, ci_halfwidths

bp = Blueprint("online", __name__, url_prefix="/online")

PARAMETERS = {
    "prolific": ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID"),
    "mturk": ("workerId", "hitId", "assignmentId"),
    "generic": ("participant", "study", "session"),
}
"""URL parameters of each platform: participant id, study id, session id."""
ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
GOLD = {"gold-same": (3.0, 5.0), "gold-low": (0.0, 2.0)}
"""The gold trials and their accepted consistency range: a reference against itself, and the
reference damaged like the worst practice pair."""
ATTENTION_SCORES = (0.5, 1.5, 2.5, 3.5, 4.5)
"""An attention check asks for one of these (the 1–5 keys put a slider exactly there)."""
ATTENTION_TOLERANCE = 0.5
LAB_ENDPOINTS = frozenset(
    {"study.index", "study.consent", "study.register", "study.resume", "study.environment"}
)
"""The lab's entry pages: closed in online mode (participants come by their platform's link)."""


def init_app(app: Flask) -> None:
    """Check the online settings at start-up and close the lab's entry pages in online mode."""
    if not app.config.get("ONLINE"):
        return
    settings = OnlineSettings.from_config(app.config)  # raises ValueError on a bad value
    Allocator(np.zeros(1), settings.policy, settings.min_ratings, settings.target_ci)
    app.extensions["online_throttle"] = (
        MovingWindowRateLimiter(MemoryStorage()),
        parse(app.config["ONLINE_ENTRY_LIMIT"]),
    )
    # Failed screen checks per participant id, on the server: the session cookie is client-side,
    # so a counter kept there is reset by replaying an older cookie or by entering again.
    app.extensions["online_display_throttle"] = (
        MovingWindowRateLimiter(MemoryStorage()),
        parse(f"{DISPLAY_TRIES} per day"),
    )

    @app.before_request
    def _lab_entry_closed():
        if request.endpoint in LAB_ENDPOINTS:
            message = "This study is entered through the link on your recruitment platform."
            return render_template("error.html", message=message), 404
        if request.blueprint == "study" and not session.get("display_passed"):
            # Every browser passes the screen check before any study page, a resume included:
            # the entry link alone (from any browser) must not open the trials.
            return redirect(url_for("online.display"))
        return None


@bp.before_request
def _only_online():
    """The online pages exist only in online mode."""
    if not current_app.config.get("ONLINE"):
        abort(404)


@dataclass
class OnlineSettings:
    """The online part of the configuration (docs/annotate.md, "Online studies")."""

    pairs: int = 56
    gold: int = 2
    attention: int = 2
    sittings_per_participant: int = 1
    policy: str = "adaptive"
    min_ratings: int = 5
    target_ci: float = 0.4
    quality_bins: int = 5
    rules: ExclusionRules = field(default_factory=ExclusionRules)
    min_window: tuple[int, int] = (1280, 720)
    dpr_range: tuple[float, float] = (1.0, 3.0)
    contrast: int = 12
    close_when_done: bool = True

    @classmethod
    def from_config(cls, config) -> OnlineSettings:
        settings = cls(
            pairs=int(config["ONLINE_SITTING_PAIRS"]),
            gold=int(config["ONLINE_GOLD_TRIALS"]),
            attention=int(config["ONLINE_ATTENTION_CHECKS"]),
            sittings_per_participant=int(config["ONLINE_SITTINGS_PER_PARTICIPANT"]),
            policy=str(config["ALLOCATION"]),
            min_ratings=int(config["ALLOCATION_MIN_RATINGS"]),
            target_ci=float(config["ALLOCATION_TARGET_CI"]),
            rules=ExclusionRules(**dict(config["QC_RULES"])),
            min_window=tuple(config["DISPLAY_MIN_WINDOW"]),
            dpr_range=tuple(config["DISPLAY_DPR_RANGE"]),
            contrast=int(config["DISPLAY_CONTRAST"]),
            close_when_done=bool(config["ONLINE_CLOSE_WHEN_DONE"]),
        )
        if min(settings.pairs, settings.sittings_per_participant) < 1:
            raise ValueError("ONLINE_SITTING_PAIRS and ONLINE_SITTINGS_PER_PARTICIPANT must be ≥ 1")
        if min(settings.gold, settings.attention) < 0 or not 1 <= settings.contrast <= 120:
            raise ValueError("check counts must be ≥ 0 and DISPLAY_CONTRAST within 1–120")
        _check_completion_url(str(config.get("COMPLETION_URL") or ""))
        floor = (config["GREY_SCREEN_MS"] + config["MIN_VIEWING_MS"]) / 1000
        if settings.rules.max_fast_share is not None and settings.rules.fast_seconds <= floor:
            raise ValueError(
                f"QC_RULES fast_seconds ({settings.rules.fast_seconds:g} s) must exceed "
                f"GREY_SCREEN_MS + MIN_VIEWING_MS ({floor:g} s): the server refuses faster "
                "ratings, so the timing check would never fire"
            )
        return settings


def _check_completion_url(url: str) -> None:
    """COMPLETION_URL is formatted only when a participant completes: refuse at start-up one that
    would fail then (a placeholder other than ``{code}``) or that is no absolute http(s) address."""
    if not url:
        return
    try:
        formatted = url.format(code="CODE")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"COMPLETION_URL {url!r}: only the placeholder {{code}} is filled in ({error!r})"
        ) from None
    parts = urlsplit(formatted)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"COMPLETION_URL {url!r} must be an absolute http(s) address")


def settings() -> OnlineSettings:
    return OnlineSettings.from_config(current_app.config)


# --------------------------------------------------------------------------- entry and consent


@bp.route("/start")
def start():
    """The entry link: read the platform's ids, refuse a participant who already took part."""
    throttle, limit = current_app.extensions["online_throttle"]
    address = request.remote_addr or "unknown"
    if not throttle.hit(limit, "online-entry", address):
        message = "Too many entries from this address; please wait a few minutes."
        return render_template("error.html", message=message), 429
    platform, ids = _platform_ids(request.args)
    if platform is None:
        message = (
            "This link lacks your participant id: open the study from your recruitment platform "
            "(it adds e.g. PROLIFIC_PID, STUDY_ID and SESSION_ID to the address)."
        )
        return render_template("error.html", message=message), 400
    viewer = get_db().scalar(select(Viewer).where(Viewer.code == ids["participant"]))
    if viewer is not None and _sittings_left(get_db(), viewer) <= 0:
        return _already_taken(viewer)
    session.clear()
    session["online"] = {"platform": platform, **ids}
    if viewer is not None and viewer.consented_at is not None:
        session["viewer_id"] = viewer.id
        return redirect(url_for("online.display"))
    return redirect(url_for("online.consent"))


def _platform_ids(args) -> tuple[str | None, dict[str, str]]:
    """(platform, {participant, study, session}) from the first platform whose id is present;
    (None, {}) when no participant id is given or an id has characters no platform uses."""
    for platform, names in PARAMETERS.items():
        participant = args.get(names[0])
        if participant is None:
            continue
        ids = dict(zip(("participant", "study", "session"), names, strict=True))
        values = {key: args.get(name, "") for key, name in ids.items()}
        if not ID_PATTERN.fullmatch(values["participant"]) or any(
            value and not ID_PATTERN.fullmatch(value) for value in values.values()
        ):
            return None, {}
        return platform, values
    return None, {}


def _sittings_left(db: OrmSession, viewer: Viewer) -> int:
    """Sittings this participant may still start (an open one is resumed, not counted)."""
    closed = db.scalar(
        select(func.count()).where(
            Session.viewer_id == viewer.id, Session.closed_reason.is_not(None)
        )
    )
    return settings().sittings_per_participant - int(closed or 0)


def _already_taken(viewer: Viewer):
    """409 for a participant id with no sitting left. One whose last sitting was completed gets
    the completion code and link again (a closed tab must not cost the pay; the code is the
    study's one static code, so this reveals nothing a completer does not already know)."""
    message = "You have already taken part in this study; it cannot be taken twice. Thank you!"
    last = _last_sitting(get_db(), viewer)
    if last is None or last.closed_reason != "completed":
        return render_template("error.html", message=message), 409
    return render_template("online_complete.html", again=message, **_completion(True)), 409


def _last_sitting(db: OrmSession, viewer: Viewer) -> Session | None:
    return db.scalar(
        select(Session).where(Session.viewer_id == viewer.id).order_by(Session.id.desc()).limit(1)
    )


def _completion(completed: bool) -> dict:
    code = current_app.config["COMPLETION_CODE"] if completed else ""
    url = current_app.config["COMPLETION_URL"].format(code=code) if completed else ""
    return {"completed": completed, "code": code, "url": url}


def _entered() -> dict | None:
    return session.get("online")


@bp.route("/consent", methods=["GET", "POST"])
def consent():
    entered = _entered()
    if entered is None:
        return redirect(url_for("online.start"))
    form = ConsentForm()
    if form.validate_on_submit():
        db = get_db()
        viewer = db.scalar(select(Viewer).where(Viewer.code == entered["participant"]))
        if viewer is None:
            viewer = Viewer(code=entered["participant"], consented_at=sittings.now())
            db.add(viewer)
            try:
                db.commit()
            except IntegrityError:  # the same id consented in another tab a moment ago
                db.rollback()
                viewer = db.scalar(select(Viewer).where(Viewer.code == entered["participant"]))
        session["viewer_id"] = viewer.id
        return redirect(url_for("online.display"))
    return render_template("consent.html", form=form, text=current_app.config["CONSENT_TEXT"])


# --------------------------------------------------------------------------- display check


class DisplayForm(FlaskForm):
    window_width = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    window_height = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    screen_width = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    screen_height = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    device_pixel_ratio = FloatField(validators=[InputRequired(), finite, NumberRange(0.1, 16)])
    zoom = FloatField(validators=[InputRequired(), finite, NumberRange(0.01, 100)])
    browser = HiddenField(validators=[Length(max=512)])
    digits = StringField("The number in the grey box", [InputRequired(), Length(max=8)])


def _viewer() -> Viewer | None:
    viewer_id = session.get("viewer_id")
    return get_db().get(Viewer, viewer_id) if viewer_id is not None and _entered() else None


@bp.route("/display", methods=["GET", "POST"])
def display():
    """Measure the screen and test the eye on it; open (or resume) the sitting when it passes."""
    viewer = _viewer()
    if viewer is None:
        return redirect(url_for("online.start"))
    db = get_db()
    plan = sittings.Design.from_config(current_app.config)
    sitting = sittings.open_sitting(db, viewer, plan)
    if sitting is None and _sittings_left(db, viewer) <= 0:
        return _already_taken(viewer)
    form = DisplayForm()
    throttle, limit = current_app.extensions["online_display_throttle"]
    if form.is_submitted() and (
        session.get("display_tries", 0) >= DISPLAY_TRIES
        or not throttle.test(limit, "online-display", str(viewer.id))
    ):
        message = "Too many tries of the screen check; please return the study on your platform."
        return render_template("error.html", message=message), 429
    if form.validate_on_submit():
        session["display_tries"] = session.get("display_tries", 0) + 1
        measured = {name: getattr(form, name).data for name in DISPLAY_FIELDS}
        problems = display_problems(measured, form.digits.data, settings())
        if problems:
            throttle.hit(limit, "online-display", str(viewer.id))
            session["display_nonce"] = secrets.token_hex(8)  # a new number for the next try
            return render_template("online_refused.html", problems=problems), 403
        environment = {**measured, "online": _entered()}
        session["display_passed"] = True
        if sitting is not None:
            sittings.record_environment(db, sitting, environment)
            return redirect(url_for("study.trial"))
        try:
            start_online_sitting(db, viewer, plan, settings(), environment, _rng())
        except sittings.StudyError as error:
            return render_template("error.html", message=str(error)), error.status
        session["practice_step"] = 0
        return redirect(url_for("study.instructions"))
    session.setdefault("display_nonce", secrets.token_hex(8))
    return render_template("online_display.html", form=form, min_window=settings().min_window), (
        400 if form.errors else 200
    )


DISPLAY_TRIES = 5
"""Failed screen checks one participant id may have in a day (a new number each time), counted
on the server: the contrast test cannot be guessed by trying all thousand numbers, neither by
replaying an older session cookie nor by entering again."""
DISPLAY_FIELDS = (
    "window_width",
    "window_height",
    "screen_width",
    "screen_height",
    "device_pixel_ratio",
    "zoom",
    "browser",
)


def display_problems(measured: dict, digits: str, config: OnlineSettings) -> list[str]:
    """Why this screen is unsuitable (empty: it is fine). Window sizes are in device pixels."""
    problems = []
    width, height = config.min_window
    if measured["window_width"] < width or measured["window_height"] < height:
        problems.append(
            f"the browser window is {measured['window_width']} × {measured['window_height']} "
            f"pixels; the study needs at least {width} × {height}: use a larger screen or "
            "maximise the window"
        )
    low, high = config.dpr_range
    if not low <= measured["device_pixel_ratio"] <= high:
        problems.append(
            f"the display's pixel ratio is {measured['device_pixel_ratio']:g}; the study needs "
            f"{low:g}–{high:g} (a computer screen, not a phone)"
        )
    if abs(measured["zoom"] - 1) > 0.1:
        problems.append(
            f"the page is zoomed to {measured['zoom']:.0%}: reset the zoom to 100% (Ctrl+0)"
        )
    if (digits or "").strip() != display_digits():
        problems.append(
            "the number in the grey box was not read correctly: the screen's contrast may be "
            "too low, or the room too bright"
        )
    return problems


def display_digits() -> str:
    """The three digits of this browser's contrast test, derived from the app's secret and a
    per-try nonce in the session: the page never contains them, the cookie cannot reveal them."""
    nonce = session.get("display_nonce", "")
    key = current_app.config["SECRET_KEY"].encode()
    digest = hmac.new(key, f"display:{nonce}".encode(), hashlib.sha256).hexdigest()
    return f"{int(digest[:8], 16) % 1000:03d}"


@bp.route("/display-check.png")
def contrast_image():
    """The contrast test: three digits a few grey levels above a mid-grey background."""
    if _viewer() is None or "display_nonce" not in session:
        abort(404)
    level = settings().contrast
    image = Image.new("L", (360, 120), 128)
    font = ImageFont.load_default(size=64)
    ImageDraw.Draw(image).text(
        (180, 60), display_digits(), fill=128 + level, font=font, anchor="mm"
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = make_response(buffer.getvalue())
    response.headers["Content-Type"] = "image/png"
    response.headers["Cache-Control"] = "no-store"
    return response


def _rng() -> np.random.Generator:
    seed = current_app.config.get("SEED")
    return np.random.default_rng(None if seed is None else [seed, session.get("viewer_id", 0)])


# --------------------------------------------------------------------------- the sitting


def start_online_sitting(
    db: OrmSession,
    viewer: Viewer,
    plan: sittings.Design,
    config: OnlineSettings,
    environment: dict,
    rng: np.random.Generator,
) -> Session:
    """Open the participant's sitting: the allocator's pairs plus checks (commits).

    Raises :class:`annotate.sittings.StudyError` when the participant has no sitting left or
    no image is left for them.
    """
    moment = sittings.now()
    existing = sittings.open_sitting(db, viewer, plan, moment)
    if existing is not None:
        return existing
    if _sittings_left(db, viewer) <= 0:
        raise sittings.StudyError("You have already taken part in this study.", 409)
    state = allocation_state(db, plan, config)
    if state.stimuli.size == 0:
        raise sittings.StudyError("There is nothing to rate in this study yet.", 409)
    allocator = Allocator(
        state.reference, config.policy, config.min_ratings, config.target_ci, config.quality_bins
    )
    if config.close_when_done and allocator.done(state.precision).all():
        raise sittings.StudyError(
            "This study has all the ratings it needs: there is no sitting left. Thank you!", 409
        )
    rated = np.flatnonzero(np.isin(state.stimuli, _rated_by(db, viewer)))
    chosen = allocator.choose(config.pairs, state.precision, rng, already_rated=rated)
    if chosen.size == 0:
        raise sittings.StudyError("There is nothing left for you to rate in this study.", 409)
    warmups = _warmups(state, chosen, rated, plan.warmup_trials)
    planned = [(int(state.stimuli[i]), True, None) for i in warmups]
    planned += [(int(state.stimuli[i]), False, None) for i in chosen]
    checks = _checks(db, state, chosen, config, rng)
    sitting, opened = sittings.insert_sitting(db, viewer, plan, moment, environment)
    if not opened:
        return sitting
    for check in checks:
        # anywhere after the first test trial, so a sitting never opens with a trick
        planned.insert(int(rng.integers(len(warmups) + 1, len(planned) + 1)), check)
    for position, (stimulus_id, warmup, check) in enumerate(planned):
        kind, low, high = check if check is not None else (None, None, None)
        db.add(
            Trial(
                session_id=sitting.id,
                position=position,
                stimulus_id=stimulus_id,
                is_warmup=warmup,
                check_kind=kind,
                accept_low=low,
                accept_high=high,
            )
        )
    db.commit()
    return sitting


@dataclass
class AllocationState:
    """The study as the allocator sees it: eligible stimuli (ids), references, precision."""

    stimuli: np.ndarray
    reference: np.ndarray
    reference_paths: list[str]
    precision: Precision
    signals: pd.DataFrame


def allocation_state(db: OrmSession, plan: sittings.Design, config: OnlineSettings):
    """Precision of every eligible stimulus from the kept participants' test ratings.

    Eligible: not withheld (gold pairs are stored withheld), not a practice stimulus. Kept: not
    excluded by the QC rules. Trials planned in open sittings count towards each image's number
    (so that simultaneous participants do not all get the least-rated images).
    """
    rows = db.execute(
        select(Stimulus.id, Stimulus.key, Stimulus.reference, Stimulus.reference_path)
        .where(Stimulus.withheld.is_(False))
        .order_by(Stimulus.id)
    ).all()
    rows = [r for r in rows if r.key not in plan.practice_keys]
    stimuli = np.array([r.id for r in rows], dtype=np.int64)
    reference = pd.factorize(pd.Series([r.reference or r.reference_path for r in rows]))[0]
    trials = trials_frame(pd.read_sql(trials_query(), db.connection()))
    signals = config.rules.apply(qc_signals(trials, config.rules.fast_seconds))
    excluded = set(signals.loc[signals["excluded"], "participant"])
    test = trials[(trials["check"] == "") & ~trials["participant"].isin(excluded)]
    index = pd.Series(np.arange(stimuli.size), index=stimuli)
    test = test[test["stimulus"].isin(index.index)]
    codes = pd.factorize(test["participant"])[0]
    precision = ci_halfwidths(
        index.loc[test["stimulus"]].to_numpy(),
        codes,
        test["score"].to_numpy(dtype=float),
        stimuli.size,
        int(codes.max()) + 1 if codes.size else 0,
    )
    planned = db.scalars(
        select(Trial.stimulus_id)
        .join(Session, Trial.session_id == Session.id)
        .where(
            Session.closed_reason.is_(None),
            Trial.is_warmup.is_(False),
            Trial.check_kind.is_(None),
            Trial.position.not_in(select(Rating.position).where(Rating.session_id == Session.id)),
        )
    ).all()
    waiting = index.reindex(planned).dropna().to_numpy(dtype=np.int64)
    precision.n = precision.n + np.bincount(waiting, minlength=stimuli.size)
    return AllocationState(stimuli, reference, [r.reference_path for r in rows], precision, signals)


def _rated_by(db: OrmSession, viewer: Viewer) -> list[int]:
    return list(
        db.scalars(
            select(Rating.stimulus_id)
            .join(Session, Rating.session_id == Session.id)
            .where(Session.viewer_id == viewer.id)
        )
    )


def _warmups(state: AllocationState, chosen, rated, count: int) -> np.ndarray:
    """Warm-up images: the best-covered images outside the sitting (their rating is not used)."""
    spare = np.setdiff1d(np.arange(state.stimuli.size), np.concatenate([chosen, rated]))
    order = spare[np.argsort(-state.precision.n[spare], kind="stable")]
    return order[:count]


def _checks(db, state: AllocationState, chosen, config: OnlineSettings, rng) -> list[tuple]:
    """(stimulus id, False, (kind, low, high)) of the sitting's gold and attention trials."""
    checks = []
    for i in range(config.gold):
        kind = ("gold-same", "gold-low")[i % 2]
        path = state.reference_paths[int(rng.choice(chosen))]
        low, high = GOLD[kind]
        checks.append((gold_stimulus(db, kind, path), False, ("gold", low, high)))
    for _ in range(config.attention):
        asked = float(rng.choice(ATTENTION_SCORES))
        target = (
            "attention",
            asked - ATTENTION_TOLERANCE,
            asked + ATTENTION_TOLERANCE,
        )
        checks.append((int(state.stimuli[int(rng.choice(chosen))]), False, target))
    return checks


def gold_stimulus(db: OrmSession, kind: str, reference_path: str) -> int:
    """The id of the gold pair ``kind`` made from ``reference_path`` (created once, withheld so
    that no design ever schedules it as a test image; commits)."""
    key = f"{kind}:{reference_path}"[:255]
    found = db.scalar(select(Stimulus.id).where(Stimulus.key == key))
    if found is not None:
        return found
    distorted = reference_path
    if kind == "gold-low":
        folder = Path(current_app.instance_path) / "practice"
        distorted = made_pairs(Path(reference_path), folder)[0].distorted_path
    stimulus = Stimulus(
        key=key, distorted_path=distorted, reference_path=reference_path, withheld=True
    )
    db.add(stimulus)
    try:
        db.commit()
    except IntegrityError:  # made by a simultaneous sitting
        db.rollback()
        return db.scalar(select(Stimulus.id).where(Stimulus.key == key))
    return stimulus.id


def instruction_for(trial: Trial) -> str | None:
    """What an attention check's page asks for (None for any other trial)."""
    if trial.check_kind != "attention" or trial.accept_low is None or trial.accept_high is None:
        return None
    asked = (trial.accept_low + trial.accept_high) / 2
    return (
        f"Attention check: whatever the images, set the Consistency slider to {asked:.1f} "
        f"(key {int(asked) + 1}) and Perception anywhere."
    )


# --------------------------------------------------------------------------- completion


@bp.route("/complete")
def complete():
    """The end: the completion code and the redirect to the platform, for a completed sitting."""
    viewer = _viewer()
    if viewer is None:
        return redirect(url_for("online.start"))
    db = get_db()
    plan = sittings.Design.from_config(current_app.config)
    if sittings.open_sitting(db, viewer, plan) is not None:
        return redirect(url_for("study.trial"))
    last = _last_sitting(db, viewer)
    completed = last is not None and last.closed_reason == "completed"
    return render_template(
        "online_complete.html",
        reason=last.closed_reason if last is not None else None,
        **_completion(completed),
    )


def signals_table(db: OrmSession, config: OnlineSettings) -> pd.DataFrame:
    """Every participant's QC signals and verdict, for the admin (empty before any rating)."""
    trials = trials_frame(pd.read_sql(trials_query(), db.connection()))
    return config.rules.apply(qc_signals(trials, config.rules.fast_seconds))
