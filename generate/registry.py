"""The decoders (T2I models) of CMC-Bench, by name — one place to add a model or point at weights.

Eight *generative* models decode every mode; four *restoration* models need a start image, so they
decode Full and Image only (paper, 3.3). Each entry names its weights (a hub id or a local folder),
its diffusers pipeline classes and its family's guidance scale, which is always passed explicitly
(and recorded in the manifest). The public CMC-Bench script passes none, so every model runs at its
diffusers pipeline's default: 7.5 for SD-1.5, AnimateDiff and InstructPix2Pix, 5.0 for every
SDXL-class pipeline — Playground v2 / v2.5 included, whose model cards suggest 3.0. The families
below take exactly those defaults (a test reads them off the pipelines); ``guidance = 3.0`` under
``[PG20]`` / ``[PG25]`` in a models TOML gives the model cards' value instead.

Restoration models without a diffusers port (DiffBIR, PASD, StableSR) run through their official
inference code, which the user installs: their entry holds the command line (see
:mod:`generate.restoration`).

Add or override entries with a TOML file (``--models models.toml``)::

    [RealVis]
    weights = "/data/weights/RealVisXL_V4.0"      # a local copy instead of the hub id

    [MyModel]                                     # a new model
    weights = "me/my-sdxl-finetune"
    family = "sdxl"

    [SDXL]
    vae = "madebyollin/sdxl-vae-fp16-fix"        # decode in fp16 on a GPU

    [DiffBIR]
    command = "python /opt/DiffBIR/inference.py --input {input} --output {output} --steps {steps}"
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

MODES = ("Text", "Pixel", "Image", "Full")
RESTORATION_MODES = ("Full", "Image")
CAPTIONED_MODES = ("Text", "Pixel", "Full")
"""The modes whose encoder sends a caption (Image mode sends a fixed quality prompt)."""
CODED_MODES = ("Image", "Full")
"""The modes whose encoder sends a traditional codec's low-bitrate image."""
CAPTION_WORDS = (5, 10, 20, 50)
"""The caption lengths the paper's I2T prompts ask for (A.4)."""

FAMILIES = {
    # family: (image-to-image pipeline class, text-to-image pipeline class, guidance scale)
    "sd": ("StableDiffusionImg2ImgPipeline", "StableDiffusionPipeline", 7.5),
    "sdxl": ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLPipeline", 5.0),
    "playground": ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLPipeline", 5.0),
    "animatediff": ("AnimateDiffVideoToVideoPipeline", "AnimateDiffPipeline", 7.5),
    "instruct-pix2pix": ("StableDiffusionInstructPix2PixPipeline", None, 7.5),
    "external": (None, None, 0.0),
}


@dataclass(frozen=True)
class DecoderSpec:
    """How to build and call one T2I decoder."""

    name: str
    weights: str
    """Hub id or local folder of the diffusers weights (for 'external': unused)."""
    family: str
    kind: str = "generative"
    """'generative' (all four modes) or 'restoration' (Full and Image only)."""
    guidance: float | None = None
    """Classifier-free guidance scale; None = the family's."""
    motion_adapter: str | None = None
    """AnimateDiff only: the motion adapter's hub id or folder."""
    command: str | None = None
    """External restoration models: the official inference command (see generate.restoration)."""
    vae: str | None = None
    """A replacement VAE (hub id or folder). SDXL's own VAE overflows in fp16, so diffusers
    decodes it in fp32; ``madebyollin/sdxl-vae-fp16-fix`` decodes in fp16, faster on a GPU."""
    options: dict = field(default_factory=dict)

    @property
    def guidance_scale(self) -> float:
        return self.guidance if self.guidance is not None else FAMILIES[self.family][2]

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.kind == "generative" else RESTORATION_MODES


