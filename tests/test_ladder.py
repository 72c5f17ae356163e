"""``python -m generate ladder``: the traditional codecs' points, with a run-style manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from generate import codec
from generate.__main__ import main as generate_main
from tests.test_generate import DEMO
from tests.test_generate_faithful import one_line_error

RUN_COLUMNS = {
    "id", "distorted_path", "reference_path", "reference", "content_type", "model", "mode",
    "codec", "codec_qp", "caption_words", "text_bits", "pixel_bits", "codec_bits", "bits", "bpp",
    "compression_ratio",
}  # fmt: skip


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ladder") / "refs"
    folder.mkdir()
    for source, name in (("coffee.png", "NSI_a.png"), ("rocket.png", "SCI_b.png")):
        Image.open(DEMO / source).convert("RGB").resize((128, 96)).save(folder / name)
    return folder


def ladder(refs, out, *rates, codecs="avc,hevc,av1"):
    return ["ladder", "--references", str(refs), "--out", str(out), "--codecs", codecs,
            "--workers", "1", *rates]  # fmt: skip


def test_every_reference_codec_and_qp_with_honest_bits_and_a_run_manifest(tmp_path, refs):
    out = tmp_path / "out"
    assert generate_main(ladder(refs, out, "--qps", "30,45")) == 0
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 2 * 3 * 2 and manifest["id"].is_unique
    assert RUN_COLUMNS <= set(manifest.columns)
    assert set(manifest["model"]) == {"AVC", "HEVC", "AV1"} and set(manifest["mode"]) == {"Codec"}
    assert set(manifest["codec_qp"]) == {30, 45}
    assert (manifest[["text_bits", "pixel_bits"]] == 0).all().all()
    for row in manifest.itertuples():
        reference = np.asarray(Image.open(row.reference_path).convert("RGB"))
        again = codec.encode_at_qp(reference, row.codec_qp, row.codec)
        assert row.codec_bits == row.bits == again.bits  # re-encoding gives the stored bits
        assert row.bpp == pytest.approx(row.bits / (128 * 96))
        assert row.compression_ratio == pytest.approx(24 / row.bpp)
        decoded = np.asarray(Image.open(out / row.distorted_path))
        np.testing.assert_array_equal(decoded, again.image)
        kept = (out / row.bitstream_path).read_bytes()  # beside the PNG: the counted bytes
        assert row.bitstream_path == row.distorted_path.replace(".png", codec.EXTENSIONS[row.codec])
        assert row.bits == 8 * len(kept) and kept == again.bitstream
        np.testing.assert_array_equal(codec._decode_pyav(kept, row.codec), decoded)
    per_qp = manifest.groupby(["reference", "model", "codec_qp"])["bits"].first().unstack()
    assert (per_qp[30] > per_qp[45]).all()
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert generate_main(ladder(refs, out, "--qps", "30,45")) == 0  # resumed: nothing to do
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before


def test_each_codec_can_take_its_own_qps(tmp_path, refs):
    """HEVC stops at QP 51, AV1 at 63: a list per codec reaches each one's coarsest rates."""
    out = tmp_path / "out"
    args = ladder(refs, out, "--qps", "hevc=47,51", "--qps", "av1=59,63", codecs="av1,hevc")
    assert generate_main(args) == 0
    manifest = pd.read_csv(out / "manifest.csv")
    qps = manifest.groupby("model")["codec_qp"].agg(lambda q: sorted(set(q)))
    assert qps.to_dict() == {"AV1": [59, 63], "HEVC": [47, 51]}
    mixed = tmp_path / "mixed"  # one codec named, the plain list for the others
    args = ladder(refs, mixed, "--qps", "40", "--qps", "avc=51", codecs="avc,av1")
    assert generate_main(args) == 0
    qps = pd.read_csv(mixed / "manifest.csv").groupby("model")["codec_qp"].agg(set)
    assert qps.to_dict() == {"AVC": {51}, "AV1": {40}}


