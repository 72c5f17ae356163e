"""``generate``: plans, every mode end to end on tiny random-weight pipelines, bits, resume, shards."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from annotate.importer import import_manifest
from generate import codec, pixel
from generate.__main__ import main as generate_main
from generate.decode import (
    Decoder,
    DecoderError,
    Request,
    instruct_image_guidance,
    steps_for,
    working_size,
)
from generate.plan import choose_references, make_plan
from generate.registry import REGISTRY, DecoderSpec, load_registry
from generate.run import Hints, shard
from studydb.manifest import read_manifest
from tests.tiny_models import save_motion_adapter, save_sd, save_sdxl

DEMO = Path(__file__).parents[1] / "annotate" / "demo_data"


def references(folder, names, size=(96, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        x = np.linspace(0, 255, size[0])[None, :, None] * np.ones((size[1], 1, 3))
        image = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / name)
    return folder


def test_study_plan_follows_the_paper(tmp_path):
    names = [f"NSI_pgc_{i:03d}.png" for i in range(40)] + [
        f"NSI_ugc_{i:03d}.png" for i in range(40)
    ]
    names += [f"SCI_game_{i:03d}.png" for i in range(60)] + [
        f"AIGI_MJ_{i:03d}.png" for i in range(60)
    ]
    folder = references(tmp_path / "refs", names, size=(8, 8))
    out = tmp_path / "plan.csv"
    assert (
        generate_main(["plan", "--references", str(folder), "--out", str(out), "--seed", "3"]) == 0
    )
    plan = pd.read_csv(out)
    assert len(plan) == 4000 and plan["reference"].nunique() == 100
    per_type = plan.drop_duplicates("reference")["content_type"].value_counts().to_dict()
    assert per_type == {"NSI": 40, "SCI": 30, "AIGI": 30}
    configs = plan.groupby(["model", "mode"]).size()
    assert len(configs) == 40 and (configs == 100).all()
    assert set(plan.loc[plan["model"] == "DiffBIR", "mode"]) == {"Full", "Image"}
    assert (plan.loc[plan["mode"] == "Text", "strength"] == 1.0).all()
    drawn = plan.loc[plan["mode"] != "Text", "strength"]
    assert drawn.between(0.2, 0.9).all()
    assert stats.kstest(drawn, stats.uniform(loc=0.2, scale=0.7).cdf).pvalue > 0.01
    again = tmp_path / "again.csv"
    generate_main(["plan", "--references", str(folder), "--out", str(again), "--seed", "3"])
    assert again.read_text() == out.read_text()  # reproducible


def test_benchmark_plan_uses_every_reference_and_fixed_strengths(tmp_path):
    folder = references(tmp_path / "refs", [f"r{i}.png" for i in range(7)], size=(8, 8))
    out = tmp_path / "bench.csv"
    args = ["plan", "--references", str(folder), "--out", str(out), "--preset", "benchmark"]
    assert generate_main([*args, "--models", "RealVis,DiffBIR"]) == 0
    plan = pd.read_csv(out)
    assert plan["reference"].nunique() == 7 and len(plan) == 7 * (4 + 2)
    fixed = plan.groupby("mode")["strength"].unique().map(list).to_dict()
    assert fixed == {"Full": [0.5], "Image": [0.5], "Pixel": [0.8], "Text": [1.0]}


def test_plan_errors_are_one_line(tmp_path, capsys):
    assert generate_main(["plan", "--references", str(tmp_path / "none"), "--out", "x.csv"]) == 2
    folder = references(tmp_path / "refs", ["a.png"], size=(8, 8))
    args = ["plan", "--references", str(folder), "--out", str(tmp_path / "p.csv")]
    assert generate_main([*args, "--models", "NoSuchModel"]) == 2
    assert "unknown model 'NoSuchModel'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f, d: f.assign(reference_path=str(d / "moved.png")),
            "1 reference image(s) not found",
        ),
        (lambda f, d: f.assign(reference_path=str(d / "notes.png")), "is not a readable image"),
        (lambda f, d: f.assign(strength=7), "strength 7 is not in (0, 1]"),
        (lambda f, d: f.assign(strength="high"), "strength high is not in (0, 1]"),
        (lambda f, d: f.assign(seed=-1), "seed -1 is not a whole number"),
        (lambda f, d: f.assign(model="DiffBIR", mode="Text"), "DiffBIR cannot decode mode 'Text'"),
        (lambda f, d: f.assign(model="Nope"), "unknown model(s): Nope"),
        (lambda f, d: f.assign(id="same"), "'same' appears more than once"),
        (lambda f, d: f.drop(columns="seed"), "missing column(s) seed"),
        (lambda f, d: f.iloc[:0], "no rows"),
    ],
)
def test_a_bad_plan_stops_the_run_before_any_model_loads(tmp_path, capsys, edit, message):
    folder = references(tmp_path / "refs", ["NSI_a.png", "SCI_b.png"], size=(16, 16))
    (tmp_path / "notes.png").write_text("not an image")
    plan = tmp_path / "plan.csv"
    generate_main(["plan", "--references", str(folder), "--out", str(plan), "--preset",
                   "benchmark", "--models", "SD15"])  # fmt: skip
    edit(pd.read_csv(plan), tmp_path).to_csv(plan, index=False)
    assert generate_main(["run", str(plan), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("generate: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_caption_list_missing_a_reference_stops_the_run_before_any_image(
    tmp_path, tiny, study_inputs, capsys
):  # fmt: skip
    plan, _ = study_inputs
    captions = tmp_path / "captions.csv"
    pd.DataFrame({"name": ["NSI_a.png"], "text": ["A red barn."]}).to_csv(captions)
    assert generate_main(run_args(plan, tmp_path / "o", captions, tiny)) == 2
    err = capsys.readouterr().err
    assert "has no caption for 1 of the plan's references (first: SCI_b.png)" in err
    assert not list((tmp_path / "o" / "images").glob("*.png"))


def test_an_unconfigured_restoration_model_stops_the_run_before_any_image(
    tmp_path, tiny, study_inputs, capsys
):  # fmt: skip
    plan, captions = study_inputs
    sd = sd15_rows(plan)
    pasd = sd[sd["mode"] == "Image"].assign(model="PASD", id=lambda f: f["id"] + "_pasd")
    pd.concat([sd, pasd]).to_csv(tmp_path / "plan.csv", index=False)
    assert generate_main(run_args(tmp_path / "plan.csv", tmp_path / "o", captions, tiny)) == 2
    assert "PASD has no diffusers port: install its official" in capsys.readouterr().err
    assert not list((tmp_path / "o" / "images").glob("*.png"))


def test_the_manifest_command_explains_an_unusable_output_folder(tmp_path, capsys):
    assert generate_main(["manifest", str(tmp_path / "never-run")]) == 2
    assert "no finished images to list" in capsys.readouterr().err
    (tmp_path / "out" / "meta").mkdir(parents=True)
    (tmp_path / "out" / "meta" / "x.json").write_text("{half")
    assert generate_main(["manifest", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "x.json: unreadable metadata" in err and "delete it to remake the image" in err
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_per_reference_sampling_balances_configurations(tmp_path):
    folder = references(tmp_path / "refs", [f"r{i}.png" for i in range(10)], size=(8, 8))
    refs = choose_references(sorted(folder.iterdir()), None, np.random.default_rng(0))
    configs = [(m, mode) for m in ("A", "B") for mode in ("Text", "Pixel", "Image", "Full")]
    plan = make_plan(refs, configs, "study", 0, per_reference=4)
    assert len(plan) == 40 and (plan.groupby(["model", "mode"]).size() == 5).all()


def test_guards_for_the_diffusion_edge_cases():
    assert steps_for(0.5, 40) == 40
    assert steps_for(0.01, 40) == 100  # strength × steps would be < 1 step
    assert working_size(1000, 750, 1024) == (1024, 768)
    assert working_size(333, 1001, 1024) == (344, 1024)
    assert all(side % 8 == 0 for side in working_size(97, 61, 100))
    assert instruct_image_guidance(0.5) == pytest.approx(2.0)
    assert {s.guidance_scale for s in REGISTRY.values() if s.family == "sd"} == {7.5}
    assert REGISTRY["SDXL"].guidance_scale == 5.0 and REGISTRY["PG25"].guidance_scale == 5.0


def test_pixel_hint_costs_blocks_times_channels_times_bits():
    image = np.asarray(Image.open(DEMO / "coffee.png").convert("RGB"))  # 320 × 216
    hint = pixel.encode(image, block=64, bits_per_channel=6)
    assert hint.thumbnail.shape == (4, 5, 3) and hint.bits == 4 * 5 * 3 * 6
    np.testing.assert_allclose(hint.thumbnail[0, 0], image[:64, :64].reshape(-1, 3).mean(0), atol=3)
    assert pixel.start_image(hint, (320, 216)).shape == (216, 320, 3)


@pytest.mark.parametrize("name", ["av1", "hevc"])
def test_codec_lands_near_the_target_bpp(name):
    image = np.asarray(Image.open(DEMO / "astronaut.png").convert("RGB"))
    coded = codec.encode_at_bpp(image, 0.1, name)
    assert abs(coded.bpp(320, 320) - 0.1) / 0.1 < 0.2
    assert coded.image.shape == image.shape
    psnr = 10 * np.log10(255**2 / np.mean((coded.image.astype(float) - image) ** 2))
    assert psnr > 18


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny SD, SDXL, InstructPix2Pix and AnimateDiff weights in local folders, and a models TOML
    that points the registry's entries at them — the same override a user with weights writes."""
    folder = tmp_path_factory.mktemp("weights")
    save_sd(folder / "sd")
    save_sdxl(folder / "sdxl")
    save_sd(folder / "ip2p", in_channels=8)
    save_motion_adapter(folder / "motion")
    restore = folder / "restore.py"
    restore.write_text(
        "import shutil, sys\nshutil.copy(sys.argv[1], sys.argv[2] + '/restored.png')\n"
    )
    config = folder / "models.toml"
    config.write_text(
        f'[SD15]\nweights = "{folder / "sd"}"\n'
        f'[RealVis]\nweights = "{folder / "sdxl"}"\n'
        f'[InstructPix]\nweights = "{folder / "ip2p"}"\n'
        f'[Animate]\nweights = "{folder / "sd"}"\nmotion_adapter = "{folder / "motion"}"\n'
        f'[DiffBIR]\ncommand = "{sys.executable} {restore} {{input}} {{output}}"\n'
    )
    return config


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    refs = folder / "refs"
    refs.mkdir()
    for source, name in (("coffee.png", "NSI_a.png"), ("rocket.png", "SCI_b.png")):
        Image.open(DEMO / source).convert("RGB").resize((256, 192)).save(refs / name)
    captions = folder / "captions.csv"
    pd.DataFrame(
        {
            "name": ["NSI_a.png", "SCI_b.png"],
            "text": ["A red barn in a green field.", "Ünïcode café text"],
        }
    ).to_csv(captions)
    plan = folder / "plan.csv"
    models = "SD15,RealVis,InstructPix,Animate,DiffBIR"
    generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset", "benchmark",
                   "--models", models])  # fmt: skip
    return plan, captions


