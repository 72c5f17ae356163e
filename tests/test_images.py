"""``studydb.images.read_rgb``: every kind of file read as the 8-bit RGB a viewer sees, checked
pixel by pixel against a reference conversion written here in NumPy from the raw samples."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studydb.images import ImageReadError, read_rgb_array


def write_png16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour): greyscale (H, W),
    RGB (H, W, 3) or RGBA (H, W, 4) from uint16 samples."""
    data = np.asarray(samples, dtype=">u2")
    colour_type = 0 if data.ndim == 2 else {3: 2, 4: 6}[data.shape[2]]
    rows = b"".join(b"\0" + row.tobytes() for row in data)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", data.shape[1], data.shape[0], 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The reference compositing: round((c·α + 255·(255 − α)) / 255), in float64."""
    c, a = colour.astype(float), alpha.astype(float)[..., None]
    return np.round((c * a + 255 * (255 - a)) / 255).astype(np.uint8)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_a_16_bit_greyscale_png_is_not_read_as_white(tmp_path, rng):
    """It was: ``convert("RGB")`` clipped every sample above 255 (mean 233 against 116)."""
    raw = rng.integers(0, 65536, (9, 13)).astype(np.uint16)
    got = read_rgb_array(write_png16(tmp_path / "g16.png", raw))
    expected = np.repeat((raw >> 8).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(got, expected)
    assert abs(got.mean() - raw.mean() / 256) < 1


def test_16_bit_colour_and_alpha_pngs_pixel_by_pixel(tmp_path, rng):
    rgb = rng.integers(0, 65536, (7, 11, 3)).astype(np.uint16)
    np.testing.assert_array_equal(
        read_rgb_array(write_png16(tmp_path / "c16.png", rgb)), (rgb >> 8).astype(np.uint8)
    )
    rgba = rng.integers(0, 65536, (7, 11, 4)).astype(np.uint16)
    high = (rgba >> 8).astype(np.uint8)
    np.testing.assert_array_equal(
        read_rgb_array(write_png16(tmp_path / "a16.png", rgba)),
        over_white(high[..., :3], high[..., 3]),
    )


def test_alpha_is_composited_over_white_not_dropped(tmp_path, rng):
    rgba = rng.integers(0, 256, (6, 8, 4)).astype(np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: the page, not the hidden colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_rgb_array(tmp_path / "a.png")
    np.testing.assert_array_equal(got, over_white(rgba[..., :3], rgba[..., 3]))
    assert tuple(got[0, 0]) == (255, 255, 255)
    grey_alpha = rng.integers(0, 256, (6, 8, 2)).astype(np.uint8)
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    grey = np.repeat(grey_alpha[..., :1], 3, axis=2)
    np.testing.assert_array_equal(
        read_rgb_array(tmp_path / "la.png"), over_white(grey, grey_alpha[..., 1])
    )


def test_a_palette_image_with_a_transparent_entry(tmp_path, rng):
    palette = rng.integers(0, 256, (16, 3)).astype(np.uint8)
    index = rng.integers(0, 16, (5, 9)).astype(np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "p.png", transparency=3)
    alpha = np.where(index == 3, 0, 255)
    np.testing.assert_array_equal(
        read_rgb_array(tmp_path / "p.png"), over_white(palette[index], alpha)
    )


def test_cmyk_is_converted_by_the_multiplicative_formula(tmp_path, rng):
    cmyk = rng.integers(0, 256, (5, 7, 4)).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    c = cmyk.astype(float)
    expected = np.round((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)
    np.testing.assert_array_equal(read_rgb_array(tmp_path / "c.tif"), expected)


def test_exif_orientation_is_applied(tmp_path, rng):
    pixels = rng.integers(0, 256, (4, 6, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif)
    got = read_rgb_array(tmp_path / "rotated.png")
    np.testing.assert_array_equal(got, np.rot90(pixels, k=-1))


def test_plain_8_bit_rgb_and_grey_are_unchanged(tmp_path, rng):
    pixels = rng.integers(0, 256, (4, 6, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_rgb_array(tmp_path / "rgb.png"), pixels)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "l.png")
    np.testing.assert_array_equal(
        read_rgb_array(tmp_path / "l.png"), np.repeat(pixels[..., :1], 3, axis=2)
    )


def test_unreadable_and_floating_point_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match="junk.png: not a readable image"):
        read_rgb_array(tmp_path / "junk.png")
    with pytest.raises(ImageReadError, match="no such file|not a readable image"):
        read_rgb_array(tmp_path / "missing.png")
    Image.fromarray(np.ones((3, 3), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match="floating-point"):
        read_rgb_array(tmp_path / "f.tif")
