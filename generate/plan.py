"""``python -m generate plan``: which image is made how — one row per image to generate.

The subjective set (``--preset study``): a sample of references in the paper's content mix
(NSI 40% / SCI 30% / AIGI 30%, read from file names such as ``NSI_pgc_0001.png``), each under
every (decoder, mode) configuration — 8 generative models × 4 modes + 4 restoration models ×
{Full, Image} = 40 — with its img2img strength drawn uniformly from [0.2, 0.9]. Text mode is pure
text-to-image: its strength is 1 by definition.

The benchmark (``--preset benchmark``): every reference, fixed strengths (Full and Image 0.5,
Pixel 0.8, Text 1.0), as the public reference script does.

A plan is reproducible: the same references and seed give the same rows, and each row carries
its own generation seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from generate.registry import DecoderSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CONTENT_TYPES = ("NSI", "SCI", "AIGI")
CONTENT_SHARES = (0.4, 0.3, 0.3)
STRENGTH_RANGE = (0.2, 0.9)
BENCHMARK_STRENGTH = {"Full": 0.5, "Image": 0.5, "Pixel": 0.8, "Text": 1.0}
PLAN_COLUMNS = [
    "id", "reference", "reference_path", "content_type", "model", "mode", "strength", "seed",
]  # fmt: skip


class PlanError(ValueError):
    """A plan that cannot be made; the message says why."""


def content_type(name: str) -> str | None:
    """'NSI', 'SCI' or 'AIGI' from a file name that starts with it, else None."""
    head = name.split("_", 1)[0].upper()
    return head if head in CONTENT_TYPES else None


def list_references(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PlanError(f"{folder}: no such folder of reference images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PlanError(f"{folder}: no reference images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def choose_references(
    images: list[Path], count: int | None, rng: np.random.Generator
) -> list[Path]:
    """``count`` references; in the paper's 40/30/30 content mix when the names carry it."""
    if count is None or count >= len(images):
        return images
    typed = [content_type(p.name) for p in images]
    if all(typed):
        wanted = _apportion(count, CONTENT_SHARES)
        chosen = []
        for kind, n in zip(CONTENT_TYPES, wanted, strict=True):
            pool = [p for p, t in zip(images, typed, strict=True) if t == kind]
            if len(pool) < n:
                raise PlanError(
                    f"need {n} {kind} references for the 40/30/30 mix, found {len(pool)}"
                )
            chosen += [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]
        return chosen
    return [images[i] for i in sorted(rng.choice(len(images), count, replace=False))]


def configurations(registry: dict[str, DecoderSpec], models: list[str]) -> list[tuple[str, str]]:
    """(model, mode) pairs: every mode a model can decode."""
    pairs = []
    for name in models:
        if name not in registry:
            raise PlanError(f"unknown model '{name}' (known: {', '.join(registry)})")
        pairs += [(name, mode) for mode in registry[name].modes]
    return pairs