def sd15_rows(plan) -> pd.DataFrame:
    """The plan's SD15 rows: one fast model, every mode."""
    frame = pd.read_csv(plan)
    return frame[frame["model"] == "SD15"]


def run_args(plan, out, captions, config, *extra):
    return ["run", str(plan), "--out", str(out), "--captions", str(captions), "--models-config",
            str(config), "--size", "64", "--steps", "4", "--target-bpp", "0.1", "--device", "cpu",
            *extra]  # fmt: skip


def test_every_mode_end_to_end_with_honest_bits(tmp_path, tiny, study_inputs):
    plan, captions = study_inputs
    out = tmp_path / "out"
    assert generate_main(run_args(plan, out, captions, tiny)) == 0
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    planned = pd.read_csv(plan)
    assert sorted(manifest["id"]) == sorted(planned["id"])
    assert len(manifest) == 2 * (4 + 4 + 4 + 2 + 2)  # SD15, RealVis, Animate; InstructPix, DiffBIR
    for row in manifest.itertuples():
        image = Image.open(out / row.distorted_path)
        assert image.size == (256, 192)  # back at the reference's size
        caption_bits = len(row.caption.encode("utf-8")) * 8
        assert row.text_bits == (caption_bits if row.mode in ("Text", "Pixel", "Full") else 0)
        assert row.pixel_bits == (4 * 3 * 3 * 3 if row.mode == "Pixel" else 0)  # 3 bits a channel
        if row.mode in ("Image", "Full"):
            assert abs(row.codec_bits / (256 * 192) - 0.1) / 0.1 < 0.25
        assert row.bits == row.text_bits + row.pixel_bits + row.codec_bits
        assert row.bpp == pytest.approx(row.bits / (256 * 192))
        assert row.compression_ratio == pytest.approx(24 / row.bpp)
    assert set(manifest.loc[manifest["mode"] == "Image", "prompt"]) == {""}  # the paper's
    assert manifest.loc[manifest["reference"] == "SCI_b", "caption"].iloc[0] == "Ünïcode café text"
    instruct = manifest[manifest["model"] == "InstructPix"]  # the guidance it actually used
    assert set(instruct["image_guidance_scale"].astype(float)) == {2.0}
    assert set(instruct["guidance_scale"].astype(float)) == {7.5}


