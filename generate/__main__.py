"""``python -m generate {plan,run,ladder,manifest}`` — the distorted set's command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cmc_common.help import HelpFormatter
from generate import codec, pixel
from generate.captions import CaptionError, make_captioner
from generate.codec import CodecError
from generate.decode import QUALITY_PROMPT, DecoderError
from generate.registry import (
    CAPTION_WORDS,
    CAPTIONED_MODES,
    CODED_MODES,
    GENERATIVE,
    RESTORATION,
    RegistryError,
    load_registry,
)

# pandas (through plan, run, ladder), PyAV and torch are imported by the command that
# needs them: `--help` and a command's own errors come back at once.

STUDY_COUNT = 100
"""The paper's references in the subjective set (``--count``'s default under the study preset)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except _user_errors() as error:  # evaluated only when something was raised
        print(f"generate: error: {error}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix: a one-line message and exit 2."""
    from generate.plan import PlanError
    from generate.run import RunError

    return PlanError, RegistryError, CaptionError, DecoderError, CodecError, RunError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generate",
        description="Cross-modality compression: plan the distorted set, then generate it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser(
        "plan", help="lay out which image is made how", formatter_class=HelpFormatter
    )
    plan.add_argument("--references", type=Path, required=True, help="folder of reference images")
    plan.add_argument("--out", type=Path, required=True, help="plan CSV to write")
    plan.add_argument(
        "--preset",
        choices=("study", "benchmark"),
        default="study",
        help="study: sampled references, strengths U[0.2, 0.9]; benchmark: every reference, "
        "fixed strengths (Full/Image 0.5, Pixel 0.8, Text 1.0)",
    )
    plan.add_argument(
        "--count",
        type=int,
        default=argparse.SUPPRESS,  # absent: STUDY_COUNT; "(default: None)" would mislead
        help="study: references to sample (40/30/30 NSI/SCI/AIGI; default 100); more than the "
        "folder has is an error; the benchmark takes every reference, so a count is refused",
    )
    plan.add_argument(
        "--no-content-mix",
        dest="content_mix",
        action="store_false",
        default=argparse.SUPPRESS,  # "(default: True)" would read as uniform by default
        help="study: sample uniformly, for references not named NSI_…/SCI_…/AIGI_… (by default "
        "such a name is an error, since the paper's 40/30/30 mix cannot be drawn)",
    )
    plan.add_argument(
        "--sweep-qp",
        type=_ints,
        help="one row per codec QP for each Image/Full configuration, e.g. 53,51,48,45 (the "
        "paper's Table A1: Full mode, VVC); ids end in __qpN",
    )
    plan.add_argument(
        "--sweep-caption-words",
        type=_ints,
        help="one row per caption length for each Text/Pixel/Full configuration, among "
        f"{','.join(map(str, CAPTION_WORDS))} (the paper's Figure A4; needs a captioner that "
        "takes a length, not a caption CSV); ids end in __wN",
    )
    plan.add_argument(
        "--sweep-strength",
        type=_floats,
        help="one row per img2img strength for each Pixel/Image/Full configuration, e.g. "
        "0.4,0.5,0.6,0.7,0.8,0.9,0.99 (the paper's Figure A7, Pixel mode; A5/A6 for Full/Image "
        "at 0.2–0.8); ids end in __sS",
    )
    plan.add_argument(
        "--per-reference",
        type=int,
        help="configurations per reference (default: all, 40 for the paper's 12 models)",
    )
    plan.add_argument(
        "--models",
        default=",".join(GENERATIVE + RESTORATION),
        help="comma-separated decoder names (see generate/registry.py)",
    )
    plan.add_argument("--models-config", type=Path, help="TOML adding or changing decoders")
    plan.add_argument("--seed", type=int, default=0, help="seed of the sampling and strengths")
    plan.set_defaults(run=_plan)

    run = commands.add_parser(
        "run", help="generate the images of a plan", formatter_class=HelpFormatter
    )
    run.add_argument("plan", type=Path, help="plan CSV from `generate plan`")
    run.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    run.add_argument(
        "--captions",
        help="caption source, needed for Text/Pixel/Full images: a CSV (name,text: a reference's "
        "file name and its caption; the paper's GPT-4o captions are CMC-Bench's Text/gpt4v.csv), "
        "'openai[:MODEL]', or a transformers VLM id/folder (BLIP, BLIP-2, LLaVA, Qwen2-VL)",
    )
    run.add_argument(
        "--caption-words",
        type=int,
        default=20,
        choices=CAPTION_WORDS,
        help="I2T prompt length (a plan row's caption_words wins; unused with a caption CSV)",
    )
    run.add_argument(
        "--codec",
        choices=sorted(codec.QP_LIMITS),
        default="av1",
        help="Image/Full-mode codec (the paper: vvc, which needs vvencapp/vvdecapp on PATH)",
    )
    run.add_argument(
        "--target-bpp",
        type=float,
        default=0.024,
        help="Image/Full-mode codec bitrate, searched per image (the paper's ~1,000×); each "
        "image's achieved bpp is recorded, a miss over 10%% is reported, the spread summarised",
    )
    run.add_argument(
        "--codec-qp",
        type=int,
        help="a fixed quantizer instead of the bpp search, as the paper (VVC QP 53); a plan "
        "row's codec_qp (from --sweep-qp) wins; coded as given (AVC/HEVC ≤ 51). See "
        "docs/generate.md for the QP nearest 0.024 bpp per codec",
    )
    run.add_argument("--pixel-block", type=int, default=64, help="Pixel-mode block side")
    run.add_argument(
        "--pixel-bits",
        type=int,
        default=pixel.DEFAULT_BITS,
        help="Pixel-mode bits per channel: 3 = 9 bits a 64×64 block, caption + pixels near the "
        "paper's 5,000× (8 = 24 bits a block, about 2,800×)",
    )
    run.add_argument("--size", type=int, default=1024, help="decoding size (long side)")
    run.add_argument("--steps", type=int, default=40, help="denoising steps")
    run.add_argument(
        "--image-prompt",
        default="",
        help="Image mode's prompt: empty, as the paper; 'script' for the public CMC-Bench "
        f"script's fixed '{QUALITY_PROMPT}' (never transmitted, so no bits)",
    )
    run.add_argument("--device", default="auto", help="cuda, cuda:N or cpu (auto: the rank's GPU)")
    run.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="images per pipeline call: same model, mode, working size and number of denoising "
        "steps (int(steps × strength)), so a study's random strengths still batch; 1 keeps "
        "resumes bit-exact, larger is faster on a GPU",
    )
    run.add_argument(
        "--compile",
        action="store_true",
        help="GPU fast path: channels-last UNet/VAE and torch.compile of the UNet (compiled "
        "again for each new batch shape: worth it over a study set, not a short run)",
    )
    run.add_argument(
        "--workers",
        type=int,
        help="processes for the Image-mode codec's bitrate search, done for every reference "
        "before decoding (default: this rank's share of the CPUs)",
    )
    run.add_argument("--models-config", type=Path, help="TOML adding or changing decoders")
    run.set_defaults(run=_run)

    ladder_ = commands.add_parser(
        "ladder",
        help="traditional codecs (intra) at several rates, with a run-style manifest",
        formatter_class=HelpFormatter,
        description="Every reference through each codec (one intra frame: AVC libx264, HEVC "
        "libx265, AV1 libsvtav1, bundled with PyAV; VVC via vvencapp/vvdecapp when on PATH) at "
        "each QP (coded as given), or each target bpp (the best encode within it, searched per "
        "image). Bits are what a decoder needs of the raw bitstream (parameter sets and slices; "
        "no SEI or metadata) × 8, kept beside each PNG (images/ID.h264|.hevc|.obu|.266). Writes "
        "images/, meta/ and manifest.csv with generate run's columns (model = AVC, HEVC, AV1 or "
        "VVC; mode = Codec). Resumable; an edited reference is made again, another reference "
        "folder refused. QP scales differ between codecs (HEVC and AVC 0–51, AV1 1–63, VVC "
        "0–63): give each codec its own --qps list, or use --bpp for equal rates.",
    )
    ladder_.add_argument("--references", type=Path, required=True, help="folder of references")
    ladder_.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    ladder_.add_argument(
        "--codecs", default="avc,hevc,av1", help="comma-separated, among avc,hevc,av1,vvc"
    )
    rates = ladder_.add_mutually_exclusive_group(required=True)
    rates.add_argument(
        "--qps",
        type=_codec_ints,
        action="append",
        help="fixed quantizers for every codec, e.g. 37,42,47,51, or one codec's, repeatable: "
        "--qps hevc=37,42,47,51 --qps av1=48,54,59,63",
    )
    rates.add_argument("--bpp", type=_floats, help="target bits per pixel, e.g. 0.024,0.05,0.1")
    ladder_.add_argument(
        "--workers", type=int, help="encoding processes (default: this machine's share of CPUs)"
    )
    ladder_.set_defaults(run=_ladder)

    manifest = commands.add_parser(
        "manifest", help="rebuild manifest.csv of an output folder", formatter_class=HelpFormatter
    )
    manifest.add_argument("out", type=Path, help="the output folder of `generate run`")
    manifest.set_defaults(run=_manifest)

    tiny_help = (
        "write tiny random-weight SD-1.5 and SDXL pipelines and a models TOML that points SD15 "
        "and RealVis at them: an offline dry run of every stage on a CPU (their images are noise)"
    )
    tiny = commands.add_parser(
        "tiny-models", help=tiny_help, description=tiny_help, formatter_class=HelpFormatter
    )
    tiny.add_argument("folder", type=Path, help="where to write them (e.g. weights/tiny)")
    tiny.set_defaults(run=_tiny_models)
    return parser


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers like 51,48,45, got {text!r}"
        ) from None


