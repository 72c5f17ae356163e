"""Issue 21: a codec anchor's rate is what a decoder needs, its QP the QP coded, and the bpp
search keeps the best encode within the target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from generate import bitstream, codec, hints
from tests.test_generate import DEMO

QPS = {"avc": (0, 20, 37, 48, 51), "hevc": (20, 37, 51), "av1": (1, 20, 40, 62, 63)}


@pytest.fixture(scope="module")
def image():
    return np.asarray(Image.open(DEMO / "coffee.png").convert("RGB").resize((256, 192)))


def units(stream: bytes, name: str) -> list[tuple[int, bytes, bytes]]:
    return list(bitstream.obus(stream) if name == "av1" else bitstream.nal_units(stream, name))


# --- Rate = what a decoder needs -------------------------------------------------------------


@pytest.mark.parametrize("name", ["avc", "hevc", "av1"])
def test_the_counted_stream_is_a_reencodes_decodable_units_and_decodes_to_the_same_pixels(
    image, name
):
    coded = codec.encode_at_qp(image, 40, name)
    full = codec._encode_pyav(image, name, 40)  # a re-encode: the encoder's whole output
    assert b"".join(raw for *_, raw in units(full, name)) == full  # the split loses no byte
    kept_types = {"avc": {5, 7, 8}, "hevc": {19, 20, 32, 33, 34}, "av1": {1, 6}}[name]
    kept = b"".join(raw for kind, _, raw in units(full, name) if kind in kept_types)
    assert coded.bitstream == kept and coded.bits == 8 * len(kept)
    np.testing.assert_array_equal(codec._decode_pyav(kept, name), codec._decode_pyav(full, name))
    np.testing.assert_array_equal(coded.image, codec._decode_pyav(full, name))


def test_x264s_version_sei_is_not_charged(image):
    full = codec._encode_pyav(image, "avc", 51)
    sei = [raw for kind, _, raw in units(full, "avc") if kind == 6]
    assert len(sei) == 1 and b"x264 - core" in sei[0] and len(sei[0]) > 500
    coded = codec.encode_at_qp(image, 51, "avc")
    assert coded.bits == 8 * (len(full) - len(sei[0]))
    assert [kind for kind, *_ in units(coded.bitstream, "avc")] == [7, 8, 5]  # one slice


def test_av1_drops_the_temporal_delimiter_and_metadata():
    # A temporal delimiter, a metadata OBU and a padding OBU around a (fake) sequence header:
    # only the sequence header is kept, byte for byte.
    header = bytes([1 << 3 | 2, 3, 0xAA, 0xBB, 0xCC])
    stream = bytes([2 << 3 | 2, 0]) + bytes([5 << 3 | 2, 1, 7]) + header + bytes([15 << 3 | 2, 0])
    assert bitstream.decoder_stream(stream, "av1") == header
    with pytest.raises(bitstream.BitstreamError, match="truncated"):
        list(bitstream.obus(header[:-1]))


def test_annex_b_units_keep_their_start_codes_and_drop_sei_aud_and_filler():
    sps, pps, slice_ = (
        b"\x00\x00\x00\x01\x67\x42",
        b"\x00\x00\x00\x01\x68\xce",
        b"\x00\x00\x01\x65\x88",
    )
    aud, sei, filler = (
        b"\x00\x00\x00\x01\x09\xf0",
        b"\x00\x00\x01\x06\x05\x01",
        b"\x00\x00\x01\x0c\xff",
    )
    stream = aud + sps + pps + sei + slice_ + filler
    assert bitstream.decoder_stream(stream, "avc") == sps + pps + slice_


# --- The QP asked for is the QP coded --------------------------------------------------------


@pytest.mark.parametrize("name", ["avc", "hevc", "av1"])
def test_the_qp_asked_for_is_the_qp_read_back_from_the_bitstream(image, name):
    for qp in QPS[name]:
        coded = codec.encode_at_qp(image, qp, name)
        expected = bitstream.AV1_QINDEX[qp] if name == "av1" else qp
        assert bitstream.coded_qp(coded.bitstream, name) == expected, (name, qp)


def test_the_av1_qindex_table_is_four_times_the_qp_up_to_its_two_top_steps():
    assert len(bitstream.AV1_QINDEX) == 64
    assert bitstream.AV1_QINDEX[:62] == tuple(4 * q for q in range(62))
    assert bitstream.AV1_QINDEX[62:] == (249, 255)


@pytest.mark.parametrize(
    ("name", "qp", "message"),
    [("avc", 52, "avc QP must be 0–51"), ("avc", 69, "avc QP must be 0–51"),
     ("hevc", 52, "hevc QP must be 0–51"), ("av1", 0, "av1 QP must be 1–63"),
     ("av1", 64, "av1 QP must be 1–63")],
)  # fmt: skip
def test_a_qp_the_encoder_would_clip_is_refused(image, name, qp, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.encode_at_qp(image, qp, name)


def test_the_bit_reader_reads_exp_golomb_and_removes_emulation_prevention():
    # 1 | 010 | 011 | 00100 | 00101 → ue 0, 1, 2, 3, 4; then se 1 (010) and −1 (011)
    reader = bitstream.BitReader(bytes([0b10100110, 0b01000010, 0b10100110]))
    assert [reader.ue() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert [reader.se(), reader.se()] == [1, -1]
    assert bitstream.rbsp(b"\x00\x00\x03\x01\x00\x00\x03") == b"\x00\x00\x01\x00\x00"
    # ns(5): values 0–2 in two bits; "11" is 3 or 4, the third bit says which
    assert bitstream.BitReader(bytes([0b01000000])).ns(5) == 1
    assert bitstream.BitReader(bytes([0b11100000])).ns(5) == 4
    with pytest.raises(bitstream.BitstreamError, match="past the end"):
        bitstream.BitReader(b"\x00").ue()


# --- The bpp search: the best quality within the target --------------------------------------


@pytest.mark.parametrize(("name", "target"), [("av1", 0.064), ("avc", 0.2), ("hevc", 0.1)])
def test_the_bpp_search_keeps_the_best_encode_within_the_target(image, name, target):
    height, width, _ = image.shape
    found = codec.encode_at_bpp(image, target, name)
    assert found.bpp(height, width) <= target and found.settings["within_target"] is True
    every = [
        codec.encode(image, quality, name, scale)
        for scale in (1.0, 0.5)
        for quality in range(codec.QP_LIMITS[name][0], codec.QP_LIMITS[name][1] + 1)
    ]
    fitting = [c for c in every if c.bpp(height, width) <= target]
    best = max(codec.psnr(image, c.image) for c in fitting)
    assert codec.psnr(image, found.image) == pytest.approx(best)


def test_a_target_no_setting_reaches_gives_the_smallest_encode_and_says_so(image):
    found = codec.encode_at_bpp(image, 0.001, "hevc")
    assert found.settings["within_target"] is False
    assert found.settings["quality"] == 51 and found.settings["scale"] == 0.5
    warning = hints.rate_warning("x.png", found.bpp(192, 256), 0.001, within_target=False)
    assert "no setting fits" in warning
    assert "best encode within" in hints.rate_warning("x.png", 0.01, 0.1)  # far below


@pytest.mark.parametrize("target", [100, 24, 0, -0.1, math.nan, math.inf])
def test_absurd_targets_are_refused(image, target):
    with pytest.raises(codec.CodecError, match="a target bpp must be a number > 0 and below 24"):
        codec.encode_at_bpp(image, target, "hevc")
