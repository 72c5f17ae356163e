"""A codec ladder made in the tests and the README's demo with generate's real encoders, until
``python -m generate ladder`` (issue 14's generate side) replaces it: every reference at a few
QPs per codec, bits = the raw bitstream, rows in the manifest contract (mode Codec, codec_qp)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from generate import codec

LADDER = {"HEVC": ("hevc", (24, 32, 40, 48)), "AV1": ("av1", (30, 40, 50, 60))}


def write_ladder(references: list[Path], out: Path, ladder: dict = LADDER) -> Path:
    """Encode every reference at every (codec, QP) of ``ladder``; returns the manifest's path."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model, (name, qps) in ladder.items():
        for qp in qps:
            for ref in references:
                image = np.asarray(Image.open(ref).convert("RGB"))
                coded = codec.encode(image, qp, name)
                path = out / f"{model}_{qp}_{ref.stem}.png"
                Image.fromarray(coded.image).save(path)
                height, width, _ = image.shape
                rows.append({"id": path.stem, "distorted_path": path.name,
                             "reference_path": str(Path(ref).resolve()), "reference": ref.stem,
                             "content_type": "", "model": model, "mode": "Codec",
                             "codec_qp": qp, "bits": coded.bits,
                             "bpp": coded.bits / (height * width)})  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"