def test_the_manifest_imports_into_the_lab_app_as_is(tmp_path, tiny, study_inputs):
    from annotate.db import get_db
    from tests.annotate_helpers import make_app

    plan, captions = study_inputs
    out = tmp_path / "out"
    generate_main(run_args(plan, out, captions, tiny))
    app = make_app(tmp_path / "instance")
    with app.app_context():
        added, _ = import_manifest(get_db(), read_manifest(out / "manifest.csv"), 400,
                                   np.random.default_rng(0))  # fmt: skip
    assert added == 32


def test_resume_after_a_crash_gives_the_same_files(tmp_path, tiny, study_inputs, monkeypatch):
    plan, captions = study_inputs
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    generate_main(run_args(plan, clean, captions, tiny))
    calls = {"n": 0}
    original = Decoder.batch

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 9:
            raise KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Decoder, "batch", dying)
    with pytest.raises(KeyboardInterrupt):
        generate_main(run_args(plan, crashed, captions, tiny))
    assert len(list((crashed / "images").glob("*.png"))) == 9
    monkeypatch.setattr(Decoder, "batch", original)
    generate_main(run_args(plan, crashed, captions, tiny))
    for image in (clean / "images").glob("*.png"):
        assert (crashed / "images" / image.name).read_bytes() == image.read_bytes()
    assert not list(crashed.rglob(".*.tmp"))  # no half-written file left behind


