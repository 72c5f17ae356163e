"""Review of issue 21 (generate's codec anchors): defects found by probing ``generate ladder`` and
``generate run`` as a compression researcher and as an attacker would, each pinned by a test."""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from generate import codec
from generate.__main__ import main as generate_main
from tests.test_generate import DEMO


def ladder(refs, out, *rates, codecs="avc,hevc,av1"):
    return ["ladder", "--references", str(refs), "--out", str(out), "--codecs", codecs,
            "--workers", "1", *rates]  # fmt: skip


def reference_folder(folder, size=(128, 96), names=("NSI_a.png",)):
    folder.mkdir(parents=True, exist_ok=True)
    sources = ("coffee.png", "rocket.png", "hubble.png")
    for source, name in zip(sources, names, strict=False):
        Image.open(DEMO / source).convert("RGB").resize(size).save(folder / name)
    return folder


def test_an_odd_sided_reference_is_coded_padded_and_its_png_is_the_bitstreams_crop(tmp_path):
    """4:2:0 encoders take even sides. A 127 × 97 reference was resampled to 128 × 96 and back
    (bicubic), so the PNG was not what the kept bitstream decodes to and the resampling alone
    cost quality no codec lost (35–42 dB). Padded by repeating the edge and cropped after
    decoding, as a conformance window does, the PNG is exactly the decoded picture's crop."""
    refs = reference_folder(tmp_path / "refs", size=(127, 97))
    out = tmp_path / "out"
    assert generate_main(ladder(refs, out, "--qps", "20")) == 0
    manifest = pd.read_csv(out / "manifest.csv")
    for row in manifest.itertuples():
        png = np.asarray(Image.open(out / row.distorted_path))
        assert png.shape == (97, 127, 3)
        decoded = codec._decode_pyav((out / row.bitstream_path).read_bytes(), row.codec)
        assert decoded.shape == (98, 128, 3), row.codec  # the edge repeated once, each side
        np.testing.assert_array_equal(decoded[:97, :127], png)


def test_a_high_target_gets_the_best_encode_within_it_not_the_finest_qp_searched(tmp_path):
    """The search stopped at QP 20: at 2 bpp AV1 kept QP 20 (1.66 bpp, 31.4 dB) though finer QPs
    fit the target. The rule is the best encode within the target over the codec's whole scale."""
    refs = reference_folder(tmp_path / "refs")
    out = tmp_path / "out"
    assert generate_main(ladder(refs, out, "--bpp", "2", codecs="av1")) == 0
    row = pd.read_csv(out / "manifest.csv").iloc[0]
    reference = np.asarray(Image.open(refs / "NSI_a.png").convert("RGB"))
    kept = codec.psnr(reference, np.asarray(Image.open(out / row.distorted_path)))
    low, high = codec.QP_LIMITS["av1"]
    fitting = [
        coded
        for scale in (1.0, 0.5)
        for qp in range(low, high + 1)
        if (coded := codec.encode(reference, qp, "av1", scale)).bpp(96, 128) <= 2
    ]
    assert row.bpp <= 2
    assert kept == pytest.approx(max(codec.psnr(reference, c.image) for c in fitting))


def one_line_error(capsys, argv, expected: str) -> None:
    assert generate_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


def test_a_ladder_never_lists_points_of_a_reference_renamed_removed_or_edited_since(
    tmp_path, capsys
):
    """The manifest is every point in meta/: a reference renamed (or removed) left its points
    listed beside the new name's, and a reference edited kept its points at the rates this run
    did not ask for, made from the old content — one curve over two images, with no word."""
    refs = reference_folder(tmp_path / "refs", names=("NSI_a.png", "SCI_b.png"))
    out = tmp_path / "out"
    assert generate_main(ladder(refs, out, "--qps", "30,45", codecs="hevc")) == 0
    before = (out / "manifest.csv").read_bytes()
    Image.open(DEMO / "hubble.png").convert("RGB").resize((128, 96)).save(refs / "NSI_a.png")
    message = "holds NSI_a__HEVC__qp30, made from an earlier NSI_a.png"
    one_line_error(capsys, ladder(refs, out, "--qps", "45", codecs="hevc"), message)
    assert (out / "manifest.csv").read_bytes() == before
    assert generate_main(ladder(refs, out, "--qps", "30,45", codecs="hevc")) == 0  # remade
    (refs / "SCI_b.png").rename(refs / "SCI_c.png")
    message = "holds SCI_b__HEVC__qp30, made from SCI_b.png, which"
    one_line_error(capsys, ladder(refs, out, "--qps", "30,45", codecs="hevc"), message)
    manifest = pd.read_csv(out / "manifest.csv")
    assert set(manifest["reference"]) == {"NSI_a", "SCI_b"}  # as the last run left it


