"""Regenerate docs/compare.png, the figure in docs/compare.md of ``python -m compare``, from the demo photos.

python docs/compare_demo.py [--work DIR]

The five demo photographs (annotate/demo_data/*.png), resized to 768×512 as in
bench/codec_qp.py, go through the real workflow: ``generate ladder`` codes them with AVC, HEVC
and AV1 at four target rates (``--bpp``, searched per image, down to CMC's rates: a fixed QP
cannot bring HEVC or AV1 that low), ``generate run`` decodes them in every CMC mode with two
*tiny random-weight* decoders (``python -m generate tiny-models``, in the SD-1.5 and SDXL layouts), and
``python -m compare`` scores everything offline with PSNR, a random-weight CLIP (CLIPSIM) and
FID on a random Inception (three metrics only: at 768×512 on a shared 2-core CPU, pyiqa's SSIM
took 6 s an image and each network 2–3 s). Everything runs on a CPU without
downloads — so the CMC curves say nothing about CMC: a real study uses real decoders and real
metric weights, with the same commands.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compare.__main__ import main as compare_main  # noqa: E402
from generate.__main__ import main as generate_main  # noqa: E402
from generate.tiny import write_tiny_models  # noqa: E402

DEMO = ROOT / "annotate" / "demo_data"
SIZE = (768, 512)
# the codecs' rates reach down to CMC's Image / Full modes (the run's default 0.024 bpp hint)
LADDER_BPP = "0.008,0.016,0.032,0.064"
CAPTIONS = {
    "astronaut.png": "An astronaut in a white suit in front of an American flag.",
    "chelsea.png": "A tabby cat lying on a wooden floor.",
    "coffee.png": "A cup of coffee on a saucer, seen from above.",
    "hubble.png": "A deep-field image of many galaxies in space.",
    "rocket.png": "A rocket on its launch pad under a blue sky.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "compare.png")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="compare-demo-"))
    refs = work / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    for path in sorted(DEMO.glob("*.png")):
        Image.open(path).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS).save(
            refs / path.name
        )
    ladder = work / "ladder"
    code = generate_main(["ladder", "--references", str(refs), "--out", str(ladder),
                          "--codecs", "avc,hevc,av1", "--bpp", LADDER_BPP])  # fmt: skip
    if code:
        return code
    config = write_tiny_models(work / "weights")
    captions = work / "captions.csv"
    pd.DataFrame({"name": list(CAPTIONS), "text": list(CAPTIONS.values())}).to_csv(captions)
    plan = work / "plan.csv"
    generate_main(["plan", "--references", str(refs), "--out", str(plan), "--preset", "benchmark",
                   "--models", "SD15,RealVis"])  # fmt: skip
    run = work / "cmc"
    code = generate_main(["run", str(plan), "--out", str(run), "--captions", str(captions),
                          "--models-config", str(config), "--size", "128", "--steps", "8",
                          "--device", "cpu"])  # fmt: skip
    if code:
        return code
    report = work / "report"
    code = compare_main([str(ladder / "manifest.csv"), str(run / "manifest.csv"), "--out", str(report),
                         "--metric", "psnr", "--metric", "clipsim",
                         "--metric", "fid", "--no-pretrained",
                         "--device", "cpu", "--title", "Demo: AVC / HEVC / AV1 against two tiny "
                         "random-weight decoders (not a CMC result)"])  # fmt: skip
    if code:
        return code
    shutil.copy(report / "figure.png", args.out)
    print(f"figure: {args.out}; report: {report / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
