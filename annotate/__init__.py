"""Stage 2 — the lab annotation app (Flask): double-stimulus CMC-Bench ratings, BT.500 sittings.

``create_app`` is the application factory (as in Flask's tutorial): configuration comes from
:mod:`annotate.config`, then ``instance/config.py``, then ``test_config``; the study database
defaults to ``instance/ratings.db``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError, CSRFProtect

csrf = CSRFProtect()


def create_app(
    test_config: dict[str, Any] | None = None, instance_path: str | None = None
) -> Flask:
    """Build the app. ``instance_path`` defaults to the project's ``instance/`` folder."""
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    app.config.from_object("annotate.config")
    app.config.from_pyfile("config.py", silent=True)
    if test_config:
        app.config.from_mapping(test_config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(Path(app.instance_path))
    if not app.config.get("ADMIN_PASSWORD_HASH"):
        app.config["ADMIN_PASSWORD_HASH"] = _read_optional(
            Path(app.instance_path) / "admin_password_hash"
        )
    if not app.config.get("DATABASE"):
        app.config["DATABASE"] = str(Path(app.instance_path) / "ratings.db")

    from annotate import admin, db, study

    db.init_app(app)
    csrf.init_app(app)
    app.register_blueprint(study.bp)
    app.register_blueprint(admin.bp)

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):
        return render_template("error.html", message=f"Form rejected: {error.description}"), 400

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app


def _instance_secret(folder: Path) -> str:
    """A random secret key kept in the instance folder (readable by its owner only)."""
    path = folder / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _read_optional(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None
