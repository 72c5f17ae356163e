"""Issue 13: ``generate`` as the paper made its set, and nothing it cannot honour done silently."""

from __future__ import annotations

import inspect
import json
import shutil
import sys

import diffusers
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from generate import codec, hints, pixel
from generate.__main__ import main as generate_main
from generate.captions import Captioner
from generate.decode import QUALITY_PROMPT
from generate.registry import FAMILIES, REGISTRY
from generate.run import Hints, RunSettings
from tests.test_generate import DEMO, references, run_args, study_inputs, tiny  # noqa: F401


def one_line_error(capsys, argv, expected: str) -> None:
    assert generate_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


# --- Bitrates the paper names -------------------------------------------------------------


def test_fixed_qp_counts_the_raw_bitstream_and_refuses_qps_the_encoder_lacks():
    image = np.asarray(Image.open(DEMO / "astronaut.png").convert("RGB"))
    coded = codec.encode_at_qp(image, 40, "hevc")
    assert coded.bits == len(codec._encode_pyav(image, "hevc", 40)) * 8
    assert coded.settings["quality"] == 40 and coded.settings["scale"] == 1.0
    assert codec.encode_at_qp(image, 45, "hevc").bits < coded.bits  # coarser, fewer bits
    with pytest.raises(codec.CodecError, match="hevc QP must be 0–51, got 52"):
        codec.encode_at_qp(image, 52, "hevc")
    with pytest.raises(codec.CodecError, match="avc QP must be 0–51, got 60"):
        codec.encode_at_qp(image, 60, "avc")  # x264 would code it at 51


def test_a_missed_bpp_target_is_reported_per_image_and_summarised(tmp_path, capsys):
    small = tmp_path / "NSI_small.png"
    Image.open(DEMO / "coffee.png").convert("RGB").resize((128, 96)).save(small)
    store = Hints(tmp_path / "hints", RunSettings(target_bpp=0.024), None)
    (tmp_path / "hints").mkdir()
    store.prepare_codec([(small, None)], workers=1)
    err = capsys.readouterr().err
    assert "NSI_small.png: codec hint at" in err and "from the 0.024 bpp target" in err
    assert "no setting fits" in err
    _, bits, *_ = store.codec(small, None)
    achieved = bits / (128 * 96)
    assert achieved > 0.024 * 1.1  # a 128 × 96 image cannot be coded that small
    summary = store.rate_summary()
    assert f"{achieved:.4f}" in summary and "1 off by more than 10%" in summary
    assert hints.rate_warning("x", 0.0250, 0.024) is None  # within 10 %: quiet


def test_pixel_default_lands_near_the_papers_ratio_and_edges_do_not_shift():
    assert pixel.DEFAULT_BITS == 3
    image = np.zeros((512, 768, 3), np.uint8)
    hint = pixel.encode(image)
    assert hint.bits == 8 * 12 * 9  # 9 bits a 64 × 64 block
    caption = 1016  # the median GPT-4o caption of the CMC-Bench set, in bits
    assert 24 * 768 * 512 / (caption + hint.bits) == pytest.approx(5020, abs=1)
    # One bright block in a 200 × 130 image (partial last row and column of blocks): the start
    # image is brightest over that block, not pulled toward the edge.
    height, width = 130, 200
    image = np.zeros((height, width, 3), np.uint8)
    image[64:128, 128:192] = 255
    start = pixel.start_image(pixel.encode(image, 64, 8), (width, height))
    assert start.shape == (height, width, 3)
    column = start[96, :, 0].astype(int)
    row = start[:, 160, 0].astype(int)
    assert abs(int(np.argmax(column)) - 160) <= 2 and abs(int(np.argmax(row)) - 96) <= 2
    np.testing.assert_array_equal(start[0, 0], [0, 0, 0])


