"""``compare``: Bjøntegaard deltas checked against independent computations, the report files,
the CLI on the codec ladder of ``generate ladder`` and on CMC runs of tiny pipelines (two runs,
and Table A1 / Figure A4 sweeps), and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.interpolate import PchipInterpolator

from compare.__main__ import main as compare_main
from compare.bd import Curve, delta
from generate.__main__ import main as generate_main
from tests.tiny_models import save_sd
from train_iqa.model import MetricError

DEMO_NAMES = ("coffee.png", "rocket.png", "chelsea.png")
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no retries against an unreachable hub


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Three demo photographs at 128×96, the references of every manifest here."""
    from tests.test_generate import DEMO

    folder = tmp_path_factory.mktemp("refs")
    for name in DEMO_NAMES:
        Image.open(DEMO / name).convert("RGB").resize((128, 96)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def ladder(refs, tmp_path_factory):
    """`generate ladder`: HEVC and AV1, each at four QPs of its own scale; its manifest."""
    out = tmp_path_factory.mktemp("ladder")
    assert generate_main(["ladder", "--references", str(refs), "--out", str(out),
                          "--codecs", "hevc,av1", "--qps", "hevc=24,32,40,48",
                          "--qps", "av1=30,40,50,60", "--workers", "1"]) == 0  # fmt: skip
    return out / "manifest.csv"


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR on RGB in [0, 1], written here independently of pyiqa."""
    x = np.asarray(a, dtype=np.float64) / 255
    y = np.asarray(b, dtype=np.float64) / 255
    return float(10 * np.log10(1 / np.mean((x - y) ** 2)))


def bd_independent(rate_a, q_a, rate_t, q_t):
    """BD-rate (%) and BD-quality by scipy's PCHIP directly, over the overlap of the curves."""
    a, t = np.argsort(rate_a), np.argsort(rate_t)
    rate_a, q_a, rate_t, q_t = rate_a[a], np.asarray(q_a)[a], rate_t[t], np.asarray(q_t)[t]
    la, lt = np.log10(rate_a), np.log10(rate_t)
    lo, hi = max(la.min(), lt.min()), min(la.max(), lt.max())
    bd_q = (PchipInterpolator(lt, q_t).integrate(lo, hi)
            - PchipInterpolator(la, q_a).integrate(lo, hi)) / (hi - lo)  # fmt: skip
    qa, qt = np.argsort(q_a), np.argsort(q_t)
    lo, hi = max(min(q_a), min(q_t)), min(max(q_a), max(q_t))
    log_d = (PchipInterpolator(np.asarray(q_t)[qt], lt[qt]).integrate(lo, hi)
             - PchipInterpolator(np.asarray(q_a)[qa], la[qa]).integrate(lo, hi)) / (hi - lo)  # fmt: skip
    return (10**log_d - 1) * 100, bd_q


# --- Bjøntegaard deltas on known curves ----------------------------------------------------------


def test_bd_of_a_curve_against_itself_is_zero():
    rate = np.array([0.02, 0.05, 0.1, 0.3])
    quality = np.array([0.41, 0.55, 0.62, 0.8])
    d = delta(Curve("a", rate, quality), Curve("b", rate, quality), lower_better=False)
    assert d.bd_rate == pytest.approx(0, abs=1e-9) and d.bd_quality == pytest.approx(0, abs=1e-9)
    assert d.rate_overlap == 1 and d.notes == []


@pytest.mark.parametrize("lower_better", [False, True])
@pytest.mark.parametrize("factor", [0.5, 1.3])
def test_a_ladder_shifted_by_a_known_rate_gives_that_rate(lower_better, factor):
    rate = np.array([0.02, 0.05, 0.1, 0.3])
    quality = 30 + 6 * np.log2(rate) + np.array([0, 0.4, 0.1, 0.3])  # concave, not a straight line
    quality = -quality if lower_better else quality
    d = delta(Curve("t", rate * factor, quality), Curve("a", rate, quality), lower_better)
    assert d.bd_rate == pytest.approx((factor - 1) * 100, abs=1e-9)
    expected_rate, expected_quality = bd_independent(rate, quality, rate * factor, quality)
    assert expected_rate == pytest.approx((factor - 1) * 100)
    assert d.bd_quality == pytest.approx(expected_quality, rel=1e-9)
    # less rate for the same quality is a gain: higher, or lower for a lower-is-better metric
    gain = d.bd_quality * (-1 if lower_better else 1)
    assert (gain > 0) == (factor < 1)
    # the overlap's share of the narrower log-rate range (both span 0.02–0.3 here)
    assert d.rate_overlap == pytest.approx(
        np.log10(0.3 * min(1, factor) / (0.02 * max(1, factor))) / np.log10(0.3 / 0.02)
    )


def test_what_bd_cannot_compute_is_reported_not_extrapolated():
    rate = np.array([0.02, 0.05, 0.1, 0.3])
    quality = np.array([0.4, 0.5, 0.6, 0.7])
    apart = delta(Curve("t", rate * 100, quality + 1), Curve("a", rate, quality), False)
    assert np.isnan(apart.bd_rate) and np.isnan(apart.bd_quality)
    assert any("rate ranges do not overlap" in n for n in apart.notes)
    assert any("quality ranges do not overlap" in n for n in apart.notes)
    bumpy = delta(
        Curve("t", rate, np.array([0.4, 0.6, 0.5, 0.7])), Curve("a", rate, quality), False
    )
    assert np.isnan(bumpy.bd_rate) and not np.isnan(bumpy.bd_quality)
    assert bumpy.notes == ["t: quality does not rise with rate between 0.05 and 0.1 bpp: BD-rate undefined"]  # fmt: skip
    single = delta(Curve("t", rate[:1], quality[:1]), Curve("a", rate, quality), False)
    assert np.isnan(single.bd_rate) and "t: 1 point(s); pchip needs 2 per curve" in single.notes


@pytest.mark.parametrize("points", [2, 3])
def test_the_cubic_fit_refuses_curves_of_fewer_than_four_points(points):
    """numpy.polyfit of degree 3 through 2 or 3 points returns one of infinitely many cubics:
    the cubic method gives no number there (PCHIP does), and says why."""
    rate = np.array([0.02, 0.05, 0.1, 0.3])
    quality = np.array([0.41, 0.55, 0.62, 0.8])
    test, anchor = Curve("t", rate[:points] * 0.8, quality[:points]), Curve("a", rate, quality)
    cubic = delta(test, anchor, False, "cubic")
    assert np.isnan(cubic.bd_rate) and np.isnan(cubic.bd_quality)
    assert cubic.notes == [f"t: {points} point(s); cubic needs 4 per curve"]
    pchip = delta(test, anchor, False, "pchip")
    assert np.isfinite(pchip.bd_rate) and pchip.notes == []
    four = delta(Curve("t", rate * 0.8, quality), anchor, False, "cubic")
    assert four.bd_rate == pytest.approx(-20, abs=1e-6) and four.notes == []


def test_a_point_without_a_score_is_left_out_as_its_note_says():
    """One NaN point: a note, and the delta of the other points (not NaN for the whole pair)."""
    rate = np.array([0.02, 0.05, 0.1, 0.3])
    quality = np.array([0.41, 0.55, 0.62, 0.8])
    holed = quality.copy()
    holed[1] = np.nan
    d = delta(Curve("t", rate * 0.5, holed), Curve("a", rate, quality), False)
    left = [0, 2, 3]
    expected = delta(Curve("t", rate[left] * 0.5, quality[left]), Curve("a", rate, quality), False)
    assert d.bd_rate == pytest.approx(expected.bd_rate) and np.isfinite(d.bd_rate)
    assert d.bd_quality == pytest.approx(expected.bd_quality) and np.isfinite(d.bd_quality)
    assert d.notes == ["t: 1 point(s) without a score left out (at 0.025 bpp); the delta uses its other 3"]  # fmt: skip
    # what is left must still be a curve: two NaN points of three leave one, and no number
    few = delta(Curve("t", rate[:3], np.array([0.4, np.nan, np.nan])), Curve("a", rate, quality), False)  # fmt: skip
    assert np.isnan(few.bd_rate) and "t: 1 point(s); pchip needs 2 per curve" in few.notes


def test_a_sliver_of_overlap_gives_a_note_and_no_number():
    """Under 20% of the narrower range in common, the 'average' difference rests on one
    interpolated segment: no number, a note naming the share; at 20% or more, a number."""
    rate = np.array([0.02, 0.05, 0.1, 0.3])
    quality = np.array([0.40, 0.55, 0.62, 0.80])
    # the test starts at 0.28 bpp: log-rate overlap log(0.3/0.28)/log(0.3/0.02) ≈ 2.5%
    sliver = delta(Curve("t", rate * 14, quality + 0.39), Curve("a", rate, quality), False)
    assert np.isnan(sliver.bd_rate) and np.isnan(sliver.bd_quality)
    assert sliver.rate_overlap == pytest.approx(np.log10(0.3 / 0.28) / np.log10(0.3 / 0.02))
    assert any("rate ranges overlap over 3% of the narrower one" in n and "BD-quality not given" in n
               for n in sliver.notes)  # fmt: skip
    assert any(
        "quality ranges overlap over" in n and "BD-rate not given" in n for n in sliver.notes
    )
    enough = delta(Curve("t", rate * 3, quality + 0.1), Curve("a", rate, quality), False)
    assert enough.rate_overlap >= 0.2 and np.isfinite(enough.bd_rate) and enough.notes == []


# --- the CLI on the codec ladder -------------------------------------------------------------


def test_a_codec_against_itself_and_shifted_through_the_cli(tmp_path, ladder):
    """The ladder's HEVC as a 'CMC method' twice: same bits (BD 0) and half the bits (−50%);
    PSNR means and BD-quality checked against this test's own PSNR and scipy's PCHIP."""
    frame = pd.read_csv(ladder)
    hevc = frame[frame["model"] == "HEVC"].assign(distorted_path=lambda f: str(ladder.parent) + "/" + f["distorted_path"])  # fmt: skip
    same = hevc.assign(model="Same", mode="Full")
    half = hevc.assign(model="Half", mode="Full", bpp=hevc["bpp"] / 2)
    for name, f in (("same", same), ("half", half)):
        f.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "out"
    args = [str(ladder), str(tmp_path / "same.csv"), str(tmp_path / "half.csv"), "--out", str(out),
            "--metric", "psnr", "--metric", "ssim", "--quiet", "--device", "cpu"]  # fmt: skip
    assert compare_main(args) == 0
    bd = pd.read_csv(out / "bd.csv", keep_default_na=False)
    assert len(bd) == 2 * 2 * 2  # {Same, Half} × {HEVC, AV1} × {psnr, ssim}
    assert (bd["references"] == len(DEMO_NAMES)).all() and (bd["note"] == "").all()
    against_hevc = bd[bd["anchor"] == "HEVC"].set_index(["metric", "test"])
    for metric in ("psnr", "ssim"):
        assert float(against_hevc.loc[(metric, "Same"), "bd_rate_percent"]) == pytest.approx(
            0, abs=1e-6
        )
        assert float(against_hevc.loc[(metric, "Same"), "bd_quality"]) == pytest.approx(0, abs=1e-6)
        assert float(against_hevc.loc[(metric, "Half"), "bd_rate_percent"]) == pytest.approx(
            -50, abs=1e-6
        )
    # independently: mean PSNR per QP from the files, then PCHIP on (log rate, PSNR)
    hevc = hevc.assign(psnr=[psnr(Image.open(d), Image.open(r))
                             for d, r in zip(hevc["distorted_path"], hevc["reference_path"], strict=True)])  # fmt: skip
    per_qp = hevc.groupby("codec_qp")[["bpp", "psnr"]].mean()
    points = pd.read_csv(out / "points.csv")
    mine = points[(points["curve"] == "HEVC") & (points["metric"] == "psnr")].set_index("point")
    for qp, row in per_qp.iterrows():
        assert mine.loc[f"Codec, QP {qp}", "mean"] == pytest.approx(row["psnr"], abs=1e-3)
        assert mine.loc[f"Codec, QP {qp}", "bpp"] == pytest.approx(row["bpp"])
        assert mine.loc[f"Codec, QP {qp}", "n"] == len(DEMO_NAMES)
    rate, q = per_qp["bpp"].to_numpy(), per_qp["psnr"].to_numpy()
    _, bd_quality = bd_independent(rate, q, rate / 2, q)
    assert float(against_hevc.loc[("psnr", "Half"), "bd_quality"]) == pytest.approx(
        bd_quality, abs=1e-3
    )
    report = (out / "report.md").read_text()
    assert (
        "![rate–quality curves](figure.png)" in report
        and "| psnr | Half | HEVC | 3 | -50.0 |" in report
    )
    with Image.open(out / "figure.png") as figure:
        assert figure.size[0] > 400 and figure.size[1] > 300
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == len(frame) + len(same) + len(half) and {
        "psnr",
        "ssim",
        "curve",
        "point",
    } <= set(scores.columns)
    assert (
        (out / "points.md")
        .read_text()
        .startswith("| curve | point | n | bpp | psnr (FR) | ssim (FR) |")
    )


# --- two CMC runs on tiny pipelines against the ladder ------------------------------------------


@pytest.fixture(scope="module")
def cmc_runs(refs, tmp_path_factory):
    """Two `generate run`s of tiny random SD-1.5 in every mode, differing only in their steps."""
    folder = tmp_path_factory.mktemp("cmc")
    save_sd(folder / "sd")
    config = folder / "models.toml"
    config.write_text(f'[SD15]\nweights = "{folder / "sd"}"\n')
    captions = folder / "captions.csv"
    pd.DataFrame({"name": list(DEMO_NAMES), "text": ["a cup", "a rocket", "a cat"]}).to_csv(
        captions
    )
    plan = folder / "plan.csv"
    generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset", "benchmark",
                   "--models", "SD15"])  # fmt: skip
    runs = []
    for steps in ("2", "4"):
        out = folder / f"run{steps}"
        assert generate_main(["run", str(plan), "--out", str(out), "--captions", str(captions),
                              "--models-config", str(config), "--size", "64", "--steps", steps,
                              "--target-bpp", "0.1", "--device", "cpu"]) == 0  # fmt: skip
        runs.append(out / "manifest.csv")
    return runs