def test_a_failed_write_stops_the_run_with_one_line_and_keeps_what_was_written(
    tmp_path, tiny, study_inputs, capsys
):  # fmt: skip
    plan, captions = study_inputs
    rows = sd15_rows(plan)
    rows.to_csv(tmp_path / "plan.csv", index=False)
    out = tmp_path / "out"
    blocked = out / "images" / f"{rows['id'].iloc[5]}.png"
    blocked.mkdir(parents=True)  # a folder where the image should go: the rename fails
    assert generate_main(run_args(tmp_path / "plan.csv", out, captions, tiny)) == 2
    err = capsys.readouterr().err
    assert f"generate: error: cannot write {blocked}" in err and "Traceback" not in err
    written = {p.stem for p in (out / "meta").glob("*.json")}
    assert written and blocked.stem not in written  # what came before is kept …
    assert all((out / "images" / f"{name}.png").is_file() for name in written)  # … whole
    assert not list(out.rglob(".*.tmp"))
    blocked.rmdir()
    assert generate_main(run_args(tmp_path / "plan.csv", out, captions, tiny)) == 0
    assert len(list((out / "images").glob("*.png"))) == len(rows)


def test_codec_hints_made_by_worker_processes_are_the_ones_made_in_line(tmp_path, study_inputs):
    from generate.run import RunSettings

    plan, _ = study_inputs
    frame = pd.read_csv(plan).drop_duplicates("reference")
    references = [(Path(p), None) for p in frame["reference_path"]]
    settings = RunSettings(target_bpp=0.1)
    for folder, workers in (("pool", 2), ("inline", 1)):
        (tmp_path / folder).mkdir()
        Hints(tmp_path / folder, settings, None).prepare_codec(references, workers)
    made = sorted(p.name for p in (tmp_path / "pool").iterdir())  # PNG, bitstream, JSON each
    assert made == sorted(p.name for p in (tmp_path / "inline").iterdir()) and len(made) == 6
    for name in made:
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "inline" / name).read_bytes()