def test_every_family_passes_its_pipelines_default_guidance_as_the_public_script_does():
    for _family, (image_class, text_class, scale) in FAMILIES.items():
        for name in (image_class, text_class):
            if name is not None:
                call = getattr(diffusers, name).__call__
                assert inspect.signature(call).parameters["guidance_scale"].default == scale, name
    assert REGISTRY["PG20"].guidance_scale == REGISTRY["PG25"].guidance_scale == 5.0


# --- Nothing silent: the hint cache ----------------------------------------------------------


def test_codec_hints_are_keyed_by_content_and_settings(tmp_path):
    first, second = tmp_path / "one" / "NSI_x.png", tmp_path / "two" / "NSI_x.png"
    for path, source in ((first, "coffee.png"), (second, "rocket.png")):
        path.parent.mkdir()
        Image.open(DEMO / source).convert("RGB").resize((128, 96)).save(path)
    (tmp_path / "hints").mkdir()
    store = Hints(tmp_path / "hints", RunSettings(target_bpp=0.5), None)
    a, b = store.codec(first, None)[0], store.codec(second, None)[0]
    assert not np.array_equal(a, b)  # same stem, other folder: its own hint
    assert not np.array_equal(store.codec(first, 30)[0], a)  # another setting: another hint
    Image.open(DEMO / "hubble.png").convert("RGB").resize((128, 96)).save(first)  # edited
    assert not np.array_equal(store.codec(first, None)[0], a)
    assert len(list((tmp_path / "hints").glob("*.json"))) == 4


# --- Nothing silent: plans ------------------------------------------------------------------


def test_plans_that_would_differ_quietly_are_one_line_errors(tmp_path, capsys):
    names = [f"NSI_{i}.png" for i in range(4)] + [f"SCI_{i}.png" for i in range(3)]
    folder = references(tmp_path / "refs", [*names, *[f"AIGI_{i}.png" for i in range(3)]], (8, 8))
    args = ["plan", "--references", str(folder), "--out", str(tmp_path / "p.csv")]
    one_line_error(capsys, [*args, "--count", "11"], "--count 11 but the folder has only 10")
    one_line_error(capsys, [*args, "--count", "0"], "--count must be at least 1")
    one_line_error(capsys, [*args, "--count", "-3"], "--count must be at least 1")
    one_line_error(capsys, [*args, "--seed", str(2**64)], "--seed 18446744073709551616 is outside")
    one_line_error(capsys, [*args, "--seed", "-1"], "--seed -1 is outside")
    assert generate_main([*args, "--count", "10"]) == 0
    references(folder, ["holiday.png"], (8, 8))
    one_line_error(capsys, [*args, "--count", "10"], "holiday.png (and 0 more) is not named")
    assert generate_main([*args, "--count", "10", "--no-content-mix", "--models", "SD15"]) == 0
    assert pd.read_csv(tmp_path / "p.csv")["reference"].nunique() == 10
    references(folder, ["NSI_0.jpg"], (8, 8))
    one_line_error(capsys, args, "NSI_0.jpg and NSI_0.png share the name 'NSI_0'")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(seed=str(2**70)), "is larger than 9223372036854775807"),
        (lambda f: f.assign(content_type="AIGI"), "content_type 'AIGI' disagrees with the file"),
        (lambda f: f.assign(reference="other"), "reference 'other' is not its file's name"),
        (lambda f: f.assign(codec_qp="abc"), "codec_qp 'abc' is not one of"),
        (lambda f: f.assign(caption_words="7"), "caption_words '7' is not one of"),
        (lambda f: f.assign(mode="Text", codec_qp="40"), "codec_qp is set but mode Text"),
    ],
)
def test_edited_plans_that_disagree_with_their_files_are_refused(tmp_path, capsys, edit, message):
    folder = references(tmp_path / "refs", ["NSI_a.png"], (8, 8))
    plan = tmp_path / "plan.csv"
    generate_main(["plan", "--references", str(folder), "--out", str(plan), "--preset",
                   "benchmark", "--models", "SD15"])  # fmt: skip
    edit(pd.read_csv(plan, dtype=str, keep_default_na=False)).to_csv(plan, index=False)
    one_line_error(capsys, ["run", str(plan), "--out", str(tmp_path / "out")], message)