def test_two_cmc_runs_against_the_ladder(tmp_path, ladder, cmc_runs, capsys):
    (tmp_path / "tiny_clip.json").write_text(json.dumps(TINY_CLIP))
    out = tmp_path / "out"
    args = [str(ladder), "--label", f"steps2={cmc_runs[0]}", "--label", f"steps4={cmc_runs[1]}",
            "--out", str(out), "--metric", "psnr", "--metric", "clipsim", "--metric", "fid",
            "--no-pretrained", "--clip-model", str(tmp_path / "tiny_clip.json"), "--fid-dims", "64",
            "--quiet", "--device", "cpu", "--title", "tiny"]  # fmt: skip
    assert compare_main(args) == 0
    assert "2 CMC and 2 codec curve(s), 3 metric(s)" in capsys.readouterr().out
    points = pd.read_csv(out / "points.csv")
    assert set(points["curve"]) == {"steps2 SD15", "steps4 SD15", "HEVC", "AV1"}
    cmc = points[points["curve"] == "steps2 SD15"]
    names = {"Text": "Text", "Pixel": "Pixel", "Image": "Image, target 0.1 bpp",
             "Full": "Full, target 0.1 bpp"}  # fmt: skip
    assert set(cmc["point"]) == set(names.values())
    assert (cmc["n"] == len(DEMO_NAMES)).all()
    manifest = pd.read_csv(cmc_runs[0])
    # independently: each mode's mean bpp and mean PSNR, from the manifest and the image files
    manifest["psnr"] = [psnr(Image.open(cmc_runs[0].parent / d), Image.open(r))
                        for d, r in zip(manifest["distorted_path"], manifest["reference_path"], strict=True)]  # fmt: skip
    per_mode = manifest.groupby("mode")[["bpp", "psnr"]].mean()
    mine = cmc[cmc["metric"] == "psnr"].set_index("point")
    for mode, row in per_mode.iterrows():
        assert mine.loc[names[mode], "bpp"] == pytest.approx(row["bpp"])
        assert mine.loc[names[mode], "mean"] == pytest.approx(row["psnr"], abs=1e-3)
    types = points.drop_duplicates("metric").set_index("metric")
    assert types.loc["fid", "type"] == "perception" and bool(types.loc["fid", "lower_better"])
    assert types.loc["clipsim", "type"] == "consistency"
    fid = points[points["metric"] == "fid"]
    assert fid["mean"].notna().all() and fid["ci_low"].isna().all()
    assert (points.loc[points["metric"] == "clipsim", "mean"] <= 1 + 1e-6).all()
    bd = pd.read_csv(out / "bd.csv", keep_default_na=False)
    assert len(bd) == 2 * 2 * 3
    undefined = bd[(bd["bd_rate_percent"] == "") | (bd["bd_quality"] == "")]
    assert (undefined["note"] != "").all()  # every empty cell is explained


