"""``python -m generate plan``: which image is made how — one row per image to generate.

The subjective set (``--preset study``): a sample of references in the paper's content mix
(NSI 40% / SCI 30% / AIGI 30%, read from file names such as ``NSI_pgc_0001.png``), each under
every (decoder, mode) configuration — 8 generative models × 4 modes + 4 restoration models ×
{Full, Image} = 40 — with its img2img strength drawn uniformly from [0.2, 0.9]. Text mode is pure
text-to-image: its strength is 1 by definition.

The benchmark (``--preset benchmark``): every reference, fixed strengths (Full and Image 0.5,
Pixel 0.8, Text 1.0), as the public reference script does.

Sweeps (the paper's Table A1, Figure A4 and Figures A5–A7): ``sweep_qp`` replaces each Image /
Full row by one row per codec QP, ``sweep_words`` each Text / Pixel / Full row by one row per
caption length, ``sweep_strength`` each Pixel / Image / Full row by one row per img2img strength
(Text mode's is 1 by definition); the swept rows keep the row's other settings and seed (only the
swept setting differs between them), and their ids end in ``__qp51`` / ``__w20`` / ``__s0.8``. The columns ``codec_qp`` and ``caption_words`` carry the
value ``generate run`` honours for that row (empty: the run's ``--codec-qp`` / bpp search, and its
captioner's own length).

A plan is reproducible: the same references and seed give the same rows, and each row carries
its own generation seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from generate.codec import QP_LIMITS
from generate.registry import CAPTION_WORDS, DecoderSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CONTENT_TYPES = ("NSI", "SCI", "AIGI")
CONTENT_SHARES = (0.4, 0.3, 0.3)
STRENGTH_RANGE = (0.2, 0.9)
BENCHMARK_STRENGTH = {"Full": 0.5, "Image": 0.5, "Pixel": 0.8, "Text": 1.0}
PLAN_COLUMNS = [
    "id", "reference", "reference_path", "content_type", "model", "mode", "strength", "seed",
]  # fmt: skip
SWEEP_COLUMNS = ["codec_qp", "caption_words"]
"""Optional per-row settings (sweeps); a plan without them is read as not swept."""
QP_MAX = max(high for _, high in QP_LIMITS.values())
"""The largest quantizer any codec takes (each codec's own limit is checked by ``run``)."""
SEED_MAX = 2**63 - 1
"""The largest seed a torch generator and a plan CSV's integers both hold."""


class PlanError(ValueError):
    """A plan that cannot be made; the message says why."""


def content_type(name: str) -> str | None:
    """'NSI', 'SCI' or 'AIGI' from a file name that starts with it, else None."""
    head = name.split("_", 1)[0].upper()
    return head if head in CONTENT_TYPES else None


def list_references(folder: Path) -> list[Path]:
    """The folder's images; two files with one stem (``a.png``, ``a.jpg``) are refused, since
    ids, captions and hints are named by the stem."""
    if not folder.is_dir():
        raise PlanError(f"{folder}: no such folder of reference images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PlanError(f"{folder}: no reference images ({', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise PlanError(
                f"{seen[image.stem].name} and {image.name} share the name {image.stem!r}: "
                "rename or remove one (ids, captions and hints are named by it)"
            )
        seen[image.stem] = image
    return images


def choose_references(
    images: list[Path], count: int | None, rng: np.random.Generator, content_mix: bool = True
) -> list[Path]:
    """``count`` references (None: all), in the paper's 40/30/30 content mix unless
    ``content_mix`` is False (then a uniform sample of any names). A count the folder cannot
    give, or a name outside the NSI_/SCI_/AIGI_ naming under the mix, is refused rather than
    giving a quietly different plan."""
    if count is None:
        return images
    if count < 1:
        raise PlanError(f"--count must be at least 1, got {count}")
    if count > len(images):
        raise PlanError(f"--count {count} but the folder has only {len(images)} references")
    typed = [content_type(p.name) for p in images]
    if content_mix:
        untyped = [p.name for p, t in zip(images, typed, strict=True) if t is None]
        if untyped:
            raise PlanError(
                f"{untyped[0]} (and {len(untyped) - 1} more) is not named NSI_…, SCI_… or AIGI_…, "
                "so the 40/30/30 content mix cannot be drawn: rename, or pass --no-content-mix "
                "for a uniform sample"
            )
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
    if not models:
        raise PlanError("--models names no decoder")
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
    sweep_qp: list[int] | None = None,
    sweep_words: list[int] | None = None,
    sweep_strength: list[float] | None = None,
) -> pd.DataFrame:
    """One row per (reference, configuration); ``per_reference`` draws that many configurations
    per reference, balanced so that every configuration is used as evenly as possible; the
    sweeps multiply the rows they apply to (module docstring)."""
    if preset not in ("study", "benchmark"):
        raise PlanError("preset must be 'study' or 'benchmark'")
    check_seed(seed, "--seed")
    _check_sweeps(sweep_qp or [], sweep_words or [], sweep_strength or [])
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
            row = {
                "id": f"{reference.stem}__{model}__{mode}",
                "reference": reference.stem,
                "reference_path": str(reference.resolve()),
                "content_type": content_type(reference.name) or "",
                "model": model,
                "mode": mode,
                "strength": strength,
                "seed": int(rng.integers(0, 2**31 - 1)),
            }
            rows += [
                swept
                for row_at in _strengths(row, sweep_strength or [])
                for swept in _swept(row_at, sweep_qp or [], sweep_words or [])
            ]
    return pd.DataFrame(rows, columns=PLAN_COLUMNS + SWEEP_COLUMNS)


def _swept(row: dict, qps: list[int], words: list[int]) -> list[dict]:
    """The row once per swept value that applies to its mode (itself when none does)."""
    qp_values = qps if qps and row["mode"] in ("Image", "Full") else [""]
    word_values = words if words and row["mode"] in ("Text", "Pixel", "Full") else [""]
    out = []
    for qp in qp_values:
        for length in word_values:
            suffix = (f"__qp{qp}" if qp != "" else "") + (f"__w{length}" if length != "" else "")
            out.append({**row, "id": row["id"] + suffix, "codec_qp": qp, "caption_words": length})
    return out


def _strengths(row: dict, strengths: list[float]) -> list[dict]:
    """The row once per swept strength, unless Text mode (whose strength is 1 by definition)."""
    if not strengths or row["mode"] == "Text":
        return [row]
    return [{**row, "id": f"{row['id']}__s{s:g}", "strength": s} for s in strengths]


def _check_sweeps(qps: list[int], words: list[int], strengths: list[float]) -> None:
    for name, values in (("--sweep-qp", qps), ("--sweep-caption-words", words),
                         ("--sweep-strength", strengths)):  # fmt: skip
        if len(set(values)) != len(values):
            raise PlanError(f"{name} lists a value twice: {', '.join(map(str, values))}")
    if any(not 0 <= qp <= QP_MAX for qp in qps):
        raise PlanError(f"--sweep-qp values must be 0–{QP_MAX} (the codecs' quantizers), got {qps}")
    if any(not 0 < s <= 1 for s in strengths):
        raise PlanError(f"--sweep-strength values must be in (0, 1], got {strengths}")
    wrong = [w for w in words if w not in CAPTION_WORDS]
    if wrong:
        raise PlanError(f"--sweep-caption-words must be among {CAPTION_WORDS}, got {wrong[0]}")


def check_seed(seed: int, what: str) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise PlanError(f"{what} {seed} is outside 0–{SEED_MAX} (2**63 − 1)")


def read_plan(path: Path, registry: dict[str, DecoderSpec]) -> pd.DataFrame:
    """Read a plan CSV and check it before any model is loaded, so that a bad row (an edited
    plan, a moved reference) stops the run with one line instead of midway through it."""
    if not path.is_file():
        raise PlanError(f"{path}: no such plan")
    try:
        plan = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PlanError(f"{path}: not a readable plan CSV ({error})") from error
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise PlanError(f"{path}: missing column(s) {', '.join(missing)}")
    if plan.empty:
        raise PlanError(f"{path}: no rows")
    for column in SWEEP_COLUMNS:
        if column not in plan.columns:
            plan[column] = ""
    _check_rows(path, plan, registry)
    check_references(path, plan["reference_path"])
    _check_names(path, plan)
    plan["strength"] = plan["strength"].astype(float)
    plan["seed"] = [int(s) for s in plan["seed"]]
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
    seed = plan["seed"].str.strip()
    bad = ~seed.str.fullmatch(r"\d+")
    if bad.any():
        raise PlanError(
            f"{first(bad)}: seed {plan.loc[bad, 'seed'].iloc[0]} is not a whole number ≥ 0"
        )
    large = seed.map(lambda s: int(s) > SEED_MAX)
    if large.any():
        raise PlanError(f"{first(large)}: seed {seed[large].iloc[0]} is larger than {SEED_MAX}")
    _check_sweep_cells(first, plan)


def _check_sweep_cells(first, plan: pd.DataFrame) -> None:
    """``codec_qp`` a whole number 0–63 on Image / Full rows only; ``caption_words`` one of the
    paper's lengths on captioned rows only (elsewhere the value would be silently unused)."""
    for column, modes, allowed in (
        ("codec_qp", ("Image", "Full"), {str(q) for q in range(QP_MAX + 1)}),
        ("caption_words", ("Text", "Pixel", "Full"), {str(w) for w in CAPTION_WORDS}),
    ):
        cells = plan[column].str.strip()
        set_ = cells.ne("")
        bad = set_ & ~cells.isin(allowed)
        if bad.any():
            raise PlanError(f"{first(bad)}: {column} {cells[bad].iloc[0]!r} is not one of "
                            f"{min(allowed, key=int)}–{max(allowed, key=int)} allowed")  # fmt: skip
        unused = set_ & ~plan["mode"].isin(modes)
        if unused.any():
            raise PlanError(
                f"{first(unused)}: {column} is set but mode {plan.loc[unused, 'mode'].iloc[0]} "
                "does not use it"
            )


def _check_names(path: Path, plan: pd.DataFrame) -> None:
    """``reference`` and ``content_type`` are what the file name says, and one name is one
    file: an edited row that disagrees would label or cache an image as another."""
    stems = plan["reference_path"].map(lambda p: Path(p).stem)
    wrong = plan["reference"] != stems
    if wrong.any():
        row = plan[wrong].iloc[0]
        raise PlanError(
            f"{path}: row {row['id']!r}: reference {row['reference']!r} is not its file's name "
            f"({Path(row['reference_path']).name})"
        )
    kinds = plan["reference_path"].map(lambda p: content_type(Path(p).name) or "")
    wrong = plan["content_type"] != kinds
    if wrong.any():
        row = plan[wrong].iloc[0]
        raise PlanError(
            f"{path}: row {row['id']!r}: content_type {row['content_type']!r} disagrees with the "
            f"file name {Path(row['reference_path']).name} ({kinds[wrong].iloc[0] or 'none'})"
        )
    paths = plan.groupby("reference")["reference_path"].nunique()
    if (paths > 1).any():
        raise PlanError(
            f"{path}: reference {paths[paths > 1].index[0]!r} names two different files"
        )


UNREADABLE_MODES = frozenset({"F"})
"""PIL modes with no defined 8-bit meaning (floating-point samples), which
:func:`studydb.images.read_rgb` refuses; 16-bit references it converts (high byte)."""


def check_references(path: Path, references: pd.Series) -> None:
    """Every reference exists and is an image every stage reads the same way (headers only: cheap
    for a study's hundred): 8- or 16-bit samples, not floating point."""
    for reference in dict.fromkeys(references):
        try:
            with Image.open(reference) as image:  # reads and identifies the header only
                mode = image.mode
        except FileNotFoundError:
            absent = sum(not Path(r).is_file() for r in set(references))
            raise PlanError(
                f"{path}: {absent} reference image(s) not found (first: {reference})"
            ) from None
        except (OSError, ValueError) as error:
            raise PlanError(
                f"{path}: reference {reference} is not a readable image ({error})"
            ) from None
        if mode in UNREADABLE_MODES:
            raise PlanError(
                f"{path}: reference {reference} has floating-point samples (mode {mode}), which "
                "have no defined 8-bit meaning: save it as 8- or 16-bit RGB or grey first"
            )


def _apportion(total: int, shares: tuple[float, ...]) -> list[int]:
    """Largest-remainder split of ``total`` by ``shares`` (100 → 40, 30, 30)."""
    exact = [total * s for s in shares]
    counts = [int(x) for x in exact]
    order = np.argsort([-(x - int(x)) for x in exact])
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts
