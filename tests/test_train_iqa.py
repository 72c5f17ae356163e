"""``train_iqa``: statistics, the content-disjoint split, fine-tuning, validation, leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats

from train_iqa.__main__ import main as train_main
from train_iqa.data import ImagePairs, load_mos, split
from train_iqa.leaderboard import main as leaderboard_main
from train_iqa.model import Metric, MetricError
from train_iqa.stats import bootstrap, correlations, paired_srcc_test
from train_iqa.train import TrainSettings, predict
from train_iqa.validate import main as validate_main

DEMO = Path(__file__).parents[1] / "annotate" / "demo_data"


def synthetic_study(folder: Path, references: int = 10, levels: int = 6) -> Path:
    """Photos with increasing noise; MOS falls with the noise: a target a metric can learn."""
    (folder / "ref").mkdir(parents=True)
    (folder / "dist").mkdir()
    rng = np.random.default_rng(0)
    demo = sorted(DEMO.glob("*.png"))
    rows = []
    for r in range(references):
        source = np.asarray(Image.open(demo[r % 5]).convert("RGB").resize((64, 64)))
        source = np.roll(source, 7 * r, axis=1)
        Image.fromarray(source).save(folder / "ref" / f"r{r}.png")
        for d in range(levels):
            noisy = np.clip(source + rng.normal(0, 8 * d, source.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / "dist" / f"r{r}_{d}.png")
            rows.append({
                "stimulus": f"r{r}_{d}", "consistency_mos": 5 - 0.8 * d,
                "perception_mos": 4.8 - 0.7 * d + rng.normal(0, 0.1),
                "distorted_path": f"dist/r{r}_{d}.png", "reference_path": f"ref/r{r}.png",
                "reference": f"r{r}", "mode": ["Full", "Image", "Pixel"][d % 3],
                "model": ["A", "B"][r % 2], "content_type": ["NSI", "SCI"][r % 2],
            })  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "mos.csv", index=False)
    return folder / "mos.csv"


@pytest.fixture(scope="module")
def mos_file(tmp_path_factory):
    return synthetic_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def trained(mos_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["--metric", "topiq_fr", "--mos", str(mos_file), "--no-pretrained", "--size", "32",
            "--lr", "1e-4", "--epochs", "1", "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert train_main(args) == 0
    assert train_main([*args[:-4], "--epochs", "2", "--out", str(out), "--resume"]) == 0
    return out


def test_correlations_match_scipy_and_respect_direction():
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 5, 200)
    score = np.tanh(mos - 2.5) + rng.normal(0, 0.2, 200)
    figures = correlations(score, mos)
    assert figures["srcc"] == pytest.approx(stats.spearmanr(score, mos)[0])
    assert figures["krcc"] == pytest.approx(stats.kendalltau(score, mos)[0])
    assert figures["plcc"] >= stats.pearsonr(score, mos)[0]  # the logistic fit linearizes
    flipped = correlations(-score, mos, lower_better=True)
    assert flipped["srcc"] == pytest.approx(figures["srcc"])
    value, low, high = bootstrap(score, mos, rounds=200)["srcc"]
    assert low < value < high


def test_paired_test_tells_a_better_metric_from_a_worse_one():
    rng = np.random.default_rng(1)
    mos = rng.uniform(0, 5, 300)
    good = mos + rng.normal(0, 0.3, 300)
    bad = mos + rng.normal(0, 2.0, 300)
    assert paired_srcc_test(good, bad, mos, rounds=500)["p_value"] < 0.01
    assert paired_srcc_test(good, good, mos, rounds=200)["difference"] == 0


def test_default_split_is_content_disjoint(mos_file):
    frame = load_mos(mos_file, "consistency_mos", None)
    train, test = split(frame, 0.2, seed=0)
    assert set(frame.loc[train, "reference"]).isdisjoint(frame.loc[test, "reference"])
    assert len(test) == 12 and len(train) == 48
    random_train, random_test = split(frame, 0.2, seed=0, by_content=False)
    assert len(random_test) == 12
    assert not set(frame.loc[random_train, "reference"]).isdisjoint(
        frame.loc[random_test, "reference"]
    )


def test_fine_tuning_learns_and_resumes(trained):
    report = json.loads((trained / "metrics.json").read_text())
    history = report["history"]
    # the untrained metric, one epoch, then resumed for one more
    assert [h["epoch"] for h in history] == [0, 1, 2] and history[0]["train_loss"] is None
    assert history[-1]["train_loss"] < history[1]["train_loss"]
    assert report["best"]["epoch"] >= 1  # epoch 0 is the baseline, never selected
    assert {"srcc", "krcc", "plcc", "rmse"} <= set(report["final"]["test"])
    assert report["test_size"] == 12 and report["val_size"] == 6 and report["train_size"] == 42
    assert (trained / "best.pt").exists() and (trained / "scatter.png").stat().st_size > 1000


def test_a_checkpoint_reloads_to_identical_scores(trained, mos_file):
    frame = load_mos(mos_file, "consistency_mos", None)
    data = ImagePairs(frame, 32)
    settings = TrainSettings(size=32)
    first = predict(Metric("topiq_fr", False, trained / "best.pt", "cpu"), data, settings)
    again = predict(Metric("topiq_fr", False, trained / "best.pt", "cpu"), data, settings)
    np.testing.assert_array_equal(first, again)


def test_a_partly_matching_checkpoint_is_refused(trained, tmp_path):
    state = torch.load(trained / "best.pt", weights_only=False)
    state["model"].pop(next(iter(state["model"])))
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(MetricError, match="1 missing"):
        Metric("topiq_fr", False, tmp_path / "partial.pt", "cpu")


def test_validate_a_metric_and_compare_two(trained, mos_file, tmp_path, capsys):
    frame = pd.read_csv(mos_file)
    pd.DataFrame({"stimulus": frame["stimulus"], "score": frame["consistency_mos"] + 0.1}).to_csv(
        tmp_path / "oracle.csv", index=False
    )
    noise = np.random.default_rng(0).normal(0, 2, len(frame))
    pd.DataFrame({"stimulus": frame["stimulus"], "score": frame["consistency_mos"] + noise}).to_csv(
        tmp_path / "noisy.csv", index=False
    )
    args = ["--mos", str(mos_file), "--scores", str(tmp_path / "oracle.csv"), "--scores",
            str(tmp_path / "noisy.csv"), "--rounds", "200", "--details", "--out",
            str(tmp_path / "v.json")]  # fmt: skip
    assert validate_main(args) == 0
    out = capsys.readouterr().out
    assert "| mode=Full |" in out and "they differ" in out
    report = json.loads((tmp_path / "v.json").read_text())
    oracle = report["metrics"][0]["dimensions"]["consistency_mos"]
    assert oracle["results"]["all"]["srcc"][0] == pytest.approx(1.0)
    assert validate_main(["--mos", str(mos_file), "--metric", "topiq_fr", "--weights",
                          str(trained / "best.pt"), "--size", "32", "--rounds", "50"]) == 0  # fmt: skip


def test_leaderboard_on_a_generator_output(trained, mos_file, tmp_path, capsys):
    frame = pd.read_csv(mos_file)
    results = tmp_path / "results"
    (results / "images").mkdir(parents=True)
    rows = []
    for row in frame.itertuples():
        target = results / "images" / f"{row.stimulus}.png"
        target.write_bytes((mos_file.parent / row.distorted_path).read_bytes())
        rows.append({"id": row.stimulus, "distorted_path": f"images/{row.stimulus}.png",
                     "reference_path": str(mos_file.parent / row.reference_path),
                     "model": row.model, "mode": row.mode, "content_type": row.content_type})  # fmt: skip
    pd.DataFrame(rows).to_csv(results / "manifest.csv", index=False)
    code = leaderboard_main(["--fr", str(trained / "best.pt"), "--nr", str(nr_checkpoint(tmp_path)),
                             "--results", str(results), "--size", "32", "--out",
                             str(tmp_path / "board.csv")])  # fmt: skip
    assert code == 0
    board = pd.read_csv(tmp_path / "board.csv", index_col=0)
    assert list(board.index) == ["A", "B"]
    assert "Full/FR topiq_fr:best/NSI" in board.columns and "Full/Overall" in board.columns
    assert board.min().min() >= 0 and board.max().max() <= 5  # the MOS scale
    full_a = board.loc["A"]
    expected = (
        2 / 3 * full_a.filter(like="Full/FR").mean() + 1 / 3 * full_a.filter(like="Full/NR").mean()
    )
    assert full_a["Full/Overall"] == pytest.approx(expected)


def nr_checkpoint(folder: Path, size: int = 32) -> Path:
    """A train_iqa checkpoint of a random-weight TOPIQ-NR (no training: a leaderboard's NR
    indicator in tests)."""
    torch.manual_seed(0)
    metric = Metric("topiq_nr", pretrained=False, weights=None, device="cpu")
    path = folder / "nr.pt"
    torch.save({"metric": "topiq_nr", "model": metric.net.state_dict(),
                "settings": TrainSettings(size=size, metric="topiq_nr").__dict__}, path)  # fmt: skip
    return path


def test_bad_input_gives_one_line_errors(mos_file, tmp_path, capsys):
    assert train_main(["--metric", "no_such_metric", "--mos", str(mos_file)]) == 2
    assert "unknown pyiqa metric" in capsys.readouterr().err
    broken = tmp_path / "mos.csv"
    pd.read_csv(mos_file).drop(columns=["distorted_path"]).to_csv(broken, index=False)
    assert train_main(["--metric", "topiq_nr", "--mos", str(broken), "--no-pretrained"]) == 2
    assert "no column 'distorted_path'" in capsys.readouterr().err