def _codec_ints(text: str) -> tuple[str, list[int]]:
    """'hevc=37,42' → ('hevc', [37, 42]); '37,42' → ('', [37, 42]), the list of every codec."""
    name, _, values = text.rpartition("=")
    return name.strip().lower(), _ints(values)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.024,0.1, got {text!r}") from None


def _manifest(args: argparse.Namespace) -> int:
    from generate.run import write_manifest

    print(write_manifest(args.out))
    return 0


def _plan(args: argparse.Namespace) -> int:
    import numpy as np

    from generate.plan import (
        PlanError,
        check_seed,
        choose_references,
        configurations,
        list_references,
        make_plan,
    )

    registry = load_registry(args.models_config)
    configs = configurations(registry, [m.strip() for m in args.models.split(",") if m.strip()])
    check_seed(args.seed, "--seed")
    for option, values in (("--sweep-qp", args.sweep_qp),
                           ("--sweep-caption-words", args.sweep_caption_words),
                           ("--sweep-strength", args.sweep_strength)):  # fmt: skip
        if values == []:  # given, but lists nothing: no sweep would be a quietly other plan
            raise PlanError(f"{option} lists no value")
    count = getattr(args, "count", None)  # absent (argparse.SUPPRESS): the preset's own
    content_mix = getattr(args, "content_mix", True)
    if args.preset == "benchmark" and count is not None:
        raise PlanError(
            "--count applies to --preset study; the benchmark takes every reference of the folder"
        )
    images = list_references(args.references)
    if args.preset == "benchmark":
        count = None
    elif count is None:
        count = STUDY_COUNT
    references = choose_references(images, count, np.random.default_rng(args.seed), content_mix)
    plan = make_plan(references, configs, args.preset, args.seed, args.per_reference,
                     args.sweep_qp, args.sweep_caption_words, args.sweep_strength)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plan.to_csv(args.out, index=False)
    print(f"planned {len(plan)} images ({len(references)} references × {len(configs)} "
          f"configurations{'' if args.per_reference is None else ', sampled'}) in {args.out}")  # fmt: skip
    return 0