def test_ranks_share_the_plan_exactly(tmp_path, tiny, study_inputs, monkeypatch):
    plan, captions = study_inputs
    frame = pd.read_csv(plan)
    shards = [shard(frame, r, 3) for r in range(3)]
    assert sorted(pd.concat(shards)["id"]) == sorted(frame["id"])
    assert sum(len(s) for s in shards) == len(frame)
    out = tmp_path / "out"
    prepared = []  # each rank makes its share of the codec hints up front
    original = Hints.prepare_codec

    def spy(self, references, workers):
        prepared.append(sorted(path.stem for path, _ in references))
        return original(self, references, workers)

    monkeypatch.setattr(Hints, "prepare_codec", spy)
    for rank in range(2):  # as torchrun would start them, one after the other here
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        generate_main(run_args(plan, out, captions, tiny))
        made = {json.loads(p.read_text())["id"] for p in (out / "meta").glob("*.json")}
        assert made == set(shard(frame, 0, 2)["id"]) | (set(frame["id"]) if rank else set())
    assert len(pd.read_csv(out / "manifest.csv")) == len(frame)
    assert prepared == [["NSI_a"], ["SCI_b"]]


def test_missing_weights_give_a_one_line_error(tmp_path, study_inputs, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan, captions = study_inputs
    config = tmp_path / "m.toml"
    config.write_text('[SD15]\nweights = "nobody/no-such-model"\n')
    sd15_rows(plan).to_csv(tmp_path / "p.csv", index=False)
    args = run_args(tmp_path / "p.csv", tmp_path / "o", captions, config)
    assert generate_main(args) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.split("generate: error: ")[1:]]  # one error, after the progress bar
    assert line.startswith("SD15: cannot load weights 'nobody/no-such-model'")
    assert "weights = " in line and line.count("\n") == 1 and "Traceback" not in err


def test_restoration_models_without_a_command_say_how_to_configure_them():
    decoder = Decoder(DecoderSpec("PASD", "", "external", kind="restoration"), "cpu")
    with pytest.raises(DecoderError, match="install its official inference code"):
        decoder("Image", Request("", np.zeros((64, 64, 3), np.uint8), 0.5, 0, (64, 64)))
    with pytest.raises(DecoderError, match="cannot decode Text"):
        decoder("Text", Request("x", None, 1.0, 0, (64, 64)))


def test_models_toml_adds_and_overrides_entries(tmp_path):
    config = tmp_path / "m.toml"
    config.write_text(
        '[RealVis]\nweights = "/w/realvis"\n[Mine]\nweights = "me/x"\nfamily = "sd"\n'
    )
    registry = load_registry(config)
    assert registry["RealVis"].weights == "/w/realvis" and registry["RealVis"].family == "sdxl"
    assert registry["Mine"].guidance_scale == 7.5 and registry["Mine"].modes[0] == "Text"
    config.write_text('[Mine]\nwieghts = "typo"\n')
    with pytest.raises(ValueError, match="unknown key"):
        load_registry(config)


def test_gpu_benchmark_script_runs_scaled_down_on_the_cpu():
    """The GPU benchmark is prepared for a session with a device; here its logic runs tiny."""
    printed = bench("generate_gpu.py", "--tiny", "--repeats", "1", "--no-compile")
    assert "| reference script: pipeline call, batch 1, fp32 VAE |" in printed
    assert "| generate run --batch-size 4 |" in printed
    assert "| generate run --batch-size 8 |" in printed


