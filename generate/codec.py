"""Image mode's hint: the reference through a traditional codec at an ultra-low bitrate.

The paper uses VVC at QP 53 (~0.024 bpp, ~1,000× compression). VVC has no Python package, so this
module drives the encoders PyAV bundles — AV1 (libsvtav1), HEVC (libx265) and AVC (libx264) — on a
single frame (an intra picture), and VVC, the paper's codec, through the Fraunhofer command-line
tools ``vvencapp`` / ``vvdecapp`` when both are on PATH (``codec="vvc"``; not a Python package,
so never installed here).

**Rate.** The bits are what a decoder needs: the parameter sets and coded slices (AV1: sequence
header and frame OBUs) of the raw bitstream, no container, no informational SEI / metadata
(:mod:`generate.bitstream` states the rule). The image is decoded from exactly those bytes, and
:attr:`CodedImage.bitstream` keeps them so a caller can write them beside the image.

**Quantizer.** The QP asked for is the QP coded: the encoders' I-frame offsets are switched off
(x264 / x265 ``ipratio=1``, SVT-AV1 ``use-fixed-qindex-offsets=1:key-frame-qindex-offset=0``),
and a QP the encoder would clip (x264 above 51) is refused. AV1's 1–63 scale is coded as
base_q_idx ``bitstream.AV1_QINDEX[qp]`` (4 × QP; 62 → 249, 63 → 255).

Two ways to set the rate: a fixed quantizer (:func:`encode_at_qp`, the paper's way), or the bpp
search (:func:`encode_at_bpp`): the best quality whose rate is within a target bpp (bits per
pixel of the *original* image).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from generate.bitstream import decoder_stream

CODECS = {
    # name: (encoder, decoder, encoder options; "{qp}" is the quantizer)
    "av1": ("libsvtav1", "libdav1d", {"preset": "8", "svtav1-params":
            "rc=0:qp={qp}:aq-mode=0:use-fixed-qindex-offsets=1:key-frame-qindex-offset=0"}),
    "hevc": ("libx265", "hevc", {"qp": "{qp}", "x265-params":
             "info=0:log-level=error:ipratio=1:pbratio=1"}),
    "avc": ("libx264", "h264", {"qp": "{qp}", "x264-params":
            "ipratio=1:sliced-threads=0"}),
}  # fmt: skip
"""ipratio=1 / the fixed key-frame qindex offset 0: the intra frame is coded at the QP asked for
(by default x264 and x265 code it 3 QPs finer, SVT-AV1 lower still); sliced-threads=0: one
slice, whatever the machine's thread count (a slice per thread would change the bits)."""
QP_LIMITS = {"av1": (1, 63), "hevc": (0, 51), "avc": (0, 51), "vvc": (0, 63)}
"""The quantizers each encoder codes as asked (a fixed QP outside them is refused: x264 takes up
to 69 but codes every QP above 51 as 51); the bpp search looks over the whole of them."""
EXTENSIONS = {"avc": ".h264", "hevc": ".hevc", "av1": ".obu", "vvc": ".266"}
"""The suffix of a kept bitstream (Annex-B byte streams; AV1 a low-overhead OBU stream)."""
LABELS = {"avc": "AVC", "hevc": "HEVC", "av1": "AV1", "vvc": "VVC"}
"""How a codec is named in a manifest's ``model`` column (the paper's figure legends)."""
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration per frame otherwise

RAW_BPP = 24
"""Bits per pixel of the uncompressed 8-bit RGB image: a target at or above it is refused."""
SCALES = (1.0, 0.5, 0.25)
MIN_SIDE = 64  # the encoders' smallest comfortable frame


class CodecError(ValueError):
    """An image or codec choice the codec cannot handle; the message says which."""


@dataclass
class CodedImage:
    """A decoded low-bitrate image and what it cost."""

    image: np.ndarray
    """(height, width, 3) uint8, back at the original size."""
    bitstream: bytes
    """What a decoder needs (:func:`generate.bitstream.decoder_stream`); ``image`` decodes
    from it."""
    codec: str
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def bits(self) -> int:
        """The rate: the kept bitstream's bytes × 8."""
        return len(self.bitstream) * 8

    def bpp(self, height: int, width: int) -> float:
        return self.bits / (height * width)


def available(codec: str) -> bool:
    """Whether ``codec`` can be used on this machine."""
    if codec == "vvc":
        return shutil.which("vvencapp") is not None and shutil.which("vvdecapp") is not None
    if codec not in CODECS:
        return False
    import av

    encoder, decoder, _ = CODECS[codec]
    try:
        av.codec.Codec(encoder, "w")
        av.codec.Codec(decoder, "r")
    except Exception:  # PyAV raises its own UnknownCodecError
        return False
    return True


def check_target(target_bpp: float, option: str | None = None) -> None:
    """Refuse a target bpp no codec image can mean: not a number, ≤ 0, or at least the
    uncompressed image's 24 bpp (8-bit RGB); ``option`` (the command line's name for it)
    leads the message."""
    if not (math.isfinite(target_bpp) and 0 < target_bpp < RAW_BPP):
        raise CodecError(
            f"{f'{option}: ' if option else ''}a target bpp must be a number > 0 and below "
            f"{RAW_BPP} (the uncompressed 8-bit RGB image), got {target_bpp:g}"
        )