def test_a_ladder_made_at_bpp_targets_gives_one_point_per_target(tmp_path, refs):
    ladder = tmp_path / "ladder"
    assert generate_main(["ladder", "--references", str(refs), "--out", str(ladder), "--codecs",
                          "hevc", "--bpp", "0.5,1", "--workers", "1"]) == 0  # fmt: skip
    out = tmp_path / "out"
    args = [str(ladder / "manifest.csv"), "--out", str(out), "--metric", "psnr", "--quiet",
            "--device", "cpu"]  # fmt: skip
    assert compare_main(args) == 0
    points = pd.read_csv(out / "points.csv").set_index("point")
    assert sorted(points.index) == ["Codec, target 0.5 bpp", "Codec, target 1 bpp"]
    manifest = pd.read_csv(ladder / "manifest.csv")
    for target, group in manifest.groupby("codec_target_bpp"):
        assert points.loc[f"Codec, target {target:g} bpp", "bpp"] == pytest.approx(
            group["bpp"].mean()
        )


def test_sweeps_give_one_point_per_qp_and_per_caption_length(tmp_path, refs, ladder, monkeypatch):
    """A `generate plan --sweep-qp --sweep-caption-words` run (Table A1, Figure A4) on a tiny
    SD-1.5: `compare` makes one point per (mode, QP, caption length), each over every reference,
    its rate the mean bpp of exactly those images."""
    from tests.test_generate_faithful import WordCounter

    save_sd(tmp_path / "sd")
    config = tmp_path / "models.toml"
    config.write_text(f'[SD15]\nweights = "{tmp_path / "sd"}"\n')
    plan = tmp_path / "plan.csv"
    assert generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset",
                          "benchmark", "--models", "SD15", "--sweep-qp", "51,45",
                          "--sweep-caption-words", "5,20"]) == 0  # fmt: skip
    monkeypatch.setattr("generate.__main__.make_captioner", lambda source, words: WordCounter())
    run = tmp_path / "run"
    assert generate_main(["run", str(plan), "--out", str(run), "--models-config", str(config),
                          "--captions", "stub", "--size", "64", "--steps", "2",
                          "--device", "cpu"]) == 0  # fmt: skip
    out = tmp_path / "out"
    args = [str(ladder), str(run / "manifest.csv"), "--out", str(out), "--metric", "psnr",
            "--quiet", "--device", "cpu"]  # fmt: skip
    assert compare_main(args) == 0
    points = pd.read_csv(out / "points.csv")
    sd = points[points["curve"] == "SD15"].set_index("point")
    assert sorted(sd.index) == sorted(
        ["Text, 5 words", "Text, 20 words", "Pixel, 5 words", "Pixel, 20 words",
         "Image, QP 51", "Image, QP 45", "Full, QP 51, 5 words", "Full, QP 51, 20 words",
         "Full, QP 45, 5 words", "Full, QP 45, 20 words"]
    )  # fmt: skip
    assert (sd["n"] == len(DEMO_NAMES)).all()
    manifest = pd.read_csv(run / "manifest.csv")
    for (mode, qp, words), group in manifest.groupby(
        ["mode", manifest["codec_qp"].fillna(-1), manifest["caption_words"].fillna(-1)]
    ):
        name = ", ".join([mode] + ([f"QP {qp:.0f}"] if qp >= 0 else [])
                         + ([f"{words:.0f} words"] if words >= 0 else []))  # fmt: skip
        assert sd.loc[name, "bpp"] == pytest.approx(group["bpp"].mean())
    # the swept setting moves the rate the right way: a finer QP and a longer caption cost more
    assert sd.loc["Image, QP 45", "bpp"] > sd.loc["Image, QP 51", "bpp"]
    assert sd.loc["Text, 20 words", "bpp"] > sd.loc["Text, 5 words", "bpp"]
    assert sd.loc["Full, QP 45, 20 words", "bpp"] > sd.loc["Full, QP 51, 5 words", "bpp"]


