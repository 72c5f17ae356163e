"""Tiny random-weight diffusion pipelines, built offline from inline configs and saved in the
diffusers folder layout, so that the generator's real loading code (``from_pretrained`` on a
local folder) runs on them. The CLIP tokenizer is the real one (see generate.offline).

They make noise, not images: they exist so that the tests, the figure of docs/compare.md and a
new user's dry run (``python -m generate tiny-models DIR``) exercise every stage on a CPU without
downloading a single weight."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    MotionAdapter,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from generate.offline import clip_tokenizer

VOCAB_SIZE = 49408


def _text_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=VOCAB_SIZE,
        max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
    )  # fmt: skip


def _vae(**extra) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32, **extra,
    )  # fmt: skip


def save_vae(folder: Path, **extra) -> Path:
    """A stand-alone VAE folder, as a replacement VAE (``vae`` in the models TOML) is published."""
    _vae(**extra).save_pretrained(folder)
    return folder


def _unet(in_channels: int = 4, cross_attention_dim: int = 32, **extra) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_attention_dim,
        norm_num_groups=32, **extra,
    )  # fmt: skip


def save_sd(folder: Path, in_channels: int = 4) -> Path:
    """An SD-1.5-layout pipeline (img2img class; in_channels=8 makes an InstructPix2Pix one)."""
    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    parts = dict(
        unet=_unet(in_channels), vae=_vae(), text_encoder=CLIPTextModel(_text_config()),
        tokenizer=tokenizer, scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    cls = (
        StableDiffusionInstructPix2PixPipeline
        if in_channels == 8
        else StableDiffusionImg2ImgPipeline
    )
    cls(**parts).save_pretrained(folder)
    return folder


def save_sdxl(folder: Path) -> Path:
    """An SDXL-layout pipeline: two text encoders and the text-time embedding."""
    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    pipe = StableDiffusionXLImg2ImgPipeline(
        unet=_sdxl_unet(), vae=_vae(), text_encoder=CLIPTextModel(_text_config()),
        tokenizer=tokenizer, text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(
            beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
        ),
        requires_aesthetics_score=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def _sdxl_unet() -> UNet2DConditionModel:
    """The tiny UNet with SDXL's additions: text-time embedding, linear projections."""
    return _unet(
        cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
    )  # fmt: skip


def save_motion_adapter(folder: Path) -> Path:
    """A motion adapter matching the tiny SD UNet, for the AnimateDiff decoder."""
    torch.manual_seed(0)
    MotionAdapter(
        block_out_channels=(32, 64), motion_layers_per_block=1, motion_norm_num_groups=2,
        motion_num_attention_heads=4,
    ).save_pretrained(folder)  # fmt: skip
    return folder


def write_tiny_models(folder: Path) -> Path:
    """Tiny SD-1.5- and SDXL-layout pipelines under ``folder`` and a models TOML that points the
    registry's SD15 and RealVis at them; returns the TOML's path (``--models-config``)."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = save_sd(folder / "sd")
    sdxl = save_sdxl(folder / "sdxl")
    config = folder / "models.toml"
    config.write_text(
        "# Tiny random-weight decoders: they make noise, for offline dry runs only.\n"
        f'[SD15]\nweights = "{sd.resolve()}"\n\n[RealVis]\nweights = "{sdxl.resolve()}"\n'
    )
    return config
