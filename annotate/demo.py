"""``python -m annotate demo``: a small study from the images that ship with the package.

Five public-domain / CC0 photographs (``annotate/demo_data/LICENSES.md``) are distorted with the
generator's real encoders — the Image-mode codec at several bitrates and the Pixel-mode blocks —
written with a manifest in the generator's format, imported, and served. Diffusion decoders need
model weights, which the demo does not assume; once ``generate`` runs with weights, its manifest
imports the same way.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pandas as pd
from flask import Config
from PIL import Image
from tqdm import tqdm
from werkzeug.security import generate_password_hash

from annotate.private import PASSWORD_FILE, write_private
from generate import codec, pixel
from studydb.images import read_rgb_array

DEMO_DATA = Path(__file__).parent / "demo_data"
CODEC_BPP = (0.08, 0.2, 0.6)  # three bitrates: clearly bad to fairly good
PIXEL_BLOCK = 32  # the demo images are small; the paper's 64 would leave a 5 × 4 thumbnail
DEMO_WARMUP_TRIALS = 2  # a 20-image demo needs fewer warm-ups than a 400-image sitting
OWN_KEYS = ("DATABASE", "SECRET_KEY", "ADMIN_PASSWORD_HASH")
"""The demo keeps its own database, key and password even when the lab's config sets them."""


def build_demo(folder: Path) -> Path:
    """Write references, distortions and ``manifest.csv`` into ``folder``; return the manifest."""
    references = sorted(DEMO_DATA.glob("*.png"))
    (folder / "references").mkdir(parents=True, exist_ok=True)
    (folder / "distorted").mkdir(parents=True, exist_ok=True)
    engine = "av1" if codec.available("av1") else "hevc"
    rows = []
    for path in tqdm(references, desc="distorting demo images", leave=False):
        image = read_rgb_array(path)
        height, width, _ = image.shape
        reference = folder / "references" / path.name
        Image.fromarray(image).save(reference)
        for target in CODEC_BPP:
            coded = codec.encode_at_bpp(image, target, engine)
            name = f"{path.stem}_{engine}_{target:g}bpp.png"
            Image.fromarray(coded.image).save(folder / "distorted" / name)
            rows.append(_row(path.stem, name, "Image", coded.bits, width, height, engine, coded))
        hint = pixel.encode(image, block=PIXEL_BLOCK)
        name = f"{path.stem}_pixel{PIXEL_BLOCK}.png"
        Image.fromarray(pixel.start_image(hint, (width, height))).save(folder / "distorted" / name)
        rows.append(_row(path.stem, name, "Pixel", hint.bits, width, height, "pixel", None))
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def training_order(manifest: Path) -> list[str]:
    """Practice examples across the range: one reference's distortions, worst (fewest bits) first."""
    frame = pd.read_csv(manifest)
    first = frame[frame["reference"] == frame["reference"].iloc[0]]
    return first.sort_values("bits")["id"].tolist()


def demo_defaults(manifest: Path, lab_config: Path) -> dict[str, Any]:
    """The demo's own choices, overridden by every study key of the lab's ``config.py``.

    The result sits *below* the demo instance's own ``config.py`` (see ``create_app``), so a key
    set in either file wins over the demo's choices; the lab's database, secret key and password
    are never taken over.
    """
    defaults: dict[str, Any] = {
        "TRAINING_STIMULI": training_order(manifest),
        "WARMUP_TRIALS": DEMO_WARMUP_TRIALS,
    }
    lab = Config(lab_config.parent)
    lab.from_pyfile(lab_config.name, silent=True)
    defaults.update({k: v for k, v in lab.items() if k not in OWN_KEYS})
    return defaults


def demo_password(instance: Path) -> str:
    """A fresh random admin password for the demo (there is never a default one)."""
    password = secrets.token_urlsafe(9)
    write_private(instance / PASSWORD_FILE, generate_password_hash(password))
    return password


def _row(reference, name, mode, bits, width, height, engine, coded) -> dict:
    return {
        "id": Path(name).stem,
        "distorted_path": f"distorted/{name}",
        "reference_path": f"references/{reference}.png",
        "reference": reference,
        "model": "none (encoder only)",
        "mode": mode,
        "strength": "",
        "content_type": "NSI",
        "codec": engine,
        "codec_settings": "" if coded is None else str(coded.settings),
        "bits": bits,
        "bpp": round(bits / (width * height), 5),
        "compression_ratio": round(24 * width * height / bits, 1),
    }
