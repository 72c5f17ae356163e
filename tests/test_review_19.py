"""Review of issue 19 items 5–8 (honest pay, controls, display check, texts), probed black-box as
a crowd worker scripting their way to the paying code and as a researcher configuring a study."""

from __future__ import annotations

import re
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from annotate.db import get_db
from annotate.importer import import_manifest
from studydb.manifest import read_manifest
from tests.annotate_helpers import Browser, make_app
from tests.test_online_honesty import (
    CODES,
    HONEST,
    PROLIFIC_ID,
    careful,
    enter,
    human_wait,
    image_urls,
    planned,
    sit,
    study,
)
from tests.test_online_honesty import clock as clock  # noqa: F401 (the app's clock, a fixture)


def test_an_id_pattern_is_not_bypassed_by_another_platforms_parameters(tmp_path, clock):
    """A study pinned to Prolific ids: a script that failed the checks must not get a second,
    paying sitting by entering with MTurk's or a panel's parameter names (any string, or its own
    Prolific id in the other case, which no pattern then checks)."""
    app = study(tmp_path, ONLINE_ID_PATTERNS={"prolific": r"[0-9a-f]{24}"})
    client = app.test_client()
    for link in (
        f"/online/start?participant={PROLIFIC_ID.upper()}&study=S&session=X",
        "/online/start?participant=anything&study=S&session=X",
        "/online/start?workerId=ANYTHING&hitId=S&assignmentId=X",
    ):
        refused = client.get(link)
        assert refused.status_code == 400, link
        assert "recruitment platform" in refused.get_data(as_text=True)
    assert client.get(f"/online/start?PROLIFIC_PID={PROLIFIC_ID}&STUDY_ID=S").status_code == 302


