"""The four stages chained on the demo study, as a lab would run them: the demo's images (made by
the generator's encoders) → the lab app, rated by simulated viewers → ``mos.compute`` →
``train_iqa`` (``--no-pretrained``) → validation → the leaderboard of the demo's "models"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from annotate.db import get_db
from annotate.demo import build_demo
from mos.compute import main as mos_main
from studydb import Session, Stimulus, Trial
from tests.annotate_helpers import ENVIRONMENT, Browser, import_study, make_app
from train_iqa.__main__ import main as train_main
from train_iqa.leaderboard import main as leaderboard_main
from train_iqa.validate import main as validate_main


@pytest.fixture(scope="module")
def demo_mos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    manifest = build_demo(folder / "study")
    app = make_app(folder / "instance", WARMUP_TRIALS=1, VIEWERS_PER_STIMULUS=4)
    import_study(app, manifest)
    bits = pd.read_csv(manifest).set_index("id")["bpp"]
    rng = np.random.default_rng(0)
    # Viewers who like bits, with their own bias and noise. Each skips the image it had as its
    # warm-up, so four viewers leave four images one rating short of the target: a fifth
    # viewer is let in to make them up, and a sixth is turned away.
    for _ in range(5):
        viewer = Browser(app)
        viewer.register()
        bias = rng.normal(0, 0.3)
        with viewer.client.session_transaction() as cookie:
            viewer_id = cookie["viewer_id"]
        while (position := viewer.current_position()) is not None:
            with app.app_context():  # media URLs are opaque: the plan comes from the server
                key = get_db().scalar(
                    select(Stimulus.key)
                    .join(Trial, Trial.stimulus_id == Stimulus.id)
                    .join(Session, Trial.session_id == Session.id)
                    .where(Session.viewer_id == viewer_id, Session.closed_reason.is_(None))
                    .where(Trial.position == position)
                )
            quality = np.clip(1 + 8 * bits[key] + bias + rng.normal(0, 0.3), 0, 5)
            viewer.rate(position, round(float(quality), 1), round(float(quality * 0.9), 1))
    late = Browser(app)
    late.enrol()
    assert b"nothing left for you to rate" in late.post("/environment", ENVIRONMENT).data
    assert mos_main([str(folder / "instance" / "ratings.db"), "--out", str(folder / "mos"),
                     "--quiet"]) == 0  # fmt: skip
    return folder


def test_the_demo_study_goes_through_every_stage(demo_mos, capsys):
    mos = pd.read_csv(demo_mos / "mos" / "mos.csv")
    # 5 viewers × 19 test items; every image reaches the target of 4 test ratings
    assert len(mos) == 20 and mos["consistency_n"].min() == 4
    assert mos["consistency_n"].sum() == 5 * 19
    assert mos.groupby("mode")["consistency_mos"].mean().idxmax() == "Image"
    run = demo_mos / "run"
    assert train_main(["--metric", "topiq_nr", "--mos", str(demo_mos / "mos" / "mos.csv"),
                       "--no-pretrained", "--epochs", "2", "--size", "64", "--out", str(run),
                       "--device", "cpu"]) == 0  # fmt: skip
    # As README's command: a train_iqa checkpoint is scored on its run's test split only, here
    # the 4 images of one reference (resampled as images: one reference is no bootstrap unit).
    assert validate_main(["--mos", str(demo_mos / "mos" / "mos.csv"), "--metric", "topiq_nr",
                          "--weights", str(run / "best.pt"), "--rounds", "50"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "NR metrics" in out and "| topiq_nr:best ↑ | 4 |" in out
    assert "the 4 test images of" in out
    assert leaderboard_main(["--nr", str(run / "best.pt"),
                             "--results", str(demo_mos / "study"), "--by", "codec",
                             "--references", str(demo_mos / "study" / "references"),
                             "--size", "64", "--out", str(demo_mos / "board.csv")]) == 0  # fmt: skip
    board = pd.read_csv(demo_mos / "board.csv", index_col=0)
    assert set(board.index) == {"av1", "pixel"}
    assert any(c.startswith("Image/NR topiq_nr:best/") for c in board.columns)
