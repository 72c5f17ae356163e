"""Decoder throughput on a GPU: SDXL img2img at 1024², 40 steps, strength 0.5, guidance 5.

    python bench/generate_gpu.py                  # on the lent GPU (about 3 minutes)
    python bench/generate_gpu.py --tiny           # a scaled-down check of this script, on the CPU

No weights are needed to time a model: the full-size SDXL UNet, VAE and both text encoders are
built from SDXL-base-1.0's published configurations (written out below) with random weights,
directly on the GPU in fp16. The same process times, on one card:

1. ``plain``: the pipeline called once per image, as the public reference script does;
2. ``batch 4``: four images per call;
3. ``batch 4 + channels-last + torch.compile``: the UNet compiled, channels-last memory.

Prints seconds per image, peak GPU memory, and the images/hour those mean for the 4,000-image
study set. Record the figures, the card and this command in bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from generate.offline import clip_tokenizer

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
    """A randomly initialized SDXL img2img pipeline, built where it will run."""
    unet_config = TINY["unet"] if tiny else SDXL_UNET
    vae_config = TINY["vae"] if tiny else SDXL_VAE
    first = TINY["clip"] if tiny else CLIP_L
    second = TINY["clip"] if tiny else CLIP_BIGG
    tokenizer = clip_tokenizer()
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                  eos_token_id=49407, pad_token_id=49407)  # fmt: skip
    with torch.device(device):
        pipe = StableDiffusionXLImg2ImgPipeline(
            unet=UNet2DConditionModel(**unet_config),
            vae=AutoencoderKL(**vae_config),
            text_encoder=CLIPTextModel(CLIPTextConfig(**common, **first)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**common, **second)),
            tokenizer=tokenizer, tokenizer_2=tokenizer,
            scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                             beta_schedule="scaled_linear",
                                             timestep_spacing="leading", steps_offset=1),
            requires_aesthetics_score=False,
        )  # fmt: skip
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_variant(pipe, batch: int, size: int, steps: int, repeats: int, device: str) -> float:
    """Seconds per image, after one warm-up call."""
    start = Image.new("RGB", (size, size), (120, 110, 100))
    kwargs = dict(prompt=["a red barn in a green field"] * batch, image=[start] * batch,
                  strength=0.5, num_inference_steps=steps, guidance_scale=5.0)  # fmt: skip
    pipe(**kwargs)
    _sync(device)
    began = time.perf_counter()
    for _ in range(repeats):
        pipe(**kwargs)
    _sync(device)
    return (time.perf_counter() - began) / (repeats * batch)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="scaled-down models on the CPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant")
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
    rows = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows.append(("plain (batch 1)", time_variant(pipe, 1, size, steps, args.repeats, device)))
    rows.append(("batch 4", time_variant(pipe, 4, size, steps, args.repeats, device)))
    if not args.no_compile:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs", fullgraph=True)
        rows.append((
            "batch 4 + channels-last + torch.compile",
            time_variant(pipe, 4, size, steps, args.repeats, device),
        ))  # fmt: skip
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"card: {card}; SDXL img2img {size}², {steps} steps, strength 0.5, guidance 5")
    print("| variant | s/image | 4,000 images |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {4000 * seconds / 60:.1f} min |")
    print(f"peak GPU memory: {peak:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