# --- Nothing silent: NSFW -------------------------------------------------------------------


def test_images_blanked_by_the_safety_checker_are_skipped_on_import_with_a_count(tmp_path, capsys):
    from annotate.__main__ import main as annotate_main

    rows = [
        {"id": f"i{n}", "distorted_path": str(DEMO / "coffee.png"),
         "reference_path": str(DEMO / "rocket.png"), "nsfw_detected": n == 1}
        for n in range(3)
    ]  # fmt: skip
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    instance = ["--instance", str(tmp_path / "instance")]
    assert annotate_main([*instance, "import", str(manifest)]) == 0
    assert "imported 2 stimuli (0 already present, 1 skipped as flagged NSFW" in (
        capsys.readouterr().out
    )
    assert annotate_main([*instance, "import", str(manifest), "--include-nsfw"]) == 0
    assert "imported 1 stimuli (2 already present)" in capsys.readouterr().out


# --- Runs: restoration commands, fixed QP, sweeps, the Image prompt --------------------------


@pytest.fixture()
def restore_config(tmp_path):
    """DiffBIR as an external command that copies its input; one TOML whose command takes the
    prompt and guidance, one whose command takes neither."""
    script = tmp_path / "restore.py"
    script.write_text("import shutil, sys\nshutil.copy(sys.argv[1], sys.argv[2] + '/r.png')\n")
    plain = tmp_path / "plain.toml"
    plain.write_text(f'[DiffBIR]\ncommand = "{sys.executable} {script} {{input}} {{output}}"\n')
    prompted = tmp_path / "prompted.toml"
    prompted.write_text(
        f'[DiffBIR]\nguidance = 4.0\ncommand = "{sys.executable} {script} {{input}} {{output}} '
        '{prompt} {guidance}"\n'
    )
    return plain, prompted


def diffbir_plan(tmp_path, study_inputs, *sweeps):  # noqa: F811
    refs = tmp_path / "refs"
    refs.mkdir()
    for source in ("NSI_a.png", "SCI_b.png"):
        shutil.copy(study_inputs[0].parent / "refs" / source, refs / source)
    plan = tmp_path / "plan.csv"
    assert generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset",
                          "benchmark", "--models", "DiffBIR", *sweeps]) == 0  # fmt: skip
    return plan


def test_restoration_commands_are_charged_the_caption_only_when_they_take_it(
    tmp_path,
    study_inputs,  # noqa: F811
    restore_config,
):
    plain, prompted = restore_config
    plan = diffbir_plan(tmp_path, study_inputs)
    for config, charged in ((plain, False), (prompted, True)):
        out = tmp_path / config.stem
        assert generate_main(run_args(plan, out, study_inputs[1], config)) == 0
        manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
        full = manifest[manifest["mode"] == "Full"]
        assert ((full["text_bits"] > 0) == charged).all()
        assert (full["bits"] == full["text_bits"] + full["codec_bits"]).all()
        assert set(manifest["guidance_scale"].astype(str)) == ({"4.0"} if charged else {""})


