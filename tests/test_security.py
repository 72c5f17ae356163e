"""Issue 11, points 2–5, in the app: headers and CSP, private files, admin revocation, expiry and
login throttling, spreadsheet-safe exports, opaque per-sitting media URLs, explained database
failures, and the demo honouring the lab's configuration. (Against a real ``serve`` process:
tests/test_lan.py.)"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event

from annotate import CONTENT_SECURITY_POLICY, create_app
from annotate.__main__ import main as annotate_main
from annotate.db import get_db
from annotate.demo import demo_defaults
from annotate.export import to_safe_csv
from mos.compute import main as mos_main
from tests.annotate_helpers import (
    ADMIN_PASSWORD,
    ENVIRONMENT,
    Browser,
    import_study,
    make_app,
    make_study,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "annotate" / "templates"
MEDIA_URL = re.compile(r'(?:src|href)="(/media/[^"]*)"')


@pytest.fixture
def manifest(tmp_path):
    return make_study(tmp_path / "images")


def study_app(tmp_path, manifest, **config):
    app = make_app(tmp_path / "instance", **config)
    import_study(app, manifest)
    return app


@pytest.fixture
def study(tmp_path, manifest):
    return study_app(tmp_path, manifest)


def login(app, address: str = "127.0.0.1", password: str = ADMIN_PASSWORD) -> Browser:
    admin = Browser(app)
    admin.client.environ_base["REMOTE_ADDR"] = address
    admin.get("/admin/login")
    assert admin.post("/admin/login", {"password": password}).status_code == 302
    return admin


def rate_all(browser: Browser, **extra) -> None:
    while (position := browser.current_position()) is not None:
        assert (
            browser.rate(position, 1 + position % 4, 4 - position % 4, **extra).status_code == 303
        )


# --------------------------------------------------------------------------- headers, files


def test_every_page_has_the_csp_and_no_template_has_inline_script_or_style(study):
    response = Browser(study).get("/")
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP: no HSTS
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template
        assert not re.search(r"\sstyle=|<style", text), template
        assert not re.search(r"\son[a-z]+=", text), template


def test_admin_pages_and_exports_are_never_cached(study):
    admin = login(study)
    for url in ("/admin/login", "/admin/", "/admin/export/trials.csv", "/admin/export/viewers.csv",
                "/admin/export/ratings.db"):  # fmt: skip
        response = admin.get(url)
        assert response.status_code == 200, url
        assert response.headers["Cache-Control"] == "no-store", url
    assert "no-store" not in Browser(study).get("/").headers.get("Cache-Control", "")


def test_secrets_and_the_database_are_readable_by_the_owner_only(tmp_path, manifest, monkeypatch):
    instance = tmp_path / "fresh"
    assert annotate_main(["--instance", str(instance), "import", str(manifest)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a long new password\n"))
    assert annotate_main(["--instance", str(instance), "set-password", "--stdin"]) == 0
    app = create_app({"SESSION_COOKIE_SECURE": False}, instance_path=str(instance))
    Browser(app).register()  # writes: the WAL files exist now
    names = ["ratings.db", "secret_key", "admin_password_hash", "admin_epoch", "ratings.db-wal"]
    for name in names:
        assert (instance / name).stat().st_mode & 0o077 == 0, name
    assert instance.stat().st_mode & 0o077 == 0


def test_a_lost_session_cookie_is_explained(study):
    browser = Browser(study)
    browser.get("/consent")
    browser.client.delete_cookie("session")
    response = browser.post("/consent", {"agree": "y"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "did not send back this site&#39;s session cookie" in page and "HTTPS only" not in page
    https_only = make_app(study.instance_path, SESSION_COOKIE_SECURE=True)
    browser = Browser(https_only)
    assert "Secure" in browser.get("/consent").headers["Set-Cookie"]
    browser.client.delete_cookie("session")
    page = browser.post("/consent", {"agree": "y"}).get_data(as_text=True)
    assert "HTTPS only" in page and "open it with https://" in page


# --------------------------------------------------------------------------- admin sessions


def copy_session(source: Browser, app) -> Browser:
    thief = Browser(app)
    thief.client.set_cookie("session", source.client.get_cookie("session").value)
    return thief


def test_a_copied_admin_cookie_is_refused_after_logout(study):
    admin = login(study)
    thief = copy_session(admin, study)
    other_desk = login(study)
    assert thief.get("/admin/").status_code == 200  # the copy works while the admin is in
    admin.get("/admin/")
    assert admin.post("/admin/logout", {}).status_code == 302
    assert thief.get("/admin/").status_code == 302
    assert other_desk.get("/admin/").status_code == 302  # logout ends every admin session
    assert login(study).get("/admin/").status_code == 200


def test_set_password_revokes_sessions_and_works_without_a_restart(tmp_path, manifest, monkeypatch):
    instance = tmp_path / "instance"
    monkeypatch.setattr("sys.stdin", io.StringIO("first password 1\n"))
    assert annotate_main(["--instance", str(instance), "set-password", "--stdin"]) == 0
    app = study_app(tmp_path, manifest, ADMIN_PASSWORD_HASH=None)
    admin = login(app, password="first password 1")
    monkeypatch.setattr("sys.stdin", io.StringIO("second password 2\n"))
    assert annotate_main(["--instance", str(instance), "set-password", "--stdin"]) == 0
    assert admin.get("/admin/").status_code == 302
    assert login(app, password="second password 2").get("/admin/").status_code == 200


def test_admin_sessions_expire(tmp_path, manifest):
    app = study_app(tmp_path, manifest, ADMIN_SESSION_MINUTES=30)
    admin = login(app)
    assert admin.get("/admin/").status_code == 200
    with admin.client.session_transaction() as session:
        session["admin_since"] = time.time() - 31 * 60
    assert admin.get("/admin/").status_code == 302


def test_failed_logins_lock_the_address_out_even_with_the_right_password(
    tmp_path, manifest, caplog
):
    app = study_app(tmp_path, manifest, ADMIN_LOGIN_LIMIT="3 per 10 minutes")
    attacker = Browser(app)
    attacker.client.environ_base["REMOTE_ADDR"] = "10.0.0.66"
    attacker.get("/admin/login")
    with caplog.at_level(logging.WARNING, logger="annotate"):
        for _ in range(3):
            assert attacker.post("/admin/login", {"password": "guess"}).status_code == 403
        locked = attacker.post("/admin/login", {"password": ADMIN_PASSWORD})
    assert locked.status_code == 429 and 0 < int(locked.headers["Retry-After"]) <= 600
    assert "Too many failed logins" in locked.get_data(as_text=True)
    assert attacker.get("/admin/").status_code == 302  # not logged in
    failures = [r for r in caplog.records if "failed admin login from 10.0.0.66" in r.message]
    assert len(failures) == 3 and any("locked out" in r.message for r in caplog.records)
    assert login(app, address="10.0.0.7").get("/admin/").status_code == 200  # per address


# --------------------------------------------------------------------------- exports


FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]


def test_exports_neutralise_formulas_and_mos_still_reads_them_exactly(study, tmp_path):
    viewer = Browser(study)
    viewer.get("/consent")
    viewer.post("/consent", {"agree": "y"})
    viewer.get("/register")
    assert (
        viewer.post(
            "/register", {"age": 30, "gender": "female", "vision_screening": FORMULAS[0]}
        ).status_code
        == 302
    )
    viewer.get("/environment")
    assert viewer.post("/environment", {**ENVIRONMENT, "display": "=1+2"}).status_code == 302
    viewer.practise()
    reasons = iter(FORMULAS * 3)
    while (position := viewer.current_position()) is not None:
        response = viewer.rate(position, 2, 3, nsfw="y", nsfw_reason=next(reasons))
        assert response.status_code == 303
    admin = login(study)
    trials = admin.get("/admin/export/trials.csv").get_data(as_text=True)
    viewers = admin.get("/admin/export/viewers.csv").get_data(as_text=True)
    for text in (trials, viewers):
        for row in csv.reader(io.StringIO(text)):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    reasons_seen = {row["nsfw_reason"] for row in csv.DictReader(io.StringIO(trials))}
    assert '\'=HYPERLINK("http://x","y")' in reasons_seen and "'@SUM(A1)" in reasons_seen
    screening = next(csv.DictReader(io.StringIO(viewers)))["vision_screening"]
    assert screening == "'" + FORMULAS[0]
    (tmp_path / "trials.csv").write_text(trials)
    out = tmp_path / "mos"
    assert mos_main([str(tmp_path / "trials.csv"), "--out", str(out), "--quiet", "--screening",
                     "none", "--no-zscore", "--no-session-norm", "--no-report"]) == 0  # fmt: skip
    result = pd.read_csv(out / "mos.csv")
    # every image but the warm-up (not shown again as a test item), one report each
    assert len(result) == 12 - 1 and set(result["nsfw_reports"]) == {1}


def test_mos_reads_neutralised_identifiers_back_exactly(tmp_path):
    stimuli = ["=evil", "-minus", "'=quoted", "plain", "+plus", "@at"]
    rows = [
        {"viewer": f"v{v}", "stimulus": s, "consistency": (i + v) % 5, "perception": i % 5,
         "model": "=cmd|' /C calc'!A0"}
        for v in range(4) for i, s in enumerate(stimuli)
    ]  # fmt: skip
    (tmp_path / "ratings.csv").write_text(to_safe_csv(pd.DataFrame(rows)))
    out = tmp_path / "mos"
    assert mos_main([str(tmp_path / "ratings.csv"), "--out", str(out), "--quiet", "--screening",
                     "none", "--no-report"]) == 0  # fmt: skip
    result = pd.read_csv(out / "mos.csv", keep_default_na=False)
    assert sorted(result["stimulus"]) == sorted(stimuli)
    assert set(result["model"]) == {"=cmd|' /C calc'!A0"}


# --------------------------------------------------------------------------- media


def media_urls(page: str) -> list[str]:
    return MEDIA_URL.findall(page)


def test_media_urls_are_opaque_and_headers_reveal_nothing(study):
    viewer = Browser(study)
    viewer.register()
    page = viewer.get("/trial").get_data(as_text=True)
    urls = media_urls(page)
    assert len(urls) == 4  # the pair and the next pair, preloaded
    assert all(re.fullmatch(r"/media/[0-9a-f]{32}", url) for url in urls)
    with study.app_context():
        from studydb import Stimulus

        secrets = {s.key for s in get_db().query(Stimulus)}
        secrets |= {"SDXL", "RealVis", ".png", "dist/", "ref/", "bpp"}
    for secret in secrets:
        assert secret not in page, secret
    response = viewer.get(urls[0])
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert "Content-Disposition" not in response.headers
    assert "Last-Modified" not in response.headers
    headers = str(response.headers)
    for secret in secrets:
        assert secret not in headers, secret


def test_a_viewer_fetches_only_the_images_of_their_own_open_sitting(study):
    first, second = Browser(study), Browser(study)
    first.register()
    second.register()
    mine = media_urls(first.get("/trial").get_data(as_text=True))
    theirs = media_urls(second.get("/trial").get_data(as_text=True))
    assert set(mine).isdisjoint(theirs)  # per sitting, not per image
    assert all(second.get(url).status_code == 404 for url in mine)
    assert all(second.get(url).status_code == 200 for url in theirs)
    assert all(Browser(study).get(url).status_code == 404 for url in mine)  # anonymous
    for absurd in ("/media/" + "f" * 32, "/media/1/distorted", "/media/99999999999999999999",
                   "/media/..%2f..%2fsecret_key", "/media/" + "0" * 400):  # fmt: skip
        assert first.get(absurd).status_code == 404, absurd
    rate_all(first)
    assert all(first.get(url).status_code == 404 for url in mine)  # the sitting is closed


def test_the_admin_sees_only_the_nsfw_queue_and_absurd_ids_are_404(study):
    viewer = Browser(study)
    viewer.register()
    position = viewer.current_position()
    viewer.rate(position, 2, 2, nsfw="y", nsfw_reason="gore")
    viewer_urls = media_urls(viewer.get("/trial").get_data(as_text=True))
    admin = login(study)
    page = admin.get("/admin/").get_data(as_text=True)
    queue = media_urls(page)
    assert len(queue) == 1 and admin.get(queue[0]).status_code == 200
    assert all(admin.get(url).status_code == 404 for url in viewer_urls)
    huge = admin.post("/admin/stimuli/99999999999999999999999/withhold", {})
    assert huge.status_code == 404


# --------------------------------------------------------------------------- failures


def make_unwritable(app, how: str) -> None:
    """A read-only database or a full disk, as SQLite reports them (tests run as root, so a
    chmod would not stop them; ``max_page_count`` caps the file at its present size)."""
    engine = app.extensions["study_engine"]

    @event.listens_for(engine, "connect")
    def _limit(connection, _record):
        cursor = connection.cursor()
        if how == "read-only":
            cursor.execute("PRAGMA query_only = ON")
        else:
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()

    engine.dispose()


@pytest.mark.parametrize("how", ["read-only", "disk full"])
def test_an_unwritable_database_is_a_503_that_says_the_rating_was_not_saved(
    tmp_path, manifest, how
):
    app = study_app(tmp_path, manifest, WARMUP_TRIALS=0)
    viewer = Browser(app)
    viewer.register()
    admin = login(app)
    admin.get("/admin/")
    position = viewer.current_position()  # the page is served (and its serving stored) first
    make_unwritable(app, how)
    for _ in range(12):  # a full disk shows once the last free pages are used
        response = viewer.rate(position, 2, 2, nsfw="y", nsfw_reason="x" * 999)
        if response.status_code != 303:
            break
        page = viewer.get("/trial")  # serving the next pair writes too: it may be what fails
        if page.status_code != 200:
            response = page
            break
        position = int(re.search(r'name="position" value="(\d+)"', page.get_data(as_text=True))[1])
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert "NOT saved" in page and "call the experimenter" in page
    assert "readonly" not in page and "disk" not in page  # the viewer gets no internals
    if how == "read-only":
        withheld = admin.post("/admin/stimuli/1/withhold", {})
        assert withheld.status_code == 503
        assert "readonly" in withheld.get_data(as_text=True)  # the admin sees the error


def test_the_demo_honours_the_labs_config(tmp_path):
    manifest = make_study(tmp_path / "images")
    frame = pd.read_csv(manifest)
    frame.assign(bits=np.arange(len(frame))[::-1]).to_csv(manifest, index=False)
    (tmp_path / "instance" / "demo").mkdir(parents=True)
    (tmp_path / "instance" / "config.py").write_text(
        "BREAK_AFTER_MINUTES = 7\nWARMUP_TRIALS = 5\nDATABASE = 'lab.db'\n"
    )
    (tmp_path / "instance" / "demo" / "config.py").write_text("BREAK_MINUTES = 9\n")
    defaults = demo_defaults(manifest, tmp_path / "instance" / "config.py")
    app = create_app(instance_path=str(tmp_path / "instance" / "demo"), defaults=defaults)
    assert app.config["BREAK_AFTER_MINUTES"] == 7 and app.config["WARMUP_TRIALS"] == 5
    assert app.config["BREAK_MINUTES"] == 9
    assert app.config["DATABASE"].endswith("demo/ratings.db")  # never the lab's database
    assert app.config["TRAINING_STIMULI"][0] == "r0_d3"  # fewest bits first
    plain = create_app(instance_path=str(tmp_path / "other"), defaults=defaults)
    assert plain.config["WARMUP_TRIALS"] == 5  # the demo's own default sits below config.py


def test_every_demo_start_revokes_the_admin_sessions_of_the_last(tmp_path, monkeypatch, capsys):
    def small_demo(folder: Path) -> Path:  # the shipped images take a while to encode
        manifest = make_study(folder)
        frame = pd.read_csv(manifest)
        frame.assign(bits=np.arange(len(frame))).to_csv(manifest, index=False)
        return manifest

    monkeypatch.setattr("annotate.demo.build_demo", small_demo)
    instance = tmp_path / "instance"

    def start_demo() -> str:
        assert annotate_main(["--instance", str(instance), "demo", "--no-serve"]) == 0
        return re.search(r"admin password for this demo: (\S+)", capsys.readouterr().out).group(1)

    password = start_demo()
    app = create_app({"SESSION_COOKIE_SECURE": False}, instance_path=str(instance / "demo"))
    admin = login(app, password=password)
    assert admin.get("/admin/").status_code == 200
    assert (instance / "demo" / "admin_password_hash").stat().st_mode & 0o077 == 0
    start_demo()
    assert admin.get("/admin/").status_code == 302


# --------------------------------------------------------------------------- the two merged


def test_practice_images_are_opaque_for_viewers_only(tmp_path, manifest):
    made = study_app(tmp_path / "made", manifest)
    viewer = Browser(made)
    viewer.register(practise=False)
    page = viewer.get("/training/0").get_data(as_text=True)
    urls = re.findall(r'src="(/practice/[^"]+)"', page)
    assert urls and ".png" not in page and "level" not in page
    response = viewer.get(urls[0])
    assert response.status_code == 200 and "Content-Disposition" not in response.headers
    assert Browser(made).get(urls[0]).status_code == 302  # not a viewer: back to the start
    configured = study_app(tmp_path / "configured", manifest, TRAINING_STIMULI=["r0_d0", "r1_d3"])
    viewer = Browser(configured)
    viewer.register(practise=False)
    page = viewer.get("/training/0").get_data(as_text=True)
    urls = media_urls(page)
    assert urls and all(re.fullmatch(r"/media/[0-9a-f]{32}", url) for url in urls)
    assert "r0_d0" not in page and viewer.get(urls[0]).status_code == 200
    assert Browser(configured).get(urls[0]).status_code == 404


def test_the_dashboard_shows_sittings_missing_files_and_screening_and_closes_with_csrf(study):
    viewer = Browser(study)
    viewer.register()
    admin = login(study)
    page = admin.get("/admin/").get_data(as_text=True)
    for block in ('id="sittings-table"', 'id="missing-files"', 'id="screening"', "close</button>"):
        assert block in page, block
    assert admin.post("/admin/sittings/1/close", {}, with_token=False).status_code == 400
    stranger = Browser(study)
    stranger.get("/")  # a valid CSRF token, but no admin session
    assert stranger.post("/admin/sittings/1/close", {}).status_code == 302
    assert admin.post("/admin/sittings/1/close", {}).status_code == 303
    assert "closed by experimenter" in admin.get("/admin/").get_data(as_text=True)
    assert viewer.current_position() is None  # the viewer's sitting is over