# --- bad input ---------------------------------------------------------------------------------


def _error(capsys, args) -> str:
    assert compare_main([*args, "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: error: ") and err.count("\n") == 1
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path, ladder, capsys):
    out = ["--out", str(tmp_path / "o"), "--metric", "psnr"]
    assert "no such file" in _error(capsys, [str(tmp_path / "none.csv"), *out])
    frame = pd.read_csv(ladder)
    frame["distorted_path"] = str(ladder.parent) + "/" + frame["distorted_path"]
    frame.iloc[[0]].assign(distorted_path=str(tmp_path / "gone.png")).to_csv(
        tmp_path / "m.csv", index=False
    )
    assert "1 image file(s) not found" in _error(capsys, [str(tmp_path / "m.csv"), *out])
    frame.drop(columns="bpp").to_csv(tmp_path / "nobpp.csv", index=False)
    assert "no bpp column" in _error(capsys, [str(tmp_path / "nobpp.csv"), *out])
    frame.assign(bpp="").to_csv(tmp_path / "emptybpp.csv", index=False)
    assert "not a positive number" in _error(capsys, [str(tmp_path / "emptybpp.csv"), *out])
    (tmp_path / "notes.png").write_text("not an image")
    frame.iloc[[0]].assign(distorted_path=str(tmp_path / "notes.png")).to_csv(
        tmp_path / "bad.csv", index=False
    )
    assert "not a readable image" in _error(capsys, [str(tmp_path / "bad.csv"), *out])
    args = [str(ladder), "--out", str(tmp_path / "o")]
    assert "unknown pyiqa metric 'no_such'" in _error(capsys, [*args, "--metric", "no_such"])
    assert "given twice" in _error(capsys, [*args, "--metric", "psnr", "--metric", "psnr"])
    assert "no such weights file" in _error(capsys, [*args, "--metric", "topiq_fr:none.pt"])
    assert "more than one manifest" in _error(capsys, [*args, str(ladder), "--metric", "psnr"])
    assert "is not NAME=PATH" in _error(capsys, [*args, "--label", "nolabel", "--metric", "psnr"])
    assert "no manifest given" in _error(capsys, ["--metric", "psnr", "--out", str(tmp_path / "o")])
    assert "no column 'encoder'" in _error(
        capsys, [*args, "--metric", "psnr", "--curve-by", "encoder"]
    )


def test_fid_in_the_span_of_the_samples_is_pyiqas_fid():
    from pyiqa.archs.fid_arch import frechet_distance as pyiqa_fid

    from compare.metrics import frechet_distance

    rng = np.random.default_rng(0)
    for n, m, d in ((40, 30, 8), (6, 5, 16)):  # more samples than dimensions, and fewer
        a, b = rng.normal(size=(n, d)), rng.normal(0.3, 1.5, size=(m, d))
        expected = pyiqa_fid(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
        assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)


def test_a_fine_tuned_checkpoint_is_scored_and_a_foreign_one_refused(tmp_path, refs, capsys):
    """``NAME:WEIGHTS`` loads train_iqa-style checkpoints strictly: the column is the score of
    exactly those weights (recomputed here with pyiqa), and another metric's file is refused."""
    import pyiqa
    import torch

    from train_iqa.model import create

    torch.manual_seed(1)
    net = create("topiq_nr", False, None, "cpu", as_loss=False).net
    torch.save({"model": net.state_dict()}, tmp_path / "best.pt")
    small = tmp_path / "small.png"
    Image.open(sorted(refs.iterdir())[0]).resize((64, 48)).save(small)
    rows = [{"id": f"q{q}", "distorted_path": str(small), "reference_path": str(small),
             "model": "HEVC", "mode": "Codec", "codec_qp": q, "bpp": 0.1 * q} for q in (1, 2)]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "out"
    args = [str(tmp_path / "m.csv"), "--out", str(out), "--quiet", "--device", "cpu"]
    assert compare_main([*args, "--metric", f"mine=topiq_nr:{tmp_path / 'best.pt'}"]) == 0
    reference = pyiqa.create_metric(
        "topiq_nr", pretrained=False, backbone_pretrain=False, device="cpu"
    )
    reference.net.load_state_dict(net.state_dict())
    expected = float(reference(str(small)))
    assert pd.read_csv(out / "scores.csv")["mine"].to_list() == pytest.approx(
        [expected] * 2, rel=1e-5
    )
    torch.save({"model": {"fc.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    assert "does not match this metric" in _error(
        capsys, [*args, "--metric", f"topiq_nr:{tmp_path / 'other.pt'}"]
    )


def test_images_blanked_by_the_safety_checker_are_left_out_with_a_count(tmp_path, ladder, capsys):
    """A black image the SD-1.5 safety checker put in place of a decoded one says nothing about
    compression: it is not scored unless asked, and the run says how many it left out."""
    frame = pd.read_csv(ladder)
    frame["distorted_path"] = str(ladder.parent) + "/" + frame["distorted_path"]
    frame["nsfw_detected"] = [i < 2 for i in range(len(frame))]
    frame.to_csv(tmp_path / "m.csv", index=False)  # reference paths are absolute already
    args = [str(tmp_path / "m.csv"), "--metric", "psnr", "--quiet", "--device", "cpu"]
    assert compare_main([*args, "--out", str(tmp_path / "skip")]) == 0
    assert "skipped 2 image(s) blanked by the safety checker" in capsys.readouterr().err
    scored = pd.read_csv(tmp_path / "skip" / "scores.csv")
    assert len(scored) == len(frame) - 2
    assert not set(frame["id"][:2]) & set(scored["id"])
    assert compare_main([*args, "--out", str(tmp_path / "all"), "--include-nsfw"]) == 0
    assert "safety checker" not in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "all" / "scores.csv")) == len(frame)


