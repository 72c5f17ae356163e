"""Review of issue 11 (black-box findings): concurrent wrong passwords cannot outrun the login
throttle, and the instance folder holding the study's secrets is private (0700) however it is
created (``set-password``, ``demo``), as the README says."""

from __future__ import annotations

import io
import stat
import threading
import time

import numpy as np
import pytest

from annotate.__main__ import main as annotate_main
from annotate.db import get_db
from annotate.importer import import_manifest
from studydb.manifest import read_manifest
from tests.annotate_helpers import ADMIN_PASSWORD, Browser, make_app, make_study


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path / "instance", ADMIN_LOGIN_LIMIT="3 per 10 minutes")
    with app.app_context():
        manifest = read_manifest(make_study(tmp_path / "images"))
        import_manifest(get_db(), manifest, 400, np.random.default_rng(0))
    return app


def test_concurrent_wrong_passwords_are_checked_no_more_often_than_the_limit(app, monkeypatch):
    """Guesses posted at once (one per server thread) must not all pass the throttle before the
    first failure is counted: with a limit of 3, at most 3 passwords are ever checked."""
    import annotate.admin as admin_module

    checked = []
    real_check = admin_module.check_password_hash

    def slow_check(stored, password):  # a password hash takes time: widen the race window
        checked.append(password)
        time.sleep(0.2)
        return real_check(stored, password)

    monkeypatch.setattr(admin_module, "check_password_hash", slow_check)
    attackers = []
    for _ in range(8):
        browser = Browser(app)
        browser.client.environ_base["REMOTE_ADDR"] = "10.0.0.66"
        browser.get("/admin/login")
        attackers.append(browser)
    start = threading.Barrier(len(attackers))
    statuses = []

    def guess(browser):
        start.wait()
        statuses.append(browser.post("/admin/login", {"password": "guess"}).status_code)

    threads = [threading.Thread(target=guess, args=(b,)) for b in attackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(checked) == 3, statuses
    assert sorted(statuses) == [403] * 3 + [429] * 5
    locked = attackers[0].post("/admin/login", {"password": ADMIN_PASSWORD})
    assert locked.status_code == 429


def test_a_right_password_during_the_race_still_works_below_the_limit(app):
    """Serialising the check keeps the ordinary path: the right password logs in, and a
    successful login is not counted as a failure."""
    for _ in range(5):
        admin = Browser(app)
        admin.get("/admin/login")
        assert admin.post("/admin/login", {"password": ADMIN_PASSWORD}).status_code == 302


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_set_password_creates_a_private_instance_folder(tmp_path, monkeypatch):
    folder = tmp_path / "new" / "instance"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long lab password\n"))
    assert annotate_main(["--instance", str(folder), "set-password", "--stdin"]) == 0
    assert _mode(folder) == 0o700
    assert _mode(folder / "admin_password_hash") == 0o600


def test_demo_creates_private_instance_folders(tmp_path):
    folder = tmp_path / "instance"
    assert annotate_main(["--instance", str(folder), "demo", "--no-serve"]) == 0
    assert _mode(folder) == 0o700
    assert _mode(folder / "demo") == 0o700
    assert _mode(folder / "demo" / "ratings.db") == 0o600


def test_an_existing_instance_folder_is_made_private(tmp_path):
    """``instance/`` comes from ``git clone`` (it holds .gitkeep) as 0755; the app that writes the
    secret key and the database into it makes it 0700, as the README says."""
    folder = tmp_path / "instance"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    make_app(folder)
    assert _mode(folder) == 0o700
    assert _mode(folder / "secret_key") == 0o600


def test_closing_an_absurd_sitting_id_is_a_404_not_a_500(app):
    """Like the withhold button: an id beyond any database integer is simply not there."""
    admin = Browser(app)
    admin.get("/admin/login")
    assert admin.post("/admin/login", {"password": ADMIN_PASSWORD}).status_code == 302
    admin.get("/admin/")
    for sitting_id in (2**63, 10**30):
        response = admin.post(f"/admin/sittings/{sitting_id}/close", {})
        assert response.status_code == 404, sitting_id


def test_set_password_refuses_while_the_lab_config_pins_a_password_hash(tmp_path, monkeypatch):
    """A hash in instance/config.py wins over the stored one, so set-password would report a new
    password that "works at once" while the old one stays in force: it says so instead."""
    from werkzeug.security import generate_password_hash

    folder = tmp_path / "instance"
    folder.mkdir()
    pinned = generate_password_hash("the old password")
    (folder / "config.py").write_text(f"ADMIN_PASSWORD_HASH = {pinned!r}\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("a new lab password\n"))
    assert annotate_main(["--instance", str(folder), "set-password", "--stdin"]) == 2
    assert not (folder / "admin_password_hash").exists()


@pytest.fixture
def served_instance(tmp_path, monkeypatch):
    """An instance ready to serve (a study and a password), for the CLI's start-up errors."""
    folder = tmp_path / "instance"
    manifest = make_study(tmp_path / "images")
    assert annotate_main(["--instance", str(folder), "import", str(manifest)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a long lab password\n"))
    assert annotate_main(["--instance", str(folder), "set-password", "--stdin"]) == 0
    return folder


def test_serve_on_a_port_in_use_says_so_instead_of_a_traceback(served_instance, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code = annotate_main(
            ["--instance", str(served_instance), "serve", "--host", "127.0.0.1", "--port", port]
        )
    captured = capsys.readouterr()
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in captured.err
    assert "serving the study" not in captured.out


def test_https_with_swapped_certificate_and_key_says_so(served_instance, tmp_path, capsys):
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=lab-server", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    code = annotate_main(
        ["--instance", str(served_instance), "serve", "--host", "127.0.0.1", "--port", "0",
         "--certfile", str(key), "--keyfile", str(cert)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert "cannot use the certificate" in captured.err
    assert "serving the study" not in captured.out
