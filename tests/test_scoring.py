"""Issue 20: one scoring step (any metric, native size, a content-keyed cache, a fast exact SSIM)
and the validation of many metrics at once (Table 2, own directions, coverage, MOS scale, honest
intervals and p-values) — each defect of the issue reproduced and shown gone."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import optimize, stats

from tests.test_train_iqa import synthetic_study
from train_iqa.__main__ import main as train_main
from train_iqa.leaderboard import build_parser as leaderboard_parser
from train_iqa.leaderboard import leaderboard
from train_iqa.leaderboard import main as leaderboard_main
from train_iqa.model import Metric
from train_iqa.scoring import MetricSpec, ScoreCache, Scorer, score_pairs
from train_iqa.stats import bootstrap, correlations, p_text, paired_srcc_test
from train_iqa.train import FORMAT, TrainSettings
from train_iqa.validate import build_parser as validate_parser
from train_iqa.validate import main as validate_main


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """10 references × 6 noise levels of 64×64 images, with both MOS dimensions."""
    return synthetic_study(tmp_path_factory.mktemp("study"), references=10, levels=6)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Five 40×56 (not square) pairs: a reference and a noisy copy."""
    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    distorted, references = [], []
    for i in range(5):
        clean = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        noisy = np.clip(clean + rng.normal(0, 4 + 8 * i, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(folder / f"r{i}.png")
        Image.fromarray(noisy).save(folder / f"d{i}.png")
        references.append(str(folder / f"r{i}.png"))
        distorted.append(str(folder / f"d{i}.png"))
    return distorted, references


def _pyiqa_scores(name: str, distorted: list[str], references: list[str]) -> np.ndarray:
    import pyiqa

    metric = pyiqa.create_metric(name, device="cpu")
    return np.array([float(metric(d, r)) for d, r in zip(distorted, references, strict=True)])


@pytest.mark.parametrize("name", ["psnr", "ssim", "gmsd"])
def test_metrics_without_trainable_parameters_score_at_native_size_like_pyiqa(name, pairs):
    """psnr / ssim / gmsd were refused ("no trainable parameters"), and stock metrics were
    scored on images squashed to 384². Now: pyiqa's own numbers on the images as they are
    (SSIM, computed here with a separable window, within 1e-5)."""
    scorer = Scorer(MetricSpec.parse(name))
    assert scorer.size is None and scorer.resize_note == "native size"
    ours = score_pairs(scorer, *pairs, cache=None, batch_size=3, progress=False)
    np.testing.assert_allclose(ours, _pyiqa_scores(name, *pairs), rtol=0, atol=1e-5)
    assert scorer.lower_better == (name == "gmsd") and scorer.full_reference


@pytest.mark.parametrize("name", ["ssim", "psnr"])
def test_batches_read_ahead_and_threads_change_no_score_nor_order(name, pairs):
    """Pairs are decoded ahead on several threads and SSIM scores a batch one image per core:
    the scores are those of one image at a time, bit for bit, in the input's order."""
    distorted, references = pairs
    order = [3, 0, 4, 1, 2, 3]  # a repeated pair too
    scorer = Scorer(MetricSpec.parse(name))
    d, r = [distorted[i] for i in order], [references[i] for i in order]
    batched = score_pairs(scorer, d, r, batch_size=4, progress=False)
    alone = [
        score_pairs(scorer, [a], [b], batch_size=1, progress=False)[0]
        for a, b in zip(d, r, strict=True)
    ]
    np.testing.assert_array_equal(batched, alone)
    assert batched[0] == batched[-1] and len(set(batched[:5])) == 5


def test_an_unreadable_image_read_ahead_is_a_clear_error(pairs, tmp_path):
    from studydb.images import ImageReadError

    distorted, references = pairs
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        score_pairs(
            Scorer(MetricSpec.parse("ssim")),
            [*distorted, str(broken)],
            [*references, references[0]],
            batch_size=2,
            progress=False,
        )


def test_a_fixed_size_keeps_the_aspect_ratio(pairs):
    scorer = Scorer(MetricSpec.parse("psnr"), size=20)
    assert "aspect ratio kept" in scorer.resize_note
    seen = []
    original = scorer.net.forward
    scorer.net.forward = lambda d, r: seen.append(tuple(d.shape)) or original(d, r)
    score_pairs(scorer, *pairs, progress=False)
    assert {shape[2:] for shape in seen} == {(20, 28)}  # 40×56 → 20×28, not 20×20


def test_scores_are_cached_by_content_and_metric_settings(pairs, tmp_path):
    distorted, references = pairs
    cache = ScoreCache(tmp_path / "cache.sqlite")
    scorer = Scorer(MetricSpec.parse("ssim"))
    first = score_pairs(scorer, distorted, references, cache, progress=False)
    # A copy under another name is the same content: no scoring at all.
    moved = tmp_path / "moved.png"
    moved.write_bytes(Path(distorted[0]).read_bytes())
    again = Scorer(MetricSpec.parse("ssim"))
    again.net = None  # any computation would fail
    np.testing.assert_array_equal(
        score_pairs(again, [str(moved), *distorted[1:]], references, cache, progress=False), first
    )
    # Other settings (a size) or other content: scored, not reused.
    resized = score_pairs(Scorer(MetricSpec.parse("ssim"), size=20), distorted, references,
                          cache, progress=False)  # fmt: skip
    assert not np.allclose(resized, first)
    Image.open(references[1]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(moved)
    changed = score_pairs(scorer, [str(moved)], [references[0]], cache, progress=False)
    assert changed[0] != first[0]


def test_random_weights_are_their_own_cache_key():
    """Two random builds of one network are different metrics: never one's scores for the
    other's."""
    torch.manual_seed(0)
    a = Scorer(MetricSpec.parse("topiq_nr"), pretrained=False)
    torch.manual_seed(1)
    b = Scorer(MetricSpec.parse("topiq_nr"), pretrained=False)
    assert a.key != b.key and not a.full_reference


def _checkpoint(path: Path, frame: pd.DataFrame, test_refs: set[str], name: str = "topiq_fr"):
    """A train_iqa best.pt of random weights whose test split is the images of ``test_refs``."""
    torch.manual_seed(0)
    metric = Metric(name, pretrained=False, weights=None, device="cpu")
    is_test = frame["reference"].isin(test_refs)
    settings = TrainSettings(size=32, metric=name, target="consistency_mos")
    torch.save({"metric": name, "settings": asdict(settings), "format": FORMAT,
                "model": metric.net.state_dict(), "record": {},
                "stimuli": {"train": frame.loc[~is_test, "stimulus"].tolist(), "val": [],
                            "test": frame.loc[is_test, "stimulus"].tolist()}}, path)  # fmt: skip
    return path


def test_validate_psnr_ssim_and_a_checkpoint_prints_table_2(study, tmp_path, capsys):
    """The issue's command: stock metrics and a fine-tuned checkpoint in one Table 2, scored on
    the checkpoint's test images, FR and NR apart, with paired tests."""
    frame = pd.read_csv(study)
    best = _checkpoint(tmp_path / "best.pt", frame, {"r0", "r1"})
    out = tmp_path / "v.json"
    assert validate_main(["--mos", str(study), "--metric", "psnr", "--metric", "ssim",
                          "--metric", f"topiq_fr:{best}", "--metric", "piqe",
                          "--no-pretrained", "--rounds", "30", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Table 2" in printed and "FR metrics" in printed and "NR metrics" in printed
    assert "consistency_mos SRCC" in printed and "perception_mos PLCC" in printed
    for row in ("| psnr ↑ | 12 |", "| ssim ↑ | 12 |", "| topiq_fr:best ↑ | 12 |"):
        assert row in printed
    assert printed.index("| psnr") < printed.index("NR metrics") < printed.index("| piqe")
    report = json.loads(out.read_text())
    kinds = {m["label"]: m["kind"] for m in report["metrics"]}
    assert kinds == {"psnr": "FR", "ssim": "FR", "topiq_fr:best": "FR", "piqe": "NR"}
    assert "training size" in report["metrics"][2]["source"]
    assert len(report["paired"]) == 2 * 6  # every pair of 4 metrics, per dimension


def _scores_csv(path: Path, frame: pd.DataFrame, values) -> str:
    frame[["stimulus"]].assign(score=values).to_csv(path, index=False)
    return str(path)


def test_each_scores_csv_keeps_its_own_direction(study, tmp_path, capsys):
    """--lower-better applied to every CSV at once: GMSD against PSNR gave an SRCC difference
    of 1.28, p = 0. Now a good lower-is-better metric and a good higher-is-better one agree."""
    frame = pd.read_csv(study)
    noise = np.random.default_rng(0).normal(0, 0.3, len(frame))
    psnr = _scores_csv(tmp_path / "psnr.csv", frame, 20 + 4 * frame["consistency_mos"] + noise)
    gmsd = _scores_csv(
        tmp_path / "gmsd.csv", frame, 0.3 - 0.05 * frame["consistency_mos"] + noise / 20
    )
    out = tmp_path / "v.json"
    assert validate_main(["--mos", str(study), "--scores", psnr, "--scores", f"{gmsd}:lower",
                          "--target", "consistency_mos", "--rounds", "50",
                          "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    srcc = [
        m["dimensions"]["consistency_mos"]["results"]["all"]["srcc"][0] for m in report["metrics"]
    ]
    assert min(srcc) > 0.9
    assert [m["lower_better"] for m in report["metrics"]] == [False, True]
    assert abs(report["paired"][0]["difference"]) < 0.1
    assert "| gmsd ↓ |" in capsys.readouterr().out


def test_a_scores_csv_missing_stimuli_is_an_error_unless_partial(study, tmp_path, capsys):
    """A CSV covering half the MOS was silently cut to half while the header said "every image"."""
    frame = pd.read_csv(study)
    half = _scores_csv(tmp_path / "half.csv", frame.iloc[:30], frame["consistency_mos"][:30])
    assert validate_main(["--mos", str(study), "--scores", half, "--rounds", "10"]) == 2
    err = capsys.readouterr().err
    assert "no score for 30 of the 60 stimuli" in err and "r5_0" in err and "--partial" in err
    assert validate_main(["--mos", str(study), "--scores", half, "--rounds", "10",
                          "--partial"]) == 0  # fmt: skip
    assert "| half ↑ | 30/60 |" in capsys.readouterr().out


def test_a_mos_off_the_0_to_5_scale_is_refused_or_mapped(study, tmp_path, capsys):
    """A 0–100 MOS trained without a word (epoch-1 loss 81, RMSE 25)."""
    frame = pd.read_csv(study)
    frame[["consistency_mos", "perception_mos"]] *= 20
    frame.to_csv(tmp_path / "mos100.csv", index=False)
    images = ["--images", str(study.parent)]
    base = ["--metric", "topiq_fr", "--mos", str(tmp_path / "mos100.csv"), "--no-pretrained",
            "--size", "16", "--epochs", "1", "--out", str(tmp_path / "run"), *images]  # fmt: skip
    assert train_main(base) == 2
    assert "outside 0–5" in capsys.readouterr().err and not (tmp_path / "run").exists()
    scores = _scores_csv(tmp_path / "s.csv", frame, frame["consistency_mos"])
    assert validate_main(["--mos", str(tmp_path / "mos100.csv"), "--scores", scores]) == 2
    assert "--mos-range" in capsys.readouterr().err
    out = tmp_path / "v.json"
    assert validate_main(["--mos", str(tmp_path / "mos100.csv"), "--scores", scores,
                          "--mos-range", "0:100", "--rounds", "20", "--details",
                          "--out", str(out)]) == 0  # fmt: skip
    figures = json.loads(out.read_text())["metrics"][0]["dimensions"]["consistency_mos"]
    assert figures["results"]["all"]["rmse"][0] < 0.1  # on the 0–5 scale: 100 / 20
    with pytest.raises(SystemExit):
        validate_main(["--mos", str(study), "--scores", scores, "--mos-range", "5:1"])


def test_a_bootstrap_over_few_references_says_it_cannot_be_trusted(study, tmp_path, capsys):
    """With two references the bootstrap has three possible resamples; nothing warned."""
    frame = pd.read_csv(study)
    two = frame[frame["reference"].isin(["r0", "r1"])]
    two.to_csv(tmp_path / "mos.csv", index=False)
    scores = _scores_csv(tmp_path / "s.csv", two, two["consistency_mos"] + np.arange(len(two)) % 3)
    assert validate_main(["--mos", str(tmp_path / "mos.csv"), "--scores", scores,
                          "--rounds", "20"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "only 2 references" in captured.err and "cannot be trusted" in captured.err
    assert "too few to trust the intervals" in captured.out


def test_a_p_value_of_no_resample_is_printed_as_below_one_over_rounds(study, tmp_path, capsys):
    frame = pd.read_csv(study)
    good = _scores_csv(tmp_path / "good.csv", frame, frame["consistency_mos"])
    noise = np.random.default_rng(0).normal(0, 3, len(frame))
    bad = _scores_csv(tmp_path / "bad.csv", frame, frame["consistency_mos"] + noise)
    assert validate_main(["--mos", str(study), "--scores", good, "--scores", bad,
                          "--target", "consistency_mos", "--rounds", "50"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "p < 0.02" in out and "p = 0.0000" not in out
    assert p_text(0.0, 1000) == "< 0.001" and p_text(0.25, 1000) == "0.2500"


def test_near_constant_inputs_do_not_leak_scipy_warnings():
    mos = np.r_[np.full(20, 3.0), 3.0 + 1e-9]
    scores = np.arange(21, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bootstrap(scores, mos, rounds=20)
        paired_srcc_test(scores, scores[::-1], mos, rounds=20)


def test_srcc_krcc_match_scipy_and_plcc_an_independent_logistic_fit():
    rng = np.random.default_rng(3)
    mos = rng.uniform(0, 5, 150)
    scores = 1 / (1 + np.exp(-(mos - 2.5))) + rng.normal(0, 0.05, 150)
    figures = correlations(scores, mos)
    assert figures["srcc"] == pytest.approx(stats.spearmanr(scores, mos)[0], abs=1e-12)
    assert figures["krcc"] == pytest.approx(stats.kendalltau(scores, mos)[0], abs=1e-12)

    def logistic(x, b1, b2, b3, b4):  # VQEG's form, fitted by scipy's curve_fit
        return b2 + (b1 - b2) / (1 + np.exp(-(x - b3) / abs(b4)))

    start = [mos.max(), mos.min(), np.median(scores), np.std(scores)]
    params, _ = optimize.curve_fit(logistic, scores, mos, p0=start, maxfev=20000)
    independent = stats.pearsonr(logistic(scores, *params), mos)[0]
    assert figures["plcc"] == pytest.approx(independent, abs=2e-3)


def _manifest(study: Path, folder: Path, mode_of=None, type_of=None) -> Path:
    frame = pd.read_csv(study).head(12)
    frame["distorted_path"] = [str(study.parent / p) for p in frame["distorted_path"]]
    frame["reference_path"] = [str(study.parent / p) for p in frame["reference_path"]]
    if mode_of:
        frame["mode"] = [mode_of(i) for i in range(len(frame))]
    if type_of:
        frame["content_type"] = [type_of(i) for i in range(len(frame))]
    folder.mkdir()
    frame.to_csv(folder / "manifest.csv", index=False)
    return folder


def test_the_leaderboard_shows_every_mode_and_content_type_of_the_data():
    """A Codec row was all NaN, and a content type outside NSI/SCI/AIGI hidden but averaged
    into Overall."""
    frame = pd.DataFrame({
        "model": ["A"] * 4 + ["B"] * 4,
        "mode": ["Codec", "Codec", "Full", "Full"] * 2,
        "content_type": ["NSI", "Photo", "NSI", "Photo"] * 2,
        "FR a": [1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0],
        "NR b": [4.0, 4.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0],
    })  # fmt: skip
    table = leaderboard(frame, "model", ["FR a", "NR b"])
    assert list(table.columns[:4]) == ["Full/FR a/NSI", "Full/FR a/Photo", "Full/NR b/NSI",
                                       "Full/NR b/Photo"]  # fmt: skip
    assert "Codec/FR a/Photo" in table.columns and not table.isna().any().any()
    assert table.loc["A", "Codec/Overall"] == pytest.approx(2 / 3 * 1.5 + 1 / 3 * 4.0)
    assert table.loc["A", "Full/Overall"] == pytest.approx(2 / 3 * 3.5 + 1 / 3 * 1.0)


def test_the_leaderboard_checks_fr_and_nr_and_takes_several_of_each(study, tmp_path, capsys):
    frame = pd.read_csv(study)
    fr = _checkpoint(tmp_path / "fr.pt", frame, {"r0"})
    nr = _checkpoint(tmp_path / "nr.pt", frame, {"r0"}, name="topiq_nr")
    results = _manifest(study, tmp_path / "results", mode_of=lambda i: ["Full", "Codec"][i % 2])
    base = ["--results", str(results), "--size", "16"]
    assert leaderboard_main([*base, "--fr", str(nr), "--nr", str(nr)]) == 2
    assert "topiq_nr is an NR metric, given as --fr" in capsys.readouterr().err
    assert leaderboard_main([*base, "--fr", "psnr", "--nr", str(nr)]) == 2
    assert "stock metric" in capsys.readouterr().err
    out = tmp_path / "board.csv"
    assert leaderboard_main([*base, "--fr", str(fr), "--fr", f"again=topiq_fr:{fr}",
                             "--nr", str(nr), "--out", str(out)]) == 0  # fmt: skip
    board = pd.read_csv(out, index_col=0)
    assert {"Codec/FR topiq_fr:fr/NSI", "Codec/FR again/SCI", "Codec/Overall"} <= set(board)
    assert board.min().min() >= 0 and board.max().max() <= 5


@pytest.mark.parametrize("parser", [validate_parser, leaderboard_parser])
def test_help_shows_each_default_once(parser):
    text = parser().format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    for block in text.split("\n  -")[1:]:
        assert block.count("default") <= 1, block
