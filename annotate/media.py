"""The images, behind opaque per-sitting URLs: a viewer learns nothing of what they rate.

The generator's file names encode reference, model, mode and bitrate, and stimulus ids are
sequential, so neither may appear in a URL or a header a viewer can see. An image URL is
``/media/<token>``, where the token is an HMAC (keyed by the app's secret) of the *scope* — this
viewer's current sitting, or the admin's epoch — the stimulus and which image of the pair. The
server resolves a token by recomputing the tokens of what that scope may see (the trials of the
viewer's open sitting and the practice examples; for the admin, the images in the NSFW queue), so
nothing is stored, an old sitting's URLs stop working, and any other token is a 404.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
from pathlib import Path

from flask import Blueprint, abort, current_app, g, request, send_file, session
from sqlalchemy import select

from annotate.db import get_db
from annotate.practice import study_practice_pairs
from studydb import Rating, Session, Stimulus, Trial

bp = Blueprint("media", __name__)
log = logging.getLogger("annotate")

WHICH = ("distorted", "reference")
TOKEN_LENGTH = 32  # hex characters: 128 bits of the HMAC


def media_url(stimulus_id: int, which: str) -> str:
    """The opaque URL of one image of a stimulus for whoever this request belongs to."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}")
    return f"/media/{_token(_scope(admin=request.blueprint == 'admin'), stimulus_id, which)}"


@bp.route("/media/<token>")
def image(token: str):
    """Serve an image if the token is one this viewer's sitting (or the admin) may see."""
    if len(token) != TOKEN_LENGTH or not all(c in "0123456789abcdef" for c in token):
        abort(404)
    found = None
    if session.get("viewer_id") is not None:
        found = _resolve(token, _scope(admin=False), _viewer_candidates())
    if found is None and _admin_signed_in():
        found = _resolve(token, _scope(admin=True), _admin_candidates())
    if found is None:
        abort(404)
    stimulus, which = found
    return send_image(
        Path(stimulus.distorted_path if which == "distorted" else stimulus.reference_path),
        etag=token,
        missing=f"stimulus {stimulus.key}",
    )


def send_image(path: Path, etag: str, missing: str = "practice image"):
    """An image with nothing in its headers that names it: no ``Content-Disposition`` (a file
    name would tell the condition), no ``Last-Modified``; a missing file is logged and a 404."""
    if not path.is_file():
        log.error("image file missing for %s: %s", missing, path)
        abort(404, description="This image is not available; please call the experimenter.")
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = send_file(path.open("rb"), mimetype=mimetype, etag=etag, max_age=3600)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _scope(admin: bool) -> str:
    """Whose URL this is: the viewer's open sitting, or the admin epoch (revoked with it)."""
    if admin:
        from annotate.admin import admin_epoch

        return f"admin:{admin_epoch()}"
    if "media_sitting" not in g:
        viewer_id = session.get("viewer_id")
        g.media_sitting = (
            get_db().scalar(
                select(Session.id).where(
                    Session.viewer_id == viewer_id, Session.closed_reason.is_(None)
                )
            )
            if viewer_id is not None
            else None
        )
    return f"viewer:{session.get('viewer_id')}:sitting:{g.media_sitting}"


def _token(scope: str, stimulus_id: int, which: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    message = f"{scope}|{stimulus_id}|{which}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:TOKEN_LENGTH]


def _resolve(token: str, scope: str, candidates: list[Stimulus]):
    for stimulus in candidates:
        for which in WHICH:
            if hmac.compare_digest(_token(scope, stimulus.id, which), token):
                return stimulus, which
    return None


def _viewer_candidates() -> list[Stimulus]:
    """The configured practice stimuli and every image planned in the viewer's open sitting
    (made practice pairs are not stimuli: ``study.practice_image`` serves them)."""
    _scope(admin=False)
    planned = []
    if g.media_sitting is not None:
        planned = list(
            get_db().scalars(
                select(Stimulus)
                .join(Trial, Trial.stimulus_id == Stimulus.id)
                .where(Trial.session_id == g.media_sitting)
            )
        )
    practice = [p.stimulus_id for p in study_practice_pairs() if p.stimulus_id is not None]
    if practice:
        planned += get_db().scalars(select(Stimulus).where(Stimulus.id.in_(practice)))
    return planned


def _admin_candidates() -> list[Stimulus]:
    """The admin sees images only in the NSFW queue (the one place the dashboard shows them)."""
    flagged = select(Rating.stimulus_id).where(Rating.nsfw.is_(True))
    return list(get_db().scalars(select(Stimulus).where(Stimulus.id.in_(flagged))))


def _admin_signed_in() -> bool:
    from annotate.admin import admin_session_valid

    return admin_session_valid()
