"""Image mode's hint: the reference through a traditional codec at an ultra-low bitrate.

The paper uses VVC at QP 53 (~0.024 bpp, ~1,000× compression). VVC has no Python package, so this
module drives the encoders PyAV bundles — AV1 (libsvtav1), HEVC (libx265) and AVC (libx264) — on a
single frame (an intra picture) and keeps the raw bitstream, so no container overhead is counted.
Two ways to set the rate: a fixed quantizer (:func:`encode_at_qp`, the paper's way), or a search of
the quantizer, and a downscale factor, for the setting whose size lands closest to a target bpp
(bits per pixel of the *original* image; :func:`encode_at_bpp`). VVC, the paper's codec (QP 53), is used through the
Fraunhofer command-line tools ``vvencapp`` / ``vvdecapp`` when both are on PATH (``codec="vvc"``);
they are not a Python package, so it is never installed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

CODECS = {
    # name: (encoder, decoder, quality option, quality range searched, encoder options)
    "av1": ("libsvtav1", "libdav1d", "qp", range(20, 64), {"preset": "8"}),
    "hevc": ("libx265", "hevc", "qp", range(20, 52), {"x265-params": "info=0:log-level=error"}),
    "avc": ("libx264", "h264", "qp", range(20, 70), {}),
}
QP_LIMITS = {"av1": (1, 63), "hevc": (0, 51), "avc": (0, 69), "vvc": (0, 63)}
"""The quantizers each encoder accepts (a fixed ``--codec-qp`` outside them is refused)."""
LABELS = {"avc": "AVC", "hevc": "HEVC", "av1": "AV1", "vvc": "VVC"}
"""How a codec is named in a manifest's ``model`` column (the paper's figure legends)."""
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration per frame otherwise

SCALES = (1.0, 0.5, 0.25)
MIN_SIDE = 64  # the encoders' smallest comfortable frame


class CodecError(ValueError):
    """An image or codec choice the codec cannot handle; the message says which."""


@dataclass
class CodedImage:
    """A decoded low-bitrate image and what it cost."""

    image: np.ndarray
    """(height, width, 3) uint8, back at the original size."""
    bits: int
    """Bitstream bytes × 8."""
    codec: str
    settings: dict[str, object] = field(default_factory=dict)

    def bpp(self, height: int, width: int) -> float:
        return self.bits / (height * width)


VVC_QUALITIES = range(20, 64)


def available(codec: str) -> bool:
    """Whether ``codec`` can be used on this machine."""
    if codec == "vvc":
        return shutil.which("vvencapp") is not None and shutil.which("vvdecapp") is not None
    if codec not in CODECS:
        return False
    encoder, decoder, *_ = CODECS[codec]
    try:
        av.codec.Codec(encoder, "w")
        av.codec.Codec(decoder, "r")
    except Exception:  # PyAV raises its own UnknownCodecError
        return False
    return True


def encode_at_bpp(image: np.ndarray, target_bpp: float, codec: str = "av1") -> CodedImage:
    """The (quality, scale) setting whose bitstream is closest to ``target_bpp``.

    Size falls monotonically with the quantizer, so each scale is searched by bisection; the
    closest of all scales wins (ties: the larger scale, which keeps more detail).
    """
    height, width, _ = image.shape
    best: CodedImage | None = None
    for scale in SCALES:
        if min(height, width) * scale < MIN_SIDE:
            continue
        candidate = _bisect_quality(image, target_bpp, codec, scale)
        if best is None or abs(candidate.bpp(height, width) - target_bpp) < abs(
            best.bpp(height, width) - target_bpp
        ):
            best = candidate
    if best is None:
        raise CodecError(f"image {width}×{height} is too small to encode (min side {MIN_SIDE})")
    return best


def check_qp(codec: str, qp: int) -> None:
    """Refuse a codec this tool does not drive, or a quantizer its encoder does not accept."""
    if codec not in QP_LIMITS:
        raise CodecError(f"unknown codec '{codec}' (choose from {', '.join(QP_LIMITS)})")
    low, high = QP_LIMITS[codec]
    if not low <= qp <= high:
        raise CodecError(f"{codec} QP must be {low}–{high}, got {qp}")


def encode_at_qp(image: np.ndarray, qp: int, codec: str = "av1") -> CodedImage:
    """One frame at a fixed quantizer and full size: the paper's way (VVC at QP 53)."""
    check_qp(codec, qp)
    height, width, _ = image.shape
    if min(height, width) < MIN_SIDE:
        raise CodecError(f"image {width}×{height} is too small to encode (min side {MIN_SIDE})")
    return encode(image, qp, codec)


