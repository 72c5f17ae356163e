"""Issue 11, points 1, 2 and 5 against a real ``python -m annotate serve`` process on loopback:
the README's plain-HTTP lab command works under a host name that is not localhost (Chromium with
``--host-resolver-rules``), HTTPS directly (cheroot, a self-signed certificate) and behind a
reverse proxy gives Secure cookies, failed logins lock an address out, and ``serve`` refuses a
database it cannot write. Only 127.0.0.1 is ever contacted; every server is stopped."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from annotate.__main__ import main as annotate_main
from tests.annotate_helpers import free_port, make_study

ROOT = Path(__file__).resolve().parents[1]
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PASSWORD = "lab password 42"


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """An instance with a small imported study and an admin password."""
    import io

    folder = tmp_path / "instance"
    assert (
        annotate_main(["--instance", str(folder), "import", str(make_study(tmp_path / "img"))]) == 0
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert annotate_main(["--instance", str(folder), "set-password", "--stdin"]) == 0
    (folder / "config.py").write_text(
        "GREY_SCREEN_MS = 0\nADMIN_LOGIN_LIMIT = '3 per 10 minutes'\n"
    )
    return folder


@contextmanager
def serving(instance: Path, *options: str, scheme: str = "http"):
    """``python -m annotate serve`` on a free loopback port; yields (base URL, log file)."""
    port = free_port()
    log = instance.parent / f"serve-{port}.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "annotate", "--instance", str(instance), "serve",
             "--host", "127.0.0.1", "--port", str(port), *options],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        for _ in range(300):  # 30 s at most
            if server.poll() is not None:
                raise AssertionError(f"serve exited: {log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("serve did not start")
        yield f"{scheme}://127.0.0.1:{port}", log
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def post_form(http: requests.Session, base: str, path: str, data: dict, **kwargs):
    token = TOKEN.search(http.get(base + path, **kwargs).text).group(1)
    return http.post(
        base + path, data={"csrf_token": token, **data}, allow_redirects=False, **kwargs
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_the_readme_lan_command_works_from_another_host_name_in_chromium(instance):
    from playwright.sync_api import sync_playwright

    with serving(instance) as (base, _log), sync_playwright() as playwright:
        port = base.rsplit(":", 1)[1]
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--host-resolver-rules=MAP lab.test 127.0.0.1",
            ],  # fmt: skip
        )
        try:
            page = browser.new_page()
            page.goto(f"http://lab.test:{port}/consent")  # not localhost: an insecure context
            assert page.evaluate("window.isSecureContext") is False
            page.check("#agree")
            page.click("#consent-continue")
            assert page.url.endswith("/register"), page.content()
            page.fill("#age", "31")
            page.select_option("#gender", "male")
            page.fill("#vision_screening", "20/20")
            page.click("#register")
            assert page.url.endswith("/environment") and page.text_content("#code")
            cookies = page.context.cookies()
            assert cookies and not any(c["secure"] for c in cookies)
        finally:
            browser.close()


def test_failed_logins_are_locked_out_by_the_real_server(instance):
    with serving(instance) as (base, log):
        http = requests.Session()
        for _ in range(3):
            assert post_form(http, base, "/admin/login", {"password": "guess"}).status_code == 403
        locked = post_form(http, base, "/admin/login", {"password": PASSWORD})
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert http.get(base + "/admin/", allow_redirects=False).status_code == 302
        time.sleep(0.2)
        text = log.read_text()
    assert text.count("failed admin login from 127.0.0.1") == 3 and "locked out" in text


def test_a_copied_admin_cookie_stops_working_after_logout(instance):
    with serving(instance) as (base, _log):
        admin = requests.Session()
        assert post_form(admin, base, "/admin/login", {"password": PASSWORD}).status_code == 302
        thief = requests.Session()
        thief.cookies.update(admin.cookies)
        assert thief.get(base + "/admin/", allow_redirects=False).status_code == 200
        token = TOKEN.search(admin.get(base + "/admin/").text).group(1)
        admin.post(base + "/admin/logout", data={"csrf_token": token}, allow_redirects=False)
        assert thief.get(base + "/admin/", allow_redirects=False).status_code == 302


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_https_directly_gives_secure_cookies_and_working_forms(instance, tmp_path):
    cert, key = self_signed(tmp_path)
    options = ("--certfile", str(cert), "--keyfile", str(key))
    with serving(instance, *options, scheme="https") as (base, _log):
        http = requests.Session()
        first = http.get(base + "/consent", verify=str(cert))
        assert "Secure" in first.headers["Set-Cookie"]
        assert first.headers["Strict-Transport-Security"].startswith("max-age=")
        token = TOKEN.search(first.text).group(1)
        answer = http.post(base + "/consent", data={"csrf_token": token, "agree": "y"},
                           allow_redirects=False, verify=str(cert),
                           headers={"Referer": base + "/consent"})  # fmt: skip
        assert answer.status_code == 302 and answer.headers["Location"].endswith("/register")


def test_behind_a_reverse_proxy_cookies_follow_the_forwarded_scheme(instance):
    with serving(instance, "--behind-proxy", "127.0.0.1") as (base, _log):
        proxied = requests.get(base + "/consent", headers={"X-Forwarded-Proto": "https"})
        plain = requests.get(base + "/consent")
    assert "Secure" in proxied.headers["Set-Cookie"]
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_serve_refuses_a_database_it_cannot_write(instance):
    database = instance / "ratings.db"
    (instance / "config.py").write_text(
        f"DATABASE = 'sqlite:///file:{database}?mode=ro&uri=true'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "serve", "--port",
         str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "readonly" in done.stderr and "Traceback" not in done.stderr
