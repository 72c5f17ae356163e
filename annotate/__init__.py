"""Stage 2 — the lab annotation app (Flask): double-stimulus CMC-Bench ratings, BT.500 sittings.

``create_app`` is the application factory (as in Flask's tutorial): configuration comes from
:mod:`annotate.config`, then ``defaults`` (the demo's), then ``instance/config.py``, then
``test_config``; the study database defaults to ``instance/ratings.db``.

Deployment concerns live here, in one place: session cookies whose Secure flag follows the scheme
the browser used (so the README's plain-HTTP LAN command works and HTTPS keeps Secure cookies),
security headers with a Content-Security-Policy that allows no inline script or style, private
(0600) files for secrets and participant data, and explained failures (a lost session cookie, a
database that cannot be written) instead of bare errors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, g, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import OperationalError

from annotate.private import create_private, private_folder, read_optional, write_private

csrf = CSRFProtect()
log = logging.getLogger("annotate")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Only this site's own files: no inline script or style, no plug-ins, no framing."""

COOKIE_HINT = (
    "Your browser did not send back this site's session cookie, so the form could not be "
    "trusted and nothing was saved. Allow cookies for this site, open the study at the exact "
    "address the experimenter gave you, reload the page and try again; if it happens again, "
    "call the experimenter."
)
HTTPS_ONLY_HINT = (
    " This server sends its cookies over HTTPS only (SESSION_COOKIE_SECURE = True in "
    "instance/config.py) but this page came over plain HTTP: open it with https://, or remove "
    "that setting."
)
UNSAVED = (
    "Your last rating was NOT saved: the study database cannot be written on the server. "
    "Please stop here and call the experimenter."
)


class SchemeAwareSessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose Secure flag follows the request when the config says None.

    A browser stores a Secure cookie only from an HTTPS page (``http://localhost`` excepted), so a
    fixed ``Secure`` breaks every form on a plain-HTTP lab network. With ``SESSION_COOKIE_SECURE =
    None`` (the default) the flag is set exactly when the page came over HTTPS — directly, or
    through a trusted reverse proxy's ``X-Forwarded-Proto`` (``serve --behind-proxy``).
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        configured = app.config["SESSION_COOKIE_SECURE"]
        return request.is_secure if configured is None else bool(configured)


def create_app(
    test_config: dict[str, Any] | None = None,
    instance_path: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> Flask:
    """Build the app. ``instance_path`` defaults to the project's ``instance/`` folder.

    ``defaults`` sit below ``instance/config.py`` (the demo's choices must not override the lab's
    own settings); ``test_config`` sits above everything.
    """
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    app.config.from_object("annotate.config")
    if defaults:
        app.config.from_mapping(defaults)
    app.config.from_pyfile("config.py", silent=True)
    if test_config:
        app.config.from_mapping(test_config)
    instance = private_folder(Path(app.instance_path))
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(instance)
    if not app.config.get("DATABASE"):
        app.config["DATABASE"] = str(instance / "ratings.db")
    if "://" not in app.config["DATABASE"]:  # SQLite: a new database is private from the start
        create_private(Path(app.config["DATABASE"]).expanduser())
    app.session_interface = SchemeAwareSessionInterface()

    from annotate import admin, db, media, online, study

    db.init_app(app)
    csrf.init_app(app)
    admin.init_app(app)
    online.init_app(app)
    app.register_blueprint(study.bp)
    app.register_blueprint(online.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(media.bp)
    app.jinja_env.globals["media_url"] = media.media_url

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):
        message = f"Form rejected: {error.description}"
        if "session token is missing" in (error.description or ""):
            message = COOKIE_HINT
            if app.config["SESSION_COOKIE_SECURE"] and not request.is_secure:
                message += HTTPS_ONLY_HINT
        return render_template("error.html", message=message), 400

    @app.errorhandler(OperationalError)
    def _database_error(error: OperationalError):
        """A database that cannot be written (disk full, read-only file, lost server): 503."""
        session = g.get("db")
        if session is not None:
            session.rollback()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        log.error("study database error on %s %s: %s", request.method, request.path, reason)
        if request.blueprint == "admin":
            message = f"The study database cannot be used: {reason}"
            return render_template("error.html", message=message), 503
        return render_template("error.html", message=UNSAVED), 503

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return app


def _instance_secret(folder: Path) -> str:
    """A random secret key kept in the instance folder (readable by its owner only)."""
    import secrets

    path = folder / "secret_key"
    return read_optional(path) or write_private(path, secrets.token_hex(32)).read_text().strip()
