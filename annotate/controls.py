"""The images of the online quality controls, made so that a short script cannot pass them.

- **Gold pairs** are never the reference's own file: a "same" pair shows a fresh, visually
  lossless re-encoding of the reference (each odd sample rounded at random to an even
  neighbour, seeded by the app's secret: a smaller file, as a distorted image is, and its
  bytes and length differ from the reference's and no outsider can recompute them; no metadata
  is added, but where the image does not compress and so keeps its length), in the
  format of the study's own distorted images (a PNG among JPEGs would give it away by its
  Content-Type). The "low" pair is the practice's worst damage, re-encoded the same way (its
  bytes differ from the practice image a participant already downloaded).
- **Attention checks** are drawn into the image to rate (a box with the instruction), never in
  the page text: reading them takes looking at the picture.
- **The contrast test** draws its digits a few grey levels above a background that runs through
  a gradient and grain much wider than that step, so no single grey threshold separates digits
  from background: the eye reads local contrast, a global threshold does not.

What these cannot stop (docs/annotate.md says it too): a person helping a bot, OCR on the
attention box, a script that compares the two images pixel by pixel and randomises its timing.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

GRADIENT = 48
"""The contrast test's background runs this many grey levels either side of mid-grey."""
GRAIN = 3.0
"""Standard deviation of the contrast test background's grain, in grey levels."""
CONTRAST_SIZE = (360, 120)


def seed_of(secret: str, *parts: str) -> int:
    """A seed no participant can recompute: the app's secret and what the image is for."""
    digest = hashlib.sha256("|".join((secret, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def reencoded(source: Path, target: Path, seed: int) -> Path:
    """A visually lossless copy of ``source`` at ``target`` (format from its suffix), written
    once (atomically: a parallel request never reads half a file)."""
    if target.is_file():
        return target
    with Image.open(source) as opened:
        image = np.asarray(opened.convert("RGB"), dtype=np.int16)
    rng = np.random.default_rng(seed)
    # Each odd colour sample moves to a random even neighbour (±1 grey level, PSNR ≈ 51 dB):
    # invisible, its bytes differ, and the copy loses a bit of noise as a distorted image
    # does — never gains it, which would make the one image larger than its reference.
    nudge = rng.choice((-1, 1), size=image.shape) * (image % 2)
    dithered = Image.fromarray(np.clip(image + nudge, 0, 254).astype(np.uint8))
    encoded = _encoded(dithered, target.suffix)
    if len(encoded) == source.stat().st_size:
        # An image that does not compress (noise) encodes to the same length whatever its
        # pixels: only then a comment of random length makes the copy's length differ. Never
        # otherwise: a comment that no study image carries would itself mark the gold pair.
        encoded = _encoded(dithered, target.suffix, rng.bytes(int(rng.integers(16, 1024))).hex())
    return _write(encoded, target)


def attention_image(source: Path, target: Path, asked: float) -> Path:
    """``source`` with a box in its middle that asks for consistency ``asked`` (written once)."""
    if target.is_file():
        return target
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    lines = ("ATTENTION CHECK", f"Set Consistency to {asked:.1f} (key {int(asked) + 1})")
    draw = ImageDraw.Draw(image)
    size = max(8, image.width // 12)
    while True:
        font = ImageFont.load_default(size=size)
        boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
        width = max(b[2] - b[0] for b in boxes)
        if width <= 0.85 * image.width or size <= 8:
            break
        size -= 1
    line_height = max(b[3] - b[1] for b in boxes) + size // 3
    pad = size // 2
    centre_x, centre_y = image.width / 2, image.height / 2
    top = centre_y - line_height * len(lines) / 2
    draw.rectangle(
        (centre_x - width / 2 - pad, top - pad, centre_x + width / 2 + pad,
         top + line_height * len(lines) + pad),
        fill=(255, 210, 77), outline=(17, 17, 17),
    )  # fmt: skip
    for i, line in enumerate(lines):
        draw.text(
            (centre_x, top + line_height * (i + 0.5)), line, fill=(17, 17, 17), font=font,
            anchor="mm",
        )  # fmt: skip
    return _write(_encoded(image, target.suffix), target)


def contrast_png(digits: str, level: int, seed: int) -> bytes:
    """The display check's image: ``digits`` ``level`` grey levels above a graded, grainy
    background (see the module's docstring)."""
    return _png(contrast_pixels(digits, level, seed)[0])


def contrast_pixels(digits: str, level: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(grey image, digit mask) of the contrast test, for :func:`contrast_png` and its tests."""
    width, height = CONTRAST_SIZE
    x = np.linspace(-1, 1, width)[None, :]
    y = np.linspace(-1, 1, height)[:, None]
    rng = np.random.default_rng(seed)
    tilt = rng.uniform(0.2, 0.4)  # the gradient's direction differs from try to try
    background = 128 + GRADIENT * np.clip(x * (1 - tilt) + y * tilt, -1, 1)
    background = background + rng.normal(0, GRAIN, background.shape)
    mask_image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask_image).text(
        (width / 2, height / 2), digits, fill=255, font=ImageFont.load_default(size=64),
        anchor="mm",
    )  # fmt: skip
    mask = np.asarray(mask_image) > 127
    pixels = np.clip(np.round(background + level * mask), 0, 255).astype(np.uint8)
    return pixels, mask


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(image: Image.Image, suffix: str, comment: str = "") -> bytes:
    """``image`` encoded in the format of ``suffix`` (with ``comment``, if any)."""
    suffix = suffix.lower()
    options: dict = {"format": Image.registered_extensions()[suffix]}
    if suffix in (".jpg", ".jpeg", ".webp"):
        options["quality"] = 95
    if suffix in (".jpg", ".jpeg") and comment:
        options["comment"] = comment
    elif suffix == ".png" and comment:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", comment)
        options["pnginfo"] = info
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


def _write(encoded: bytes, target: Path) -> Path:
    """Write ``encoded`` at ``target`` atomically: a parallel request never reads half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(
        f".{target.stem}.{os.getpid()}.{threading.get_ident()}{target.suffix}"
    )
    partial.write_bytes(encoded)
    partial.replace(target)
    return target
