"""Decoders: a registry entry turned into a loaded pipeline that decodes a batch of images per call.

Follows the public reference script (long side 1024, a multiple of 8; 40 steps; the output
resized back to the reference's size) and guards the edge cases that otherwise fail deep inside
diffusers: strength × steps < 1 step, sizes that are not a multiple of 8, and guidance scales
that differ between families (always passed explicitly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from cmc_common.hub import is_hub_id, offline_unless_reachable
from generate import restoration
from generate.registry import FAMILIES, DecoderSpec

QUALITY_PROMPT = "High quality, masterpiece, clean, high-resolution, 8k"
"""Image mode's fixed prompt in the reference script (no caption is sent in Image mode)."""


class DecoderError(RuntimeError):
    """A decoder that cannot be loaded or called; the message names the model and the fix."""


@dataclass(frozen=True)
class Request:
    """One image to decode: what the encoder sent, and the size to give the result back at."""

    prompt: str
    start: np.ndarray | None
    """The img2img start image (Pixel / Image / Full); None in Text mode."""
    strength: float
    seed: int
    size: tuple[int, int]
    """The reference's (width, height): the decoded image is resized back to it."""


@dataclass
class Decoded:
    pixels: np.ndarray | DeviceImage
    """The decoded uint8 RGB image (height × width × 3): on the host, or still on the decoder's
    device, on its way to the host (see :class:`DeviceImage`)."""
    steps: int
    """``num_inference_steps`` passed (raised so that strength × steps ≥ 1)."""
    denoising_steps: int
    """Steps the sampler actually ran: int(steps × strength) in img2img, all of them in Text."""
    nsfw: bool
    """The pipeline's safety checker flagged the output (SD-1.5-family checkpoints carry one)."""
    size: tuple[int, int] | None = None
    """The reference's (width, height), to resize ``pixels`` to when :attr:`image` is first read
    (None: they have it already)."""

    @cached_property
    def image(self) -> np.ndarray:
        """The image on the host at the reference's size. Reading it the first time waits for the
        copy from the device and resizes: ``generate run`` does that in its writer thread, so
        the decoding thread goes on to the next call at once."""
        pixels = self.pixels if isinstance(self.pixels, np.ndarray) else self.pixels.numpy()
        self.pixels = pixels  # the device memory can go
        return pixels if self.size is None else _resize(pixels, self.size)