def test_clip_based_pyiqa_metrics_can_be_imported():
    """CLIP-IQA and LIQE (two of the paper's perception metrics) import OpenAI's `clip`, which
    needs `pkg_resources`: without `setuptools<81` they fail before any weights are read."""
    import importlib

    importlib.import_module("pyiqa.archs.clip_imports")


# --- comparable curves only (issue 21, item 3) ---------------------------------------------------


def _absolute(ladder) -> pd.DataFrame:
    frame = pd.read_csv(ladder)
    frame["distorted_path"] = str(ladder.parent) + "/" + frame["distorted_path"]
    return frame


def test_bd_is_over_the_references_both_curves_share_or_refused(tmp_path, ladder, capsys):
    """HEVC as a 'CMC method' on two of the three references: the deltas against the full
    ladder are over those two (counted, with a note) — the same as against a ladder of only
    those two; on pictures the ladder never saw (same names, other content), refused."""
    frame = _absolute(ladder)
    hevc = frame[frame["model"] == "HEVC"]
    two = sorted(set(hevc["reference"]))[:2]
    half = hevc[hevc["reference"].isin(two)].assign(model="Half", mode="Full", bpp=lambda f: f["bpp"] / 2)  # fmt: skip
    half.to_csv(tmp_path / "half.csv", index=False)
    frame[frame["reference"].isin(two)].to_csv(tmp_path / "ladder2.csv", index=False)
    args = ["--metric", "psnr", "--quiet", "--device", "cpu"]
    assert compare_main([str(ladder), str(tmp_path / "half.csv"), "--out", str(tmp_path / "a"), *args]) == 0  # fmt: skip
    assert compare_main([str(tmp_path / "ladder2.csv"), str(tmp_path / "half.csv"), "--out", str(tmp_path / "b"), *args]) == 0  # fmt: skip
    full, only_two = (pd.read_csv(tmp_path / f / "bd.csv", keep_default_na=False).set_index("anchor") for f in "ab")  # fmt: skip
    assert (full["references"] == 2).all() and (only_two["references"] == 2).all()
    assert full.loc["HEVC", "note"] == "over the 2 reference(s) both curves have at every point (Half: 2, HEVC: 3)"  # fmt: skip
    assert only_two.loc["HEVC", "note"] == ""
    assert float(full.loc["HEVC", "bd_rate_percent"]) == pytest.approx(-50, abs=1e-6)
    for column in ("bd_rate_percent", "bd_quality"):
        assert float(full.loc["AV1", column]) == pytest.approx(float(only_two.loc["AV1", column]))
    # the same names, other pictures (mirrored): nothing in common with the ladder
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(set(half["reference_path"])):
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other / Path(path).name)
    half.assign(reference_path=[str(other / Path(p).name) for p in half["reference_path"]]).to_csv(
        tmp_path / "elsewhere.csv", index=False
    )
    err = _error(capsys, [str(ladder), str(tmp_path / "elsewhere.csv"), "--out", str(tmp_path / "c"), "--metric", "psnr"])  # fmt: skip
    assert "CMC curve 'Half' and codec curve " in err and "share no reference image" in err
    # the same pictures in another folder are the same references (compared by content)
    copied = tmp_path / "copied"
    shutil.copytree(Path(half["reference_path"].iloc[0]).parent, copied)
    half.assign(reference_path=[str(copied / Path(p).name) for p in half["reference_path"]]).to_csv(
        tmp_path / "copied.csv", index=False
    )
    assert compare_main([str(ladder), str(tmp_path / "copied.csv"), "--out", str(tmp_path / "d"), *args]) == 0  # fmt: skip
    moved = pd.read_csv(tmp_path / "d" / "bd.csv").set_index("anchor")
    assert moved.loc["HEVC", "bd_rate_percent"] == pytest.approx(-50, abs=1e-6)


def test_two_ladders_are_two_curves_never_one(tmp_path, ladder, capsys):
    """A ladder split in two manifests (QPs 24/32 and 40/48) is not silently one curve; labelled,
    each is its own curve with its own points."""
    frame = _absolute(ladder)
    low = (frame["model"].eq("HEVC") & frame["codec_qp"].isin([24, 32])) | (
        frame["model"].eq("AV1") & frame["codec_qp"].isin([30, 40])
    )
    frame[low].to_csv(tmp_path / "low.csv", index=False)
    frame[~low].to_csv(tmp_path / "high.csv", index=False)
    out = ["--out", str(tmp_path / "o"), "--metric", "psnr"]
    err = _error(capsys, [str(tmp_path / "low.csv"), str(tmp_path / "high.csv"), *out])
    assert "curve 'AV1' comes from more than one manifest" in err and "not merged" in err
    args = ["--label", f"a={tmp_path / 'low.csv'}", "--label", f"b={tmp_path / 'high.csv'}", *out,
            "--quiet", "--device", "cpu"]  # fmt: skip
    assert compare_main(args) == 0
    points = pd.read_csv(tmp_path / "o" / "points.csv")
    assert set(points["curve"]) == {"a AV1", "a HEVC", "b AV1", "b HEVC"}
    assert (points.groupby("curve")["point"].nunique() == 2).all()


