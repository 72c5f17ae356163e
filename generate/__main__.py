"""``python -m generate {plan,run,manifest}`` — the distorted set's command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from generate.captions import CaptionError, make_captioner
from generate.codec import CODECS, CodecError
from generate.decode import QUALITY_PROMPT, DecoderError
from generate.plan import (
    PlanError,
    choose_references,
    configurations,
    list_references,
    make_plan,
    read_plan,
)
from generate.registry import (
    CAPTIONED_MODES,
    GENERATIVE,
    RESTORATION,
    RegistryError,
    load_registry,
)
from generate.run import (
    RunError,
    RunSettings,
    cpu_share,
    launcher_rank,
    run_plan,
    write_manifest,
)

DEFAULT_CAPTIONS = Path(__file__).resolve().parents[1].parent / "shared/data/cmc-bench/gpt4v.csv"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (PlanError, RegistryError, CaptionError, DecoderError, CodecError, RunError) as error:
        print(f"generate: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generate",
        description="Cross-modality compression: plan the distorted set, then generate it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser(
        "plan", help="lay out which image is made how", formatter_class=_Help
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
        "--count", type=int, default=100, help="study: references to sample (40/30/30 NSI/SCI/AIGI)"
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

    run = commands.add_parser("run", help="generate the images of a plan", formatter_class=_Help)
    run.add_argument("plan", type=Path, help="plan CSV from `generate plan`")
    run.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    run.add_argument(
        "--captions",
        default=str(DEFAULT_CAPTIONS),
        help="caption source: a CSV (name,text; default: the paper's GPT-4o captions), "
        "'openai[:MODEL]', or a transformers VLM id/folder (BLIP, BLIP-2, LLaVA, Qwen2-VL)",
    )
    run.add_argument(
        "--caption-words", type=int, default=20, choices=(5, 10, 20, 50), help="I2T prompt length"
    )
    run.add_argument(
        "--codec",
        choices=[*sorted(CODECS), "vvc"],
        default="av1",
        help="Image-mode codec (vvc: needs vvencapp/vvdecapp on PATH)",
    )
    run.add_argument("--target-bpp", type=float, default=0.024, help="Image-mode codec bitrate")
    run.add_argument("--pixel-block", type=int, default=64, help="Pixel-mode block side")
    run.add_argument("--pixel-bits", type=int, default=8, help="Pixel-mode bits per channel")
    run.add_argument("--size", type=int, default=1024, help="decoding size (long side)")
    run.add_argument("--steps", type=int, default=40, help="denoising steps")
    run.add_argument("--image-prompt", default=QUALITY_PROMPT, help="Image mode's fixed prompt")
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

    manifest = commands.add_parser("manifest", help="rebuild manifest.csv of an output folder")
    manifest.add_argument("out", type=Path, help="the output folder of `generate run`")
    manifest.set_defaults(run=lambda a: print(write_manifest(a.out)) or 0)
    return parser


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    pass


def _plan(args: argparse.Namespace) -> int:
    import numpy as np

    registry = load_registry(args.models_config)
    images = list_references(args.references)
    count = None if args.preset == "benchmark" else args.count
    references = choose_references(images, count, np.random.default_rng(args.seed))
    configs = configurations(registry, [m.strip() for m in args.models.split(",") if m.strip()])
    plan = make_plan(references, configs, args.preset, args.seed, args.per_reference)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plan.to_csv(args.out, index=False)
    print(f"planned {len(plan)} images ({len(references)} references × {len(configs)} "
          f"configurations{'' if args.per_reference is None else ', sampled'}) in {args.out}")  # fmt: skip
    return 0


def _run(args: argparse.Namespace) -> int:
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
    rank, world, local = launcher_rank()
    needs_caption = plan["mode"].isin(CAPTIONED_MODES).any()
    captioner = make_captioner(args.captions, args.caption_words) if needs_caption else None
    settings = RunSettings(
        codec=args.codec, target_bpp=args.target_bpp, pixel_block=args.pixel_block,
        pixel_bits=args.pixel_bits, long_side=args.size, steps=args.steps,
        image_prompt=args.image_prompt, device=_device(args.device, local),
        batch_size=args.batch_size, compile=args.compile,
        workers=cpu_share() if args.workers is None else args.workers,
    )  # fmt: skip
    made = run_plan(plan, args.out, registry, captioner, settings, rank, world)
    print(f"rank {rank}/{world}: made {made} images; manifest: {args.out / 'manifest.csv'}")
    return 0


def _device(choice: str, local_rank: int) -> str:
    if choice != "auto":
        return choice
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
