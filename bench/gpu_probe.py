"""Why a GPU decodes at the speed it does: the card's matmul throughput and clocks, then, with
bench/generate_gpu.py's full-size random-weight SDXL models,

- ``unet``: the UNet alone (one classifier-free call) under a few settings, its slowest kernels;
- ``vae``: the VAE alone at 1024², with PyTorch's fused attention and diffusers' classic one;
- ``stages``: where one pipeline call spends its time (text encoders, UNet, scheduler, VAE,
  image conversions, and the rest), for the reference script's call and ``generate run``'s
  decoder at batch 4. On an H200 the UNet and VAE timed alone came to about 0.85 s per image
  while the pipeline took 5.4 (bench/README.md): this part says which stage holds the rest.

    python bench/gpu_probe.py                     # on the lent GPU (about 2 minutes)
    python bench/gpu_probe.py --only stages       # the card and one part
    python bench/gpu_probe.py --tiny              # a scaled-down check of this script, on the CPU
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_gpu import (  # noqa: E402
    SDXL_UNET,
    SDXL_VAE,
    TINY,
    build,
    full_mode_requests,
    reference_call,
    seconds_per_call,
    set_training,
    sync,
)

from generate.decode import Decoder  # noqa: E402
from generate.registry import DecoderSpec  # noqa: E402

UNET_TFLOP_PER_IMAGE = 13.5  # one classifier-free SDXL UNet call at 1024² (issue 4)
PARTS = ("unet", "vae", "stages")


@dataclass(frozen=True)
class Setup:
    """Where and at what size the probe runs: the GPU at full size, or the CPU scaled down."""

    device: str
    dtype: torch.dtype
    size: int  # image side, pixels
    steps: int
    matmul: int
    unet: dict
    vae: dict
    tiny: bool

    @property
    def latent(self) -> int:
        return self.size // 8


GPU = Setup("cuda", torch.float16, 1024, 40, 8192, SDXL_UNET, SDXL_VAE, tiny=False)
CPU = Setup("cpu", torch.float32, 64, 4, 256, TINY["unet"], TINY["vae"], tiny=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=PARTS, help="probe one part (default: all)")
    parser.add_argument("--tiny", action="store_true", help="scaled-down models on the CPU")
    args = parser.parse_args()
    setup = CPU if args.tiny else GPU
    if not setup.tiny:
        if not torch.cuda.is_available():
            print("no GPU here: use --tiny to check the script on the CPU", file=sys.stderr)
            return 2
        query = "name,clocks.sm,clocks.max.sm,power.draw,power.limit,mig.mode.current"
        print(subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                             capture_output=True, text=True).stdout.strip())  # fmt: skip
        print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    n = setup.matmul
    for dtype in (torch.float16, torch.bfloat16):
        a = torch.randn(n, n, device=setup.device, dtype=dtype)
        seconds = timed(setup, lambda a=a: a @ a, 10)
        print(f"matmul {n}³ {dtype}: {2 * n**3 / seconds / 1e12:.1f} TFLOP/s", flush=True)
    for part in PARTS:
        if args.only in (None, part):
            {"unet": probe_unet, "vae": probe_vae, "stages": probe_stages}[part](setup)
    return 0


def probe_unet(setup: Setup) -> None:
    """One classifier-free UNet call at 1 and 4 images, then with cuDNN's algorithm search and
    channels-last; its slowest kernels."""
    with torch.device(setup.device):
        unet = UNet2DConditionModel(**setup.unet)
    unet.to(setup.dtype).eval().requires_grad_(False)
    for images in (1, 4):
        report(f"UNet, {images} image(s)", timed(setup, unet_call(setup, unet, images), 5), images)
    torch.backends.cudnn.benchmark = True
    call = unet_call(setup, unet, 4)
    report("UNet, 4 images, cudnn.benchmark", timed(setup, call, 5), 4)
    unet.to(memory_format=torch.channels_last)
    report("UNet, 4 images, cudnn.benchmark, channels-last", timed(setup, call, 5), 4)
    torch.backends.cudnn.benchmark = False
    kernels(setup, call)


def probe_vae(setup: Setup) -> None:
    """The VAE, one image: encode and decode with PyTorch's fused attention (diffusers' default)
    and with the classic processor (batched matmuls): the VAE attends with one head of 512
    channels over 16,384 tokens at 1024², which no flash kernel takes."""
    with torch.device(setup.device):
        vae = AutoencoderKL(**setup.vae)
        image = torch.randn(1, 3, setup.size, setup.size, dtype=setup.dtype)
        latents = torch.randn(1, 4, setup.latent, setup.latent, dtype=setup.dtype)
    vae.to(setup.dtype).eval().requires_grad_(False)

    @torch.inference_mode()
    def encode():
        return vae.encode(image).latent_dist.mean

    @torch.inference_mode()
    def decode():
        return vae.decode(latents).sample

    for name, processor in (("fused attention", AttnProcessor2_0), ("classic", AttnProcessor)):
        vae.set_attn_processor(processor())
        print(f"VAE, {setup.size}², {name}: encode {timed(setup, encode, 3) * 1000:.0f} ms, "
              f"decode {timed(setup, decode, 3) * 1000:.0f} ms", flush=True)  # fmt: skip
        kernels(setup, decode, rows=6)


def probe_stages(setup: Setup) -> None:
    """Seconds per stage of one pipeline call, each stage timed between two synchronizations,
    for the reference script's call (1 image, fp32 VAE; with the models in training mode, as
    bench/generate_gpu.py built them when it was first run, then in evaluation mode, then also
    under ``torch.inference_mode``) and ``generate run``'s decoder (4 images)."""
    pipe = build(setup.device, setup.dtype, setup.tiny)
    spent: dict[str, float] = {}
    for label, owner, method in (
        ("text encoder 1", pipe.text_encoder, "forward"),
        ("text encoder 2", pipe.text_encoder_2, "forward"),
        ("UNet", pipe.unet, "forward"),
        ("scheduler step", pipe.scheduler, "step"),
        ("VAE encode", pipe.vae, "encode"),
        ("VAE decode", pipe.vae, "decode"),
        ("image to tensor", pipe.image_processor, "preprocess"),
        ("tensor to image", pipe.image_processor, "postprocess"),
        ("invisible watermark", pipe.watermark, "apply_watermark"),  # None unless installed
    ):
        if owner is not None:
            setattr(owner, method, _timing(setup, getattr(owner, method), label, spent))
    reference = reference_call(pipe, setup.size, setup.steps)
    pipe.vae.register_to_config(force_upcast=True)

    set_training(pipe, True)
    stage_table(setup, "reference script's call, 1 image, fp32 VAE, models in training mode",
                reference, spent)  # fmt: skip
    set_training(pipe, False)
    stage_table(setup, "reference script's call, 1 image, fp32 VAE", reference, spent)
    with torch.inference_mode():  # the pipeline's own guard is torch.no_grad
        stage_table(setup, "reference script's call, 1 image, fp32 VAE, in inference mode",
                    reference, spent)  # fmt: skip
    pipe.vae.register_to_config(force_upcast=False)
    decoder = Decoder(DecoderSpec("SDXL", "random weights", "sdxl"), setup.device, setup.size,
                      setup.steps)  # fmt: skip
    decoder.use(pipe)
    requests = full_mode_requests(4, setup.size)
    stage_table(setup, "generate run's decoder, 4 images", lambda: decoder.batch("Full", requests),
                spent)  # fmt: skip