def make_plan(
    references: list[Path],
    configs: list[tuple[str, str]],
    preset: str,
    seed: int,
    per_reference: int | None = None,
) -> pd.DataFrame:
    """One row per (reference, configuration); ``per_reference`` draws that many configurations
    per reference, balanced so that every configuration is used as evenly as possible."""
    if preset not in ("study", "benchmark"):
        raise PlanError("preset must be 'study' or 'benchmark'")
    rng = np.random.default_rng(seed)
    k = len(configs) if per_reference is None else per_reference
    if not 1 <= k <= len(configs):
        raise PlanError(f"--per-reference must be between 1 and {len(configs)}")
    rows = []
    offset = 0
    for reference in references:
        if k == len(configs):
            chosen = configs
        else:  # rotate through the configurations so each gets its fair share
            chosen = [configs[(offset + i) % len(configs)] for i in range(k)]
            offset += k
        for model, mode in chosen:
            if mode == "Text":
                strength = 1.0
            elif preset == "benchmark":
                strength = BENCHMARK_STRENGTH[mode]
            else:
                strength = round(float(rng.uniform(*STRENGTH_RANGE)), 4)
            rows.append(
                {
                    "id": f"{reference.stem}__{model}__{mode}",
                    "reference": reference.stem,
                    "reference_path": str(reference.resolve()),
                    "content_type": content_type(reference.name) or "",
                    "model": model,
                    "mode": mode,
                    "strength": strength,
                    "seed": int(rng.integers(0, 2**31 - 1)),
                }
            )
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def read_plan(path: Path, registry: dict[str, DecoderSpec]) -> pd.DataFrame:
    """Read a plan CSV and check it before any model is loaded, so that a bad row (an edited
    plan, a moved reference) stops the run with one line instead of midway through it."""
    if not path.is_file():
        raise PlanError(f"{path}: no such plan")
    try:
        plan = pd.read_csv(path, dtype={"id": str, "reference": str, "content_type": str},
                           keep_default_na=False)  # fmt: skip
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PlanError(f"{path}: not a readable plan CSV ({error})") from error
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise PlanError(f"{path}: missing column(s) {', '.join(missing)}")
    if plan.empty:
        raise PlanError(f"{path}: no rows")
    _check_rows(path, plan, registry)
    _check_references(path, plan["reference_path"])
    plan["strength"] = plan["strength"].astype(float)
    plan["seed"] = plan["seed"].astype(int)
    return plan


def _check_rows(path: Path, plan: pd.DataFrame, registry: dict[str, DecoderSpec]) -> None:
    def first(mask: pd.Series) -> str:
        row = plan[mask].iloc[0]
        return f"{path}: row {row['id']!r}"

    duplicated = plan["id"].duplicated()
    if duplicated.any():
        raise PlanError(f"{first(duplicated)} appears more than once")
    unknown = ~plan["model"].isin(list(registry))
    if unknown.any():
        names = ", ".join(sorted(set(plan.loc[unknown, "model"])))
        raise PlanError(f"the plan names unknown model(s): {names} (known: {', '.join(registry)})")
    pairs = zip(plan["model"], plan["mode"], strict=True)
    wrong_mode = pd.Series([mode not in registry[m].modes for m, mode in pairs], index=plan.index)
    if wrong_mode.any():
        row = plan[wrong_mode].iloc[0]
        spec = registry[row["model"]]
        raise PlanError(
            f"{first(wrong_mode)}: {spec.name} cannot decode mode {row['mode']!r} "
            f"(it decodes {', '.join(spec.modes)})"
        )
    strength = pd.to_numeric(plan["strength"], errors="coerce")
    bad = ~((strength > 0) & (strength <= 1))
    if bad.any():
        raise PlanError(
            f"{first(bad)}: strength {plan.loc[bad, 'strength'].iloc[0]} is not in (0, 1]"
        )
    seed = pd.to_numeric(plan["seed"], errors="coerce")
    bad = seed.isna() | (seed != seed.round()) | (seed < 0)
    if bad.any():
        raise PlanError(
            f"{first(bad)}: seed {plan.loc[bad, 'seed'].iloc[0]} is not a whole number ≥ 0"
        )


def _check_references(path: Path, references: pd.Series) -> None:
    """Every reference exists and is an image (headers only: cheap for a study's hundred)."""
    for reference in dict.fromkeys(references):
        try:
            with Image.open(reference):  # reads and identifies the header only
                pass
        except FileNotFoundError:
            absent = sum(not Path(r).is_file() for r in set(references))
            raise PlanError(
                f"{path}: {absent} reference image(s) not found (first: {reference})"
            ) from None
        except (OSError, ValueError) as error:
            raise PlanError(
                f"{path}: reference {reference} is not a readable image ({error})"
            ) from None


def _apportion(total: int, shares: tuple[float, ...]) -> list[int]:
    """Largest-remainder split of ``total`` by ``shares`` (100 → 40, 30, 30)."""
    exact = [total * s for s in shares]
    counts = [int(x) for x in exact]
    order = np.argsort([-(x - int(x)) for x in exact])
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts
