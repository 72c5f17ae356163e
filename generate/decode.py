"""Decoders: a registry entry turned into a loaded pipeline that makes one image per call.

Follows the public reference script (long side 1024, a multiple of 8; 40 steps; the output
resized back to the reference's size) and guards the edge cases that otherwise fail deep inside
diffusers: strength × steps < 1 step, sizes that are not a multiple of 8, and guidance scales
that differ between families (always passed explicitly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from generate import restoration
from generate.registry import FAMILIES, DecoderSpec

QUALITY_PROMPT = "High quality, masterpiece, clean, high-resolution, 8k"
"""Image mode's fixed prompt in the reference script (no caption is sent in Image mode)."""


class DecoderError(RuntimeError):
    """A decoder that cannot be loaded or called; the message names the model and the fix."""


@dataclass
class Decoded:
    image: np.ndarray
    steps: int
    """Denoising steps actually requested (raised so that strength × steps ≥ 1)."""
    nsfw: bool
    """The pipeline's safety checker flagged the output (SD-1.5-family checkpoints carry one)."""


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


def instruct_image_guidance(strength: float) -> float:
    """InstructPix2Pix has no ``strength``: how strongly it keeps the start image is its
    ``image_guidance_scale``. Strength s maps to 1 + 2·(1 − s): s = 0.5 gives 2.0, s = 0.2 keeps
    the image hard (2.6), s = 0.9 lets the text lead (1.2)."""
    return 1.0 + 2.0 * (1.0 - strength)


class Decoder:
    """One decoder, loaded on first use (so a plan loads each model once)."""

    def __init__(self, spec: DecoderSpec, device: str, long_side: int = 1024, steps: int = 40):
        self.spec, self.device, self.long_side, self.steps = spec, device, long_side, steps
        self._image2image = None
        self._text2image = None

    def load(self) -> None:
        if self.spec.family == "external" or self._image2image is not None:
            return
        import diffusers
        import torch

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        image_class, text_class, _ = FAMILIES[self.spec.family]
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        kwargs: dict = {"torch_dtype": dtype}
        try:
            if self.spec.family == "animatediff":
                kwargs["motion_adapter"] = diffusers.MotionAdapter.from_pretrained(
                    self.spec.motion_adapter, torch_dtype=dtype
                )
            pipe = getattr(diffusers, image_class).from_pretrained(self.spec.weights, **kwargs)
        except Exception as error:  # hub / file errors come in many classes
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise DecoderError(
                f"{self.spec.name}: cannot load weights '{self.spec.weights}' ({first}). Download "
                f"them, or point at a local copy with a models TOML: [{self.spec.name}] "
                'weights = "/path/to/folder" (python -m generate run --models-config FILE)'
            ) from error
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self._image2image = pipe
        if text_class is not None:
            self._text2image = getattr(diffusers, text_class).from_pipe(pipe)
            self._text2image.set_progress_bar_config(disable=True)

    def __call__(
        self, mode: str, prompt: str, start: np.ndarray | None, strength: float, seed: int,
        size: tuple[int, int],
    ) -> Decoded:  # fmt: skip
        """Decode one image of ``size`` = (width, height) from ``prompt`` and ``start``."""
        return self.batch(mode, [prompt], [start], strength, [seed], size)[0]

    def batch(
        self, mode: str, prompts: list[str], starts: list[np.ndarray | None], strength: float,
        seeds: list[int], size: tuple[int, int],
    ) -> list[Decoded]:  # fmt: skip
        """Decode several images of one mode, strength and size in one pipeline call.

        Each image keeps its own seeded generator, so its noise does not depend on its
        neighbours; the arithmetic of a batch may still differ from single calls in the last bits.
        AnimateDiff and the external restoration models decode one image per call.
        """
        if mode not in self.spec.modes:
            raise DecoderError(f"{self.spec.name} cannot decode {mode} mode")
        if self.spec.family == "external":
            return [
                Decoded(
                    _resize(restoration.run(self.spec, start, prompt, strength, self.steps, seed), size),
                    self.steps, False,
                )
                for prompt, start, seed in zip(prompts, starts, seeds, strict=True)
            ]  # fmt: skip
        if self.spec.family == "animatediff" and len(prompts) > 1:
            return [d for args in zip(prompts, starts, seeds, strict=True)
                    for d in self.batch(mode, [args[0]], [args[1]], strength, [args[2]], size)]  # fmt: skip
        import torch

        self.load()
        width, height = working_size(*size, self.long_side)
        common = {
            "prompt": list(prompts),
            "guidance_scale": self.spec.guidance_scale,
            "generator": [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds],
        }
        if mode == "Text":
            steps = self.steps
            images, flags = self._text_to_image(common, width, height, steps)
        else:
            resized = [
                Image.fromarray(start).resize((width, height), Image.Resampling.BICUBIC)
                for start in starts
            ]
            steps = steps_for(strength, self.steps)
            images, flags = self._image_to_image(common, resized, strength, steps)
        return [
            Decoded(image=_resize(np.asarray(image.convert("RGB")), size), steps=steps, nsfw=flag)
            for image, flag in zip(images, flags, strict=True)
        ]

    def _text_to_image(self, common: dict, width: int, height: int, steps: int):
        if self.spec.family == "animatediff":
            result = self._text2image(**common, num_frames=1, height=height, width=width,
                                      num_inference_steps=steps)  # fmt: skip
            return [result.frames[0][0]], [False]
        result = self._text2image(**common, height=height, width=width, num_inference_steps=steps)
        return result.images, _flags(result)

    def _image_to_image(self, common: dict, starts: list[Image.Image], strength: float, steps: int):
        if self.spec.family == "instruct-pix2pix":
            result = self._image2image(
                **common, image=starts, num_inference_steps=steps,
                image_guidance_scale=instruct_image_guidance(strength),
            )  # fmt: skip
            return result.images, _flags(result)
        if self.spec.family == "animatediff":
            result = self._image2image(**common, video=starts, strength=strength,
                                       num_inference_steps=steps)  # fmt: skip
            return [result.frames[0][0]], [False]
        result = self._image2image(**common, image=starts, strength=strength,
                                   num_inference_steps=steps)  # fmt: skip
        return result.images, _flags(result)


def _flags(result) -> list[bool]:
    """The safety checker's verdict per image (False where the pipeline has none)."""
    flags = getattr(result, "nsfw_content_detected", None)
    return [bool(f) for f in flags] if flags else [False] * len(result.images)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