def stage_table(setup: Setup, name: str, call, spent: dict[str, float]) -> None:
    """Run ``call`` once to warm up, then once more timing each stage; print the stages."""
    call()
    spent.clear()
    sync(setup.device)
    began = time.perf_counter()
    call()
    sync(setup.device)
    total = time.perf_counter() - began
    print(f"{name}: {total:.2f} s", flush=True)
    for label, seconds in [*spent.items(), ("everything else", total - sum(spent.values()))]:
        print(f"    {label:16s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %", flush=True)


def _timing(setup: Setup, method, label: str, spent: dict[str, float]):
    """``method``, adding its synchronized wall time to ``spent[label]``."""

    def timed_method(*args, **kwargs):
        sync(setup.device)
        began = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            sync(setup.device)
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - began

    return timed_method


def kernels(setup: Setup, call, rows: int = 15) -> None:
    """The kernels that take the longest in one call."""
    activity, key = (
        (torch.profiler.ProfilerActivity.CPU, "cpu_time_total")
        if setup.tiny
        else (torch.profiler.ProfilerActivity.CUDA, "cuda_time_total")
    )
    call()
    sync(setup.device)
    with torch.profiler.profile(activities=[activity]) as profile:
        call()
        sync(setup.device)
    table = profile.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)
    print(table, flush=True)


def unet_call(setup: Setup, unet, images: int):
    """One classifier-free call (2 × images latents, SDXL's conditioning)."""
    batch, config = 2 * images, setup.unet
    pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    size = setup.size
    with torch.device(setup.device):
        latents = torch.randn(batch, 4, setup.latent, setup.latent, dtype=setup.dtype)
        text = torch.randn(batch, 77, config["cross_attention_dim"], dtype=setup.dtype)
        added = {"text_embeds": torch.randn(batch, pooled, dtype=setup.dtype),
                 "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch,
                                          dtype=setup.dtype)}  # fmt: skip
        t = torch.tensor(500.0)

    @torch.inference_mode()
    def call():
        return unet(latents, t, encoder_hidden_states=text, added_cond_kwargs=added).sample

    return call


def timed(setup: Setup, call, repeats: int) -> float:
    """Seconds per call, after one warm-up call."""
    return seconds_per_call(call, repeats, setup.device)[0]


def report(name: str, seconds: float, images: int) -> None:
    """A UNet timing, with the TFLOP/s it implies at SDXL's full size."""
    tflops = UNET_TFLOP_PER_IMAGE * images / seconds
    print(f"{name}: {seconds * 1000:.0f} ms per call, {seconds / images * 1000:.0f} ms per "
          f"image-step ({tflops:.0f} TFLOP/s at full size); 20 steps: "
          f"{20 * seconds / images:.2f} s/image", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