def test_gpu_probe_times_each_stage_of_a_pipeline_call_scaled_down_on_the_cpu():
    """The probe that says where a GPU pipeline call spends its time: every stage it wraps is
    reached, and the stages plus the rest add up to the call."""
    printed = bench("gpu_probe.py", "--tiny", "--only", "stages")
    tables = re.findall(r"^(\S.*): ([\d.]+) s\n((?:    .*\n)+)", printed, re.MULTILINE)
    assert [name for name, _, _ in tables] == [
        "reference script's call, 1 image, fp32 VAE, models in training mode",
        "reference script's call, 1 image, fp32 VAE",
        "reference script's call, 1 image, fp32 VAE, in inference mode",
        "generate run's decoder, 4 images",
    ]
    for _, total, rows in tables:
        stages = dict(re.findall(r"^    (.+?)\s+(-?[\d.]+) s", rows, re.MULTILINE))
        assert set(stages) - {"invisible watermark"} == {  # that one only where installed
            "text encoder 1", "text encoder 2", "UNet", "scheduler step", "VAE encode",
            "VAE decode", "image to tensor", "tensor to image", "everything else",
        }  # fmt: skip
        assert float(stages["UNet"]) > 0 and float(stages["VAE decode"]) > 0
        assert sum(map(float, stages.values())) == pytest.approx(float(total), abs=0.01)


def test_a_local_blip_captioner_loads_and_generates(tmp_path):
    """A tiny random-weight BLIP saved in the transformers layout, loaded by id-or-folder."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from generate.captions import make_captioner

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "barn", "field"]
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    text = dict(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        bos_token_id=2,
        sep_token_id=3,
        pad_token_id=0,
        eos_token_id=3,
    )
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  image_size=32, patch_size=8)  # fmt: skip
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision))
    model.save_pretrained(tmp_path / "blip")
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizer(vocab_file=str(tmp_path / "vocab.txt")),
    ).save_pretrained(tmp_path / "blip")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "x.png")
    captioner = make_captioner(str(tmp_path / "blip"), words=10)
    assert isinstance(captioner.caption("x.png", tmp_path / "x.png"), str)
    with pytest.raises(ValueError, match="weights not found"):
        make_captioner(str(tmp_path / "no-such-model"))


def test_openai_captioner_needs_a_key(monkeypatch):
    from generate.captions import CaptionError, make_captioner

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(CaptionError, match="OPENAI_API_KEY"):
        make_captioner("openai:gpt-4o")


def test_vvc_goes_through_the_fraunhofer_tools_when_they_are_on_path(tmp_path, monkeypatch):
    """Stand-in vvencapp / vvdecapp that carry the raw I420 frame, base64-coded, in one VCL NAL
    unit followed by an SEI: this checks our side (the planes written, the SEI left out of the
    count and of what the decoder reads, the frame read back), not VVC itself."""
    tools = tmp_path / "bin"
    tools.mkdir()
    header = "import base64, sys\nargs = sys.argv[1:]\n"
    encoder = (
        "src = args[args.index('-i') + 1]; dst = args[args.index('-o') + 1]\n"
        "frame = base64.b64encode(open(src, 'rb').read())\n"
        "sei = b'\\0\\0\\1' + bytes([0, 23 << 3 | 1]) + b'encoder version'\n"
        "open(dst, 'wb').write(b'\\0\\0\\0\\1' + bytes([0, 8 << 3 | 1]) + frame + sei)\n"
    )
    decoder = (
        "src = args[args.index('-b') + 1]; dst = args[args.index('-o') + 1]\n"
        "data = open(src, 'rb').read(); assert b'encoder version' not in data\n"
        "open(dst, 'wb').write(base64.b64decode(data[6:]))\n"
    )
    for name, body in (("vvencapp", encoder), ("vvdecapp", decoder)):
        (tools / name).write_text(f"#!{sys.executable}\n{header}{body}")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{__import__('os').environ['PATH']}")
    assert codec.available("vvc")
    image = np.asarray(Image.open(DEMO / "coffee.png").convert("RGB"))
    coded = codec.encode(image, 53, "vvc")
    frame_bytes = 320 * 216 * 3 // 2
    assert coded.bits == (6 + 4 * -(-frame_bytes // 3)) * 8  # the NAL unit, no SEI
    assert np.abs(coded.image.astype(int) - image).mean() < 4  # only the YUV 4:2:0 round trip


def test_batched_decoding_matches_single_calls(tmp_path, tiny, study_inputs):
    plan, captions = study_inputs
    single, batched = tmp_path / "single", tmp_path / "batched"
    generate_main(run_args(plan, single, captions, tiny))
    assert generate_main(run_args(plan, batched, captions, tiny, "--batch-size", "4")) == 0
    one = pd.read_csv(single / "manifest.csv").set_index("id").sort_index()
    four = pd.read_csv(batched / "manifest.csv").set_index("id").sort_index()
    pd.testing.assert_series_equal(one["bits"], four["bits"])
    for name in one.index:
        a = np.asarray(Image.open(single / "images" / f"{name}.png"), dtype=float)
        b = np.asarray(Image.open(batched / "images" / f"{name}.png"), dtype=float)
        assert np.abs(a - b).mean() < 1.0, name  # same seeds: the same images, up to rounding


def tiny_decoder(tiny, name, **options):
    """The registry entry the tiny models TOML points at, as ``generate run`` builds it."""
    return Decoder(load_registry(tiny)[name], "cpu", long_side=64, steps=4, **options)


def test_strengths_with_the_same_step_count_decode_the_same_image(tiny):
    """diffusers' img2img uses the strength only through int(steps × strength): 0.5 and 0.6 both
    run 2 of 4 steps and give the same image, so a study's random strengths can share a call."""
    decoder = tiny_decoder(tiny, "SD15")
    start = np.asarray(Image.open(DEMO / "coffee.png").convert("RGB").resize((64, 48)))
    images = {
        s: decoder("Full", Request("a cup of coffee", start, s, 7, (64, 48)))
        for s in (0.5, 0.6, 0.8)
    }
    assert [images[s].denoising_steps for s in (0.5, 0.6, 0.8)] == [2, 2, 3]
    np.testing.assert_array_equal(images[0.5].image, images[0.6].image)
    assert np.abs(images[0.5].image.astype(int) - images[0.8].image).mean() > 1
    key = decoder.batch_key
    assert key("Full", 0.5, (64, 48)) == key("Full", 0.6, (128, 96)) != key("Full", 0.8, (64, 48))
    assert key("Full", 0.5, (64, 48)) != key("Image", 0.5, (64, 48))
    assert key("Full", 0.5, (64, 48)) != key("Full", 0.5, (48, 64))  # another working size
    with pytest.raises(DecoderError, match="cannot share one call"):
        decoder.batch("Full", [Request("x", start, 0.5, 0, (64, 48)),
                               Request("x", start, 0.8, 0, (64, 48))])  # fmt: skip
    pix = tiny_decoder(tiny, "InstructPix").batch_key  # strength is its image guidance: exact
    assert pix("Full", 0.5, (64, 48)) != pix("Full", 0.6, (64, 48))


