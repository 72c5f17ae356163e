"""Review of issue 12 (train_iqa), black-box: defects found by using the commands, each pinned.

Cheap on purpose: no training run; a checkpoint is a random-init TOPIQ-FR saved with the
settings and splits a run stores, and errors must come before any training starts."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_train_iqa import synthetic_study
from train_iqa.__main__ import main as train_main
from train_iqa.model import Metric
from train_iqa.train import FORMAT, TrainSettings
from train_iqa.validate import main as validate_main


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synthetic_study(tmp_path_factory.mktemp("study"), references=6, levels=4)


def _checkpoint(path: Path, frame: pd.DataFrame, test_refs: set[str], target="consistency_mos"):
    """A train_iqa best.pt (random weights) whose test split is the images of ``test_refs``."""
    torch.manual_seed(0)
    metric = Metric("topiq_fr", pretrained=False, weights=None, device="cpu")
    is_test = frame["reference"].isin(test_refs)
    settings = TrainSettings(size=32, metric="topiq_fr", target=target)
    torch.save({"metric": "topiq_fr", "settings": asdict(settings), "format": FORMAT,
                "model": metric.net.state_dict(), "record": {},
                "stimuli": {"train": frame.loc[~is_test, "stimulus"].tolist(), "val": [],
                            "test": frame.loc[is_test, "stimulus"].tolist()}}, path)  # fmt: skip
    return path


def _one_line(capsys, needle: str) -> None:
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err, err


def _base(study: Path, out: Path) -> list[str]:
    return ["--metric", "topiq_fr", "--mos", str(study), "--no-pretrained", "--size", "16",
            "--epochs", "1", "--device", "cpu", "--out", str(out)]  # fmt: skip


@pytest.mark.parametrize("option", ["--workers", "--save-every"])
def test_negative_workers_or_save_every_is_a_usage_error(study, tmp_path, option, capsys):
    """--workers -1 was a ValueError traceback; --save-every -3 was silently accepted."""
    with pytest.raises(SystemExit) as done:
        train_main([*_base(study, tmp_path), option, "-1"])
    assert done.value.code == 2
    _one_line(capsys, option)


@pytest.mark.parametrize(
    "extra, needle",
    [(["--split", "random", "--test-fraction", "0.01"], "test split"),  # test split of 0 images
     (["--select-on", "test", "--test-fraction", "0.95"], "training split")],  # trains on nothing
)  # fmt: skip
def test_a_split_left_empty_is_refused_before_training(study, tmp_path, extra, needle, capsys):
    """Both ran to exit 0: a NaN test row, or a NaN training loss from zero training images."""
    assert train_main([*_base(study, tmp_path), *extra]) == 2
    _one_line(capsys, needle)
    assert not (tmp_path / "last.pt").exists()


def test_an_infinite_mos_is_refused(study, tmp_path, capsys):
    """Training ran on it to exit 0 (loss inf, every figure NaN); validate gave a traceback."""
    frame = pd.read_csv(study)
    frame.loc[2, "consistency_mos"] = np.inf
    frame.to_csv(tmp_path / "mos.csv", index=False)
    frame[["stimulus"]].assign(score=1.0 * np.arange(len(frame))).to_csv(
        tmp_path / "s.csv", index=False
    )
    images = ["--images", str(study.parent)]
    assert train_main([*_base(tmp_path / "mos.csv", tmp_path / "run"), *images]) == 2
    _one_line(capsys, "not finite")
    assert validate_main(["--mos", str(tmp_path / "mos.csv"), "--scores", str(tmp_path / "s.csv"),
                          "--rounds", "10"]) == 2  # fmt: skip
    _one_line(capsys, "not finite")


def test_stimulus_ids_are_matched_as_text(study, tmp_path, capsys):
    """Numeric ids in one file and text in the other: a pandas merge traceback. Ids are text
    ('007' stays '007'), so both files match by what is written."""
    frame = pd.read_csv(study)
    frame["stimulus"] = [f"{i:03d}" for i in range(len(frame))]
    frame.loc[0, "stimulus"] = "x000"  # the MOS file's ids are text, the scores' numbers
    frame.to_csv(tmp_path / "mos.csv", index=False)
    scores = frame[["stimulus"]].assign(score=frame["consistency_mos"])
    scores.iloc[1:].to_csv(tmp_path / "s.csv", index=False)
    out = tmp_path / "v.json"
    assert validate_main(["--mos", str(tmp_path / "mos.csv"), "--scores", str(tmp_path / "s.csv"),
                          "--rounds", "10", "--partial", "--out", str(out)]) == 0  # fmt: skip
    import json

    result = json.loads(out.read_text())["metrics"][0]["dimensions"]["consistency_mos"]
    assert result["n"] == result["covered"] == len(frame) - 1


def test_two_runs_with_other_splits_are_not_scored_on_images_one_trained_on(
    study, tmp_path, capsys
):
    """Two checkpoints: validate scored both on the first run's test images, silently including
    images the second run trained on (its figures then are not test figures)."""
    frame = pd.read_csv(study)
    first = _checkpoint(tmp_path / "a.pt", frame, {"r0", "r1"})
    second = _checkpoint(tmp_path / "b.pt", frame, {"r4", "r5"})
    common = ["--mos", str(study), "--rounds", "10"]
    both = [*common, "--metric", "topiq_fr", "--weights", str(first), "--metric", "topiq_fr",
            "--weights", str(second)]  # fmt: skip
    assert validate_main(both) == 2
    _one_line(capsys, "trained on")
    # --scores restricted to a run's test images with --test-of, and a checkpoint that trained on them
    frame[["stimulus"]].assign(score=frame["consistency_mos"]).to_csv(
        tmp_path / "s.csv", index=False
    )
    assert validate_main([*common, "--test-of", str(first), "--metric", "topiq_fr", "--weights",
                          str(second), "--scores", str(tmp_path / "s.csv")]) == 2  # fmt: skip
    _one_line(capsys, "trained on")
    # the same split: fine
    again = _checkpoint(tmp_path / "c.pt", frame, {"r0", "r1"})
    assert validate_main([*common, "--metric", "topiq_fr", "--weights", str(first), "--metric",
                          "topiq_fr", "--weights", str(again)]) == 0  # fmt: skip


def test_the_bootstrap_of_a_subset_with_two_mos_levels_stays_cheap(monkeypatch):
    """A subset whose MOS takes two values (mode=Full in the synthetic study) made each
    bootstrap fit chase a step function for ~12,000 evaluations (4.6 s a fit): validate's
    default 1,000 rounds per subset would run for hours. The fit is now capped per start (the
    best bounded, monotonic point found is used)."""
    import train_iqa.stats as module

    # test_validate_a_metric_and_compare_two's noisy metric on its mode=Full images
    level = np.tile(np.arange(6), 10)
    noisy = 5 - 0.8 * level + np.random.default_rng(0).normal(0, 2, 60)
    full = level % 3 == 0
    mos, scores = 5 - 0.8 * level[full], noisy[full]
    calls = []
    original = module.logistic4
    monkeypatch.setattr(module, "logistic4", lambda *a: calls.append(1) or original(*a))
    groups = np.repeat(np.arange(10), 6)[full]
    value, low, high = module.bootstrap(scores, mos, rounds=20, groups=groups)["plcc"]
    assert len(calls) < 20 * 1000
    assert low <= value <= high and value > 0


def test_the_leaderboard_reads_a_manifest_with_empty_numeric_cells_without_a_warning(
    study, tmp_path
):
    """``fillna("")`` on a float column warned (Pandas4Warning: it will raise in pandas 4) on
    every real manifest (empty codec_qp / bpp cells)."""
    import warnings

    from train_iqa.leaderboard import _manifest

    frame = pd.read_csv(study)
    frame["distorted_path"] = [str(study.parent / p) for p in frame["distorted_path"]]
    frame["reference_path"] = [str(study.parent / p) for p in frame["reference_path"]]
    frame["codec_qp"] = np.where(frame["mode"] == "Image", 30.0, np.nan)
    frame.loc[0, "model"] = np.nan
    (tmp_path / "run").mkdir()
    frame.to_csv(tmp_path / "run" / "manifest.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = _manifest(tmp_path / "run", None)
    assert read.loc[0, "model"] == "" and read["codec_qp"].dtype == float


def test_a_single_reference_is_not_a_bootstrap_unit(study, tmp_path):
    """Images of one reference (a small run's test split): resampling whole references drew the
    same set every time and printed a zero-width '95% interval'."""
    import json

    frame = pd.read_csv(study)
    one = frame[frame["reference"] == "r0"]
    one.to_csv(tmp_path / "mos.csv", index=False)
    one[["stimulus"]].assign(score=one["consistency_mos"] + [0.3, -0.2, 0.4, 0.1]).to_csv(
        tmp_path / "s.csv", index=False
    )
    out = tmp_path / "v.json"
    assert validate_main(["--mos", str(tmp_path / "mos.csv"), "--scores", str(tmp_path / "s.csv"),
                          "--rounds", "50", "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())["metrics"][0]["dimensions"]["consistency_mos"]
    assert result["resampling"] == "images (4)"
    value, low, high = result["results"]["all"]["rmse"]
    assert low < high
