"""``python -m annotate {import,check,serve,demo,set-password}`` — the lab app's command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import ssl
import sys
from pathlib import Path

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.security import generate_password_hash

from annotate.private import PASSWORD_FILE, private_folder, rotate_epoch, write_private
from cmc_common.help import HelpFormatter
from studydb.manifest import ManifestError, read_manifest

DEFAULT_INSTANCE = Path("instance")
CONNECTIONS = 1000
"""Open connections one server process keeps (waitress's default, 100, stops accepting at a
launch: every participant's browser holds a keep-alive connection; gunicorn's gthread workers
also allow 1000)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ManifestError as error:
        print(f"annotate: error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        print(f"annotate: error: the study database cannot be used: {cause}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m annotate",
        description="The lab annotation app: import a manifest, serve the study, or try the demo. "
        "Configuration lives in the instance folder (instance/config.py); the study database "
        "defaults to instance/ratings.db.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--instance", type=Path, default=DEFAULT_INSTANCE, help="the Flask instance folder"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, formatter_class=HelpFormatter, **kwargs)

    load = add_command("import", help="load a generator manifest into the study database")
    load.add_argument("manifest", type=Path, help="CSV with id, distorted_path, reference_path, …")
    load.add_argument("--group-size", type=int, help="stimuli per group (default: GROUP_SIZE)")
    load.add_argument("--seed", type=int, default=0, help="seed of the split into groups")
    load.add_argument(
        "--include-nsfw",
        action="store_true",
        help="also import images the safety checker blanked (nsfw_detected); skipped by default",
    )
    load.set_defaults(run=_import)

    check_help = (
        "open (decode) every stimulus image before the study is served; exit 1 listing each "
        "missing or unreadable file"
    )
    check = add_command("check", help=check_help, description=check_help)
    check.set_defaults(run=_check)

    serve = add_command("serve", help="run the study for a lab (waitress WSGI server)")
    _server_options(serve)
    serve.set_defaults(run=_serve)

    demo = add_command("demo", help="build a small study from the shipped images and serve it")
    _server_options(demo)
    demo.add_argument("--no-serve", action="store_true", help="build the demo study, then stop")
    demo.set_defaults(run=_demo)

    password = add_command("set-password", help="set the admin password (stored hashed)")
    password.add_argument(
        "--stdin", action="store_true", help="read the password from standard input"
    )
    password.set_defaults(run=_set_password)
    return parser


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on: 0.0.0.0 for every machine of the lab network",
    )
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (per process)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes: more than 1 runs gunicorn's workers (Linux/macOS), for a crowd "
        "study on PostgreSQL (docs/annotate.md, 'Crowd studies at scale')",
    )
    tls = parser.add_argument_group(
        "HTTPS (default: plain HTTP; cookies are Secure exactly when a page comes over HTTPS)"
    )
    tls.add_argument(
        "--certfile",
        type=Path,
        help="serve HTTPS directly (cheroot's TLS) with this PEM certificate (chain); "
        "needs --keyfile",
    )
    tls.add_argument("--keyfile", type=Path, help="the certificate's PEM private key")
    tls.add_argument(
        "--behind-proxy",
        metavar="ADDRESS",
        help="a TLS-terminating reverse proxy (e.g. Caddy) at ADDRESS forwards to this server: "
        "trust its X-Forwarded-Proto/-For/-Host headers (and only its)",
    )
    tls.add_argument(
        "--http",
        action="store_true",
        help="never set the Secure flag on cookies (the default already omits it over HTTP)",
    )


