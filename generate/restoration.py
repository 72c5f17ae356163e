"""Restoration decoders without a diffusers port (DiffBIR, PASD, StableSR) run through their
official inference code, which the user installs from the authors' repositories; this module
only calls it.

Each such model's command line is configured in one place, the models TOML, with placeholders
filled per image: ``{input}`` (the start image, a PNG), ``{output}`` (a folder the command writes
its result into), ``{prompt}``, ``{strength}``, ``{steps}``, ``{seed}``, ``{guidance}`` (the
entry's ``guidance``; all shell-quoted). In Full mode the caption's bits are charged only when the
command takes ``{prompt}`` (otherwise the model decodes the codec image alone, as in Image mode),
and the manifest records the guidance only when the command takes ``{guidance}``::

    [DiffBIR]
    command = "python /opt/DiffBIR/inference.py --task sr --input {input} --output {output} --steps {steps}"

The command must leave exactly one image in ``{output}``.
"""

from __future__ import annotations

import shlex
import string
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from generate.registry import DecoderSpec

TIMEOUT_S = 3600


def require_command(spec: DecoderSpec) -> None:
    """Fail with the fix when the model's official code has not been configured."""
    from generate.decode import DecoderError

    if not spec.command:
        raise DecoderError(
            f"{spec.name} has no diffusers port: install its official inference code and set "
            f'its command in a models TOML ([{spec.name}] command = "… {{input}} … {{output}} …"; '
            "see generate/restoration.py), then pass --models-config FILE"
        )


def run(
    spec: DecoderSpec, start: np.ndarray, prompt: str, strength: float, steps: int, seed: int
) -> np.ndarray:
    """Restore ``start`` with the model's own inference command; return the image it wrote."""
    from generate.decode import DecoderError

    require_command(spec)
    with tempfile.TemporaryDirectory(prefix=f"cmc-{spec.name}-") as folder:
        work = Path(folder)
        source, target = work / "input.png", work / "output"
        target.mkdir()
        Image.fromarray(start).save(source)
        values = {
            "input": source, "output": target, "prompt": prompt, "strength": strength,
            "steps": steps, "seed": seed, "guidance": "" if spec.guidance is None else spec.guidance,
        }  # fmt: skip
        command = spec.command.format(**{k: shlex.quote(str(v)) for k, v in values.items()})
        try:
            subprocess.run(
                shlex.split(command), check=True, capture_output=True, text=True, timeout=TIMEOUT_S
            )
        except subprocess.CalledProcessError as error:
            last = (error.stderr or error.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise DecoderError(f"{spec.name}: its command failed ({last[0]})") from error
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DecoderError(f"{spec.name}: cannot run its command ({error})") from error
        written = [p for p in target.rglob("*") if p.is_file()]
        if len(written) != 1:
            raise DecoderError(
                f"{spec.name}: expected one image in the output, found {len(written)}"
            )
        return np.asarray(Image.open(written[0]).convert("RGB"))


def takes(spec: DecoderSpec, placeholder: str) -> bool:
    """Whether the model's command has ``{placeholder}``: a caption is charged to an external
    model only when its command receives it, and its guidance is recorded only when passed."""
    fields = (name for _, name, _, _ in string.Formatter().parse(spec.command or "") if name)
    return placeholder in set(fields)


def guidance(spec: DecoderSpec) -> float | str:
    """The guidance scale the decoder actually uses, for the manifest: the scale passed to a
    diffusers pipeline; for an external command, the ``guidance`` of its models-TOML entry when
    the command takes ``{guidance}``, else empty (the command's own default, unknown here)."""
    if spec.family != "external":
        return spec.guidance_scale
    return spec.guidance if takes(spec, "guidance") and spec.guidance is not None else ""