REGISTRY: dict[str, DecoderSpec] = {
    spec.name: spec
    for spec in (
        DecoderSpec("SD15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd"),
        DecoderSpec("SDXL", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl"),
        DecoderSpec("SSD1B", "segmind/SSD-1B", "sdxl"),
        DecoderSpec("RealVis", "SG161222/RealVisXL_V4.0", "sdxl"),
        DecoderSpec("PG20", "playgroundai/playground-v2-1024px-aesthetic", "playground"),
        # PG 2.5's own scheduler config is EDM (EDMDPMSolverMultistepScheduler): loaded with it.
        DecoderSpec("PG25", "playgroundai/playground-v2.5-1024px-aesthetic", "playground"),
        DecoderSpec("Dreamlike", "dreamlike-art/dreamlike-photoreal-2.0", "sd"),
        DecoderSpec(
            "Animate",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "animatediff",
            motion_adapter="guoyww/animatediff-motion-adapter-v1-5-2",
        ),
        DecoderSpec(
            "InstructPix", "timbrooks/instruct-pix2pix", "instruct-pix2pix", kind="restoration"
        ),
        DecoderSpec("DiffBIR", "", "external", kind="restoration"),
        DecoderSpec("PASD", "", "external", kind="restoration"),
        DecoderSpec("StableSR", "", "external", kind="restoration"),
    )
}
"""The paper's twelve decoders (CMC-Bench Table 2 / 3.3)."""

GENERATIVE = tuple(n for n, s in REGISTRY.items() if s.kind == "generative")
RESTORATION = tuple(n for n, s in REGISTRY.items() if s.kind == "restoration")


class RegistryError(ValueError):
    """A model name or configuration that cannot be used; the message says how to fix it."""


def load_registry(overrides: str | Path | None = None) -> dict[str, DecoderSpec]:
    """The built-in registry, with entries added or changed by a TOML file."""
    registry = dict(REGISTRY)
    if overrides is None:
        return registry
    path = Path(overrides)
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RegistryError(f"{path}: cannot read the model configuration ({error})") from error
    allowed = {"weights", "family", "kind", "guidance", "motion_adapter", "command", "options",
               "vae"}  # fmt: skip
    for name, values in table.items():
        unknown = set(values) - allowed
        if unknown:
            raise RegistryError(f"{path}: [{name}] has unknown key(s) {', '.join(sorted(unknown))}")
        if name in registry:
            registry[name] = replace(registry[name], **values)
        else:
            if "weights" not in values and "command" not in values:
                raise RegistryError(f"{path}: new model [{name}] needs 'weights' (or 'command')")
            if "weights" in values:
                registry[name] = DecoderSpec(name=name, **{"family": "sdxl", **values})
            else:  # a command alone: an external restoration model (Full and Image)
                if values.get("family", "external") != "external":
                    raise RegistryError(
                        f"{path}: [{name}] has a command but no 'weights': a diffusers family "
                        f"({values['family']}) needs weights; leave out 'family' for an external "
                        "command"
                    )
                defaults = {"weights": "", "family": "external", "kind": "restoration"}
                registry[name] = DecoderSpec(name=name, **{**defaults, **values})
        if registry[name].family not in FAMILIES:
            raise RegistryError(f"{path}: [{name}] family must be one of {', '.join(FAMILIES)}")
        if registry[name].family == "external" and registry[name].command:
            _check_command(path, registry[name])
    return registry


COMMAND_FIELDS = ("input", "output", "prompt", "strength", "steps", "seed", "guidance")
"""The placeholders an external restoration command may take (generate/restoration.py)."""


def _check_command(path: Path, spec: DecoderSpec) -> None:
    """An external command's placeholders, checked before any image is made: a misspelt one
    would stop the run midway, a ``{guidance}`` without a ``guidance`` would pass an empty
    argument, and a ``guidance`` without ``{guidance}`` would never reach the model."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(spec.command) if name}
    except ValueError as error:
        raise RegistryError(f"{path}: [{spec.name}] cannot read its command ({error})") from None
    unknown = sorted(fields - set(COMMAND_FIELDS))
    if unknown:
        raise RegistryError(
            f"{path}: [{spec.name}] command has unknown placeholder {{{unknown[0]}}} (it may take "
            + ", ".join(f"{{{f}}}" for f in COMMAND_FIELDS)
            + ")"
        )
    if not {"input", "output"} <= fields:
        raise RegistryError(f"{path}: [{spec.name}] command needs {{input}} and {{output}}")
    if "guidance" in fields and spec.guidance is None:
        raise RegistryError(
            f"{path}: [{spec.name}] command takes {{guidance}} but sets no guidance "
            "(add guidance = … to the entry)"
        )
    if "guidance" not in fields and spec.guidance is not None:
        raise RegistryError(
            f"{path}: [{spec.name}] sets guidance {spec.guidance} but its command has no "
            "{guidance}, so the model would never receive it"
        )