def test_a_resume_remakes_an_edited_reference_and_refuses_another_folder(tmp_path, refs, capsys):
    folder = tmp_path / "refs"
    folder.mkdir()
    for path in refs.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    assert generate_main(ladder(folder, out, "--qps", "45", codecs="hevc")) == 0
    before = pd.read_csv(out / "manifest.csv").set_index("id")
    Image.open(DEMO / "hubble.png").convert("RGB").resize((128, 96)).save(folder / "NSI_a.png")
    capsys.readouterr()
    assert generate_main(ladder(folder, out, "--qps", "45", codecs="hevc")) == 0
    assert "made 1 of 2" in capsys.readouterr().out  # only the edited reference's point
    after = pd.read_csv(out / "manifest.csv").set_index("id")
    edited, kept = "NSI_a__HEVC__qp45", "SCI_b__HEVC__qp45"
    assert after.loc[edited, "reference_digest"] != before.loc[edited, "reference_digest"]
    assert after.loc[edited, "bits"] != before.loc[edited, "bits"]
    assert after.loc[kept].equals(before.loc[kept])
    message = f"holds a ladder of the references in {folder.resolve()}"
    one_line_error(capsys, ladder(refs, out, "--qps", "45", codecs="hevc"), message)
    other = tmp_path / "other"  # other names too: still another folder's ladder
    other.mkdir()
    (other / "AIGI_c.png").write_bytes((refs / "NSI_a.png").read_bytes())
    one_line_error(capsys, ladder(other, out, "--qps", "45", codecs="hevc"), message)
    assert sorted(p.name for p in (out / "meta").iterdir()) == [f"{edited}.json", f"{kept}.json"]


def test_bpp_targets_leave_the_qp_empty_and_record_the_target(tmp_path, refs):
    out = tmp_path / "out"
    assert generate_main(ladder(refs, out, "--bpp", "0.5", codecs="hevc")) == 0
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert set(manifest["codec_qp"]) == {""} and set(manifest["codec_target_bpp"]) == {0.5}
    assert ((manifest["bpp"] - 0.5).abs() / 0.5 < 0.25).all() and (manifest["bpp"] <= 0.5).all()


def test_targets_that_land_on_one_encode_say_why(tmp_path, refs, capsys):
    out = tmp_path / "out"
    assert generate_main(ladder(refs, out, "--bpp", "0.001,0.002", codecs="hevc")) == 0
    err = capsys.readouterr().err
    assert "NSI_a.png (hevc): targets 0.001, 0.002 bpp give the same encode (QP 51" in err
    assert "no setting fits below them" in err
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest.groupby("reference")["bits"].nunique().eq(1).all()


def test_the_ladder_explains_itself(capsys):
    with pytest.raises(SystemExit) as done:
        generate_main(["ladder", "--help"])
    assert done.value.code == 0
    assert "mode = Codec" in " ".join(capsys.readouterr().out.split())


def test_ladder_errors_are_one_line(tmp_path, refs, capsys, monkeypatch):
    out = tmp_path / "out"
    one_line_error(capsys, ladder(refs, out, "--qps", "37,52"), "avc QP must be 0–51, got 52")
    one_line_error(capsys, ladder(refs, out, "--qps", "52", codecs="hevc"), "hevc QP must be 0–51")
    one_line_error(capsys, ladder(refs, out, "--qps", "30", codecs=""), "--codecs lists no codec")
    one_line_error(capsys, ladder(refs, out, "--qps", "30", codecs=" , "), "lists no codec")
    for target in ("100", "0", "-1", "nan", "inf"):
        one_line_error(capsys, ladder(refs, out, "--bpp", target), "a target bpp must be")
    one_line_error(capsys, ladder(refs, out, "--qps", "30", codecs="jpeg"), "unknown codec 'jpeg'")
    one_line_error(capsys, ladder(refs, out, "--qps", "37,52"), "e.g. --qps avc=37,42,47,51")
    one_line_error(capsys, ladder(refs, out, "--qps", "30,30"), "--qps lists a value twice")
    one_line_error(capsys, ladder(refs, out, "--qps", "avc=30"), "no QPs for hevc")
    one_line_error(capsys, ladder(refs, out, "--qps", "vvc=30", "--qps", "30"), "names vvc")
    one_line_error(capsys, ladder(refs, out, "--qps", "30", "--qps", "31"), "gives the list of")
    monkeypatch.setattr(codec.shutil, "which", lambda name: None)
    one_line_error(capsys, ladder(refs, out, "--qps", "30", codecs="vvc"), "needs vvencapp")
    (refs.parent / "bad").mkdir()
    (refs.parent / "bad" / "NSI_x.png").write_text("not an image")
    one_line_error(capsys, ladder(refs.parent / "bad", out, "--qps", "30"), "not a readable image")
    Image.new("RGB", (32, 32)).save(refs.parent / "bad" / "NSI_x.png")
    one_line_error(capsys, ladder(refs.parent / "bad", out, "--qps", "30"), "32×32: too small")
    assert not (out / "manifest.csv").exists()