def encode_at_bpp(image: np.ndarray, target_bpp: float, codec: str = "av1") -> CodedImage:
    """The best encode whose rate is within ``target_bpp``.

    The rule: at each downscale factor, the finest quantizer whose rate is ≤ the target (found by
    bisection, since the size falls with the quantizer); of those, the one nearest the image in
    PSNR (ties: the larger scale). When no setting fits — the coarsest quantizer at the smallest
    scale is still above the target — the smallest encode is returned, and its
    ``settings["within_target"]`` is False (the caller says so).
    """
    check_target(target_bpp)
    height, width, _ = image.shape
    candidates = [
        _bisect_quality(image, target_bpp, codec, scale)
        for scale in SCALES
        if min(height, width) * scale >= MIN_SIDE
    ]
    if not candidates:
        raise CodecError(f"image {width}×{height} is too small to encode (min side {MIN_SIDE})")
    fitting = [c for c in candidates if c.bpp(height, width) <= target_bpp]
    if fitting:
        best = max(fitting, key=lambda c: (psnr(image, c.image), c.settings["scale"]))
    else:
        best = min(candidates, key=lambda c: c.bits)
    best.settings["within_target"] = bool(fitting)
    return best


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB of an 8-bit image against its reference (inf when identical)."""
    error = np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255**2 / error)


def check_size(reference: Path) -> None:
    """Refuse a reference file too small for the encoders, by name (its header only: cheap
    before a run or a ladder encodes anything)."""
    with Image.open(reference) as image:
        width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise CodecError(
            f"{Path(reference).name} is {width}×{height}: too small to encode (min side {MIN_SIDE})"
        )


def check_qp(codec: str, qp: int) -> None:
    """Refuse a codec this tool does not drive, or a quantizer its encoder would not code as is."""
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
    """Encode one frame at a fixed quantizer (and downscale), keep what a decoder needs of the
    bitstream, decode that, and restore the image's size.

    The encoders take 4:2:0 frames, so even sides: at full size an odd side is padded by
    repeating its last row or column and the decoded picture cropped back (a conformance
    window's job), so the image is exactly the bitstream's decode, not a resampling of it."""
    height, width, _ = image.shape
    if scale == 1.0:
        small = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    else:
        small = _resize(image, _even(width * scale), _even(height * scale))
    if codec == "vvc":
        kept, decoded = _vvc(small, quality)
    elif codec in CODECS:
        kept = decoder_stream(_encode_pyav(small, codec, quality), codec)
        decoded = _decode_pyav(kept, codec)
    else:
        raise CodecError(f"unknown codec '{codec}' (choose from {', '.join(CODECS)}, vvc)")
    return CodedImage(
        image=decoded[:height, :width] if scale == 1.0 else _resize(decoded, width, height),
        bitstream=kept,
        codec=codec,
        settings={"quality": quality, "scale": scale, "encoder": CODECS.get(codec, ("vvenc",))[0]},
    )


def _bisect_quality(image: np.ndarray, target_bpp: float, codec: str, scale: float) -> CodedImage:
    """The finest quantizer at ``scale`` whose rate is within the target (else the coarsest)."""
    height, width, _ = image.shape
    finest, coarsest = QP_LIMITS[codec]
    qualities = range(finest, coarsest + 1)  # the encoder's whole scale
    low, high = 0, len(qualities) - 1
    tried: dict[int, CodedImage] = {}
    while low <= high:
        middle = (low + high) // 2
        tried[middle] = encode(image, qualities[middle], codec, scale)
        if tried[middle].bpp(height, width) > target_bpp:
            low = middle + 1  # too big: quantize harder
        else:
            high = middle - 1
    fitting = [i for i, c in tried.items() if c.bpp(height, width) <= target_bpp]
    return tried[min(fitting)] if fitting else tried[max(tried)]


def _encode_pyav(
    image: np.ndarray, codec: str, quality: int, options: dict[str, str] | None = None
) -> bytes:
    """The encoder's whole output for one frame (``options``: the codec's own unless given)."""
    import av

    encoder, _, own = CODECS[codec]
    options = own if options is None else options
    context = av.CodecContext.create(encoder, "w")
    context.width, context.height = image.shape[1], image.shape[0]
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, 25)
    context.options = {key: value.format(qp=quality) for key, value in options.items()}
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    packets = list(context.encode(frame)) + list(context.encode(None))
    return b"".join(bytes(packet) for packet in packets)


def _decode_pyav(bitstream: bytes, codec: str) -> np.ndarray:
    import av

    context = av.CodecContext.create(CODECS[codec][1], "r")
    frames = []
    for packet in context.parse(bitstream) + context.parse(None):
        frames.extend(context.decode(packet))
    frames.extend(context.decode(None))
    if not frames:
        raise RuntimeError(f"{codec}: the decoder returned no frame")
    return frames[-1].to_ndarray(format="rgb24")


def _vvc(image: np.ndarray, qp: int) -> tuple[bytes, np.ndarray]:
    """One frame through vvencapp / vvdecapp as raw 8-bit I420 (no container either); the
    decoder reads only the kept NAL units."""
    import av

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
        subprocess.run(encode, cwd=work, check=True, capture_output=True)
        kept = decoder_stream((work / "out.266").read_bytes(), "vvc")
        (work / "kept.266").write_bytes(kept)
        decode = ["vvdecapp", "-b", "kept.266", "-o", "out.yuv", "-d", "8"]  # fmt: skip
        subprocess.run(decode, cwd=work, check=True, capture_output=True)
        yuv = np.frombuffer((work / "out.yuv").read_bytes(), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(yuv.reshape(height * 3 // 2, width), format="yuv420p")
    return kept, frame.to_ndarray(format="rgb24")


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def _even(value: float) -> int:
    """yuv420p needs even sides."""
    return max(2, int(round(value / 2)) * 2)
