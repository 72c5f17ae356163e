"""Issue 10 point 6 and issue 11 point 6: leave-one-out live screening with its evidence, in the
background with its freshness shown; ``mos.compute`` keeps the paper's rule and says when
leave-one-out would reject another set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mos.compute import build_parser
from mos.compute import main as mos_main
from mos.observations import Observations
from mos.screening import LiveScreening, SroccScreening
from tests.annotate_helpers import ADMIN_PASSWORD, Browser, import_study, make_app, make_study


def small_panel(
    n_images: int, honest: int = 10, random: int = 5, per_image: int = 3, seed: int = 0
):
    """Each image rated by ``per_image`` of the viewers; the last ``random`` answer at random."""
    rng = np.random.default_rng(seed)
    n_viewers = honest + random
    quality = rng.uniform(0, 5, n_images)
    viewer, stimulus, score = [], [], []
    for image in range(n_images):
        for v in rng.choice(n_viewers, per_image, replace=False):
            viewer.append(v)
            stimulus.append(image)
            noisy = quality[image] + rng.normal(0, 0.4)
            score.append(rng.uniform(0, 5) if v >= honest else np.clip(noisy, 0, 5))
    return Observations(np.array(viewer), np.array(stimulus), np.array(score), n_viewers, n_images)


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_leave_one_out_catches_random_raters_the_running_average_lets_through(seed):
    obs = small_panel(300, seed=seed)
    paper = SroccScreening().fit(obs)
    live = LiveScreening().fit(obs)
    assert (~paper.rejected[10:]).sum() >= 1  # a random rater passes the paper's rule here
    assert (paper.stats["srocc"].to_numpy()[10:] > 0.3).all()  # own scores pull them up
    assert (live["srocc"].to_numpy()[10:] < 0.4).all()
    assert (live["verdict"].iloc[10:] == "reject").all()
    assert (live["verdict"].iloc[:10] != "reject").all()  # no honest viewer is flagged
    assert (live["shared"] == np.bincount(obs.viewer, minlength=15)).all()
    assert (live["low"] <= live["srocc"]).all() and (live["srocc"] <= live["high"]).all()


def test_a_viewer_is_flagged_as_soon_as_the_evidence_is_enough():
    verdicts = {}
    for n_images in (6, 20, 300):
        frame = LiveScreening().fit(small_panel(n_images))
        verdicts[n_images] = frame
    early = verdicts[6]
    assert (early["verdict"] != "reject").all()  # a handful of shared images: nobody flagged
    assert (early["verdict"].iloc[10:] == "undecided").all()
    width = lambda f: float((f["high"] - f["low"]).median())  # noqa: E731
    assert width(verdicts[300]) < width(verdicts[20])  # more shared images, narrower interval
    assert (verdicts[300]["verdict"].iloc[10:] == "reject").all()


def test_a_viewer_who_never_varies_is_rejected_once_enough_is_shared():
    obs = small_panel(120)
    constant = np.where(obs.viewer == 0, 2.5, obs.score)
    frame = LiveScreening().fit(obs.with_score(constant))
    assert np.isnan(frame["srocc"].iloc[0]) and frame["verdict"].iloc[0] == "reject"


def write_ratings(obs: Observations, path) -> None:
    pd.DataFrame(
        {
            "viewer": [f"v{v}" for v in obs.viewer],
            "stimulus": [f"s{s}" for s in obs.stimulus],
            "consistency": obs.score,
        }
    ).to_csv(path, index=False)


def test_mos_compute_says_when_leave_one_out_would_reject_another_set(tmp_path, capsys):
    assert "leave-one-out" in build_parser().format_help()
    write_ratings(small_panel(300), tmp_path / "ratings.csv")
    out = tmp_path / "mos"
    code = mos_main([str(tmp_path / "ratings.csv"), "--out", str(out), "--dimensions",
                     "consistency", "--reliability-rounds", "0"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "note: consistency: leave-one-out screening" in printed
    assert "**Note.** consistency: leave-one-out" in (out / "report.md").read_text()
    viewers = pd.read_csv(out / "viewers.csv")
    assert {"srocc_loo", "rejected_loo"} <= set(viewers.columns)
    assert (viewers["rejected"] != viewers["rejected_loo"]).any()
    assert mos_main([str(tmp_path / "ratings.csv"), "--out", str(out), "--dimensions",
                     "consistency", "--srocc-reference", "loo", "--no-report"]) == 0  # fmt: skip
    assert "note:" not in capsys.readouterr().out


@pytest.fixture
def study(tmp_path):
    manifest = make_study(tmp_path / "images")
    app = make_app(tmp_path / "instance", SCREENING_REFRESH_SECONDS=3600, SCREENING_WAIT_SECONDS=0)
    import_study(app, manifest)
    return app


def test_the_dashboard_says_how_fresh_the_screening_is(study):
    viewer = Browser(study)
    viewer.register()
    for _ in range(3):
        position = viewer.current_position()
        assert viewer.rate(position, 1 + position % 4, 2).status_code == 303
    admin = Browser(study)
    admin.get("/admin/login")
    assert admin.post("/admin/login", {"password": ADMIN_PASSWORD}).status_code == 302
    page = admin.get("/admin/").get_data(as_text=True)  # the first result is waited for
    assert "up to date" in page and 'id="screening"' in page and "shared" in page
    position = viewer.current_position()
    assert viewer.rate(position, 3, 3).status_code == 303
    page = admin.get("/admin/").get_data(as_text=True)
    assert "1 newer rating(s) not yet included" in page
    study.extensions["live_screening"].refresh(wait=None)
    assert "up to date" in admin.get("/admin/").get_data(as_text=True)
