"""``python -m compare``: CMC against traditional codecs, and the paper's Table A1 and Figure A7.

``python -m compare MANIFEST... --metric NAME ... --out DIR`` scores every image of every
manifest with every metric, averages them per rate–quality point, and writes the paper's Figure 6
layout, a table of every point and the Bjøntegaard deltas of each CMC curve against each codec
curve (``figure.png``, ``points.csv``/``.md``, ``bd.csv``, ``report.md``, and each image's scores
in ``scores.csv``). ``python -m compare table-a1 RUN --ladder LADDER`` and ``python -m compare
figure-a7 RUN`` write the paper's Table A1 and Figure A7 (compare/table_a1.py, compare/sweep.py).

Only argparse and :mod:`compare.defaults` are imported before the command line is read, so
``--help`` answers at once; torch, pyiqa and matplotlib load when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cmc_common.help import HelpFormatter
from compare.defaults import (
    CURVE_BY,
    FID_DIMS,
    METHODS,
    PAPER_METRICS,
    POINT_BY,
    TABLE_A1_POINT_BY,
)
from train_iqa.cache_options import add_cache_options

COMMANDS = {
    "table-a1": "the paper's Table A1: per codec hint (QP or target bpp), the codec's own decoded "
    "image (Original), the CMC result and the direction-aware Improve of each metric",
    "figure-a7": "the paper's Figure A7 (Pixel mode over img2img strength; A5/A6 with --mode "
    "Full/Image): one panel per metric, a curve per model",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        args = command_parser(argv[0]).parse_intermixed_args(argv[1:])
    else:
        args = build_parser().parse_intermixed_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        if not _expected(error):
            raise
        print(f"compare: error: {error}", file=sys.stderr)
        return 2


def _expected(error: Exception) -> bool:
    """Bad input (InputError), a metric that cannot be built (MetricError) or a file error. The
    metric error's module imports torch, so it is looked up only once something imported it:
    a manifest refused up front costs no torch import."""
    from compare.curves import InputError

    known = [InputError, OSError]
    if "train_iqa.model" in sys.modules:
        known.append(sys.modules["train_iqa.model"].MetricError)
    return isinstance(error, tuple(known))


def _curves(args: argparse.Namespace) -> int:
    """The rate–quality comparison (Figure 6 layout, every point, BD deltas)."""
    from compare.curves import InputError, Source, load

    sources = [Source(Path(p)) for p in args.manifests] + [_labelled(t) for t in args.label]
    rows = load(sources, _columns(args.curve_by), _columns(args.point_by),
                tuple(_columns(args.anchors)), include_nsfw=args.include_nsfw)  # fmt: skip
    _say_skipped(rows)
    if args.bd_method not in METHODS:
        raise InputError(f"unknown --bd-method '{args.bd_method}'")
    metrics = build_metrics(args)
    from compare.pairs import deltas  # scoring and drawing: loaded once the input is known good
    from compare.report import write
    from compare.score import points, score

    scored = score(rows, metrics, _cache(args), progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    scored.to_csv(args.out / "scores.csv", index=False)
    table = points(scored, metrics)
    bd = deltas(scored, metrics, args.bd_method)
    paths = write(table, bd, args.out, args.bd_method, args.title)
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
        "section 4.4, Figure 6 / Figure A4): score any manifests — `generate run`'s "
        "and the codec ladder's — with any metrics, and report rate–quality curves, every point, "
        "and BD-rate / BD-quality of each CMC curve against each codec curve, over the "
        "references both share. A curve is a manifest's `model` (AVC/HEVC/AV1/VVC for the "
        "ladder, whose rows have mode `Codec`); a point is its `mode`, `codec_qp`, "
        "`codec_target_bpp` and `caption_words` (a codec point always keeps its rate); its rate "
        "is the mean bpp.",
        epilog="Other commands: "
        + "; ".join(
            f"`python -m compare {name} --help`: {text}" for name, text in COMMANDS.items()
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("manifests", nargs="*", default=[], help="manifest CSVs (generate's)")
    parser.add_argument("--label", action="append", default=[], metavar="NAME=PATH",
                        help="a manifest whose curves are prefixed with NAME, to tell two runs "
                        "with the same model names apart (repeatable)")  # fmt: skip
    parser.add_argument("--curve-by", default=",".join(CURVE_BY),
                        help="manifest column(s) naming a curve, comma-separated")  # fmt: skip
    parser.add_argument("--point-by", default=",".join(POINT_BY),
                        help="column(s) naming a point on a curve; absent or empty ones are "
                        "skipped")  # fmt: skip
    parser.add_argument("--anchors", default="",
                        help="curves to treat as the codecs (default: curves whose mode is Codec)")  # fmt: skip
    parser.add_argument("--bd-method", default="pchip", choices=METHODS,
                        help="interpolation of the bjontegaard package (pchip: JVET's CTC; "
                        "cubic needs 4 points per curve)")  # fmt: skip
    scoring_options(parser, "out/compare")
    parser.set_defaults(run=_curves)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``table-a1`` or ``figure-a7`` (their options and what each writes)."""
    parser = argparse.ArgumentParser(prog=f"python -m compare {name}", description=COMMANDS[name],
                                     formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("run_manifest", type=Path,
                        help="a `generate run` manifest (its folder's manifest.csv)")  # fmt: skip
    if name == "table-a1":
        parser.add_argument("--ladder", type=Path, required=True,
                            help="a `generate ladder` manifest of the run's references, with the "
                            "run's codec at the run's QPs (--qps) or targets (--bpp): the "
                            "Original images")  # fmt: skip
        parser.add_argument("--mode", default="Full", choices=("Full", "Image"),
                            help="the CMC mode decoded from the hint (the paper's: Full)")  # fmt: skip
        parser.set_defaults(run=_table_a1)
    else:
        parser.add_argument("--mode", default="Pixel", choices=("Pixel", "Image", "Full"),
                            help="the mode swept (Figure A7: Pixel; A5: Full; A6: Image)")  # fmt: skip
        parser.add_argument("--curve-by", default=",".join(CURVE_BY),
                            help="manifest column(s) naming a curve, comma-separated")  # fmt: skip
        parser.set_defaults(run=_figure_a7)
    scoring_options(parser, f"out/{name.replace('-', '_')}")
    return parser


def _table_a1(args: argparse.Namespace) -> int:
    from compare.curves import Source, load

    run = load([Source(args.run_manifest)], point_by=TABLE_A1_POINT_BY,
               include_nsfw=args.include_nsfw, mode=args.mode)  # fmt: skip
    _say_skipped(run)
    ladder = load([Source(args.ladder)], mode="Codec")
    from compare import table_a1
    from compare.score import score

    rows = table_a1.pair_rows(run, ladder)
    metrics = build_metrics(args)
    scored = score(rows, metrics, _cache(args), progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    scored.to_csv(args.out / "scores.csv", index=False)
    result, notes = table_a1.table(scored, metrics)
    paths = table_a1.write(result, notes, metrics, args.out, args.title)
    print((args.out / "table_a1.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _figure_a7(args: argparse.Namespace) -> int:
    from compare.curves import Source, load

    rows = load([Source(args.run_manifest)], _columns(args.curve_by), ("strength",),
                include_nsfw=args.include_nsfw, mode=args.mode)  # fmt: skip
    _say_skipped(rows)
    from compare import sweep
    from compare.score import score

    rows, notes = sweep.sweep_rows(rows, args.mode)
    for note in notes:
        print(f"compare: {note}", file=sys.stderr)
    metrics = build_metrics(args)
    scored = score(rows, metrics, _cache(args), progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    scored.to_csv(args.out / "scores.csv", index=False)
    paths = sweep.write(sweep.table(scored, metrics), notes, args.mode, args.out, args.title)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def scoring_options(parser: argparse.ArgumentParser, out: str) -> None:
    """The options every command shares: metrics, how they are built, and the output folder."""
    parser.add_argument("--metric", action="append", metavar="[LABEL=]NAME[:WEIGHTS]",
                        help="repeatable: any pyiqa metric (psnr, ssim, lpips, topiq_fr, "
                        "topiq_nr, clipiqa, liqe, …), clipsim, or fid; NAME:WEIGHTS loads a "
                        "checkpoint (train_iqa's best.pt). Default: the paper's eight, "
                        + ", ".join(PAPER_METRICS))  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(out), help="output folder")
    parser.add_argument("--include-nsfw", action="store_true",
                        help="also score images the SD-1.5 safety checker blanked (manifest "
                        "column nsfw_detected); by default they are left out, with a count")  # fmt: skip
    parser.add_argument("--device", default="auto",
                        help="torch device; auto: cuda when there is one, else cpu")  # fmt: skip
    parser.add_argument("--no-pretrained", action="store_true",
                        help="build every network at random (offline smoke runs: the scores "
                        "mean nothing); checkpoints given as NAME:WEIGHTS still load")  # fmt: skip
    parser.add_argument("--clip-model", default="ViT-B-32",
                        help="CLIPSIM's open_clip architecture, or a JSON model config file")  # fmt: skip
    parser.add_argument("--clip-pretrained", default="openai",
                        help="open_clip weights tag, a checkpoint file, or none")  # fmt: skip
    parser.add_argument("--fid-dims", type=int, default=2048, choices=FID_DIMS,
                        help="Inception layer for FID (2048: the standard pool3)")  # fmt: skip
    add_cache_options(parser)
    parser.add_argument("--title", default="", help="figure and report title")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_metrics(args: argparse.Namespace) -> list:
    """The command line's metrics (the paper's eight by default), built once for any command."""
    from compare.metrics import MetricError, Settings, build_all

    settings = Settings(device=_device(args.device), pretrained=not args.no_pretrained,
                        clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                        fid_dims=args.fid_dims)  # fmt: skip
    try:
        return build_all(args.metric or list(PAPER_METRICS), settings)
    except MetricError as error:
        if args.metric:
            raise
        raise MetricError(
            f"the default metrics (the paper's eight) need their weights: {error}"
        ) from error


def _cache(args: argparse.Namespace):
    """The score cache pyiqa metrics share with ``validate`` and the leaderboard."""
    from train_iqa.scoring import open_cache

    return open_cache(args)


def _say_skipped(rows) -> None:
    if rows.attrs["nsfw_skipped"]:
        print(f"compare: skipped {rows.attrs['nsfw_skipped']} image(s) blanked by the safety "
              "checker (--include-nsfw scores them)", file=sys.stderr)  # fmt: skip


def _labelled(text: str):
    from compare.curves import InputError, Source

    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path:
        raise InputError(f"--label '{text}' is not NAME=PATH")
    return Source(Path(path), label.strip())


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _device(name: str) -> str:
    """``auto``: cuda when torch sees one (not asked before a command runs: torch is slow to
    import)."""
    if name != "auto":
        return name
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