def _run(args: argparse.Namespace) -> int:
    from generate.plan import PlanError, read_plan
    from generate.run import RunSettings, cpu_share, launcher_rank, run_plan

    registry = load_registry(args.models_config)
    plan = read_plan(args.plan, registry)
    counts = (
        args.pixel_block,
        args.steps,
        args.batch_size,
        1 if args.workers is None else args.workers,
    )
    if not 1 <= args.pixel_bits <= 8 or min(counts) < 1 or args.size < 8:
        raise PlanError(
            "--pixel-bits must be 1–8; --pixel-block, --steps, --batch-size and --workers ≥ 1; "
            "--size ≥ 8"
        )
    codec.check_target(args.target_bpp, "--target-bpp")
    _check_codec(plan, args.codec, args.codec_qp)
    rank, world, local = launcher_rank()
    needs_caption = plan["mode"].isin(CAPTIONED_MODES).any()
    if needs_caption and args.captions is None:
        raise CaptionError(
            "the plan has Text/Pixel/Full images, which need captions: give --captions with a CSV "
            "(name,text), a transformers VLM id or folder, or openai[:MODEL] (docs/generate.md)"
        )
    captioner = make_captioner(args.captions, args.caption_words) if needs_caption else None
    if captioner is not None and captioner.words is None and plan["caption_words"].ne("").any():
        raise CaptionError(
            f"the plan sweeps the caption length but --captions {args.captions} is a fixed "
            "list: give a captioner that takes a length (a transformers VLM, or openai)"
        )
    prompt = QUALITY_PROMPT if args.image_prompt == "script" else args.image_prompt
    settings = RunSettings(
        codec=args.codec, target_bpp=args.target_bpp, codec_qp=args.codec_qp,
        pixel_block=args.pixel_block, pixel_bits=args.pixel_bits, long_side=args.size,
        steps=args.steps, image_prompt=prompt, device=_device(args.device, local),
        batch_size=args.batch_size, compile=args.compile,
        workers=cpu_share() if args.workers is None else args.workers,
    )  # fmt: skip
    made = run_plan(plan, args.out, registry, captioner, settings, rank, world)
    print(f"rank {rank}/{world}: made {made} images; manifest: {args.out / 'manifest.csv'}")
    return 0