def encode(image: np.ndarray, quality: int, codec: str = "av1", scale: float = 1.0) -> CodedImage:
    """Encode one frame at a fixed quantizer (and downscale), decode it, and restore its size."""
    height, width, _ = image.shape
    small = _resize(image, _even(width * scale), _even(height * scale))
    if codec == "vvc":
        bitstream, decoded = _vvc(small, quality)
    elif codec in CODECS:
        bitstream = _encode_pyav(small, codec, quality)
        decoded = _decode_pyav(bitstream, codec)
    else:
        raise CodecError(f"unknown codec '{codec}' (choose from {', '.join(CODECS)}, vvc)")
    restored = _resize(decoded, width, height)
    return CodedImage(
        image=restored,
        bits=len(bitstream) * 8,
        codec=codec,
        settings={"quality": quality, "scale": scale, "encoder": CODECS.get(codec, ("vvenc",))[0]},
    )


def _bisect_quality(image: np.ndarray, target_bpp: float, codec: str, scale: float) -> CodedImage:
    height, width, _ = image.shape
    qualities = list(VVC_QUALITIES if codec == "vvc" else CODECS[codec][3])
    low, high = 0, len(qualities) - 1
    tried: dict[int, CodedImage] = {}
    while low <= high:
        middle = (low + high) // 2
        tried[middle] = encode(image, qualities[middle], codec, scale)
        if tried[middle].bpp(height, width) > target_bpp:
            low = middle + 1  # too big: quantize harder
        else:
            high = middle - 1
    return min(tried.values(), key=lambda c: abs(c.bpp(height, width) - target_bpp))


def _encode_pyav(image: np.ndarray, codec: str, quality: int) -> bytes:
    encoder, _, option, _, options = CODECS[codec]
    context = av.CodecContext.create(encoder, "w")
    context.width, context.height = image.shape[1], image.shape[0]
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, 25)
    context.options = {**options, option: str(quality)}
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    packets = list(context.encode(frame)) + list(context.encode(None))
    return b"".join(bytes(packet) for packet in packets)


def _decode_pyav(bitstream: bytes, codec: str) -> np.ndarray:
    context = av.CodecContext.create(CODECS[codec][1], "r")
    frames = []
    for packet in context.parse(bitstream) + context.parse(None):
        frames.extend(context.decode(packet))
    frames.extend(context.decode(None))
    if not frames:
        raise RuntimeError(f"{codec}: the decoder returned no frame")
    return frames[-1].to_ndarray(format="rgb24")


def _vvc(image: np.ndarray, qp: int) -> tuple[bytes, np.ndarray]:
    """One frame through vvencapp / vvdecapp as raw 8-bit I420 (no container either)."""
    if not available("vvc"):
        raise CodecError("codec 'vvc' needs the vvencapp and vvdecapp binaries on PATH")
    height, width, _ = image.shape
    planes = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    with tempfile.TemporaryDirectory(prefix="cmc-vvc-") as folder:
        work = Path(folder)
        (work / "in.yuv").write_bytes(planes.to_ndarray().tobytes())
        encode = [
            "vvencapp",
            "-i",
            "in.yuv",
            "-s",
            f"{width}x{height}",
            "-c",
            "yuv420",
            "-r",
            "25",
            "-f",
            "1",
            "-q",
            str(qp),
            "--preset",
            "medium",
            "-o",
            "out.266",
        ]
        decode = ["vvdecapp", "-b", "out.266", "-o", "out.yuv", "-d", "8"]  # fmt: skip
        for command in (encode, decode):
            subprocess.run(command, cwd=work, check=True, capture_output=True)
        bitstream = (work / "out.266").read_bytes()
        yuv = np.frombuffer((work / "out.yuv").read_bytes(), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(yuv.reshape(height * 3 // 2, width), format="yuv420p")
    return bitstream, frame.to_ndarray(format="rgb24")


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def _even(value: float) -> int:
    """yuv420p needs even sides."""
    return max(2, int(round(value / 2)) * 2)
