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
  against a visually lossless re-encoding of itself (must score ≥ 3 on consistency), a strongly
  degraded pair (≤ 2), and attention checks whose instruction is drawn into the image to rate
  (:mod:`annotate.controls`). They never enter a MOS; :mod:`mos.qc` turns them, the timing, the
  slider use and each participant's agreement into the admin's QC table and the exclusions, and
  :mod:`annotate.pay` into the completion code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
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
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession
from wtforms import FloatField, HiddenField, IntegerField, StringField
from wtforms.validators import InputRequired, Length, NumberRange

from annotate import sittings
from annotate.controls import attention_image, contrast_png, reencoded, seed_of
from annotate.db import get_db
from annotate.display import DisplayNeeds, largest_pair
from annotate.forms import ConsentForm, finite
from annotate.length import SittingLength, consent_text
from annotate.pay import PaySettings, settle
from annotate.practice import made_pairs, study_practice_pairs
from annotate.stimuli_set import per_stimuli_set
from annotate.tally import AllocationState
from annotate.throttle import DatabaseThrottle
from mos.qc import ExclusionRules
from studydb import Rating, Session, Stimulus, Trial, Viewer
from studydb.allocation import Allocator

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
    engine = app.extensions["study_engine"]
    # Read the study's ratings now, in the background, not on the first participant's open.
    threading.Thread(target=app.extensions["trial_tally"].update, daemon=True).start()
    try:
        app.extensions["online_throttle"] = DatabaseThrottle(
            engine, "online-entry", app.config["ONLINE_ENTRY_LIMIT"]
        )
    except ValueError as error:
        raise ValueError(f"ONLINE_ENTRY_LIMIT = {error}") from None
    # Failed screen checks per participant id, on the server: the session cookie is client-side,
    # so a counter kept there is reset by replaying an older cookie or by entering again.
    app.extensions["online_display_throttle"] = DatabaseThrottle(
        engine, "online-display", f"{DISPLAY_TRIES} per day"
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
    contrast: int = 12
    close_when_done: bool = True
    pay: PaySettings | None = None

    @classmethod
    def from_config(cls, config) -> OnlineSettings:
        _check_completion_url(str(config.get("COMPLETION_URL") or ""))
        settings = cls(
            pairs=int(config["ONLINE_SITTING_PAIRS"]),
            gold=int(config["ONLINE_GOLD_TRIALS"]),
            attention=int(config["ONLINE_ATTENTION_CHECKS"]),
            sittings_per_participant=int(config["ONLINE_SITTINGS_PER_PARTICIPANT"]),
            policy=str(config["ALLOCATION"]),
            min_ratings=int(config["ALLOCATION_MIN_RATINGS"]),
            target_ci=float(config["ALLOCATION_TARGET_CI"]),
            rules=ExclusionRules(**dict(config["QC_RULES"])),
            contrast=int(config["DISPLAY_CONTRAST"]),
            close_when_done=bool(config["ONLINE_CLOSE_WHEN_DONE"]),
            pay=PaySettings.from_config(config, tuple(PARAMETERS)),
        )
        if min(settings.pairs, settings.sittings_per_participant) < 1:
            raise ValueError("ONLINE_SITTING_PAIRS and ONLINE_SITTINGS_PER_PARTICIPANT must be ≥ 1")
        if min(settings.gold, settings.attention) < 0 or not 1 <= settings.contrast <= 120:
            raise ValueError("check counts must be ≥ 0 and DISPLAY_CONTRAST within 1–120")
        DisplayNeeds.from_config(config, (0, 0))  # raises on a display setting that cannot work
        try:
            consent_text(config)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"ONLINE_CONSENT_TEXT: the only placeholder is {{length}} ({error!r})"
            ) from None
        _check_length(SittingLength.from_config(config))
        floor = (config["GREY_SCREEN_MS"] + config["MIN_VIEWING_MS"]) / 1000
        if settings.rules.max_fast_share is not None and settings.rules.fast_seconds <= floor:
            raise ValueError(
                f"QC_RULES fast_seconds ({settings.rules.fast_seconds:g} s) must exceed "
                f"GREY_SCREEN_MS + MIN_VIEWING_MS ({floor:g} s): the server refuses faster "
                "ratings, so the timing check would never fire"
            )
        return settings


