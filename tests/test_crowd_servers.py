"""Issue 19, items 2 and 3 against real ``python -m annotate serve`` processes on loopback: two
server processes on one PostgreSQL study (skipped unless ``CMC_POSTGRES_URL`` names a throwaway
database, like tests/test_postgres.py), several gunicorn workers, a restart in the middle of a
launch and the database briefly unreachable. Only 127.0.0.1 is contacted; every server stops."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from bench.crowd_scale import display_digits
from studydb import Base, Rating, Session, make_engine
from tests.annotate_helpers import free_port, make_study

ROOT = Path(__file__).resolve().parents[1]
URL = os.environ.get("CMC_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not URL, reason="set CMC_POSTGRES_URL to a throwaway database")
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
POSITION = re.compile(r'name="position" value="(\d+)"')
SECRET = "crowd servers test secret"
SCREEN = {"window_width": 1920, "window_height": 1000, "screen_width": 1920,
          "screen_height": 1080, "device_pixel_ratio": 1, "zoom": 1, "browser": "test"}  # fmt: skip


def study_instance(tmp_path: Path, database: str, entry_limit: str = "1000 per minute") -> Path:
    """An online study of 24 images in ``database`` (PostgreSQL: its tables dropped first)."""
    if "://" in database:
        engine = make_engine(database)
        Base.metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS study_info")
        engine.dispose()
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(
        f"DATABASE = {database!r}\nONLINE = True\nSECRET_KEY = {SECRET!r}\nSEED = 0\n"
        f"ONLINE_SITTING_PAIRS = 6\nWARMUP_TRIALS = 1\nGREY_SCREEN_MS = 0\nMIN_VIEWING_MS = 0\n"
        f"ONLINE_ENTRY_LIMIT = {entry_limit!r}\nQC_RULES = {{'max_fast_share': None}}\n"
    )
    manifest = make_study(tmp_path / "images", references=4, per_reference=6)
    subprocess.run(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "import", str(manifest)],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    return instance


@contextmanager
def serving(instance: Path, *options: str, port: int | None = None):
    """``serve`` on a free loopback port; yields (base URL, the process)."""
    port = port or free_port()
    log = instance.parent / f"serve-{port}.log"
    with log.open("a") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "annotate", "--instance", str(instance), "serve", "--http",
             "--port", str(port), *options],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until_up(port, server, log)
            yield f"http://127.0.0.1:{port}", server
        finally:
            stop(server)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its gunicorn workers
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_until_up(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            requests.get(f"http://127.0.0.1:{port}/static/online_display.js", timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"the server did not start: {log.read_text()}")


class Participant:
    """A browser: entry link, consent, display check, practice, trials (retrying while the
    server is down, as a participant reloading the page would)."""

    def __init__(self, base: str, pid: str) -> None:
        self.base, self.pid = base, pid
        self.http = requests.Session()
        self.token = ""

    def get(self, path: str) -> requests.Response:
        answer = self._retry(lambda: self.http.get(self.base + path, timeout=30))
        found = TOKEN.search(answer.text)
        self.token = found.group(1) if found else self.token
        return answer

    def post(self, path: str, data: dict) -> requests.Response:
        return self._retry(
            lambda: self.http.post(
                self.base + path,
                data={**data, "csrf_token": self.token},
                allow_redirects=False,
                timeout=30,
            )
        )

    def enter(self) -> requests.Response:
        """Through the display check (consent when new): the answer that opens the sitting."""
        landed = self.get(f"/online/start?PROLIFIC_PID={self.pid}&STUDY_ID=s&SESSION_ID=s")
        if landed.url.endswith("/online/consent"):
            self.post("/online/consent", {"agree": "y"})
        self.get("/online/display")
        digits = display_digits(self.http.cookies["session"], SECRET)
        return self.post("/online/display", {**SCREEN, "digits": digits})

    def first_trial(self) -> int:
        location = "/training/0"
        while "/training/" in location:
            self.get(location)
            location = self.post(location, {"consistency": 2.5, "perception": 2.5}).headers.get(
                "Location", ""
            )
        found = POSITION.search(self.get("/trial").text)
        assert found, f"{self.pid}: no trial"
        return int(found.group(1))

    def rate(self, position: int, score: float = 3.0) -> requests.Response:
        self.get("/trial")
        return self.post("/trial", {"position": position, "consistency": score, "perception": 2})

    def _retry(self, call, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while True:
            try:
                return call()
            # a refused connection, or an answer cut off mid-body when the server went down
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def sittings_per_viewer(database: str) -> list[int]:
    engine = make_engine(database)
    with engine.connect() as connection:
        counts = connection.execute(
            select(func.count()).select_from(Session).group_by(Session.viewer_id)
        ).scalars()
        result = list(counts)
    engine.dispose()
    return result


def pid(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:24]


@needs_postgres
def test_two_server_processes_share_one_postgresql_study(tmp_path):
    """One open sitting per participant, the pairs reserved by open sittings and the entry
    throttle hold across two server processes; a third runs gunicorn's workers."""
    instance = study_instance(tmp_path, URL, entry_limit="14 per hour")
    with serving(instance) as (first, _), serving(instance) as (second, _):
        one = Participant(first, pid("same"))
        assert one.enter().headers["Location"].endswith("/instructions")
        again = Participant(second, pid("same"))  # the same id, another process and browser
        assert again.enter().headers["Location"].endswith("/trial")  # resumed, not a second one
        position = one.first_trial()
        assert again.first_trial() == position
        # The pairs reserved by open sittings count in both processes: four more participants,
        # one after another on alternate processes, get the least-planned images (24 images,
        # 5 sittings of 6 test pairs: every image once or twice).
        for i in range(4):
            assert Participant((second, first)[i % 2], pid(f"seq{i}")).enter().status_code == 302
        engine = make_engine(URL)
        with engine.connect() as connection:
            planned = connection.exec_driver_sql(
                "SELECT stimulus_id, count(*) FROM trials WHERE NOT is_warmup AND "
                "check_kind IS NULL GROUP BY stimulus_id"
            ).all()
        engine.dispose()
        assert len(planned) == 24 and max(n for _, n in planned) <= 2
        # Two participants at once on each process: one sitting each.
        people = [Participant((first, second)[i % 2], pid(f"p{i}")) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(Participant.enter, people))
        assert all(a.status_code == 302 for a in answers)
        assert sorted(sittings_per_viewer(URL)) == [1] * 9
        # The entry throttle: 14 per hour from this address, counted by both processes.
        entries = 2 + 4 + 4
        codes = [
            requests.get(
                f"{(first, second)[i % 2]}/online/start?participant=x{i}", allow_redirects=False
            ).status_code
            for i in range(6)
        ]
        assert codes == [302] * (14 - entries) + [429] * (6 - 14 + entries)
    with serving(instance, "--workers", "2", "--threads", "2") as (base, _):
        # Restarted as gunicorn's workers, the throttle still holds (it is in the database) ...
        assert requests.get(f"{base}/online/start?participant=y").status_code == 429
        engine = make_engine(URL)
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM throttle_events")
        engine.dispose()
        # ... and once the window has passed, a participant goes through to the trials.
        late = Participant(base, pid("late"))
        assert late.enter().status_code == 302 and late.first_trial() >= 0


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=needs_postgres)])
def test_a_restart_during_a_launch_loses_nobody(tmp_path, database):
    """Twelve participants enter at once; the server is killed (SIGKILL) in the middle and
    started again on the same port: each ends with exactly one sitting and reaches a trial."""
    location = URL if database == "postgresql" else str(tmp_path / "study.db")
    instance = study_instance(tmp_path, location)
    port = free_port()
    people: list[Participant] = []
    with serving(instance, port=port) as (base, server):
        people = [Participant(base, pid(f"launch{i}")) for i in range(12)]
        pool = ThreadPoolExecutor(12)
        entered = [pool.submit(lambda p=p: (p.enter(), p.first_trial())) for p in people]
        time.sleep(0.5)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        with serving(instance, port=port):
            results = [future.result(timeout=120) for future in entered]
            pool.shutdown()
            assert all(position >= 0 for _, position in results)
            # Entering again (a participant who reloads the link) resumes, never a second one.
            assert people[0].enter().headers["Location"].endswith("/trial")
    assert sorted(sittings_per_viewer(location)) == [1] * 12


