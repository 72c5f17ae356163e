"""The one way every stage reads an image: whatever the file holds, 8-bit sRGB-ordered RGB pixels
as a viewer shows them.

``Image.open(path).convert("RGB")`` alone is wrong for several ordinary files, silently:

- a 16-bit greyscale PNG (mode ``I;16``/``I``) is clipped at 255, so most pixels turn white;
- an image with transparency (``RGBA``, ``LA``, a palette with a transparent entry) loses its
  alpha and shows the colours hidden under transparent pixels;
- a photo whose camera stored the orientation in EXIF is read lying on its side.

Rules (the same for every stage, so a study, its metrics and its training see the same pixels):
16-bit samples keep their high byte (``v >> 8``, libpng's ``png_set_strip_16``, which is also what
Pillow does for 16-bit colour PNGs); transparency is composited over white (:data:`BACKGROUND`,
the page the rating app shows images on); EXIF orientation is applied; CMYK goes through Pillow's
``(255 − C)(255 − K)/255`` conversion; greyscale is repeated in the three channels. Images whose
samples are floating point (mode ``F``) have no defined 8-bit meaning and are refused.

Lives in ``studydb`` because every stage may import it; it needs Pillow and NumPy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)
"""What transparent pixels are composited over: white, the study pages' background."""


class ImageReadError(ValueError):
    """A file that is not an image this reader can turn into 8-bit RGB; the message names it."""


def read_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as an 8-bit RGB PIL image, converted by the rules of this module.

    Raises :class:`ImageReadError` (one line naming the file) for a missing, unreadable or
    floating-point image."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return to_rgb(ImageOps.exif_transpose(opened))
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        if isinstance(error, ImageReadError):
            raise
        raise ImageReadError(f"{path}: not a readable image ({error})") from error


def read_rgb_array(path: str | Path) -> np.ndarray:
    """:func:`read_rgb` as an (H, W, 3) uint8 array."""
    return np.asarray(read_rgb(path))


def to_rgb(image: Image.Image) -> Image.Image:
    """An already opened image as 8-bit RGB (see the module's rules); EXIF is not looked at."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "F":
        raise ImageReadError(
            f"{getattr(image, 'filename', '') or 'image'}: floating-point samples (mode F) have "
            "no defined 8-bit meaning; convert it to 8- or 16-bit first"
        )
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I (16-bit greyscale PNG/TIFF)
        return Image.fromarray(_high_byte(np.asarray(image))).convert("RGB")
    if mode == "P" and "transparency" in image.info or mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        return Image.fromarray(_over_background(np.asarray(image.convert("RGBA"))))
    return image.convert("RGB")


def _over_background(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 composited over :data:`BACKGROUND`: round((c·α + b·(255 − α)) / 255)."""
    colour, alpha = rgba[..., :3].astype(np.float64), rgba[..., 3:].astype(np.float64)
    mixed = (colour * alpha + np.array(BACKGROUND, float) * (255 - alpha)) / 255
    return np.round(mixed).astype(np.uint8)


def _high_byte(values: np.ndarray) -> np.ndarray:
    """16-bit samples as 8-bit: the high byte. Values beyond 16 bits (a 32-bit integer image)
    are clipped to the 16-bit range first."""
    return (np.clip(values.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