def _check_codec(plan, name: str, fixed: int | None) -> None:
    """The run's codec can honour its fixed QP, every QP the plan's rows ask for, and the size
    of every reference it codes."""
    if not codec.available(name):
        raise CodecError(
            f"codec '{name}' is not available here"
            + (" (needs vvencapp and vvdecapp on PATH)" if name == "vvc" else "")
        )
    wanted = {int(q) for q in plan["codec_qp"] if q != ""} | (
        {fixed} if fixed is not None else set()
    )
    for qp in sorted(wanted):
        codec.check_qp(name, qp)
    for reference in dict.fromkeys(plan.loc[plan["mode"].isin(CODED_MODES), "reference_path"]):
        codec.check_size(Path(reference))  # before any hint is made, by name


def _ladder(args: argparse.Namespace) -> int:
    from generate import ladder
    from generate.plan import PlanError, check_references, list_references
    from generate.run import cpu_share

    names = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
    references = list_references(args.references)
    check_references(args.references, [str(r) for r in references])  # before any encoding
    qps = None
    if args.qps:
        qps = {}
        for name, values in args.qps:
            if name in qps:
                raise CodecError(f"--qps gives {name or 'the list of every codec'} twice")
            qps[name] = values
    todo = ladder.points(references, names, qps, args.bpp)
    if args.workers is not None and args.workers < 1:
        raise PlanError("--workers must be ≥ 1")
    made = ladder.run_ladder(todo, args.out, cpu_share() if args.workers is None else args.workers)
    print(f"made {made} of {len(todo)} codec images; manifest: {args.out / 'manifest.csv'}")
    return 0


def _tiny_models(args: argparse.Namespace) -> int:
    from generate.plan import PlanError
    from generate.tiny import write_tiny_models

    if args.folder.exists() and not args.folder.is_dir():
        raise PlanError(f"{args.folder} is a file, not a folder")
    config = write_tiny_models(args.folder)
    print(f"tiny random-weight decoders in {args.folder}; use --models SD15,RealVis "
          f"--models-config {config}")  # fmt: skip
    return 0


def _device(choice: str, local_rank: int) -> str:
    if choice != "auto":
        return choice
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