class Blackout:
    """A TCP relay to PostgreSQL that can be cut (every connection dropped, new ones refused)
    and restored on the same port: the database briefly unreachable."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread: stop listening
        self.listener.close()
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass


@needs_postgres
def test_the_database_briefly_unreachable_gives_a_clear_503_and_loses_nothing(tmp_path):
    from sqlalchemy.engine import make_url

    url = make_url(URL)
    relay = Blackout(url.host or "127.0.0.1", url.port or 5432)
    through = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    instance = study_instance(tmp_path, URL)
    config = instance / "config.py"
    config.write_text(config.read_text().replace(repr(URL), repr(through)))
    with serving(instance) as (base, _):
        person = Participant(base, pid("blackout"))
        assert person.enter().status_code == 302
        position = person.first_trial()
        person.get("/trial")
        relay.cut()
        refused = person.post("/trial", {"position": position, "consistency": 4, "perception": 2})
        assert refused.status_code == 503 and "NOT saved" in refused.text
        relay.restore()
        stored = person.post("/trial", {"position": position, "consistency": 4, "perception": 2})
        assert stored.status_code == 303, stored.text
        assert person.rate(position + 1).status_code in (303, 409)  # the server works on
    engine = make_engine(URL)
    with engine.connect() as connection:
        rows = connection.execute(select(Rating.consistency).where(Rating.position == position))
        assert list(rows.scalars()) == [4.0]
    engine.dispose()
