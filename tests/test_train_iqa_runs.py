"""``train_iqa`` runs a reviewer can reproduce: exact resume after a kill (mid-epoch and
mid-save), refused changed settings, frozen BatchNorm statistics, the validation split, settings
in the checkpoint, test-only validation, the leaderboard's direction, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_train_iqa import synthetic_study
from train_iqa.__main__ import main as train_main
from train_iqa.leaderboard import main as leaderboard_main
from train_iqa.model import Metric, frozen_batchnorms
from train_iqa.train import KILL_HOOK, SCALE, to_mos
from train_iqa.validate import main as validate_main

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synthetic_study(tmp_path_factory.mktemp("study"), references=8, levels=5)


def _args(mos: Path, out: Path, *extra: str) -> list[str]:
    return ["--metric", "topiq_fr", "--mos", str(mos), "--no-pretrained", "--size", "32",
            "--lr", "1e-4", "--epochs", "2", "--batch-size", "9", "--save-every", "2",
            "--device", "cpu", "--out", str(out), *extra]  # fmt: skip


def _run(args: list[str], kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    env.pop(KILL_HOOK, None)
    if kill:
        env[KILL_HOOK] = kill
    return subprocess.run([sys.executable, "-m", "train_iqa", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_a_run_killed_mid_epoch_and_mid_save_resumes_bit_for_bit(study, tmp_path):
    """40 images of 8 references: 10 test, 5 validation, 25 training = 3 steps per epoch
    (batches of 9), last.pt every 2 steps and at each epoch's end. The interrupted run is killed
    before step 3 of epoch 1 (last.pt from step 2: mid-epoch); resumed, it finishes epoch 1
    (saves 1–2: best.pt, last.pt) and is killed half-way through writing its third checkpoint
    file (last.pt after step 2 of epoch 2), leaving its own end-of-epoch-1 last.pt intact;
    resumed again (from an epoch boundary) to the end. 32² images keep each step cheap: every
    last.pt holds TOPIQ-FR's 36 M weights and Adam's two moments (0.4 GB)."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert _run(_args(study, whole)).returncode == 0
    first = _run(_args(study, broken), kill="step:1:3")
    assert first.returncode == -9  # before epoch 1 ended: metrics.json holds epoch 0 alone
    assert [h["epoch"] for h in json.loads((broken / "metrics.json").read_text())["history"]] == [0]
    assert torch.load(broken / "last.pt", weights_only=True)["step"] == 2
    second = _run(_args(study, broken, "--resume"), kill="save:3")
    assert second.returncode == -9
    assert (broken / ".last.pt.partial").exists()  # the interrupted write, beside an intact file
    saved = torch.load(broken / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 0)
    third = _run(_args(study, broken, "--resume"))
    assert third.returncode == 0, third.stderr
    a, b = (torch.load(run / "last.pt", weights_only=True) for run in (whole, broken))
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key in ("history", "best"):
        assert a[key] == b[key]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    report = {run: json.loads((run / "metrics.json").read_text()) for run in (whole, broken)}
    assert report[whole] == report[broken]
    best = torch.load(broken / "best.pt", weights_only=True)
    assert best["settings"]["size"] == 32 and len(best["stimuli"]["test"]) == 10


@pytest.fixture(scope="module")
def run(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train_main(_args(study, out, "--epochs", "1")) == 0
    return out


def test_resume_refuses_changed_settings_and_data(run, study, tmp_path, capsys):
    assert train_main(_args(study, run, "--resume", "--seed", "1")) == 2
    err = capsys.readouterr().err
    assert "changed settings" in err and "--seed 0 → 1" in err and err.count("\n") == 1
    other = pd.read_csv(study)
    other.loc[0, "consistency_mos"] = 1.234
    other.to_csv(tmp_path / "mos.csv", index=False)
    for folder in ("ref", "dist"):
        (tmp_path / folder).symlink_to(study.parent / folder)
    assert train_main(_args(tmp_path / "mos.csv", run, "--resume")) == 2
    assert "other data" in capsys.readouterr().err


def test_the_validation_split_chooses_best_and_the_papers_choice_remains(run, study, tmp_path):
    report = json.loads((run / "metrics.json").read_text())
    assert report["selected_on"] == "val" and "val" in report["best"]
    frame = pd.read_csv(study).set_index("stimulus")
    val, test = (set(frame.loc[report[f"{s}_stimuli"], "reference"]) for s in ("val", "test"))
    assert val and test and val.isdisjoint(test)
    assert (report["train_size"], report["val_size"], report["test_size"]) == (25, 5, 10)
    paper = tmp_path / "paper"
    assert train_main(_args(study, paper, "--epochs", "1", "--select-on", "test")) == 0
    report = json.loads((paper / "metrics.json").read_text())
    assert report["selected_on"] == "test" and "val" not in report["best"]
    assert (report["train_size"], report["val_size"]) == (30, 0)


def test_frozen_batchnorm_statistics_stay_frozen_while_training():
    torch.manual_seed(0)
    metric = Metric("topiq_fr", pretrained=False, weights=None, device="cpu")
    frozen = frozen_batchnorms(metric.net)
    assert frozen  # TOPIQ's backbone BatchNorms
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen]
    optimizer = torch.optim.Adam(metric.net.parameters(), lr=1e-3)
    head = next(p for p in metric.net.parameters() if p.requires_grad).clone()
    metric.train_mode()
    for _ in range(2):
        x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        loss = metric(x, y).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for module, saved in zip(frozen, before, strict=True):
        for name, value in module.state_dict().items():
            assert torch.equal(value, saved[name]), name
    assert not torch.equal(head, next(p for p in metric.net.parameters() if p.requires_grad))