def _smooth_study(tmp_path):
    """Photographs compress: smooth gradients with a little texture, saved as PNG."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    (folder / "ref").mkdir(parents=True)
    (folder / "dist").mkdir()
    y, x = np.mgrid[0:48, 0:64]
    rows = []
    for r in range(4):
        base = np.stack([x * 3 + r * 20, y * 4 + r * 10, (x + y) * 2], axis=-1)
        image = np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "ref" / f"r{r}.png")
        for d in range(4):
            step = 2 * (d + 1)
            noisy = (image // step) * step
            Image.fromarray(noisy.astype(np.uint8)).save(folder / "dist" / f"r{r}_d{d}.png")
            rows.append(
                {"id": f"r{r}_d{d}", "distorted_path": f"dist/r{r}_d{d}.png",
                 "reference_path": f"ref/r{r}.png", "reference": f"r{r}"}
            )  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    app = make_app(tmp_path / "instance", **HONEST)
    with app.app_context():
        import_manifest(
            get_db(), read_manifest(folder / "manifest.csv"), 400, np.random.default_rng(0)
        )
    return app


def _png_chunks(body: bytes) -> set[bytes]:
    """The chunk types of a PNG (IHDR, IDAT, tEXt, ...)."""
    kinds, offset = set(), 8
    while offset < len(body):
        (length,) = struct.unpack(">I", body[offset : offset + 4])
        kinds.add(body[offset + 4 : offset + 8])
        offset += 12 + length
    return kinds


def test_gold_images_carry_no_chunk_that_the_study_images_lack(tmp_path, clock):
    """A script that looks for a text chunk (``b"tEXt" in body``) must not find the gold pairs:
    an image to rate that carries metadata no study image carries is a gold pair."""
    app = _smooth_study(tmp_path)
    browser = enter(app, clock, "chunks1")
    trials = planned(app, "chunks1")
    study_chunks, gold_chunks = set(), {}
    while (position := browser.current_position()) is not None:
        page = browser.get("/trial").get_data(as_text=True)
        body = browser.client.get(image_urls(page)[0]).data
        if trials[position].check_kind == "gold":
            gold_chunks[trials[position].stimulus.key] = _png_chunks(body)
        elif trials[position].check_kind is None:
            study_chunks |= _png_chunks(body)
        clock.advance(3 + position % 4)
        browser.rate(position, consistency=2.5, perception=2.5, slider_events=2,
                     first_input_ms=800)  # fmt: skip
    assert len(gold_chunks) == 2
    for key, chunks in gold_chunks.items():
        assert chunks <= study_chunks, (key, chunks - study_chunks)


@pytest.mark.parametrize(
    "config",
    [
        {"COMPLETION_CODES": {"paid": "", "failed_checks": "NOPAY7"}},
        {"COMPLETION_CODES": {"paid": "", "failed_checks": ""}},  # the default, with a link
    ],
)
def test_a_platform_link_or_review_code_without_a_paid_code_is_refused_at_start_up(
    tmp_path, config
):
    """With no paid code every honest completer would be sent nowhere (or only the failing ones
    would get a code): a mistake that costs every participant their pay, caught at start-up."""
    with pytest.raises(ValueError, match="paid"):
        make_app(tmp_path / "bad", **{**HONEST, **config})


def test_an_unpaid_study_without_codes_or_link_still_starts(tmp_path, clock):
    """Volunteers (no platform, no pay): no codes and no link is a valid study."""
    app = study(tmp_path, COMPLETION_CODES={"paid": "", "failed_checks": ""}, COMPLETION_URL="")
    page = sit(app, clock, "volunteer1", careful, human_wait)
    assert "You have completed the study." in page and CODES["paid"] not in page


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ('COMPLETION_CODE = "OLD123"', "COMPLETION_CODES = {'paid'"),
        ('COMPLETION_CODES = {"paid": "A1", "failed_checks": "A1"}', "must differ"),
    ],
)
def test_serve_refuses_a_bad_pay_setting_in_one_line_with_exit_2(tmp_path, setting, needle):
    """A researcher migrating an old instance/config.py: the message says what to write
    instead, as one line and exit status 2, never a traceback."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(f"ONLINE = True\n{setting}\n")
    done = subprocess.run(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "serve", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_printed_entry_link_reaches_the_server_on_a_port_the_os_chose(tmp_path):
    """``serve --port 0`` (a free port): the entry link a researcher pastes into Prolific names
    the port the server really listens on, not 0."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(
        "ONLINE = True\nCOMPLETION_CODES = {'paid': 'C0DE42', 'failed_checks': 'NOPAY7'}\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "serve",
         "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = []
        for line in server.stdout:  # the server prints its links, then serves until stopped
            lines.append(line)
            if line.startswith("entry link"):
                break
        link = re.search(r"http://\S+", lines[-1]).group(0)
        assert ":0/" not in link, "".join(lines)
        link = link.replace("{{%PROLIFIC_PID%}}", PROLIFIC_ID).replace("{{%", "").replace("%}}", "")
        response = requests.get(link, timeout=30, allow_redirects=False)
        assert response.status_code == 302 and "/online/consent" in response.headers["Location"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_online_texts_count_one_of_a_kind_in_the_singular(tmp_path, clock):
    """A short pilot (one practice pair, one page, no warm-up, no checks): the consent reads as
    English, not "1 practice pairs, then 1 pages ... about 1 minutes"."""
    app = study(
        tmp_path, ONLINE_SITTING_PAIRS=1, WARMUP_TRIALS=0, ONLINE_GOLD_TRIALS=0,
        ONLINE_ATTENTION_CHECKS=0, TRAINING_STIMULI=["r0_d0"],
    )  # fmt: skip
    browser = Browser(app)
    browser.get(f"/online/start?PROLIFIC_PID={PROLIFIC_ID}&STUDY_ID=S&SESSION_ID=X")
    text = browser.get("/online/consent").get_data(as_text=True)
    assert "about 1 minute:" in text and "1 practice pair," in text and "1 page to rate" in text
    assert "1 pairs" not in text and "1 pages" not in text


def test_a_sitting_longer_than_its_time_limit_is_refused_at_start_up(tmp_path):
    """With SESSION_LIMIT_MINUTES under the sitting's own expected length every sitting would be
    closed before its end — no participant could complete it and earn the code — while the
    consent promised it: refused at start-up."""
    with pytest.raises(ValueError, match="SESSION_LIMIT_MINUTES"):
        make_app(tmp_path / "bad", **{**HONEST, "ONLINE_SITTING_PAIRS": 60,
                                       "SESSION_LIMIT_MINUTES": 5})  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [
        {"ONLINE_ID_PATTERNS": [r"[0-9a-f]{24}"]},
        {"ONLINE_ID_PATTERNS": r"[0-9a-f]{24}"},
        {"ONLINE_ID_CASE": "lower"},
    ],
)
def test_an_id_setting_that_is_no_table_says_so(tmp_path, config):
    """A pattern or case given without its platform: the message names the setting and the form
    it takes, not Python's "dictionary update sequence element #0"."""
    name = next(iter(config))
    with pytest.raises(ValueError, match=rf"{name} must be a table of platform"):
        make_app(tmp_path / "bad", **{**HONEST, **config})


def test_the_same_image_gold_pair_is_not_the_one_image_larger_than_its_reference(tmp_path, clock):
    """A distorted image is nearly always a smaller file than its reference (compression and
    generation remove detail); a ±1 dither adds noise, so the "same" gold pair was the image
    larger than its reference — a script's one comparison of two lengths found it."""
    app = _smooth_study(tmp_path)
    browser = enter(app, clock, "sizes1")
    trials = planned(app, "sizes1")
    larger = []
    while (position := browser.current_position()) is not None:
        page = browser.get("/trial").get_data(as_text=True)
        shown, reference = (len(browser.client.get(url).data) for url in image_urls(page))
        if shown > reference:
            larger.append(trials[position].stimulus.key)
        clock.advance(3 + position % 4)
        browser.rate(position, consistency=2.5, perception=2.5)
    assert not [key for key in larger if key.startswith("gold-same")], larger