def test_codec_curves_keep_their_rates_under_point_by_caption_words(tmp_path, ladder):
    """`--point-by caption_words` groups the CMC points by caption length; a codec ladder has
    none, and still one point per QP (not one point 'all' averaged over its four rates)."""
    out = tmp_path / "o"
    args = [str(ladder), "--point-by", "caption_words", "--out", str(out), "--metric", "psnr",
            "--quiet", "--device", "cpu"]  # fmt: skip
    assert compare_main(args) == 0
    points = pd.read_csv(out / "points.csv")
    hevc = points[points["curve"] == "HEVC"].set_index("point")
    assert sorted(hevc.index) == ["QP 24", "QP 32", "QP 40", "QP 48"]
    manifest = pd.read_csv(ladder)
    per_qp = manifest[manifest["model"] == "HEVC"].groupby("codec_qp")["bpp"].mean()
    for qp, bpp in per_qp.items():
        assert hevc.loc[f"QP {qp}", "bpp"] == pytest.approx(bpp)


def test_a_point_holding_one_reference_twice_is_refused(tmp_path, ladder, capsys):
    """Rows of two strengths grouped into one point would average two settings: refused, naming
    the setting that differs; grouped by it, two points."""
    frame = _absolute(ladder)
    hevc = frame[(frame["model"] == "HEVC") & (frame["codec_qp"] == 32)]
    swept = pd.concat([hevc.assign(model="X", mode="Pixel", strength=s, id=hevc["id"] + f"_{s}")
                       for s in (0.4, 0.8)])  # fmt: skip
    swept.to_csv(tmp_path / "swept.csv", index=False)
    out = ["--out", str(tmp_path / "o"), "--metric", "psnr"]
    err = _error(capsys, [str(tmp_path / "swept.csv"), *out, "--point-by", "mode"])
    assert "curve 'X' point 'Pixel' holds reference" in err and "differing in strength" in err
    assert compare_main([str(tmp_path / "swept.csv"), *out, "--point-by", "mode,strength",
                         "--quiet", "--device", "cpu"]) == 0  # fmt: skip
    assert set(pd.read_csv(tmp_path / "o" / "points.csv")["point"]) == {"Pixel, strength 0.4", "Pixel, strength 0.8"}  # fmt: skip


# --- compare's smaller items (issue 21, item 6) -------------------------------------------------


def test_an_image_of_another_size_than_its_reference_is_an_error(tmp_path, ladder, capsys):
    frame = _absolute(ladder).iloc[[0]]
    small = tmp_path / "small.png"
    Image.open(frame["distorted_path"].iloc[0]).resize((64, 48)).save(small)
    frame.assign(distorted_path=str(small)).to_csv(tmp_path / "m.csv", index=False)
    err = _error(capsys, [str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--metric", "psnr"])  # fmt: skip
    assert f"{small} is 64×48 but its reference" in err and "is 128×96" in err


def test_scores_are_cached_and_reused_by_compare_and_validate(tmp_path, ladder, monkeypatch):
    """pyiqa metrics score through train_iqa's step and its cache: a second compare run (and
    table-a1's scoring) and validate on the same images read the first run's scores, computing
    none; --no-cache computes them again, and a new image is the only one scored."""
    from train_iqa.scoring import Scorer
    from train_iqa.validate import main as validate_main

    cache = tmp_path / "scores.sqlite"
    base = [str(ladder), "--metric", "psnr", "--metric", "ssim", "--metric", "gmsd",
            "--cache", str(cache), "--quiet", "--device", "cpu"]  # fmt: skip
    assert compare_main([*base, "--out", str(tmp_path / "first")]) == 0
    first = (tmp_path / "first" / "scores.csv").read_text()
    scored = []
    real_call = Scorer.__call__

    def counted(self, distorted, reference):
        scored.append(len(distorted))
        return real_call(self, distorted, reference)

    monkeypatch.setattr(Scorer, "__call__", counted)
    assert compare_main([*base, "--out", str(tmp_path / "second")]) == 0
    assert scored == [] and (tmp_path / "second" / "scores.csv").read_text() == first
    frame = _absolute(ladder)
    rng = np.random.default_rng(0)
    mos = frame[["id", "distorted_path", "reference_path"]].rename(columns={"id": "stimulus"})
    mos.assign(consistency_mos=rng.uniform(1, 5, len(mos))).to_csv(tmp_path / "mos.csv", index=False)  # fmt: skip
    assert validate_main(["--mos", str(tmp_path / "mos.csv"), "--metric", "psnr", "--metric",
                          "ssim", "--cache", str(cache), "--rounds", "10"]) == 0  # fmt: skip
    assert scored == []  # validate found compare's scores under the same keys
    assert compare_main([*base, "--out", str(tmp_path / "again"), "--no-cache"]) == 0
    assert sum(scored) == 3 * len(frame)
    assert pd.read_csv(tmp_path / "again" / "scores.csv")[["psnr", "ssim", "gmsd"]].to_numpy() == pytest.approx(pd.read_csv(tmp_path / "first" / "scores.csv")[["psnr", "ssim", "gmsd"]].to_numpy())  # fmt: skip
    scored.clear()
    new = tmp_path / "new.png"
    Image.open(frame["distorted_path"].iloc[0]).rotate(180).save(new)
    frame.iloc[[0, 1]].assign(distorted_path=[str(new), frame["distorted_path"].iloc[1]]).to_csv(tmp_path / "m.csv", index=False)  # fmt: skip
    assert compare_main([str(tmp_path / "m.csv"), *base[1:], "--out", str(tmp_path / "o")]) == 0
    assert scored == [1, 1, 1]  # only the new image, once per metric


@pytest.mark.parametrize("low, high", [(0.01, 0.3), (0.02, 0.6), (0.004, 0.02), (0.003, 3.0), (0.1, 0.14)])  # fmt: skip
def test_rate_axis_labels_never_overprint(low, high):
    """At any span — about 1.5 decades (0.01–0.3) overprinted matplotlib's minor labels — the
    rate axis has two to five labels, none touching another, on a panel of the figure's size."""
    import matplotlib.pyplot as plt

    from compare.report import rate_axis

    fig, ax = plt.subplots(figsize=(3.6, 3.1), dpi=120)
    ax.plot(np.geomspace(low, high, 4), [1, 2, 3, 4])
    rate_axis(ax)
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    x0, x1 = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels(which="both") if t.get_text() and x0 <= t.get_position()[0] <= x1]  # fmt: skip
    assert 2 <= len(labels) <= 5, [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))
    plt.close(fig)