def test_a_study_plan_with_random_strengths_still_batches(
    tmp_path, tiny, study_inputs, monkeypatch
):
    plan, captions = study_inputs
    rows = sd15_rows(plan)
    rows = rows[rows["mode"] == "Full"]
    rng = np.random.default_rng(3)
    study = pd.concat([rows.assign(id=rows["id"] + f"_{k}", seed=rows["seed"] + k,
                                   strength=rng.uniform(0.5, 0.75, len(rows)).round(4))
                       for k in range(4)])  # fmt: skip
    study.to_csv(tmp_path / "study.csv", index=False)
    calls = []
    original = Decoder.batch

    def spy(self, mode, requests):
        calls.append(sorted(r.strength for r in requests))
        return original(self, mode, requests)

    monkeypatch.setattr(Decoder, "batch", spy)
    args = run_args(tmp_path / "study.csv", tmp_path / "four", captions, tiny, "--batch-size", "4")
    assert generate_main(args) == 0
    assert len(calls) == 2 and all(len(set(c)) == 4 for c in calls)  # 8 images, 2 calls
    monkeypatch.setattr(Decoder, "batch", original)
    assert generate_main(run_args(tmp_path / "study.csv", tmp_path / "one", captions, tiny)) == 0
    one = pd.read_csv(tmp_path / "one" / "manifest.csv").set_index("id").sort_index()
    four = pd.read_csv(tmp_path / "four" / "manifest.csv").set_index("id").sort_index()
    assert (four["denoising_steps"] == 2).all()
    pd.testing.assert_frame_equal(one, four)
    for name in one.index:
        a = np.asarray(Image.open(tmp_path / "one" / "images" / f"{name}.png"), dtype=float)
        b = np.asarray(Image.open(tmp_path / "four" / "images" / f"{name}.png"), dtype=float)
        assert np.abs(a - b).mean() < 1.0, name