def _app(args: argparse.Namespace):
    """The app of the command's instance folder (and the demo's defaults, for ``demo``); a
    setting refused at start-up is one line naming the config file, not a traceback."""
    try:
        return _app_for(
            args.instance.resolve(), getattr(args, "http", False), getattr(args, "defaults", None)
        )
    except ValueError as error:
        print(f"annotate: error: {args.instance / 'config.py'}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _import(args: argparse.Namespace) -> int:
    from annotate.db import get_db
    from annotate.importer import import_manifest
    from studydb.manifest import nsfw_flagged

    frame = read_manifest(args.manifest)
    app = _app(args)
    with app.app_context():
        size = args.group_size or app.config["GROUP_SIZE"]
        added, present = import_manifest(get_db(), frame, size, np.random.default_rng(args.seed),
                                         args.include_nsfw)  # fmt: skip
    skipped = 0 if args.include_nsfw else int(nsfw_flagged(frame).sum())
    print(
        f"imported {added} stimuli ({present} already present"
        f"{f', {skipped} skipped as flagged NSFW by the safety checker' if skipped else ''}) "
        f"into {app.config['DATABASE']}"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    """Decode every image file of the study; list each problem, one line per file."""
    from sqlalchemy import func, select

    from annotate.checks import file_problems
    from annotate.db import get_db
    from studydb import Stimulus

    app = _app(args)
    with app.app_context():
        db = get_db()
        count = db.scalar(select(func.count()).select_from(Stimulus)) or 0
        problems = file_problems(db, decode=True, progress=True)
    if count == 0:
        print(
            f"annotate: error: {app.config['DATABASE']} has no stimuli; import a manifest first",
            file=sys.stderr,
        )
        return 2
    for problem in problems:
        print(f"annotate: {problem}", file=sys.stderr)
    if problems:
        print(
            f"{len(problems)} image file(s) cannot be shown: fix them before serving the study",
            file=sys.stderr,
        )
        return 1
    print(f"all image files of {count} stimuli open")
    return 0


MAX_WORKERS = 4 * (os.cpu_count() or 1)
"""More server processes than this only share the cores (and each holds its own connections)."""


def _serve(args: argparse.Namespace, app=None) -> int:
    """Check the set-up, then serve with waitress (HTTP) or cheroot (HTTPS) until Ctrl+C."""
    from annotate.db import check_writable

    if (args.certfile is None) != (args.keyfile is None):
        print("annotate: error: --certfile and --keyfile go together", file=sys.stderr)
        return 2
    for path in (args.certfile, args.keyfile):
        if path is not None and not path.is_file():
            print(f"annotate: error: {path} does not exist", file=sys.stderr)
            return 2
    if args.certfile is not None and args.behind_proxy:
        print("annotate: error: choose --certfile or --behind-proxy, not both", file=sys.stderr)
        return 2
    if args.workers < 1 or args.threads < 1:
        print("annotate: error: --workers and --threads must be at least 1", file=sys.stderr)
        return 2
    if args.workers > MAX_WORKERS:
        print(
            f"annotate: error: --workers {args.workers} is more than this machine runs well "
            f"(at most {MAX_WORKERS}: four per core)",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and args.certfile is not None:
        print(
            "annotate: error: several --workers serve plain HTTP: put a TLS reverse proxy in "
            "front (--behind-proxy) instead of --certfile",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(  # an audit trail on stderr: logins, failures, database errors
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = app or _app(args)
    problem = check_writable(app.extensions["study_engine"])
    if problem is not None:
        print(
            f"annotate: error: cannot write the study database {app.config['DATABASE']}: "
            f"{problem} — not serving (free disk space or fix the file's permissions)",
            file=sys.stderr,
        )
        return 2
    for name in app.jinja_env.list_templates():  # compile now, not on the first viewer's click
        app.jinja_env.get_template(name)
    try:
        if args.workers > 1:
            run = _worker_processes(app, args)
        else:
            run = _https_server(app, args) if args.certfile else _http_server(app, args)
    except ssl.SSLError as error:  # before OSError: it is one
        print(
            f"annotate: error: cannot use the certificate {args.certfile} with the key "
            f"{args.keyfile}: {error} (PEM files, certificate first, key second)",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        print(
            f"annotate: error: cannot listen on {args.host}:{args.port}: {error} (another "
            "server on that port? choose one with --port)",
            file=sys.stderr,
        )
        return 2
    scheme = "https" if args.certfile else "http"
    host = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host
    url = f"{scheme}://{host}:{args.port}/"
    if app.config["ONLINE"]:
        print(
            f"serving the online study (admin: {url}admin/) — Ctrl+C to stop\n"
            f"entry link for Prolific: {entry_link(url)}\n"
            f'(MTurk and other panels: see docs/annotate.md, "Online studies")',
            flush=True,
        )
    else:
        print(f"serving the study at {url} (admin: {url}admin/) — Ctrl+C to stop", flush=True)
    run()
    return 0


def entry_link(url: str) -> str:
    """The study's entry link with Prolific's placeholders, to paste into the study's settings
    (the site's own / is closed in online mode: participants come by this link)."""
    names = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
    return f"{url}online/start?" + "&".join(f"{n}={{{{%{n}%}}}}" for n in names)


def _http_server(app, args: argparse.Namespace):
    """waitress, bound now (so a port in use is reported before anything is announced)."""
    import waitress

    proxy = {}
    if args.behind_proxy:
        proxy = dict(
            trusted_proxy=args.behind_proxy,
            trusted_proxy_headers={"x-forwarded-proto", "x-forwarded-for", "x-forwarded-host"},
            clear_untrusted_proxy_headers=True,
        )
    server = waitress.create_server(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        ident="cmc-lab",
        connection_limit=CONNECTIONS,
        **proxy,
    )
    server.print_listen("Serving on http://{}:{}")
    args.port = server.effective_port  # --port 0: the links printed name the port bound
    return server.run


def _worker_processes(app, args: argparse.Namespace):
    """gunicorn with ``--workers`` processes of ``--threads`` threads each. Every worker builds
    its own app (and database engine) after the fork; all they share lives in the database."""
    from annotate.workers import WorkerServer

    app.extensions["study_engine"].dispose()  # no connection of the parent crosses the fork
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.create_server(
        (args.host, args.port), family=family
    ) as probe:  # a port in use: one line, now
        args.port = probe.getsockname()[1]  # (gunicorn itself retries and logs for seconds)
    return WorkerServer(
        lambda: _app(args),
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        proxy=args.behind_proxy,
    ).run


def _app_for(instance: Path, http: bool, defaults: dict | None):
    from annotate import create_app

    config = {"SESSION_COOKIE_SECURE": False} if http else None
    return create_app(config, instance_path=str(instance), defaults=defaults)


def _https_server(app, args: argparse.Namespace):
    """HTTPS without a proxy: cheroot (CherryPy's WSGI server) with Python's own TLS."""
    from cheroot.ssl.builtin import BuiltinSSLAdapter
    from cheroot.wsgi import Server

    adapter = BuiltinSSLAdapter(str(args.certfile), str(args.keyfile))
    server = Server((args.host, args.port), app, numthreads=args.threads, server_name="cmc-lab")
    server.ssl_adapter = adapter
    server.prepare()
    args.port = server.bind_addr[1]  # --port 0: the links printed name the port bound

    def run() -> None:
        try:
            server.serve()
        except KeyboardInterrupt:
            server.stop()

    return run


def _demo(args: argparse.Namespace) -> int:
    from annotate.db import get_db
    from annotate.demo import build_demo, demo_defaults, demo_password
    from annotate.importer import import_manifest

    private_folder(args.instance)  # it holds the demo's secrets and database, and the lab's own
    instance = private_folder(args.instance / "demo")
    manifest = instance / "study" / "manifest.csv"
    if not manifest.exists():
        build_demo(manifest.parent)
    password = demo_password(instance)
    rotate_epoch(instance)  # a new demo revokes every admin session of the previous one
    args.instance = instance
    args.defaults = demo_defaults(manifest, args.instance.parent / "config.py")
    app = _app(args)
    with app.app_context():
        added, _ = import_manifest(
            get_db(), read_manifest(manifest), app.config["GROUP_SIZE"], np.random.default_rng(0)
        )
    print(f"demo study: {manifest.parent} ({added} new stimuli), database {app.config['DATABASE']}")
    print(f"admin password for this demo: {password}")
    if args.no_serve:
        return 0
    return _serve(args, app)


def _set_password(args: argparse.Namespace) -> int:
    from flask import Config

    lab_config = Config(str(args.instance))
    lab_config.from_pyfile("config.py", silent=True)
    if lab_config.get("ADMIN_PASSWORD_HASH"):
        print(
            f"annotate: error: {args.instance / 'config.py'} sets ADMIN_PASSWORD_HASH, which "
            "takes precedence over a stored password: remove it from there first",
            file=sys.stderr,
        )
        return 2
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        print(
            "annotate: error: no terminal to ask for the password: pipe it in with --stdin "
            '(echo "$PASSWORD" | python -m annotate set-password --stdin)',
            file=sys.stderr,
        )
        return 2
    else:
        try:
            password = getpass.getpass("new admin password: ")
            again = getpass.getpass("again: ")
        except (EOFError, KeyboardInterrupt):
            print("\nannotate: error: no password given; nothing changed", file=sys.stderr)
            return 2
        if again != password:
            print("annotate: error: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 10:
        print("annotate: error: use at least 10 characters", file=sys.stderr)
        return 2
    target = write_private(args.instance / PASSWORD_FILE, generate_password_hash(password))
    rotate_epoch(args.instance)
    print(
        f"admin password stored (hashed, owner-only) in {target}; it works at once, "
        "and every admin session logged in before is now refused"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