def test_fixed_qp_runs_record_the_qp_and_refuse_one_the_codec_lacks(
    tmp_path,
    study_inputs,  # noqa: F811
    restore_config,
    capsys,
):
    plan = diffbir_plan(tmp_path, study_inputs)
    out = tmp_path / "out"
    args = run_args(plan, out, study_inputs[1], restore_config[0], "--codec", "hevc")
    one_line_error(capsys, [*args, "--codec-qp", "52"], "hevc QP must be 0–51, got 52")
    one_line_error(capsys, [*args, "--target-bpp", "100"], "a target bpp must be a number > 0")
    assert generate_main([*args, "--codec-qp", "40"]) == 0
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert set(manifest["codec_qp"]) == {40} and set(manifest["codec_target_bpp"]) == {""}
    image = np.asarray(Image.open(manifest["reference_path"].iloc[0]).convert("RGB"))
    expected = codec.encode_at_qp(image, 40, "hevc").bits
    assert manifest["codec_bits"].iloc[0] == expected  # re-encoding gives the stored bits
    kept = out / manifest["codec_bitstream_path"].iloc[0]  # the hint's bitstream, kept
    assert kept.suffix == ".hevc" and 8 * kept.stat().st_size == expected
    assert "at a fixed QP" in capsys.readouterr().err
    meta = out / "meta" / f"{manifest['id'].iloc[0]}.json"  # as a run before issue 21 left it
    old = {k: v for k, v in json.loads(meta.read_text()).items() if k != "codec_bitstream_path"}
    meta.write_text(json.dumps(old))
    one_line_error(capsys, [*args, "--codec-qp", "40"], "finished before codec bits were counted")
    assert manifest["codec_bpp"].iloc[0] == pytest.approx(expected / (256 * 192))


def test_a_qp_sweep_gives_one_row_per_qp_each_with_its_own_bits(
    tmp_path,
    study_inputs,  # noqa: F811
    restore_config,
):
    plan = diffbir_plan(tmp_path, study_inputs, "--sweep-qp", "51,45")
    frame = pd.read_csv(plan)
    assert len(frame) == 2 * 2 * 2 and frame["id"].is_unique
    assert {i.rsplit("__", 1)[1] for i in frame["id"]} == {"qp51", "qp45"}
    out = tmp_path / "out"
    assert generate_main(run_args(plan, out, study_inputs[1], restore_config[0])) == 0
    manifest = pd.read_csv(out / "manifest.csv")
    bits = manifest.groupby(["reference", "codec_qp"])["codec_bits"].first().unstack()
    assert (bits[45] > bits[51]).all()  # a finer quantizer costs more, per reference


class WordCounter(Captioner):
    """A captioner that takes a length, as a VLM does: a caption of exactly that many words."""

    name = "words"
    words = 20

    def caption(self, reference, image_path, words=None):
        return " ".join(["word"] * (words or self.words))


def test_a_caption_length_sweep_records_each_length_and_its_bits(
    tmp_path,
    tiny,  # noqa: F811
    study_inputs,  # noqa: F811
    monkeypatch,
    capsys,
):
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(study_inputs[0].parent / "refs" / "NSI_a.png", refs / "NSI_a.png")
    plan = tmp_path / "plan.csv"
    generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset",
                   "benchmark", "--models", "SD15", "--sweep-caption-words", "5,50"])  # fmt: skip
    frame = pd.read_csv(plan)
    assert sorted(frame["id"].str.rsplit("__", n=1).str[1]) == sorted(
        ["Image", "w5", "w50", "w5", "w50", "w5", "w50"]
    )
    out = tmp_path / "out"
    one_line_error(capsys, run_args(plan, out, study_inputs[1], tiny), "sweeps the caption length")
    monkeypatch.setattr("generate.__main__.make_captioner", lambda source, words: WordCounter())
    assert (
        generate_main(run_args(plan, out, study_inputs[1], tiny, "--image-prompt", "script")) == 0
    )
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    captioned = manifest[manifest["mode"] != "Image"]
    for row in captioned.itertuples():
        words = int(row.caption_words)  # the Image row's empty cell makes the column text
        assert words in (5, 50) and len(row.caption.split()) == words
        assert row.text_bits == len(row.caption.encode()) * 8
    assert manifest.loc[manifest["mode"] == "Image", "prompt"].iloc[0] == QUALITY_PROMPT
    meta = json.loads((out / "meta" / f"{captioned['id'].iloc[0]}.json").read_text())
    assert {"codec_qp", "caption_words", "codec_bpp", "codec_target_bpp"} <= set(meta)