def test_offline_the_default_metrics_name_what_works(tmp_path, ladder, capsys, monkeypatch):
    """Without downloaded weights the paper's metrics cannot be built: the message names the
    metrics that work offline and compare's own options (there is no --weights here)."""
    import train_iqa.scoring

    def offline(name, pretrained, weights, device, as_loss, weights_option):
        if name in ("psnr", "ssim", "gmsd") or not pretrained:
            return real(name, pretrained, weights, device, as_loss)
        try:
            raise OSError("cannot reach huggingface.co")
        except OSError as error:
            raise MetricError(f"{name}: cannot build the metric (--weights ...)") from error

    real = train_iqa.scoring.create
    monkeypatch.setattr(train_iqa.scoring, "create", offline)
    err = _error(capsys, [str(ladder), "--out", str(tmp_path / "o")])
    assert "the default metrics (the paper's eight) need their weights: topiq_fr" in err
    assert "cannot reach huggingface.co" in err and "--weights" not in err
    assert "--metric psnr, --metric ssim, --metric gmsd work offline" in err
    assert "--metric topiq_fr:FILE" in err and "--no-pretrained" in err
    for works in ("psnr", "ssim", "gmsd"):  # what the message names does work offline
        assert compare_main([str(ladder), "--metric", works, "--out", str(tmp_path / works),
                             "--quiet", "--device", "cpu"]) == 0  # fmt: skip


def test_help_imports_no_heavy_library(tmp_path):
    """`python -m compare --help` (and each command's) reads argparse and compare.defaults only;
    a manifest refused up front costs no torch either: torch, pyiqa and matplotlib load when
    there is something to score."""
    heavy = "print(sorted(m for m in ('torch', 'pyiqa', 'pandas', 'matplotlib', 'numpy') if m in sys.modules))"  # fmt: skip
    helps = ("import sys; from compare.__main__ import build_parser, command_parser; "
             "build_parser().format_help(); command_parser('table-a1').format_help(); "
             "command_parser('figure-a7').format_help(); " + heavy)  # fmt: skip
    refused = (f"import sys; from compare.__main__ import main; "
               f"assert main([{str(tmp_path / 'none.csv')!r}, '--metric', 'psnr']) == 2; " + heavy)  # fmt: skip
    for code, expected in ((helps, "[]"), (refused, "['numpy', 'pandas']")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parents[1])  # fmt: skip
        assert done.stdout.strip() == expected


# --- the paper's Table A1 and Figure A7 (issue 21, item 5) ---------------------------------------


@pytest.fixture(scope="module")
def swept(refs, tmp_path_factory):
    """A tiny SD-1.5 run swept over AV1 hint QPs 51/45 and strengths 0.5/0.8, and the AV1 ladder
    at those QPs on the same references: (run manifest, ladder manifest)."""
    folder = tmp_path_factory.mktemp("swept")
    save_sd(folder / "sd")
    config = folder / "models.toml"
    config.write_text(f'[SD15]\nweights = "{folder / "sd"}"\n')
    captions = folder / "captions.csv"
    pd.DataFrame({"name": list(DEMO_NAMES), "text": ["a cup", "a rocket", "a cat"]}).to_csv(captions)  # fmt: skip
    plan = folder / "plan.csv"
    assert generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset",
                          "benchmark", "--models", "SD15", "--sweep-qp", "51,45",
                          "--sweep-strength", "0.5,0.8"]) == 0  # fmt: skip
    rows = pd.read_csv(plan, dtype=str, keep_default_na=False)
    rows[rows["mode"].isin(["Pixel", "Full"])].to_csv(plan, index=False)  # what the tests read
    assert generate_main(["run", str(plan), "--out", str(folder / "run"), "--captions", str(captions),
                          "--models-config", str(config), "--size", "64", "--steps", "2",
                          "--codec", "av1", "--device", "cpu"]) == 0  # fmt: skip
    assert generate_main(["ladder", "--references", str(refs), "--out", str(folder / "ladder"),
                          "--codecs", "av1", "--qps", "51,45", "--workers", "1"]) == 0  # fmt: skip
    return folder / "run" / "manifest.csv", folder / "ladder" / "manifest.csv"


@pytest.mark.parametrize(
    "original, cmc, lower_better, paper",
    [(0.825, 0.890, False, 7.88), (0.181, 0.670, False, 270), (0.523, 0.435, True, 20.2),
     (1.221, 3.530, False, 189), (0.677, 0.571, False, -15.6), (300.8, 255.8, True, 17.5),
     (2.546, 2.964, False, 16.4), (1.217, 2.553, False, 109), (0.302, 0.327, True, -7.65),
     (0.938, 0.939, False, 0.11), (286.7, 255.2, True, 12.3), (3.550, 3.431, False, -3.35)],
)  # fmt: skip
def test_improve_is_the_papers_direction_aware_ratio(original, cmc, lower_better, paper):
    """The paper's Table A1 rows (Extreme, QP51, QP45), Original and CMC as printed, give its
    Improve column within 1% (its inputs are printed to 3–4 digits and it truncates: FID
    17.59% is printed 17.5%); the other conventions miss it (LPIPS (0.523 − 0.435) / 0.523 is
    16.8%, not 20.2%)."""
    from compare.table_a1 import improve

    assert improve(original, cmc, lower_better) == pytest.approx(paper, rel=1e-2, abs=0.01)
    assert np.isnan(improve(0.0, cmc, lower_better)) and np.isnan(improve(-1.0, cmc, lower_better))
    assert np.isnan(improve(original, np.nan, lower_better))


