"""``python -m annotate {import,check,serve,demo,set-password}`` — the lab app's command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

import numpy as np
from werkzeug.security import generate_password_hash

from studydb.manifest import ManifestError, read_manifest

DEFAULT_INSTANCE = Path("instance")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ManifestError as error:
        print(f"annotate: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m annotate",
        description="The lab annotation app: import a manifest, serve the study, or try the demo. "
        "Configuration lives in the instance folder (instance/config.py); the study database "
        "defaults to instance/ratings.db.",
    )
    parser.add_argument(
        "--instance", type=Path, default=DEFAULT_INSTANCE, help="the Flask instance folder"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser("import", help="load a generator manifest into the study database")
    load.add_argument("manifest", type=Path, help="CSV with id, distorted_path, reference_path, …")
    load.add_argument("--group-size", type=int, help="stimuli per group (default: GROUP_SIZE)")
    load.add_argument("--seed", type=int, default=0, help="seed of the split into groups")
    load.add_argument(
        "--include-nsfw",
        action="store_true",
        help="also import images the safety checker blanked (nsfw_detected); skipped by default",
    )
    load.set_defaults(run=_import)

    check = commands.add_parser(
        "check",
        help="open every stimulus image before the study is served; exit 1 if any is missing or "
        "unreadable",
    )
    check.set_defaults(run=_check)

    serve = commands.add_parser("serve", help="run the study for a lab (waitress WSGI server)")
    _server_options(serve)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo", help="build a small study from the shipped images and serve it"
    )
    _server_options(demo)
    demo.add_argument("--no-serve", action="store_true", help="build the demo study, then stop")
    demo.set_defaults(run=_demo)

    password = commands.add_parser("set-password", help="set the admin password (stored hashed)")
    password.add_argument(
        "--stdin", action="store_true", help="read the password from standard input"
    )
    password.set_defaults(run=_set_password)
    return parser


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    parser.add_argument("--threads", type=int, default=8, help="worker threads")
    parser.add_argument(
        "--http",
        action="store_true",
        help="plain HTTP on a lab network: cookies without the Secure flag "
        "(browsers treat http://localhost as secure already)",
    )


def _app(args: argparse.Namespace, **config):
    from annotate import create_app

    return create_app(config or None, instance_path=str(args.instance.resolve()))


def _import(args: argparse.Namespace) -> int:
    from annotate.db import get_db
    from annotate.importer import import_manifest, nsfw_flagged

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


def _serve(args: argparse.Namespace, app=None) -> int:
    import waitress

    app = app or _app(args, **({"SESSION_COOKIE_SECURE": False} if args.http else {}))
    for name in app.jinja_env.list_templates():  # compile now, not on the first viewer's click
        app.jinja_env.get_template(name)
    url = f"http://{args.host}:{args.port}/"
    print(f"serving the study at {url} (admin: {url}admin/) — Ctrl+C to stop", flush=True)
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident="cmc-lab")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from annotate.db import get_db
    from annotate.demo import build_demo, demo_password, training_order
    from annotate.importer import import_manifest

    instance = args.instance / "demo"
    instance.mkdir(parents=True, exist_ok=True)
    manifest = instance / "study" / "manifest.csv"
    if not manifest.exists():
        build_demo(manifest.parent)
    password = demo_password(instance)
    args.instance = instance
    app = _app(
        args,
        TRAINING_STIMULI=training_order(manifest),
        WARMUP_TRIALS=2,
        BREAK_AFTER_MINUTES=30,
        **({"SESSION_COOKIE_SECURE": False} if args.http else {}),
    )
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
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("new admin password: ")
        if getpass.getpass("again: ") != password:
            print("annotate: error: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 10:
        print("annotate: error: use at least 10 characters", file=sys.stderr)
        return 2
    args.instance.mkdir(parents=True, exist_ok=True)
    target = args.instance / "admin_password_hash"
    target.write_text(generate_password_hash(password))
    target.chmod(0o600)
    print(f"admin password stored (hashed) in {target}; restart the server to use it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