def test_the_compiled_decoder_makes_the_same_images(tiny):
    import torch

    start = np.asarray(Image.open(DEMO / "rocket.png").convert("RGB").resize((64, 48)))
    request = Request("a rocket", start, 0.5, 11, (64, 48))
    plain = tiny_decoder(tiny, "SD15")("Full", request).image
    decoder = tiny_decoder(tiny, "SD15", compile=True)
    compiled = decoder("Full", request).image
    unet = decoder._image2image.unet
    assert isinstance(unet, torch._dynamo.eval_frame.OptimizedModule)
    assert decoder._text2image.unet is unet  # Text mode shares the compiled UNet
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor2_0"}
    assert np.abs(plain.astype(int) - compiled).mean() < 1.0


def test_no_invisible_watermark_even_where_its_package_is_installed(tiny, monkeypatch):
    """SDXL pipelines watermark their outputs when invisible-watermark is installed; a study's
    images must not depend on that, so the decoder drops the watermarker (here a stand-in)."""
    from diffusers.pipelines.stable_diffusion_xl import (
        pipeline_stable_diffusion_xl as text2image,
    )
    from diffusers.pipelines.stable_diffusion_xl import (
        pipeline_stable_diffusion_xl_img2img as image2image,
    )

    class Watermarker:
        def apply_watermark(self, images):
            raise AssertionError("a study image was watermarked")

    for module in (text2image, image2image):
        monkeypatch.setattr(module, "is_invisible_watermark_available", lambda: True)
        monkeypatch.setattr(module, "StableDiffusionXLWatermarker", Watermarker, raising=False)
    decoder = tiny_decoder(tiny, "RealVis")
    start = np.asarray(Image.open(DEMO / "rocket.png").convert("RGB").resize((64, 48)))
    for mode in ("Full", "Text"):
        assert decoder(mode, Request("a rocket", start, 0.5, 3, (64, 48))).image.shape == (
            48,
            64,
            3,
        )
    assert decoder._image2image.watermark is None and decoder._text2image.watermark is None


def test_a_replacement_vae_is_loaded_from_the_models_toml(tmp_path, tiny):
    from tests.tiny_models import save_vae

    save_vae(tmp_path / "vae", scaling_factor=0.5)
    config = tmp_path / "models.toml"
    weights = load_registry(tiny)["SD15"].weights
    config.write_text(f'[SD15]\nweights = "{weights}"\nvae = "{tmp_path / "vae"}"\n')
    decoder = Decoder(load_registry(config)["SD15"], "cpu", 64, 4)
    decoder.load()
    assert decoder._image2image.vae.config.scaling_factor == 0.5
    config.write_text(f'[SD15]\nweights = "{weights}"\nvae = "{tmp_path / "no-vae"}"\n')
    with pytest.raises(DecoderError, match="or VAE .*no-vae"):
        Decoder(load_registry(config)["SD15"], "cpu", 64, 4).load()


def test_the_batching_figures_in_the_bench_readme_are_what_the_command_prints():
    printed = bench("generate_batching.py", "--size", "64x48")  # only the aspect matters
    assert "img2img: 3200 images in 1838 calls" in printed
    assert "Text: 800 images in 275 calls" in printed


def test_the_overhead_benchmark_runs():
    printed = bench("generate_overhead.py", "--decoder-seconds", "0", "--copies", "1",
                    "--size", "256x192")  # fmt: skip
    assert "20 images of 256×192" in printed and "beyond the decoder:" in printed


def bench(script: str, *args: str) -> str:
    """What a bench/ script prints, run as its README says (from the repository's root)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args], capture_output=True, text=True, timeout=300,
        check=True, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    return done.stdout
