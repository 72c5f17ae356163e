"""Decoder throughput on a GPU: SDXL img2img at 1024², 40 steps, strength 0.5, guidance 5.

    python bench/generate_gpu.py                  # on the lent GPU (about 5 minutes)
    python bench/generate_gpu.py --tiny           # a scaled-down check of this script, on the CPU

No weights are needed to time a model: the full-size SDXL UNet, VAE and both text encoders are
built from SDXL-base-1.0's published configurations (written out below) with random weights,
directly on the GPU in fp16. The same process times, on one card:

1. ``reference script``: the diffusers pipeline called once per image with SDXL's published VAE
   configuration (``force_upcast``: the VAE runs in fp32), as the public reference script does;
2. ``generate run --batch-size B`` for each B of ``--batch``: this project's decoder
   (:class:`generate.decode.Decoder`, the code ``python -m generate run`` calls), B images per
   call, fp16 VAE (what an fp16-safe VAE such as ``madebyollin/sdxl-vae-fp16-fix``, named as
   ``vae`` in the models TOML, gives);
3. ``generate run --batch-size B --compile`` at the first B: the same with channels-last, fused
   attention projections and torch.compile (last, as its compilation takes the longest).

Prints seconds per image, the first (warm-up, compiling) call, peak GPU memory per variant, and
what they mean for the 4,000-image study set; each row as soon as it is measured. Record the
figures, the card and this command in bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from generate.decode import Decoder, Request
from generate.offline import clip_tokenizer
from generate.registry import DecoderSpec

PROMPT = "a red barn in a green field"

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)  # fmt: skip
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=False,
)  # fmt: skip
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu")  # fmt: skip
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                 num_hidden_layers=32, projection_dim=1280, hidden_act="gelu")  # fmt: skip
TINY = dict(
    unet=dict(SDXL_UNET, block_out_channels=(32, 64, 64), transformer_layers_per_block=(1, 1, 1),
              attention_head_dim=(2, 4, 4), cross_attention_dim=64, addition_time_embed_dim=8,
              projection_class_embeddings_input_dim=80, sample_size=32),
    vae=dict(SDXL_VAE, block_out_channels=(32, 32, 64, 64)),
    clip=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
              projection_dim=32, hidden_act="gelu"),
)  # fmt: skip


def build(device: str, dtype: torch.dtype, tiny: bool) -> StableDiffusionXLImg2ImgPipeline:
    """A randomly initialized SDXL img2img pipeline, built where it will run, its models in
    evaluation mode (as ``from_pretrained`` gives them; the runs of 2026-11-27 had them in
    training mode, which bench/gpu_probe.py compares)."""
    unet_config = TINY["unet"] if tiny else SDXL_UNET
    vae_config = TINY["vae"] if tiny else SDXL_VAE
    first = TINY["clip"] if tiny else CLIP_L
    second = TINY["clip"] if tiny else CLIP_BIGG
    tokenizer = clip_tokenizer()
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                  eos_token_id=49407, pad_token_id=49407)  # fmt: skip
    # The scheduler's tables stay on the CPU (diffusers reads them with numpy).
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)  # fmt: skip
    with torch.device(device):
        pipe = StableDiffusionXLImg2ImgPipeline(
            unet=UNet2DConditionModel(**unet_config),
            vae=AutoencoderKL(**vae_config),
            text_encoder=CLIPTextModel(CLIPTextConfig(**common, **first)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**common, **second)),
            tokenizer=tokenizer, tokenizer_2=tokenizer,
            scheduler=scheduler,
            requires_aesthetics_score=False,
        )  # fmt: skip
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    set_training(pipe, False)  # as from_pretrained leaves them
    return pipe


def set_training(pipe, training: bool) -> None:
    """Put the pipeline's four models in training or evaluation mode."""
    for model in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        model.train(training)


def time_reference_script(
    pipe, size: int, steps: int, repeats: int, device: str
) -> tuple[float, float]:
    """(Seconds per image of the plain pipeline call, one image per call; its first call)."""
    pipe.vae.register_to_config(force_upcast=True)  # SDXL-base's published VAE config
    try:
        return seconds_per_call(reference_call(pipe, size, steps), repeats, device)
    finally:
        pipe.vae.register_to_config(force_upcast=False)


def time_decoder(
    decoder: Decoder, batch: int, size: int, repeats: int, device: str
) -> tuple[float, float]:
    """(Seconds per image of ``generate run``'s decoder on a batch of Full-mode images; its
    first call)."""
    requests = full_mode_requests(batch, size)
    call = lambda: decoder.batch("Full", requests)  # noqa: E731
    per_call, first = seconds_per_call(call, repeats, device)
    return per_call / batch, first


def reference_call(pipe, size: int, steps: int):
    """The public reference script's way: the plain pipeline call, one image."""
    start = Image.new("RGB", (size, size), (120, 110, 100))
    return lambda: pipe(prompt=PROMPT, image=start, strength=0.5, num_inference_steps=steps,
                        guidance_scale=5.0)  # fmt: skip


def full_mode_requests(batch: int, size: int) -> list[Request]:
    """``batch`` Full-mode requests at strength 0.5 on random start images, one seed each."""
    rng = np.random.default_rng(0)
    return [
        Request(PROMPT, rng.integers(0, 256, (size, size, 3), dtype=np.uint8), 0.5, seed, (size, size))
        for seed in range(batch)
    ]  # fmt: skip


def seconds_per_call(call, repeats: int, device: str) -> tuple[float, float]:
    """(Seconds per call, timed after a warm-up call; seconds of that first call, which also
    compiles)."""
    began = time.perf_counter()
    call()
    sync(device)
    warm = time.perf_counter()
    for _ in range(repeats):
        call()
    sync(device)
    return (time.perf_counter() - warm) / repeats, warm - began


def sync(device: str) -> None:
    """Wait for the GPU's queued work, so that wall time measures it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="scaled-down models on the CPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant")
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 8],
                        help="images per decoder call, one row each (--compile: the first)")  # fmt: skip
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no GPU here: use --tiny to check the script on the CPU", file=sys.stderr)
        return 2
    dtype = torch.float32 if args.tiny else torch.float16
    size, steps = (64, 4) if args.tiny else (1024, 40)
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (tiny models)"
    pipe = build(device, dtype, args.tiny)
    spec = DecoderSpec("SDXL", "random weights from SDXL-base-1.0's configurations", "sdxl")
    variants = [("reference script: pipeline call, batch 1, fp32 VAE",
                 lambda: time_reference_script(pipe, size, steps, args.repeats, device))]  # fmt: skip
    plain = Decoder(spec, device, size, steps)
    plain.use(pipe)
    for batch in args.batch:
        variants.append((f"generate run --batch-size {batch}",
                         partial(time_decoder, plain, batch, size, args.repeats, device)))  # fmt: skip
    if not args.no_compile:

        def compiled() -> tuple[float, float]:
            decoder = Decoder(spec, device, size, steps, compile=True)
            decoder.use(pipe)
            return time_decoder(decoder, args.batch[0], size, args.repeats, device)

        variants.append((f"generate run --batch-size {args.batch[0]} --compile", compiled))
    print(f"card: {card}; torch {torch.__version__}; SDXL img2img {size}², {steps} steps, "
          "strength 0.5, guidance 5")  # fmt: skip
    print("| variant | s/image | 4,000 images | first call | peak GPU memory |")
    print("|---|---|---|---|---|")
    for name, measure in variants:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds, first = measure()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        print(f"| {name} | {seconds:.3f} | {4000 * seconds / 60:.1f} min | {first:.1f} s "
              f"| {peak:.1f} GiB |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
