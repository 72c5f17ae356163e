"""Helpers for the lab-app tests: a small study on disk and a test client that fills forms the
way a browser does (reading the CSRF token from the page it was served)."""

from __future__ import annotations

import datetime as dt
import re
import socket
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from werkzeug.security import generate_password_hash

from annotate import create_app

ADMIN_PASSWORD = "correct horse battery"
ENVIRONMENT = {
    "screen_width": 2560,
    "screen_height": 1440,
    "device_pixel_ratio": 1,
    "browser": "test",
    "display": "iMac 27",
    "viewing_distance": "60 cm",
    "lighting": "dim",
}
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def make_study(folder: Path, references: int = 3, per_reference: int = 4) -> Path:
    """Tiny reference/distorted PNGs and a manifest in the generator's format."""
    rng = np.random.default_rng(0)
    (folder / "ref").mkdir(parents=True, exist_ok=True)
    (folder / "dist").mkdir(exist_ok=True)
    rows = []
    for r in range(references):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / "ref" / f"r{r}.png")
        for d in range(per_reference):
            noisy = np.clip(image + rng.normal(0, 10 * (d + 1), image.shape), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(folder / "dist" / f"r{r}_d{d}.png")
            rows.append(
                {
                    "id": f"r{r}_d{d}",
                    "distorted_path": f"dist/r{r}_d{d}.png",
                    "reference_path": f"ref/r{r}.png",
                    "reference": f"r{r}",
                    "model": ["SDXL", "RealVis"][d % 2],
                    "mode": ["Full", "Image", "Pixel", "Text"][d % 4],
                    "strength": 0.2 + 0.1 * d,
                    "content_type": "NSI",
                    "seed": 1000 + d,
                    "bpp": 0.024,
                }
            )
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (for a server started by a test or a
    bench script)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def import_study(app, manifest: Path) -> None:
    """Import ``manifest`` into the app's database as the tests do (400 images a session at
    most, seed 0)."""
    from annotate.db import get_db
    from annotate.importer import import_manifest
    from studydb.manifest import read_manifest

    with app.app_context():
        import_manifest(get_db(), read_manifest(manifest), 400, np.random.default_rng(0))


def make_app(instance: Path, **config):
    settings = {
        "TESTING": True,
        "SESSION_COOKIE_SECURE": False,
        "WARMUP_TRIALS": 1,
        "GREY_SCREEN_MS": 0,
        "MIN_VIEWING_MS": 0,
        "SEED": 0,
        "ADMIN_PASSWORD_HASH": generate_password_hash(ADMIN_PASSWORD),
    }
    settings.update(config)
    return create_app(settings, instance_path=str(instance))


class Browser:
    """A test client that GETs a form's page first and posts with the token it found."""

    def __init__(self, app) -> None:
        self.client = app.test_client()
        self.token = None

    def get(self, url: str, **kwargs):
        response = self.client.get(url, **kwargs)
        if response.mimetype != "text/html":
            return response
        found = TOKEN.search(response.get_data(as_text=True))
        if found:
            self.token = found.group(1)
        return response

    def post(self, url: str, data: dict, with_token: bool = True, **kwargs):
        payload = dict(data)
        if with_token:
            payload["csrf_token"] = self.token
        return self.client.post(url, data=payload, **kwargs)

    def enrol(self) -> str:
        """Consent and register; return the viewer's code (no sitting is opened yet)."""
        self.get("/consent")
        assert self.post("/consent", {"agree": "y"}).status_code == 302
        self.get("/register")
        response = self.post(
            "/register", {"age": 30, "gender": "female", "vision_screening": "20/20, Ishihara ok"}
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        page = self.get("/environment").get_data(as_text=True)
        return re.search(r'id="code">([A-Z0-9]+)<', page).group(1)

    def register(self, practise: bool = True) -> str:
        """Enrol, describe the environment (which opens a sitting) and, unless told not to, go
        through the practice; return the viewer's code."""
        code = self.enrol()
        response = self.post("/environment", ENVIRONMENT)
        assert response.status_code == 302, response.get_data(as_text=True)
        if practise:
            self.practise()
        return code

    def practise(self) -> None:
        """Go through the practice pairs (POSTed forms, nothing stored) until the trials open,
        each looked at for the practice's time floor (the page's serving time, kept in the
        signed session cookie, is moved an hour back rather than waited for)."""
        location = "/training/0"
        while "/training/" in location:
            page = self.get(location)
            if page.status_code != 200:
                location = page.headers["Location"]
                continue
            self.look_back(hours=1)
            response = self.post(location, {"consistency": "2.5", "perception": "2.5"})
            assert response.status_code in (302, 303), response.get_data(as_text=True)
            location = response.headers["Location"]

    def look_back(self, **delta) -> None:
        """Move the current practice page's serving time back by ``delta`` (timedelta keywords)."""
        with self.client.session_transaction() as stored:
            step, served = stored["practice_served"]
            earlier = dt.datetime.fromisoformat(served) - dt.timedelta(**delta)
            stored["practice_served"] = [step, earlier.isoformat()]

    def current_position(self) -> int | None:
        page = self.get("/trial")
        if page.status_code != 200:
            return None
        found = re.search(r'name="position" value="(\d+)"', page.get_data(as_text=True))
        return int(found.group(1)) if found else None

    def rate(self, position: int, consistency=3.0, perception=2.5, **extra):
        """Rate the trial at ``position`` as the page's script would (the sliders moved twice,
        the first one 900 ms after the reveal); ``extra`` overrides or adds fields."""
        data = {
            "position": position,
            "consistency": consistency,
            "perception": perception,
            "slider_events": 2,
            "first_input_ms": 900,
        }
        data.update(extra)
        return self.post("/trial", data)
