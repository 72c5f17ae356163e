"""``python -m mos.simulate``: a synthetic study with a known truth, to check the MOS pipeline.

Each stimulus has a true quality per dimension. Each honest viewer rates it as

    r = clip(round(2.5 + a_v·(q − 2.5) + b_v + d_vs + σ_v·ε, 0.1), 0, 5)

with a per-viewer scale a_v and bias b_v, a per-session drift d_vs and per-viewer noise σ_v — the
nuisances that eqs. (1) and (2) of the paper remove. Planted bad viewers answer uniformly at random
and must be exactly the viewers the screening rejects. The study follows the paper's design:
stimuli split into groups of ≤ 400, one session per group and viewer, a random order per viewer,
and a few warm-up trials at the start of every session (stored, flagged, and rated at random, so
that any reader that fails to drop them is visibly wrong).

Writes the ratings (``.csv`` or a study database ``.db``) and, beside them, ``truth.csv`` (true
quality and metadata per stimulus) and ``truth_viewers.csv`` (which viewers are bad).

``--manifest`` rates the images of a ``generate`` manifest instead of made-up ones (each image's
true quality drawn from its mode and strength as below): a new user gets a MOS file naming their
own images, so stage 4 can train on it before any viewer has come — the figures follow the
simulation, not the pictures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cmc_common.help import HelpFormatter
from studydb import Session, Stimulus, StudyGroup, Viewer, create_study
from studydb.design import order_without_repeats
from studydb.manifest import ManifestError, read_manifest

MODELS = ("SD15", "SDXL", "SSD1B", "RealVis", "PG20", "PG25", "Dreamlike", "Animate")
MODES = ("Text", "Pixel", "Image", "Full")
CONTENT_TYPES = ("NSI", "SCI", "AIGI")
CONTENT_SHARES = (0.4, 0.3, 0.3)
MODE_CONSISTENCY = {"Text": -1.0, "Pixel": -0.4, "Image": 0.4, "Full": 0.8}


@dataclass
class SimulationConfig:
    stimuli: int = 400
    viewers: int = 20
    bad_viewers: int = 2
    group_size: int = 400
    warmup: int = 3
    seed: int = 0
    viewers_per_group: int | None = None
    """None: every viewer rates every group (a lab study); k: k viewers per group (crowdsourcing)."""


@dataclass
class SimulatedStudy:
    ratings: pd.DataFrame
    """One row per trial: viewer, stimulus, session, position, warmup, consistency, perception, nsfw."""
    truth: pd.DataFrame
    """One row per stimulus: true consistency/perception and the generation metadata."""
    viewers: pd.DataFrame
    """One row per viewer: bad (planted random rater), bias, scale, noise."""


def simulate(config: SimulationConfig, manifest: pd.DataFrame | None = None) -> SimulatedStudy:
    """Draw a whole study (vectorized: ten million ratings take seconds): of ``config.stimuli``
    made-up images, or of the images of a ``generate`` manifest (then ``config.stimuli`` is
    unused)."""
    rng = np.random.default_rng(config.seed)
    truth = _stimuli(config.stimuli, rng) if manifest is None else _manifest_stimuli(manifest, rng)
    viewers = _viewers(config, rng)
    n_groups = -(-len(truth) // config.group_size)
    group_of_stimulus = np.arange(len(truth)) // config.group_size
    reference = truth["reference"].to_numpy()
    per_group = config.viewers_per_group or config.viewers
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("viewer", "session", "group", "stimulus")}
    warm_flags, positions = [], []
    session = 0
    for group in tqdm(range(n_groups), desc="drawing sessions", leave=False):
        members = np.flatnonzero(group_of_stimulus == group)
        for k in range(per_group):
            viewer = (group * per_group + k) % config.viewers  # balanced assignment
            order = order_without_repeats(members, reference, rng)
            warm = rng.choice(members, size=min(config.warmup, members.size), replace=False)
            stimuli = np.concatenate([warm, order])
            for key, value in (("viewer", viewer), ("session", session), ("group", group)):
                parts[key].append(np.full(stimuli.size, value, dtype=np.int64))
            parts["stimulus"].append(stimuli)
            positions.append(np.arange(stimuli.size))
            warm_flags.append(np.arange(stimuli.size) < warm.size)
            session += 1
    trials = pd.DataFrame({key: np.concatenate(value) for key, value in parts.items()})
    trials["position"] = np.concatenate(positions)
    trials["warmup"] = np.concatenate(warm_flags)
    drift = rng.normal(0.0, 0.3, size=session)
    v = trials["viewer"].to_numpy()
    s = trials["stimulus"].to_numpy()
    random_answer = viewers["bad"].to_numpy()[v] | trials["warmup"].to_numpy()
    for name in ("consistency", "perception"):
        q = truth[f"true_{name}"].to_numpy()[s]
        honest = (
            2.5
            + viewers["scale"].to_numpy()[v] * (q - 2.5)
            + viewers["bias"].to_numpy()[v]
            + drift[trials["session"].to_numpy()]
            + viewers["noise"].to_numpy()[v] * rng.standard_normal(len(trials))
        )
        score = np.where(random_answer, rng.uniform(0, 5, len(trials)), honest)
        trials[name] = np.clip(np.round(score, 1), 0.0, 5.0)
    trials["nsfw"] = rng.random(len(trials)) < 0.002
    trials["viewer"] = viewers["viewer"].to_numpy()[v]
    trials["stimulus"] = truth["stimulus"].to_numpy()[s]
    return SimulatedStudy(ratings=trials, truth=truth, viewers=viewers)


def write_study(study: SimulatedStudy, out: Path) -> None:
    """Write the ratings as CSV (``.csv``) or as a study database (anything else), plus the truth."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        ratings = study.ratings.drop(columns=["group"])
        if "distorted_path" in study.truth:  # a manifest's images: mos.csv must name their files
            meta = study.truth.drop(columns=["true_consistency", "true_perception"])
            ratings = ratings.merge(meta, on="stimulus", how="left")
        ratings.to_csv(out, index=False)
    else:
        _write_database(study, out)
    study.truth.to_csv(out.parent / "truth.csv", index=False)
    study.viewers.to_csv(out.parent / "truth_viewers.csv", index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mos.simulate",
        description="Write a synthetic subjective study with a known truth (docs/mos.md, the simulator).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="ratings file: *.csv, or *.db for a study database"
    )
    defaults = SimulationConfig()
    parser.add_argument("--stimuli", type=int, default=defaults.stimuli, help="distorted images")
    parser.add_argument("--viewers", type=int, default=defaults.viewers, help="viewers in all")
    parser.add_argument(
        "--bad-viewers", type=int, default=defaults.bad_viewers, help="planted random raters"
    )
    parser.add_argument(
        "--group-size", type=int, default=defaults.group_size, help="stimuli per session"
    )
    parser.add_argument(
        "--warmup", type=int, default=defaults.warmup, help="warm-up trials per session"
    )
    parser.add_argument(
        "--viewers-per-group",
        type=int,
        help="crowdsourcing design: this many viewers per group, assigned in turn "
        "(default: every viewer rates every group, as in a lab)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--manifest",
        type=Path,
        help="rate the images of this generate manifest (their paths go into the ratings, so "
        "mos.csv names them) instead of --stimuli made-up ones",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.bad_viewers < args.viewers or min(args.stimuli, args.group_size) < 1:
        parser.error("need ≥ 1 stimulus and group size, and 0 ≤ bad viewers < viewers")
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new file (a study is never overwritten)")
    config = SimulationConfig(
        args.stimuli,
        args.viewers,
        args.bad_viewers,
        args.group_size,
        args.warmup,
        args.seed,
        args.viewers_per_group,
    )
    try:
        manifest = None if args.manifest is None else read_manifest(args.manifest)
    except ManifestError as error:
        parser.error(str(error))
    study = simulate(config, manifest)
    write_study(study, args.out)
    print(f"wrote {len(study.ratings):,} ratings to {args.out} (truth beside it)")
    return 0


def _stimuli(n: int, rng: np.random.Generator) -> pd.DataFrame:
    n_references = max(1, n // 40)
    reference = np.arange(n) % n_references
    content = rng.choice(CONTENT_TYPES, p=CONTENT_SHARES, size=n_references)[reference]
    model = np.array(MODELS)[rng.integers(0, len(MODELS), n)]
    mode = np.array(MODES)[rng.integers(0, len(MODES), n)]
    strength = rng.uniform(0.2, 0.9, n)
    consistency, perception = _true_quality(mode, strength, rng)
    return pd.DataFrame(
        {
            "stimulus": [f"img{i:06d}" for i in range(n)],
            "reference": [f"ref{r:05d}" for r in reference],
            "model": model,
            "mode": mode,
            "strength": strength.round(3),
            "content_type": content,
            "true_consistency": consistency,
            "true_perception": perception,
        }
    )


def _manifest_stimuli(manifest: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A manifest's images with a drawn true quality; an image without a mode or strength (a
    codec ladder's) counts as a neutral one."""
    kept = ["reference", "model", "mode", "strength", "content_type"]
    frame = manifest[[c for c in kept if c in manifest.columns]].copy()
    frame.insert(0, "stimulus", manifest["id"].astype(str).to_numpy())
    frame["distorted_path"] = manifest["distorted_path"].to_numpy()
    frame["reference_path"] = manifest["reference_path"].to_numpy()
    mode = frame["mode"].astype(str).to_numpy() if "mode" in frame else np.full(len(frame), "")
    strength = pd.to_numeric(frame.get("strength"), errors="coerce")
    strength = np.full(len(frame), 0.55) if strength is None else strength.fillna(0.55).to_numpy()
    frame["true_consistency"], frame["true_perception"] = _true_quality(mode, strength, rng)
    return frame.reset_index(drop=True)


def _true_quality(
    mode: np.ndarray, strength: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """True consistency and perception in [0.3, 4.7]: the mode sets how much of the picture
    survives, a stronger img2img strength trades consistency for perception."""
    n = len(mode)
    base = rng.uniform(-1.2, 1.2, n)
    effect = np.array([MODE_CONSISTENCY.get(m, 0.0) for m in mode])
    consistency = 2.5 + base + effect - (strength - 0.55)
    perception = 2.5 + 0.5 * base + 1.5 * (strength - 0.55) + rng.normal(0, 0.5, n)
    return np.clip(consistency, 0.3, 4.7), np.clip(perception, 0.3, 4.7)


def _viewers(config: SimulationConfig, rng: np.random.Generator) -> pd.DataFrame:
    bad = np.zeros(config.viewers, dtype=bool)
    bad[rng.choice(config.viewers, size=config.bad_viewers, replace=False)] = True
    return pd.DataFrame(
        {
            "viewer": [f"v{i:04d}" for i in range(config.viewers)],
            "bad": bad,
            "bias": rng.normal(0.0, 0.3, config.viewers),
            "scale": rng.uniform(0.8, 1.2, config.viewers),
            "noise": rng.uniform(0.3, 0.6, config.viewers),
        }
    )


def _write_database(study: SimulatedStudy, out: Path) -> None:
    engine = create_study(out)
    ratings, truth = study.ratings, study.truth
    n_groups = int(ratings["group"].max()) + 1
    group_of = ratings.drop_duplicates("stimulus").set_index("stimulus")["group"]
    start = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    with engine.begin() as db:
        db.execute(
            StudyGroup.__table__.insert(),
            [{"id": g + 1, "name": f"group-{g + 1}"} for g in range(n_groups)],
        )
        db.execute(
            Stimulus.__table__.insert(),
            [
                {
                    "id": i + 1,
                    "key": row.stimulus,
                    "distorted_path": getattr(
                        row, "distorted_path", f"distorted/{row.stimulus}.png"
                    ),
                    "reference_path": getattr(
                        row, "reference_path", f"references/{row.reference}.png"
                    ),
                    "reference": row.reference,
                    "model": getattr(row, "model", None),
                    "mode": getattr(row, "mode", None),
                    "strength": _number(getattr(row, "strength", None)),
                    "content_type": getattr(row, "content_type", None),
                    "group_id": int(group_of.get(row.stimulus, 0)) + 1,
                    "withheld": False,
                }
                for i, row in enumerate(truth.itertuples())
            ],
        )
        db.execute(
            Viewer.__table__.insert(),
            [
                {"id": i + 1, "code": code, "created_at": start}
                for i, code in enumerate(study.viewers["viewer"])
            ],
        )
        viewer_id = {code: i + 1 for i, code in enumerate(study.viewers["viewer"])}
        sessions = ratings.drop_duplicates("session")
        db.execute(
            Session.__table__.insert(),
            [
                {
                    "id": int(row.session) + 1,
                    "viewer_id": viewer_id[row.viewer],
                    "group_id": int(row.group) + 1,
                    "started_at": start,
                    # A simulated study is over: every sitting is closed (the database allows
                    # one open sitting per viewer, and an open one would be expired as idle).
                    "ended_at": start,
                    "closed_reason": "completed",
                }
                for row in sessions.itertuples()
            ],
        )
        stimulus_id = pd.Series(np.arange(1, len(truth) + 1), index=truth["stimulus"])
        columns = (
            "session_id",
            "stimulus_id",
            "position",
            "consistency",
            "perception",
            "nsfw",
            "is_warmup",
            "is_repeat",
            "submitted_at",
        )
        sql = (
            f"INSERT INTO ratings ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        )
        stamp = start.isoformat(sep=" ")
        chunk = 200_000
        for begin in tqdm(range(0, len(ratings), chunk), desc="writing ratings", leave=False):
            part = ratings.iloc[begin : begin + chunk]
            rows = zip(
                (part["session"].to_numpy() + 1).tolist(),
                stimulus_id.loc[part["stimulus"]].to_numpy().tolist(),
                part["position"].tolist(),
                part["consistency"].tolist(),
                part["perception"].tolist(),
                part["nsfw"].astype(int).tolist(),
                part["warmup"].astype(int).tolist(),
                [0] * len(part),
                [stamp] * len(part),
                strict=True,
            )
            db.exec_driver_sql(sql, list(rows))
    engine.dispose()


def _number(value) -> float | None:
    """A float for the database, None for a manifest's empty strength (a codec image)."""
    return None if value is None or pd.isna(value) else float(value)


# --- Online (crowd) participants -----------------------------------------------------------------

PARTICIPANT_KINDS = ("careful", "biased", "noisy", "careless")
"""Who takes an online sitting: careful raters, raters with a strong personal offset, erratic
raters (both still looking, so no control should exclude them), and careless clickers (random
answers, fast) whom the controls must catch."""

GOLD_TRUTH = {"gold_high": 4.8, "gold_low": 0.4}
"""True quality of the gold trials: a reference against itself, and a strongly degraded pair."""
GOLD_SPREAD = 0.3
"""Raters agree on gold trials: their ambiguity is small."""


@dataclass
class OnlineBehaviour:
    """Shares of participant kinds and how each behaves (see :data:`PARTICIPANT_KINDS`)."""

    careless: float = 0.10
    biased: float = 0.10
    noisy: float = 0.10
    dropout: float = 0.15
    """Share of participants who leave their sitting early (at a uniformly drawn trial)."""
    bias: float = 1.0
    """Offset of a biased rater (sign at random), against N(0, 0.3) for the others."""
    noise_factor: float = 2.0
    """How much more erratic a noisy rater is than a careful one."""

    def __post_init__(self) -> None:
        shares = (self.careless, self.biased, self.noisy, self.dropout)
        if min(shares) < 0 or self.careless + self.biased + self.noisy > 1 or self.dropout > 1:
            raise ValueError("participant shares must be ≥ 0 and the kinds must sum to ≤ 1")


def online_stimuli(
    n: int, rng: np.random.Generator, spreads: np.ndarray | None = None
) -> pd.DataFrame:
    """Stimuli with a true quality and a per-image *spread* (how much raters disagree on it).

    The true qualities, references and metadata are :func:`simulate`'s. ``spreads``: per-image
    score standard deviations (0–5 scale) of a real study to resample from — e.g.
    :func:`spreads_from_dataset` of sureal's public sets; by default uniform on 0.4–1.25, the
    5th–95th percentile range of those sets. The part of it due to raters' offsets (0.3²) is
    taken out, since the subject model removes offsets.
    """
    truth = _stimuli(n, rng).rename(columns={"true_consistency": "true_quality"})
    truth = truth.drop(columns=["true_perception"])
    total = rng.choice(spreads, n) if spreads is not None else rng.uniform(0.4, 1.25, n)
    truth["spread"] = np.sqrt(np.maximum(np.asarray(total) ** 2 - 0.3**2, 0.05**2))
    return truth


def spreads_from_dataset(path: Path) -> np.ndarray:
    """Per-stimulus score standard deviations of a sureal-style CSV, rescaled onto 0–5.

    The file has columns viewer, stimulus, score (sureal's public sets in ``../shared/data/sureal``).
    Raises ``ValueError`` for a file without those columns or with one distinct score.
    """
    frame = pd.read_csv(path)
    if not {"stimulus", "score"} <= set(frame.columns):
        raise ValueError(f"{path}: needs columns stimulus and score")
    low, high = frame["score"].min(), frame["score"].max()
    if not high > low:
        raise ValueError(f"{path}: every score is the same")
    spread = frame.groupby("stimulus")["score"].std().dropna().to_numpy()
    return spread / (high - low) * 5.0


def draw_participants(n: int, behaviour: OnlineBehaviour, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` online participants: kind, offset, noise factor, response speed and drop-out point.

    ``leaves_at`` is the fraction of their sitting after which a drop-out leaves (1: stays).
    """
    shares = np.array([behaviour.biased, behaviour.noisy, behaviour.careless])
    kind = rng.choice(
        PARTICIPANT_KINDS, size=n, p=np.concatenate([[1 - shares.sum()], shares]).clip(0)
    )
    bias = rng.normal(0.0, 0.3, n)
    biased = kind == "biased"
    bias[biased] = behaviour.bias * rng.choice([-1.0, 1.0], int(biased.sum()))
    noise = rng.uniform(0.8, 1.2, n) * np.where(kind == "noisy", behaviour.noise_factor, 1.0)
    careless = kind == "careless"
    # Median seconds per trial: careful people look (≈ 6 s), careless ones click (≈ 0.9 s).
    speed = np.where(careless, 0.9, 6.0) * rng.lognormal(0.0, 0.2, n)
    leaves = np.where(rng.random(n) < behaviour.dropout, rng.uniform(0.05, 0.95, n), 1.0)
    return pd.DataFrame(
        {"kind": kind, "bias": bias, "noise": noise, "speed": speed, "leaves_at": leaves}
    )


def rate_online(
    participant: pd.Series | object,
    quality: np.ndarray,
    spread: np.ndarray,
    asked: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One participant's scores and seconds on a sitting's trials.

    ``quality``/``spread``: the true quality and spread of each trial's pair; ``asked``: for an
    attention check the score the page asks for (NaN elsewhere). A careless participant answers
    uniformly at random; everyone else rates q + offset + noise × spread × ε (on an attention check:
    the asked score ± 0.1). Scores are clipped to 0–5 and rounded to the slider's 0.1 step.
    """
    k = quality.size
    careless = participant.kind == "careless"
    honest = quality + participant.bias + participant.noise * spread * rng.standard_normal(k)
    honest = np.where(np.isnan(asked), honest, asked + 0.1 * rng.standard_normal(k))
    score = rng.uniform(0.0, 5.0, k) if careless else honest
    seconds = participant.speed * rng.lognormal(0.0, 0.5, k)
    return np.clip(np.round(score, 1), 0.0, 5.0), seconds


if __name__ == "__main__":
    sys.exit(main())