def test_validate_scores_a_runs_test_images_at_its_size(run, study, tmp_path):
    weights = ["--mos", str(study), "--metric", "topiq_fr", "--weights", str(run / "best.pt"),
               "--rounds", "20"]  # fmt: skip
    assert validate_main([*weights, "--out", str(tmp_path / "test.json")]) == 0
    report = json.loads((tmp_path / "test.json").read_text())
    figures = report["metrics"][0]["dimensions"]["consistency_mos"]
    assert figures["n"] == 10 and "10 test images" in report["images"]
    assert figures["resampling"] == "references (2)" and not figures["trusted"]
    assert validate_main([*weights, "--size", "32", "--out", str(tmp_path / "32.json")]) == 0
    assert json.loads((tmp_path / "32.json").read_text()) == report  # the run's size, 32
    assert validate_main([*weights, "--all-images", "--out", str(tmp_path / "all.json")]) == 0
    every = json.loads((tmp_path / "all.json").read_text())["metrics"][0]
    assert every["dimensions"]["consistency_mos"]["n"] == 40
    # --scores restricted to the same test images with --test-of
    frame = pd.read_csv(study)
    pd.DataFrame({"stimulus": frame["stimulus"], "score": -frame["consistency_mos"]}).to_csv(
        tmp_path / "anti.csv", index=False
    )
    assert validate_main(["--mos", str(study), "--scores", str(tmp_path / "anti.csv"),
                          "--test-of", str(run / "best.pt"), "--rounds", "20", "--resample",
                          "image", "--out", str(tmp_path / "anti.json")]) == 0  # fmt: skip
    anti = json.loads((tmp_path / "anti.json").read_text())["metrics"][0]
    anti = anti["dimensions"]["consistency_mos"]
    assert anti["n"] == 10 and anti["resampling"] == "images (10)"
    assert anti["results"]["all"]["srcc"][0] == pytest.approx(-1.0)
    assert anti["results"]["all"]["plcc"][0] < -0.99  # signed


def test_leaderboard_turns_lower_is_better_scores_to_the_mos_direction(
    study, tmp_path, monkeypatch
):
    """A distance-like indicator (lower = better) that finds model A's images better: A ranks
    first once its scores are back on the MOS scale."""
    import train_iqa.leaderboard as board

    assert to_mos([0.1, 0.9], lower_better=True) == pytest.approx([0.9 * SCALE, 0.1 * SCALE])
    assert to_mos([0.1, 0.9], lower_better=False) == pytest.approx([0.1 * SCALE, 0.9 * SCALE])
    frame = pd.read_csv(study)
    results = _results_folder(frame, study, tmp_path)

    raw = np.where(frame["model"] == "A", 0.1, 0.8)

    class Distance:  # stands in for a fine-tuned scorer of a lower-is-better metric
        label, name, lower_better = "distance", "distance", True

        def __init__(self, full_reference):
            self.full_reference = full_reference

    kinds = {"x.pt": True, "y.pt": False}
    monkeypatch.setattr(board, "indicator", lambda text, device, size: Distance(kinds[text]))
    monkeypatch.setattr(board, "score_pairs", lambda scorer, d, r, cache: raw[: len(d)])
    out = tmp_path / "board.csv"
    assert leaderboard_main(["--fr", "x.pt", "--nr", "y.pt", "--results", str(results),
                             "--out", str(out)]) == 0  # fmt: skip
    table = pd.read_csv(out, index_col=0)
    assert list(table.index) == ["A", "B"]
    assert table.loc["A", "Full/Overall"] == pytest.approx(0.9 * SCALE)
    assert table.loc["A", "Full/Overall"] > table.loc["B", "Full/Overall"]


