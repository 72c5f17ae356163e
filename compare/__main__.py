"""``python -m compare MANIFEST... --metric NAME ... --out DIR``: CMC against traditional codecs.

Scores every image of every manifest with every metric, averages them per rate–quality point,
and writes the paper's Figure 6 layout, a table of every point and the Bjøntegaard deltas of each
CMC curve against each codec curve (``figure.png``, ``points.csv``/``.md``, ``bd.csv``,
``report.md``, and each image's scores in ``scores.csv``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cmc_common.help import HelpFormatter
from compare.bd import METHODS
from compare.curves import CURVE_BY, POINT_BY, InputError, Source, load
from compare.metrics import FID_DIMS, MetricError, Settings, build_all
from compare.report import deltas, write
from compare.score import points, score

PAPER_METRICS = ("topiq_fr", "clipsim", "lpips", "ssim", "topiq_nr", "clipiqa", "liqe", "fid")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        sources = [Source(Path(p)) for p in args.manifests] + [_labelled(t) for t in args.label]
        rows = load(sources, _columns(args.curve_by), _columns(args.point_by),
                    tuple(_columns(args.anchors)), include_nsfw=args.include_nsfw)  # fmt: skip
        if rows.attrs["nsfw_skipped"]:
            print(f"compare: skipped {rows.attrs['nsfw_skipped']} image(s) blanked by the safety "
                  "checker (--include-nsfw scores them)", file=sys.stderr)  # fmt: skip
        if args.bd_method not in METHODS:
            raise InputError(f"unknown --bd-method '{args.bd_method}'")
        settings = Settings(device=args.device, pretrained=not args.no_pretrained,
                            clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                            fid_dims=args.fid_dims)  # fmt: skip
        metrics = build_all(args.metric or list(PAPER_METRICS), settings)
        scored = score(rows, metrics, progress=not args.quiet)
        args.out.mkdir(parents=True, exist_ok=True)
        scored.to_csv(args.out / "scores.csv", index=False)
        table = points(scored, metrics)
        bd = deltas(table, args.bd_method)
        paths = write(table, bd, args.out, args.bd_method, args.title)
    except (InputError, MetricError, OSError) as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    curves = table.drop_duplicates("curve")["kind"].value_counts().to_dict()
    print(f"{len(scored)} images, {curves.get('cmc', 0)} CMC and {curves.get('codec', 0)} codec "
          f"curve(s), {len(metrics)} metric(s); {int((bd['note'] != '').sum())} of {len(bd)} BD "
          f"comparisons carry a note")  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m compare",
        description="Compare cross-modality compression with traditional codecs (CMC-Bench "
        "section 4.4, Figure 6 / Table A1 / Figure A4): score any manifests — `generate run`'s "
        "and the codec ladder's — with any metrics, and report rate–quality curves, every point, "
        "and BD-rate / BD-quality of each CMC curve against each codec curve. A curve is a "
        "manifest's `model` (AVC/HEVC/AV1/VVC for the ladder, whose rows have mode `Codec`); a "
        "point is its `mode`, `codec_qp`, `codec_target_bpp` and `caption_words`; its rate is the mean bpp.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("manifests", nargs="*", default=[], help="manifest CSVs (generate's)")
    parser.add_argument("--label", action="append", default=[], metavar="NAME=PATH",
                        help="a manifest whose curves are prefixed with NAME, to tell two runs "
                        "with the same model names apart (repeatable)")  # fmt: skip
    parser.add_argument("--metric", action="append", metavar="[LABEL=]NAME[:WEIGHTS]",
                        help="repeatable: any pyiqa metric (psnr, ssim, lpips, topiq_fr, "
                        "topiq_nr, clipiqa, liqe, …), clipsim, or fid; NAME:WEIGHTS loads a "
                        "checkpoint (train_iqa's best.pt). Default: the paper's eight, "
                        + ", ".join(PAPER_METRICS))  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("out/compare"), help="output folder")
    parser.add_argument("--curve-by", default=",".join(CURVE_BY),
                        help="manifest column(s) naming a curve, comma-separated")  # fmt: skip
    parser.add_argument("--point-by", default=",".join(POINT_BY),
                        help="column(s) naming a point on a curve; absent or empty ones are "
                        "skipped")  # fmt: skip
    parser.add_argument("--anchors", default="",
                        help="curves to treat as the codecs (default: curves whose mode is Codec)")  # fmt: skip
    parser.add_argument("--include-nsfw", action="store_true",
                        help="also score images the SD-1.5 safety checker blanked (manifest "
                        "column nsfw_detected); by default they are left out, with a count")  # fmt: skip
    parser.add_argument("--bd-method", default="pchip", choices=METHODS,
                        help="interpolation of the bjontegaard package (pchip: JVET's CTC)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="build every network at random (offline smoke runs: the scores "
                        "mean nothing); checkpoints given as NAME:WEIGHTS still load")  # fmt: skip
    parser.add_argument("--clip-model", default="ViT-B-32",
                        help="CLIPSIM's open_clip architecture, or a JSON model config file")  # fmt: skip
    parser.add_argument("--clip-pretrained", default="openai",
                        help="open_clip weights tag, a checkpoint file, or none")  # fmt: skip
    parser.add_argument("--fid-dims", type=int, default=2048, choices=FID_DIMS,
                        help="Inception layer for FID (2048: the standard pool3)")  # fmt: skip
    parser.add_argument("--title", default="", help="figure and report title")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _labelled(text: str) -> Source:
    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path:
        raise InputError(f"--label '{text}' is not NAME=PATH")
    return Source(Path(path), label.strip())


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _cuda() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