class DeviceImage:
    """One image of a batch that the pipeline left on its device as uint8 (B × H × W × 3).

    On a CUDA device the batch's copy to pinned host memory is queued at once, behind the call's
    kernels only, and an event marks its end; :meth:`numpy` waits for that event alone. (A plain
    ``.cpu()`` in the writer thread would also wait for every kernel the decoding thread had
    queued since — the next batch's.) Elsewhere the copy is made when asked for: on the CPU
    there is nothing to copy.
    """

    def __init__(self, batch, index: int) -> None:
        self._batch, self._index = batch, index

    @staticmethod
    def of(images) -> list[DeviceImage]:
        """Each image of ``images`` (a B × 3 × H × W float tensor in [0, 1], as the pipeline's
        ``output_type="pt"`` gives), quantized on the device exactly as diffusers' own PIL
        output does (× 255, round half to even, to uint8)."""
        import torch

        quantized = (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        batch = _HostCopy(quantized.contiguous())
        return [DeviceImage(batch, i) for i in range(len(quantized))]

    def numpy(self) -> np.ndarray:
        return self._batch.wait()[self._index]


class _HostCopy:
    """A batch's way from the device to the host (see :class:`DeviceImage`)."""

    def __init__(self, images) -> None:
        import torch

        self._event = None
        if images.device.type == "cuda":
            host = torch.empty(images.shape, dtype=images.dtype, pin_memory=True)
            host.copy_(images, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
            images = host
        self._images = images

    def wait(self) -> np.ndarray:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._images.cpu().numpy()


def working_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The decoding size: long side ``long_side``, both sides rounded to a multiple of 8."""
    scale = long_side / max(width, height)
    return (
        max(8, int(round(width * scale / 8)) * 8),
        max(8, int(round(height * scale / 8)) * 8),
    )


def steps_for(strength: float, steps: int) -> int:
    """img2img runs int(strength × steps) steps: at least one is needed."""
    if not 0 < strength <= 1:
        raise DecoderError(f"strength must be in (0, 1], got {strength}")
    return max(steps, math.ceil(1 / strength))


def denoising_steps(strength: float, steps: int) -> int:
    """The steps an img2img call runs, computed exactly as diffusers' ``get_timesteps`` does.

    The start timestep and the schedule depend on the strength only through this number, so two
    strengths that give the same count give the same image: such items can share a call.
    """
    return min(int(steps * strength), steps)


def instruct_image_guidance(strength: float) -> float:
    """InstructPix2Pix has no ``strength``: how strongly it keeps the start image is its
    ``image_guidance_scale``. Strength s maps to 1 + 2·(1 − s): s = 0.5 gives 2.0, s = 0.2 keeps
    the image hard (2.6), s = 0.9 lets the text lead (1.2)."""
    return 1.0 + 2.0 * (1.0 - strength)


class Decoder:
    """One decoder, loaded on first use (so a plan loads each model once).

    ``compile=True`` is the GPU fast path: the UNet and VAE stored channels-last, the UNet's
    attention projections fused and the UNet compiled with torch.compile. Compiling is paid
    again for each new input shape (batch size, working size): it is meant for a study set of
    thousands of images, not a short run or the CPU.
    Whether it pays on a given card is what bench/generate_gpu.py measures.
    """

    def __init__(
        self, spec: DecoderSpec, device: str, long_side: int = 1024, steps: int = 40,
        compile: bool = False,
    ) -> None:  # fmt: skip
        self.spec, self.device, self.long_side, self.steps = spec, device, long_side, steps
        self.compile = compile
        self._image2image = None
        self._text2image = None

    def load(self) -> None:
        """Build the pipeline from the entry's weights (hub id or local folder)."""
        if self.spec.family == "external" or self._image2image is not None:
            return
        import diffusers
        import torch

        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        kwargs: dict = {"torch_dtype": dtype}
        if any(
            is_hub_id(n or "") for n in (self.spec.weights, self.spec.vae, self.spec.motion_adapter)
        ):
            offline_unless_reachable()  # no network: fail in seconds, not after minutes of retries
        try:
            if self.spec.family == "animatediff":
                kwargs["motion_adapter"] = diffusers.MotionAdapter.from_pretrained(
                    self.spec.motion_adapter, torch_dtype=dtype
                )
            if self.spec.vae:
                kwargs["vae"] = diffusers.AutoencoderKL.from_pretrained(
                    self.spec.vae, torch_dtype=dtype
                )
            image_class = FAMILIES[self.spec.family][0]
            pipe = getattr(diffusers, image_class).from_pretrained(self.spec.weights, **kwargs)
        except Exception as error:  # hub / file errors come in many classes
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise DecoderError(
                f"{self.spec.name}: cannot load weights '{self.spec.weights}'"
                f"{f' or VAE {self.spec.vae!r}' if self.spec.vae else ''} ({first}). Download "
                f"them, or point at a local copy with a models TOML: [{self.spec.name}] "
                'weights = "/path/to/folder" (python -m generate run --models-config FILE)'
            ) from error
        self.use(pipe)

    def use(self, pipe) -> None:
        """Decode with this image-to-image pipeline: the loader's last step, and how the GPU
        benchmark times this very code on a pipeline built from configurations."""
        import diffusers
        import torch

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        if self.compile:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
            if hasattr(pipe.unet, "fuse_qkv_projections"):  # one matmul for q, k, v
                pipe.unet.fuse_qkv_projections()
            # diffusers' SDXL recipe, in the default mode: max-autotune searches kernel
            # configurations for minutes per shape, which the one prepared GPU run
            # (bench/device.sh, 8 minutes) cannot afford.
            pipe.unet = torch.compile(pipe.unet, options={"conv_1x1_as_mm": True})
        self._image2image = _unwatermarked(pipe)
        text_class = FAMILIES[self.spec.family][1]
        if text_class is not None:  # shares every component, so nothing is loaded twice
            self._text2image = _unwatermarked(getattr(diffusers, text_class).from_pipe(pipe))
            self._text2image.set_progress_bar_config(disable=True)

    def schedule(self, mode: str, strength: float) -> tuple[int, int]:
        """(``num_inference_steps`` to pass, steps the sampler runs) for one image."""
        if mode == "Text" or self.spec.family in ("instruct-pix2pix", "external"):
            return self.steps, self.steps
        total = steps_for(strength, self.steps)
        return total, denoising_steps(strength, total)

    def batch_key(self, mode: str, strength: float, size: tuple[int, int]) -> tuple:
        """Images with equal keys can share one pipeline call.

        Same mode, working size and schedule. diffusers' img2img uses the strength only through
        the number of denoising steps, so in a study whose strengths are all different, images
        whose strengths give the same count still batch, and each comes out as it would alone (up
        to the last bits of batched arithmetic). InstructPix2Pix turns the strength into its image
        guidance and the restoration commands take it as is: there it must match exactly.
        """
        exact = mode != "Text" and self.spec.family in ("instruct-pix2pix", "external")
        working = working_size(*size, self.long_side)
        return (mode, working, self.schedule(mode, strength), strength if exact else None)

    @property
    def one_per_call(self) -> bool:
        """AnimateDiff (one-frame video) and the external restoration commands take one image."""
        return self.spec.family in ("animatediff", "external")

    def __call__(self, mode: str, request: Request) -> Decoded:
        """Decode one image."""
        return self.batch(mode, [request])[0]

    def batch(self, mode: str, requests: Sequence[Request]) -> list[Decoded]:
        """Decode images that share a :meth:`batch_key` in one pipeline call.

        Each image keeps its own seeded generator, so its noise does not depend on its
        neighbours. AnimateDiff and the external restoration models decode one image per call
        (:attr:`one_per_call`).
        """
        if mode not in self.spec.modes:
            raise DecoderError(f"{self.spec.name} cannot decode {mode} mode")
        if len({self.batch_key(mode, r.strength, r.size) for r in requests}) != 1:
            raise DecoderError(
                f"{self.spec.name}: these {len(requests)} images cannot share one call "
                "(their working sizes or denoising steps differ)"
            )
        first = requests[0]
        steps, denoised = self.schedule(mode, first.strength)
        if self.one_per_call and len(requests) > 1:
            return [self(mode, r) for r in requests]
        if self.spec.family == "external":
            image = restoration.run(self.spec, first.start, first.prompt, first.strength, steps,
                                    first.seed)  # fmt: skip
            return [Decoded(image, steps, denoised, False, first.size)]
        import torch

        self.load()
        width, height = working_size(*first.size, self.long_side)
        common = {
            "prompt": [r.prompt for r in requests],
            "guidance_scale": self.spec.guidance_scale,
            "generator": [torch.Generator("cpu").manual_seed(int(r.seed)) for r in requests],
        }
        if mode == "Text":
            images, flags = self._text_to_image(common, width, height, steps)
        elif self.spec.family == "animatediff":  # a video of one frame: PIL in, as before
            starts = [Image.fromarray(_resize(r.start, (width, height))) for r in requests]
            images, flags = self._image_to_image(common, starts, first.strength, steps)
        else:
            images, flags = self._image_to_image(common, self._starts(requests, width, height),
                                                 first.strength, steps)  # fmt: skip
        return [
            Decoded(image, steps, denoised, flag, r.size)
            for r, image, flag in zip(requests, DeviceImage.of(images), flags, strict=True)
        ]

    def _starts(self, requests: Sequence[Request], width: int, height: int):
        """The start images as one B × 3 × H × W float tensor in [0, 1] on the decoder's device.

        Only the uint8 pixels are handled on the host (resized to the working size, as PIL
        did before, when they are not at it already); the pipeline's own conversion of a PIL
        image — to float32 numpy, to a tensor, normalized, 12 MiB per 1024² image on the host —
        becomes a few kernels. Same values: x / 255 is correctly rounded on either side (the
        divisor is a device tensor, since CUDA turns division by a host scalar into a
        multiplication by its reciprocal).
        """
        import torch

        pixels = np.stack([_resize(r.start, (width, height)) for r in requests])
        on_device = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2)
        return on_device.float() / torch.tensor(255.0, device=on_device.device)

    def _text_to_image(self, common: dict, width: int, height: int, steps: int):
        if self.spec.family == "animatediff":
            result = self._text2image(**common, num_frames=1, height=height, width=width,
                                      num_inference_steps=steps, output_type="pt")  # fmt: skip
            return result.frames[0], [False]
        result = self._text2image(**common, height=height, width=width, num_inference_steps=steps,
                                  output_type="pt")  # fmt: skip
        return result.images, _flags(result)

    def _image_to_image(self, common: dict, starts, strength: float, steps: int):
        """One img2img call; the images come back as a B × 3 × H × W tensor in [0, 1], left on
        the device (``output_type="pt"``) instead of converted to PIL on the host."""
        common = {**common, "num_inference_steps": steps, "output_type": "pt"}
        if self.spec.family == "instruct-pix2pix":
            result = self._image2image(**common, image=starts,
                                       image_guidance_scale=instruct_image_guidance(strength))  # fmt: skip
            return result.images, _flags(result)
        if self.spec.family == "animatediff":
            result = self._image2image(**common, video=starts, strength=strength)
            return result.frames[0], [False]
        result = self._image2image(**common, image=starts, strength=strength)
        return result.images, _flags(result)


def _unwatermarked(pipe):
    """The pipeline without diffusers' invisible watermark. SDXL-family pipelines stamp one on
    every output whenever the optional ``invisible-watermark`` package is installed: the same
    plan would then give different images on different machines, each with a distortion the
    study did not plan."""
    if hasattr(pipe, "watermark"):
        pipe.watermark = None
    return pipe


def _flags(result) -> list[bool]:
    """The safety checker's verdict per image (False where the pipeline has none)."""
    flags = getattr(result, "nsfw_content_detected", None)
    return [bool(f) for f in flags] if flags else [False] * len(result.images)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` = (width, height), bicubic (PIL's), or itself if it is already."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