def _results_folder(frame: pd.DataFrame, study: Path, tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    manifest = frame.assign(
        distorted_path=[str(study.parent / p) for p in frame["distorted_path"]],
        reference_path=[str(study.parent / p) for p in frame["reference_path"]],
    )
    manifest.to_csv(results / "manifest.csv", index=False)
    return results


def _one_line_error(capsys, needle: str) -> None:
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_bad_training_input_is_one_line_and_exit_2(study, tmp_path, capsys):
    base = ["--metric", "topiq_fr", "--no-pretrained", "--device", "cpu", "--out", str(tmp_path)]
    (tmp_path / "empty.csv").write_text("")
    assert train_main([*base, "--mos", str(tmp_path / "empty.csv")]) == 2
    _one_line_error(capsys, "not a readable MOS file")
    (tmp_path / "bad.csv").write_bytes(b'a,b\n"1,2\n3,4,5,6\n\xff\xfe')
    assert train_main([*base, "--mos", str(tmp_path / "bad.csv")]) == 2
    _one_line_error(capsys, "bad.csv")
    for option in ("--size", "--epochs", "--batch-size"):
        with pytest.raises(SystemExit) as done:
            train_main([*base, "--mos", str(study), option, "0"])
        assert done.value.code == 2
        _one_line_error(capsys, "must be at least 1")
    frame = pd.read_csv(study)
    pd.concat([frame, frame.iloc[[3]]]).to_csv(tmp_path / "dup.csv", index=False)
    for folder in ("ref", "dist"):
        (tmp_path / folder).symlink_to(study.parent / folder)
    assert train_main([*base, "--mos", str(tmp_path / "dup.csv")]) == 2
    _one_line_error(capsys, "more than once")
    corrupt = frame.copy()
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    corrupt.loc[5, "distorted_path"] = "corrupt.png"
    corrupt.to_csv(tmp_path / "corrupt.csv", index=False)
    assert train_main([*base, "--size", "48", "--mos", str(tmp_path / "corrupt.csv")]) == 2
    _one_line_error(capsys, "not a readable image")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    assert train_main([*base, "--mos", str(study), "--weights", str(tmp_path / "junk.pt")]) == 2
    _one_line_error(capsys, "not a PyTorch checkpoint")


def test_nan_mos_is_reported_and_nan_scores_duplicates_and_code_are_refused(
    run, study, tmp_path, capsys
):
    frame = pd.read_csv(study)
    frame.loc[[0, 7], "consistency_mos"] = np.nan
    frame.to_csv(tmp_path / "mos.csv", index=False)
    scores = frame[["stimulus"]].assign(score=np.arange(len(frame), dtype=float))
    scores.to_csv(tmp_path / "s.csv", index=False)
    common = ["--mos", str(tmp_path / "mos.csv"), "--rounds", "20"]
    assert validate_main([*common, "--scores", str(tmp_path / "s.csv"), "--out",
                          str(tmp_path / "v.json")]) == 0  # fmt: skip
    assert "2 stimuli without a 'consistency_mos' left out" in capsys.readouterr().err
    result = json.loads((tmp_path / "v.json").read_text())["metrics"][0]
    result = result["dimensions"]["consistency_mos"]
    assert result["n"] == 38 and np.isfinite(result["results"]["all"]["srcc"]).all()
    scores.loc[4, "score"] = np.nan
    scores.to_csv(tmp_path / "nan.csv", index=False)
    assert validate_main([*common, "--scores", str(tmp_path / "nan.csv")]) == 2
    _one_line_error(capsys, f"stimulus {frame.loc[4, 'stimulus']}")
    pd.concat([scores.dropna(), scores.iloc[[1]]]).to_csv(tmp_path / "dup.csv", index=False)
    assert validate_main([*common, "--scores", str(tmp_path / "dup.csv")]) == 2
    _one_line_error(capsys, "more than once")
    assert validate_main([*common, "--scores", str(tmp_path / "s.csv"), "--resample",
                          "reference", "--test-of", str(tmp_path / "s.csv")]) == 2  # fmt: skip
    _one_line_error(capsys, "not a PyTorch checkpoint")
    # A checkpoint is data: one carrying an arbitrary object (code on unpickling) is refused.
    state = torch.load(run / "best.pt", weights_only=True)
    torch.save({**state, "extra": Path("x")}, tmp_path / "pickled.pt")
    assert validate_main([*common, "--metric", "topiq_fr", "--weights",
                          str(tmp_path / "pickled.pt")]) == 2  # fmt: skip
    _one_line_error(capsys, "holding code")


def test_bad_leaderboard_input_is_one_line_and_exit_2(run, study, tmp_path, capsys):
    results = _results_folder(pd.read_csv(study), study, tmp_path)
    common = ["--fr", str(run / "best.pt"), "--nr", str(run / "best.pt"), "--results", str(results)]
    assert leaderboard_main([*common, "--by", "no_such_column"]) == 2
    _one_line_error(capsys, "no column 'no_such_column'")
    (tmp_path / "junk.pt").write_bytes(os.urandom(100))
    assert leaderboard_main([*common[:1], str(tmp_path / "junk.pt"), *common[2:]]) == 2
    _one_line_error(capsys, "not a PyTorch checkpoint")