def _check_length(length: SittingLength) -> None:
    """A sitting that takes longer than SESSION_LIMIT_MINUTES is closed before its end: no one
    could complete it (and earn the code) though the consent promised it."""
    needed = length.minutes + (
        length.break_minutes if length.minutes > length.break_after_minutes else 0
    )
    if needed > length.limit_minutes:
        raise ValueError(
            f"SESSION_LIMIT_MINUTES ({length.limit_minutes:g}) is shorter than an online sitting "
            f"(about {needed} minutes with its practice and any break): every sitting would "
            "close before its end; raise it or lower ONLINE_SITTING_PAIRS"
        )


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
    address = request.remote_addr or "unknown"
    if not current_app.extensions["online_throttle"].hit(address):
        message = "Too many entries from this address; please wait a few minutes."
        return render_template("error.html", message=message), 429
    platform, ids = _platform_ids(request.args)
    if platform is None:
        message = (
            "This link lacks your participant id: open the study from your recruitment platform "
            "(it adds e.g. PROLIFIC_PID, STUDY_ID and SESSION_ID to the address)."
        )
        return render_template("error.html", message=message), 400
    participant = settings().pay.normalised_id(platform, ids["participant"])
    if participant is None:
        message = (
            f"This link's participant id is not a valid {platform} id: open the study from "
            "your recruitment platform's own link, unchanged."
        )
        return render_template("error.html", message=message), 400
    ids["participant"] = participant
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
        values = {key: args.get(name, "").strip() for key, name in ids.items()}
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
    its outcome's code and link again (a closed tab must not cost the pay; the code is the one
    this outcome earned, so this reveals nothing the participant was not already shown)."""
    message = "You have already taken part in this study; it cannot be taken twice. Thank you!"
    last = _last_sitting(get_db(), viewer)
    if last is None or last.closed_reason != "completed":
        return render_template("error.html", message=message), 409
    return render_template("online_complete.html", again=message, **_outcome_page(last)), 409


def _last_sitting(db: OrmSession, viewer: Viewer) -> Session | None:
    return db.scalar(
        select(Session).where(Session.viewer_id == viewer.id).order_by(Session.id.desc()).limit(1)
    )


def _outcome_page(sitting: Session | None) -> dict:
    """The end page's code and link for the sitting's outcome (judged now if not yet)."""
    config = settings()
    outcome = settle(get_db(), sitting, config.rules) if sitting is not None else None
    return config.pay.completion(outcome)


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
    return render_template("consent.html", form=form, text=consent_text(current_app.config))


# --------------------------------------------------------------------------- display check


class DisplayForm(FlaskForm):
    window_width = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    window_height = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    screen_width = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    screen_height = IntegerField(validators=[InputRequired(), NumberRange(1, 100_000)])
    device_pixel_ratio = FloatField(validators=[InputRequired(), finite, NumberRange(0.1, 16)])
    zoom = FloatField(validators=[InputRequired(), finite, NumberRange(0.01, 100)])
    browser = HiddenField(validators=[Length(max=512)])
    pointer = HiddenField(validators=[Length(max=16)])
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
    throttle = current_app.extensions["online_display_throttle"]
    if form.is_submitted() and (
        session.get("display_tries", 0) >= DISPLAY_TRIES or not throttle.test(str(viewer.id))
    ):
        message = "Too many tries of the screen check; please return the study on your platform."
        return render_template("error.html", message=message), 429
    if form.validate_on_submit():
        session["display_tries"] = session.get("display_tries", 0) + 1
        measured = {name: getattr(form, name).data for name in DISPLAY_FIELDS}
        digits_read = (form.digits.data or "").strip() == display_digits()
        problems = display_needs(db).problems(measured, digits_read)
        if problems:
            throttle.hit(str(viewer.id))
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
    needs = display_needs(db)
    return render_template("online_display.html", form=form, needs=needs), (
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
    "pointer",
)


def display_needs(db: OrmSession) -> DisplayNeeds:
    """What this study asks of a screen: from every pair a participant can be shown (the
    study's images, the practice pairs; the checks have their sizes). Computed once per set of
    stimuli (every display check asks)."""

    def compute() -> DisplayNeeds:
        pairs = db.execute(
            select(Stimulus.distorted_path, Stimulus.reference_path).where(
                Stimulus.withheld.is_(False)
            )
        ).all()
        pairs += [(p.distorted_path, p.reference_path) for p in study_practice_pairs()]
        return DisplayNeeds.from_config(current_app.config, largest_pair(pairs))

    return per_stimuli_set("display_needs", db, compute)


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
    seed = seed_of(current_app.config["SECRET_KEY"], "contrast", session["display_nonce"])
    response = make_response(contrast_png(display_digits(), settings().contrast, seed))
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
    rows = []
    for position, (stimulus_id, warmup, check) in enumerate(planned):
        kind, low, high = check if check is not None else (None, None, None)
        rows.append(
            dict(
                session_id=sitting.id,
                position=position,
                stimulus_id=stimulus_id,
                is_warmup=warmup,
                is_repeat=False,
                check_kind=kind,
                accept_low=low,
                accept_high=high,
            )
        )
    db.execute(insert(Trial), rows)  # one executemany: the write transaction stays short
    db.commit()
    return sitting


def allocation_state(
    db: OrmSession, plan: sittings.Design, config: OnlineSettings
) -> AllocationState:
    """Precision of every eligible stimulus from the kept participants' test ratings.

    Eligible: not withheld (gold pairs are stored withheld), not a practice stimulus. Kept: not
    excluded by the QC rules. Trials planned in open sittings count towards each image's number
    (so that simultaneous participants do not all get the least-rated images). Read from the
    app's :class:`annotate.tally.TrialTally`: only the ratings new since the last open.
    """
    return current_app.extensions["trial_tally"].state(db, plan.practice_keys, config.rules)


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
        target = ("attention", asked - ATTENTION_TOLERANCE, asked + ATTENTION_TOLERANCE)
        source = int(state.stimuli[int(rng.choice(chosen))])
        checks.append((attention_stimulus(db, source, asked), False, target))
    return checks


def gold_stimulus(db: OrmSession, kind: str, reference_path: str) -> int:
    """The id of the gold pair ``kind`` made from ``reference_path`` (created once, withheld so
    that no design ever schedules it as a test image; commits). Its image is a fresh encoding
    in the format of the reference's distorted images (:func:`annotate.controls.reencoded`)."""
    key = f"{kind}:{reference_path}"[:255]
    found = db.scalar(select(Stimulus).where(Stimulus.key == key))
    if found is not None and Path(found.distorted_path).parent == _control_path(key, "").parent:
        return found.id
    source = Path(reference_path)
    if kind == "gold-low":
        folder = Path(current_app.instance_path) / "practice"
        source = Path(made_pairs(source, folder)[0].distorted_path)
    like = db.scalar(
        select(Stimulus.distorted_path)
        .where(Stimulus.reference_path == reference_path)
        .order_by(Stimulus.id)
        .limit(1)
    )
    distorted = reencoded(source, _control_path(key, like or reference_path), _seed(key))
    if found is not None:  # made before schema 5: the reference's own file, or the practice's
        found.distorted_path = str(distorted)
        db.commit()
        return found.id
    return _withheld_stimulus(db, key, str(distorted), reference_path)


def attention_stimulus(db: OrmSession, source_id: int, asked: float) -> int:
    """The id of the attention check asking for ``asked`` on test stimulus ``source_id``: its
    image to rate carries the instruction (created once, withheld; commits)."""
    source = db.get(Stimulus, source_id)
    key = f"attention:{asked:.1f}:{source.key}"[:255]
    found = db.scalar(select(Stimulus.id).where(Stimulus.key == key))
    if found is not None:
        return found
    target = _control_path(key, source.distorted_path)
    drawn = attention_image(Path(source.distorted_path), target, asked)
    return _withheld_stimulus(db, key, str(drawn), source.reference_path)


def _control_path(key: str, like: str) -> Path:
    """Where a control image lives: an opaque name (the key would tell what it is) under the
    instance folder, with the suffix of the study image it stands in for."""
    name = hashlib.sha256(f"{current_app.config['SECRET_KEY']}|{key}".encode()).hexdigest()[:24]
    return Path(current_app.instance_path) / "controls" / f"{name}{Path(like).suffix or '.png'}"


def _seed(key: str) -> int:
    return seed_of(current_app.config["SECRET_KEY"], key)


def _withheld_stimulus(db: OrmSession, key: str, distorted: str, reference: str) -> int:
    """Insert a control's stimulus (withheld: no design schedules it); the id of the row made
    here or by a simultaneous sitting."""
    stimulus = Stimulus(key=key, distorted_path=distorted, reference_path=reference, withheld=True)
    db.add(stimulus)
    try:
        db.commit()
    except IntegrityError:  # made by a simultaneous sitting
        db.rollback()
        return db.scalar(select(Stimulus.id).where(Stimulus.key == key))
    return stimulus.id


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
    return render_template(
        "online_complete.html",
        reason=last.closed_reason if last is not None else None,
        **_outcome_page(last),
    )
