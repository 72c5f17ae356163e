"""The host-side cost per image of ``generate run``'s decoder at 1024², outside the models.

    python bench/decode_host.py                        # 1024² references, 2 calls of 2 images
    python bench/decode_host.py --reference 1280x960   # references resized to 1024×768 and back

Issue 15: on a GPU, whatever the decoding thread does besides queuing the models' kernels is
time the GPU may wait. This times the real :class:`generate.decode.Decoder` (Full mode, strength
0.5) on the tiny random-weight SD pipeline of ``generate/tiny.py`` at working size 1024 on
the long side, and subtracts the time spent inside the models (UNet, VAE encoder and decoder,
text encoder; timed by forward hooks). What is left is the decoding thread's own work: the
start images' and the outputs' conversions, resizes, and the pipeline's Python and scheduler.
Then it times reading each ``Decoded.image`` as ``generate run``'s writer thread does (copy to
the host, resize back to the reference's size).

Times are CPU seconds of the calling thread (``time.thread_time``), with torch held to one
intra-op thread so that all its work runs there: the project's machine is shared, and its wall
times vary several-fold with the load, its CPU times much less.

On this CPU the device *is* the host: the conversions that run as tensor ops on the device (the
start images' scaling, the outputs' quantization) still count as host time here; on a GPU they
are a few kernels. So these figures bound the GPU's host cost from above.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionImg2ImgPipeline
from PIL import Image
from transformers import CLIPTextModel

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: see --help
from generate.decode import Decoder, Request  # noqa: E402
from generate.offline import clip_tokenizer  # noqa: E402
from generate.registry import DecoderSpec  # noqa: E402
from generate.tiny import _text_config, _unet  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "annotate" / "demo_data"


class ModelClock:
    """CPU seconds spent inside the given modules' forward calls (none inside another)."""

    def __init__(self, modules) -> None:
        self.seconds, self._began = 0.0, 0.0
        for module in modules:
            module.register_forward_pre_hook(self._start)
            module.register_forward_hook(self._stop)

    def _start(self, *_) -> None:
        self._began = time.thread_time()

    def _stop(self, *_) -> None:
        self.seconds += time.thread_time() - self._began


def tiny_pipeline() -> StableDiffusionImg2ImgPipeline:
    """SD's layout at a fraction of the cost: the tests' tiny UNet and text encoder, and a VAE
    of four 8-channel levels (SD's 8× latent downsampling: 128² latents at 1024²)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[8] * 4, in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        norm_num_groups=8, layers_per_block=1,
    )  # fmt: skip
    return StableDiffusionImg2ImgPipeline(
        unet=_unet(), vae=vae, text_encoder=CLIPTextModel(_text_config()),
        tokenizer=clip_tokenizer(), scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).to(torch.float32)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="1024x1024", help="references' WIDTHxHEIGHT")
    parser.add_argument("--long-side", type=int, default=1024, help="the decoding size")
    parser.add_argument("--batch", type=int, default=2, help="images per decoder call")
    parser.add_argument("--calls", type=int, default=2, help="timed calls (after one warm-up)")
    parser.add_argument("--steps", type=int, default=4, help="steps (strength 0.5: half run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.reference.split("x"))
    photo = np.asarray(Image.open(DEMO / "chelsea.png").convert("RGB").resize(size))
    requests = [Request("a cat", photo, 0.5, seed, size) for seed in range(args.batch)]
    decoder = Decoder(DecoderSpec("SD15", "tiny random weights", "sd"), "cpu",
                      long_side=args.long_side, steps=args.steps)  # fmt: skip
    decoder.use(tiny_pipeline())
    pipe = decoder._image2image
    vae = pipe.vae
    clock = ModelClock([pipe.unet, pipe.text_encoder, vae.encoder, vae.decoder]
                       + [m for m in (vae.quant_conv, vae.post_quant_conv) if m is not None])  # fmt: skip
    for image in decoder.batch("Full", requests):  # warm-up: allocations, lazy imports
        image.image  # noqa: B018
    cpu = models = writer = 0.0
    for _ in range(args.calls):
        clock.seconds = 0.0
        began = time.thread_time()
        decoded = decoder.batch("Full", requests)
        cpu += time.thread_time() - began
        models += clock.seconds
        began = time.thread_time()
        for image in decoded:
            image.image  # noqa: B018  (what the writer thread reads)
        writer += time.thread_time() - began
    images = args.calls * args.batch
    print(f"torch {torch.__version__}, 1 intra-op thread, CPU seconds; tiny SD, "
          f"references {size[0]}×{size[1]}, long side {args.long_side}, {args.calls} calls × "
          f"{args.batch} images, {args.steps} steps × strength 0.5")  # fmt: skip
    print(f"decoder call: {cpu / images:.3f} s/image, of which in the models "
          f"{models / images:.3f}")  # fmt: skip
    print(f"host work on the decoding thread: {(cpu - models) / images * 1000:.0f} ms/image")
    print(f"left to the writer thread (Decoded.image): {writer / images * 1000:.0f} ms/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
