"""Several server processes: gunicorn's workers, for a crowd study on PostgreSQL.

One Python process serves one request's Python code at a time, so a launch burst on a many-core
server needs several processes. Each gunicorn worker builds its own app after the fork (no
database connection crosses it); what the workers must agree on — one open sitting per
participant, the pairs reserved by open sittings, the entry throttle, the display-check tries —
lives in the study database (:mod:`annotate.throttle`, the schema's unique indexes), so it holds
across processes and survives a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from gunicorn.app.base import BaseApplication
from werkzeug.middleware.proxy_fix import ProxyFix


class WorkerServer(BaseApplication):
    """gunicorn, configured in code (no config file, no command line of its own)."""

    def __init__(
        self,
        factory: Callable,
        host: str,
        port: int,
        workers: int,
        threads: int,
        proxy: str | None = None,
    ) -> None:
        self.factory = factory
        self.proxy = proxy
        self.options = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": 60,
            "graceful_timeout": 10,
            "keepalive": 5,
            "preload_app": False,
            "proc_name": "cmc-lab",
            # gunicorn's runtime control socket is one per user (~/.gunicorn): two studies
            # served at once would share it. Nothing here uses it.
            "control_socket_disable": True,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        app = self.factory()
        if self.proxy is None:
            return app
        return trust_proxy(app, self.proxy)


def trust_proxy(app, proxy: str):
    """Apply X-Forwarded-Proto/-For/-Host only to requests that come from ``proxy`` (as
    waitress's ``trusted_proxy`` does): anyone else's forwarded headers are ignored."""
    forwarded = ProxyFix(app, x_for=1, x_proto=1, x_host=1)

    def wsgi(environ, start_response):
        handler = forwarded if environ.get("REMOTE_ADDR") == proxy else app
        return handler(environ, start_response)

    return wsgi
