"""Loopback load test of ``python -m annotate serve``: concurrent viewers, a SIGKILL, no lost ratings.

    python bench/annotate_load.py                      # 20 viewers, kill after 8 s, 40 s at most
    python bench/annotate_load.py --viewers 20 --think 0

Builds a 400-image study in bench/out/load/, starts the real server (waitress) on 127.0.0.1, and
runs simulated viewers in threads of this process: each registers, then rates trial after trial
as a browser would (GET the trial page, POST the form with its CSRF token). Every submit whose
response was received (303) is an *acknowledged* rating. After ``--kill-after`` seconds the server
is killed with SIGKILL and restarted; viewers retry what failed. At the end the database must hold
every acknowledged rating exactly once, and nothing else. Bounded in count (``--ratings`` per
viewer) and in time (``--seconds``); only loopback traffic.

Prints p50 / p99 submit latency, ratings per second, and the check.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.annotate_helpers import ENVIRONMENT, free_port  # noqa: E402

SETTLE = 2.0  # seconds after the start and the restart in which everyone arrives at once
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
POSITION = re.compile(r'name="position" value="(\d+)"')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=20, help="concurrent viewers")
    parser.add_argument("--ratings", type=int, default=150, help="ratings per viewer at most")
    parser.add_argument("--seconds", type=float, default=40, help="time limit of the whole run")
    parser.add_argument("--kill-after", type=float, default=8, help="SIGKILL the server then")
    parser.add_argument(
        "--think", type=float, default=0.5, help="mean seconds between two submits (±50%%)"
    )
    parser.add_argument("--threads", type=int, default=8, help="server worker threads")
    parser.add_argument("--out", type=Path, default=Path("bench/out/load"), help="working folder")
    args = parser.parse_args()

    instance = _fresh_study(args.out)
    port = free_port()
    server = _start(instance, port, args.threads)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.seconds
    viewers = [Viewer(base, args.ratings, args.think, deadline) for _ in range(args.viewers)]
    threads = [threading.Thread(target=v.run) for v in viewers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(args.kill_after)
    server.send_signal(signal.SIGKILL)
    server.wait()
    killed_at = time.monotonic() - started
    server = _start(instance, port, args.threads)
    restarted = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    server.terminate()
    server.wait()

    samples = np.array([s for v in viewers for s in v.latencies])
    latencies = samples[:, 1] * 1000
    settling = (samples[:, 0] < started + SETTLE) | (
        (samples[:, 0] >= restarted) & (samples[:, 0] < restarted + SETTLE)
    )
    steady = latencies[~settling]
    acknowledged = {(v.code, p) for v in viewers for p in v.acknowledged}
    stored = _stored(instance / "ratings.db")
    duplicates = int(stored.duplicated(["viewer", "position"]).sum())
    stored_pairs = set(zip(stored["viewer"], stored["position"], strict=True))
    lost = acknowledged - stored_pairs
    unacknowledged = stored_pairs - acknowledged
    print(
        f"| viewers | {args.viewers} (think time {args.think} s, server threads {args.threads}) |"
    )
    print("|---|---|")
    print(f"| submits timed | {latencies.size} |")
    print(f"| submit latency p50 / p99, whole run | {np.percentile(latencies, 50):.1f} ms / "
          f"{np.percentile(latencies, 99):.1f} ms |")  # fmt: skip
    print(f"| submit latency p50 / p99, steady (not within {SETTLE:g} s of a (re)start) | "
          f"{np.percentile(steady, 50):.1f} ms / {np.percentile(steady, 99):.1f} ms |")  # fmt: skip
    print(f"| throughput | {len(acknowledged) / elapsed:.1f} ratings/s over {elapsed:.1f} s |")
    print(f"| server SIGKILLed at | {killed_at:.1f} s, then restarted |")
    print(f"| submits retried after the kill | {sum(v.retries for v in viewers)} |")
    print(f"| acknowledged ratings | {len(acknowledged)} |")
    print(f"| ratings in the database | {len(stored)} |")
    print(f"| lost / duplicated / stored but never acknowledged | {len(lost)} / {duplicates} / "
          f"{len(unacknowledged)} |")  # fmt: skip
    ok = not lost and not duplicates and not unacknowledged
    print("\nresult:", "every acknowledged rating is stored exactly once" if ok else "FAILED")
    return 0 if ok else 1


class Viewer:
    """One simulated participant: registers, then rates until its bound."""

    def __init__(self, base: str, ratings: int, think: float, deadline: float) -> None:
        self.base, self.ratings, self.think, self.deadline = base, ratings, think, deadline
        self.http = requests.Session()
        self.latencies: list[tuple[float, float]] = []  # (when, seconds)
        self.acknowledged: list[int] = []
        self.retries = 0
        self.code = ""

    def run(self) -> None:
        rng = np.random.default_rng()
        time.sleep(rng.uniform(0, 2 * self.think))  # people do not all arrive at the same instant
        self._register()
        while len(self.acknowledged) < self.ratings and time.monotonic() < self.deadline:
            page = self._retrying(lambda: self.http.get(self.base + "/trial"))
            if page is None:
                return
            found = POSITION.search(page.text)
            if found is None:  # finished (or on a break)
                return
            form = {
                "csrf_token": TOKEN.search(page.text).group(1),
                "position": found.group(1),
                "consistency": f"{rng.uniform(0, 5):.1f}",
                "perception": f"{rng.uniform(0, 5):.1f}",
            }
            begun = time.perf_counter()
            answer = self._retrying(
                lambda form=form: self.http.post(
                    self.base + "/trial", data=form, allow_redirects=False
                ),
                timed=begun,
            )
            if answer is None:
                return
            if answer.status_code != 303:
                raise RuntimeError(f"submit refused: {answer.status_code} {answer.text[:200]}")
            self.acknowledged.append(int(found.group(1)))
            time.sleep(self.think * rng.uniform(0.5, 1.5))  # people are not in lockstep

    def _register(self) -> None:
        get = lambda path: self.http.get(self.base + path)  # noqa: E731
        post = lambda path, data: self.http.post(self.base + path, data=data)  # noqa: E731
        token = TOKEN.search(get("/consent").text).group(1)
        post("/consent", {"csrf_token": token, "agree": "y"})
        token = TOKEN.search(get("/register").text).group(1)
        post(
            "/register",
            {"csrf_token": token, "age": 30, "gender": "male", "vision_screening": "ok"},
        )
        page = get("/environment").text
        self.code = re.search(r'id="code">([A-Z0-9]+)<', page).group(1)
        token = TOKEN.search(page).group(1)
        post("/environment", {"csrf_token": token, **ENVIRONMENT})
        answer = get("/training/0")
        while "/training/" in answer.url:  # the practice pairs (the trials open after them)
            token = TOKEN.search(answer.text).group(1)
            answer = self.http.post(
                answer.url, data={"csrf_token": token, "consistency": "2.5", "perception": "2.5"}
            )

    def _retrying(self, call, timed: float | None = None):
        """Run ``call``; while the server is down, wait and retry (as a reloading browser would)."""
        while time.monotonic() < self.deadline + 30:
            try:
                response = call()
                if timed is not None:
                    self.latencies.append((time.monotonic(), time.perf_counter() - timed))
                return response
            except requests.ConnectionError:
                self.retries += 1
                timed = None  # a submit that spanned the outage is not a latency sample
                time.sleep(0.2)
        return None


def _fresh_study(out: Path) -> Path:
    """400 small noise images of 100 references, imported into a new instance folder."""
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    images = out / "images"
    (images / "ref").mkdir(parents=True)
    (images / "dist").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for r in range(100):
        base = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(base).save(images / "ref" / f"r{r}.png")
        for d in range(4):
            noisy = np.clip(base + rng.normal(0, 8 * (d + 1), base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(images / "dist" / f"r{r}_{d}.png")
            rows.append({"id": f"r{r}_{d}", "distorted_path": f"dist/r{r}_{d}.png",
                         "reference_path": f"ref/r{r}.png", "reference": f"r{r}"})  # fmt: skip
    pd.DataFrame(rows).to_csv(images / "manifest.csv", index=False)
    instance = out / "instance"
    instance.mkdir()
    # No viewing floor: the simulated viewers rate faster than a person may (the point is the
    # server's storage under load), and go through the practice at once.
    (instance / "config.py").write_text(
        "WARMUP_TRIALS = 2\nGREY_SCREEN_MS = 0\nMIN_VIEWING_MS = 0\nSEED = 1\n"
    )
    subprocess.run(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "import",
         str(images / "manifest.csv")],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return instance


def _start(instance: Path, port: int, threads: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "serve", "--http",
         "--port", str(port), "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return server
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


def _stored(database: Path) -> pd.DataFrame:
    with sqlite3.connect(database) as db:
        return pd.read_sql(
            "SELECT viewers.code AS viewer, ratings.position FROM ratings "
            "JOIN sessions ON ratings.session_id = sessions.id "
            "JOIN viewers ON sessions.viewer_id = viewers.id",
            db,
        )


if __name__ == "__main__":
    sys.exit(main())