def restoration_run(tmp_path, refs, out) -> list[str]:
    """``generate run`` of a benchmark plan of DiffBIR (Image and Full modes: codec hints), its
    command a no-op: what the codec side does, without a model."""
    plan = tmp_path / "plan.csv"
    argv = ["plan", "--references", str(refs), "--out", str(plan), "--preset", "benchmark",
            "--models", "DiffBIR"]  # fmt: skip
    assert generate_main(argv) == 0
    captions = tmp_path / "captions.csv"
    captions.write_text("name,text\n" + "".join(f"{p.name},a picture\n" for p in refs.iterdir()))
    script = tmp_path / "restore.py"  # "restores" by copying its input
    script.write_text("import shutil, sys\nshutil.copy(sys.argv[1], sys.argv[2] + '/r.png')\n")
    config = tmp_path / "models.toml"
    config.write_text(f'[DiffBIR]\ncommand = "{sys.executable} {script} {{input}} {{output}}"\n')
    return ["run", str(plan), "--out", str(out), "--captions", str(captions),
            "--models-config", str(config), "--device", "cpu", "--workers", "1"]  # fmt: skip


def test_an_output_folder_that_cannot_be_made_is_a_one_line_error(tmp_path, capsys):
    """--out naming a file (or a read-only place) ended in a NotADirectoryError traceback."""
    refs = reference_folder(tmp_path / "refs")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        one_line_error(capsys, ladder(refs, out, "--qps", "45", codecs="hevc"), "cannot create")
    argv = restoration_run(tmp_path, refs, blocker)
    one_line_error(capsys, argv, "cannot create")


def test_a_16_bit_reference_is_coded_as_its_8_bit_picture_not_a_white_image(tmp_path, capsys):
    """PIL's convert("RGB") clips a 16-bit grey image (mode I;16) to 255: the ladder coded a
    white picture and scored it against a white reference, with no word. The shared reader
    (studydb.images.read_rgb) keeps the high byte; a floating-point reference is refused."""
    refs = tmp_path / "refs"
    refs.mkdir()
    grey = np.asarray(Image.open(DEMO / "coffee.png").convert("L").resize((128, 96)))
    Image.fromarray(grey.astype(np.uint16) * 257).save(refs / "NSI_deep.png")
    assert Image.open(refs / "NSI_deep.png").mode == "I;16"
    out = tmp_path / "out"
    assert generate_main(ladder(refs, out, "--qps", "20", codecs="hevc")) == 0
    (decoded,) = (out / "images").glob("*.png")
    got = np.asarray(Image.open(decoded).convert("L"), dtype=float)
    assert abs(got.mean() - grey.mean()) < 2 and np.abs(got - grey).mean() < 4
    Image.fromarray(grey.astype(np.float32)).save(refs / "NSI_float.tiff")
    one_line_error(capsys, ladder(refs, tmp_path / "o2", "--qps", "45", codecs="hevc"), "floating")


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        generate_main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_the_ladder_help_shows_qps_it_accepts_and_each_default_once(capsys):
    """The --qps example read "--qps avc=55,60,64,67", QPs the ladder now refuses, and --workers
    said "(default: this machine's share of CPUs) (default: None)"."""
    text = help_text(capsys, "ladder")
    examples = re.findall(r"--qps (\w+)=([\d,]+\d)", text)
    assert examples
    for name, values in examples:
        for qp in values.split(","):
            codec.check_qp(name, int(qp))
    for command in ("ladder", "run"):
        text = help_text(capsys, command)
        workers = text[text.index("--workers WORKERS ", text.index("options:")) :]
        workers = workers.split(" --")[0]  # up to the next option, or the end
        assert workers.count("default") == 1, workers
        assert "(default: None)" not in text


def test_a_reference_too_small_for_the_codec_is_named_in_generate_runs_error(tmp_path, capsys):
    """The error read "image 300×1 is too small to encode", naming no file (in a study's hundred
    references, which one?), and came after the other references' hints were made."""
    refs = reference_folder(tmp_path / "refs")
    Image.new("RGB", (300, 1)).save(refs / "NSI_line.png")
    argv = restoration_run(tmp_path, refs, tmp_path / "out")
    one_line_error(capsys, argv, "NSI_line.png is 300×1: too small to encode")


def test_a_codec_hint_whose_png_was_deleted_is_made_again(tmp_path):
    """A hint counted as made when its metadata and bitstream were there: with its PNG deleted,
    the next image that needed it ended in a FileNotFoundError traceback."""
    refs = reference_folder(tmp_path / "refs")
    out = tmp_path / "out"
    argv = restoration_run(tmp_path, refs, out)
    assert generate_main(argv) == 0
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    row = manifest[manifest["mode"] == "Image"].iloc[0]
    hint = out / row.codec_bitstream_path
    hint.with_suffix(".png").unlink()
    (out / row.distorted_path).unlink()
    (out / "meta" / f"{row.id}.json").unlink()
    assert generate_main(argv) == 0
    assert hint.with_suffix(".png").is_file()
    again = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("id")
    assert again.loc[row.id, "codec_bits"] == row.codec_bits == 8 * hint.stat().st_size


def test_two_targets_that_name_one_point_are_refused(tmp_path, capsys):
    """A point is named by its target to 6 digits: --bpp 0.1,0.1000001 made two encodes into one
    file, "made 2 of 2" and a manifest of one row."""
    refs = reference_folder(tmp_path / "refs")
    argv = ladder(refs, tmp_path / "out", "--bpp", "0.1,0.1000001", codecs="hevc")
    one_line_error(capsys, argv, "--bpp lists a value twice")