def test_table_a1_against_hand_computed_improve(tmp_path, swept, capsys):
    """`compare table-a1`: per hint QP and strength, the Original is the ladder's AV1 image (the
    run's hint: same bits), and Original / CMC / Improve of PSNR (↑) and GMSD (↓) are what this
    test computes from the image files with its own PSNR and pyiqa's GMSD."""
    import pyiqa

    run, ladder = swept
    out = tmp_path / "a1"
    args = ["table-a1", str(run), "--ladder", str(ladder), "--metric", "psnr", "--metric", "gmsd",
            "--out", str(out), "--quiet", "--device", "cpu"]  # fmt: skip
    assert compare_main(args) == 0
    assert "| SD15 | QP 51, strength 0.5 | Original |" in capsys.readouterr().out
    table = pd.read_csv(out / "table_a1.csv").set_index(["hint", "image"])
    manifest, codec = pd.read_csv(run), pd.read_csv(ladder)
    gmsd = pyiqa.create_metric("gmsd", device="cpu")
    full = manifest[manifest["mode"] == "Full"]
    assert len(table) == 3 * full.groupby(["codec_qp", "strength"]).ngroups == 12
    for (qp, strength), group in full.groupby(["codec_qp", "strength"]):
        hint = f"QP {qp:.0f}, strength {strength:g}"
        hints = codec[(codec["codec_qp"] == qp) & codec["reference"].isin(group["reference"])]
        assert (hints.sort_values("reference")["codec_bits"].to_numpy()
                == group.sort_values("reference")["codec_bits"].to_numpy()).all()  # fmt: skip
        pairs = {"Original": zip(ladder.parent / hints["distorted_path"], hints["reference_path"], strict=True),
                 "CMC": zip(run.parent / group["distorted_path"], group["reference_path"], strict=True)}  # fmt: skip
        expected = {}
        for image, files in pairs.items():
            files = list(files)
            expected[image] = (np.mean([psnr(Image.open(d), Image.open(r)) for d, r in files]),
                               np.mean([float(gmsd(str(d), r)) for d, r in files]))  # fmt: skip
            assert table.loc[(hint, image), "psnr"] == pytest.approx(expected[image][0], abs=1e-3)
            assert table.loc[(hint, image), "gmsd"] == pytest.approx(expected[image][1], rel=1e-4)
            assert table.loc[(hint, image), "references"] == len(DEMO_NAMES)
        (p_orig, g_orig), (p_cmc, g_cmc) = expected["Original"], expected["CMC"]
        assert table.loc[(hint, "Improve"), "psnr"] == pytest.approx((p_cmc / p_orig - 1) * 100, abs=1e-2)  # fmt: skip
        assert table.loc[(hint, "Improve"), "gmsd"] == pytest.approx((g_orig / g_cmc - 1) * 100, rel=1e-3)  # fmt: skip
        assert table.loc[(hint, "Original"), "bpp"] == pytest.approx(hints["bpp"].mean())
        assert table.loc[(hint, "CMC"), "bpp"] == pytest.approx(group["bpp"].mean())
    markdown = (out / "table_a1.md").read_text()
    assert "| model | hint | image | references | bpp | psnr ↑ | gmsd ↓ |" in markdown


def test_table_a1_refuses_an_original_that_is_not_the_runs_hint(tmp_path, swept, capsys):
    run, ladder = swept
    codec = pd.read_csv(ladder)
    codec["distorted_path"] = str(ladder.parent) + "/" + codec["distorted_path"]
    args = ["table-a1", str(run), "--metric", "psnr", "--out", str(tmp_path / "o")]
    codec[codec["codec_qp"] == 51].to_csv(tmp_path / "qp51.csv", index=False)
    err = _error(capsys, [*args, "--ladder", str(tmp_path / "qp51.csv")])
    assert "no av1 image at QP 45" in err
    codec.assign(codec_bits=codec["codec_bits"] + 8).to_csv(tmp_path / "other.csv", index=False)
    assert "not the same encode" in _error(capsys, [*args, "--ladder", str(tmp_path / "other.csv")])


def test_figure_a7_pixel_mode_over_strength(tmp_path, swept, cmc_runs, capsys):
    """`compare figure-a7`: Pixel mode, one point per strength, each the mean PSNR of its
    images (recomputed here); a run with one strength per mode is refused."""
    run, _ = swept
    out = tmp_path / "a7"
    assert compare_main(["figure-a7", str(run), "--metric", "psnr", "--out", str(out), "--quiet",
                         "--device", "cpu"]) == 0  # fmt: skip
    sweep = pd.read_csv(out / "sweep.csv").set_index("strength")
    manifest = pd.read_csv(run)
    pixel = manifest[manifest["mode"] == "Pixel"]
    assert sorted(sweep.index) == [0.5, 0.8] and set(sweep["curve"]) == {"SD15"}
    for strength, group in pixel.groupby("strength"):
        values = [psnr(Image.open(run.parent / d), Image.open(r))
                  for d, r in zip(group["distorted_path"], group["reference_path"], strict=True)]  # fmt: skip
        assert sweep.loc[strength, "mean"] == pytest.approx(np.mean(values), abs=1e-3)
        assert sweep.loc[strength, "n"] == len(DEMO_NAMES)
    with Image.open(out / "figure.png") as figure:
        assert figure.size[0] > 300
    # Full mode holds two QPs per strength: refused unless they are told apart
    args = [
        "figure-a7",
        str(run),
        "--metric",
        "psnr",
        "--mode",
        "Full",
        "--out",
        str(tmp_path / "f"),
    ]
    assert "differing in codec_qp" in _error(capsys, args)
    assert compare_main([*args, "--curve-by", "model,codec_qp", "--quiet", "--device", "cpu"]) == 0
    assert set(pd.read_csv(tmp_path / "f" / "sweep.csv")["curve"]) == {"SD15 51", "SD15 45"}
    err = _error(capsys, ["figure-a7", str(cmc_runs[0]), "--metric", "psnr", "--out", str(tmp_path / "g")])  # fmt: skip
    assert "Pixel mode has one strength (0.8)" in err


def test_plan_sweeps_strength_on_every_mode_but_text(tmp_path, refs, capsys):
    """`generate plan --sweep-strength` (Figures A5–A7): each Pixel/Image/Full row once per
    strength, the rest of the row (seed included) unchanged; Text keeps its strength 1."""
    plan = tmp_path / "plan.csv"
    args = ["plan", "--references", str(refs), "--out", str(plan), "--preset", "benchmark",
            "--models", "SD15"]  # fmt: skip
    assert generate_main(args) == 0
    base = pd.read_csv(plan).set_index("id")
    assert generate_main([*args, "--sweep-strength", "0.4,0.99"]) == 0
    rows = pd.read_csv(plan)
    text = rows[rows["mode"] == "Text"]
    assert (text["strength"] == 1.0).all() and len(text) == len(DEMO_NAMES)
    for mode in ("Pixel", "Image", "Full"):
        swept = rows[rows["mode"] == mode]
        assert sorted(swept["strength"]) == sorted([0.4, 0.99] * len(DEMO_NAMES))
        for row in swept.itertuples():
            origin = row.id.rsplit("__s", 1)[0]
            assert row.id == f"{origin}__s{row.strength:g}" and row.seed == base.loc[origin, "seed"]
    for bad in ("0,0.5", "0.5,1.2", "0.5,0.5", "nan"):
        assert generate_main([*args, "--sweep-strength", bad]) == 2
        assert "--sweep-strength" in capsys.readouterr().err
