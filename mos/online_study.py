"""``python -m mos.online_study``: run a whole simulated online study through the app's allocator.

Simulated participants (:func:`mos.simulate.draw_participants`: careful, biased, noisy and careless
ones, some of whom drop out) arrive one at a time. Each gets one short sitting whose test images
:class:`studydb.allocation.Allocator` — the code the app's online mode runs — chooses from the
ratings kept so far, plus gold trials and attention checks at random places. At the sitting's end
the participant's controls (:mod:`mos.qc`) decide whether their ratings are kept; kept ratings
update every image's CI. The study stops when every image's 95% CI is within the target (or the
rating budget is spent). Every test rating a participant submitted counts as *collected* (it is
paid for, kept or not); gold and attention trials are counted apart.

``compare`` runs the same study (same truth and participant stream) with uniform and with adaptive
allocation and prints the ratings each needed, the mean CI width, the accuracy against the truth
and how well the controls sorted careless from careful participants.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from cmc_common.help import HelpFormatter
from mos.qc import ExclusionRules, qc_signals
from mos.simulate import (
    GOLD_SPREAD,
    GOLD_TRUTH,
    OnlineBehaviour,
    draw_participants,
    online_stimuli,
    rate_online,
    spreads_from_dataset,
)
from studydb.allocation import POLICIES, Allocator, Precision, ci_halfwidths

GOLD_RANGES = {"gold_high": (3.0, 5.0), "gold_low": (0.0, 2.0)}
"""Accepted scores of the gold trials: a reference against itself high, a wrecked pair low."""
ATTENTION_TOLERANCE = 0.5
"""An attention check asks for a score; within ± this it passes."""


@dataclass
class OnlineStudyConfig:
    """One simulated online study (defaults: a sitting of 60 pairs, ≈ 10 minutes)."""

    policy: str = "adaptive"
    sitting: int = 56
    """Test pairs per sitting; with ``gold`` and ``attention`` checks, 60 pages."""
    gold: int = 2
    """Gold trials per sitting, alternately a reference against itself and a wrecked pair."""
    attention: int = 2
    min_ratings: int = 5
    target_ci: float = 0.4
    max_ratings: int = 1_000_000
    """Budget of collected test ratings: the study stops there even if not every CI is met."""
    quality_bins: int = 5
    seed: int = 0
    behaviour: OnlineBehaviour = field(default_factory=OnlineBehaviour)
    rules: ExclusionRules = field(default_factory=ExclusionRules)


@dataclass
class OnlineStudyResult:
    """What a study collected and kept, and how it went."""

    ratings: pd.DataFrame
    """Every kept test rating: participant, stimulus (code), score."""
    participants: pd.DataFrame
    """Per participant: kind (the simulated truth), the QC signals, excluded and reasons."""
    precision: Precision
    """The images' final quality and CI from the kept ratings."""
    history: pd.DataFrame
    """After each sitting: collected, kept, max_ci, mean_ci, done (share of images on target)."""
    collected: int
    """Test ratings submitted, kept or not."""
    check_trials: int
    """Gold and attention trials shown (the controls' own cost)."""
    reached_target: bool


def run_online_study(
    config: OnlineStudyConfig, truth: pd.DataFrame, show_progress: bool = True
) -> OnlineStudyResult:
    """Run the study on ``truth`` (from :func:`mos.simulate.online_stimuli`)."""
    rng = np.random.default_rng(config.seed)
    n = len(truth)
    reference = pd.factorize(truth["reference"])[0]
    allocator = Allocator(
        reference, config.policy, config.min_ratings, config.target_ci, config.quality_bins
    )
    quality = truth["true_quality"].to_numpy()
    spread = truth["spread"].to_numpy()
    capacity = config.max_ratings + config.sitting
    kept_s = np.empty(capacity, dtype=np.int64)
    kept_v = np.empty(capacity, dtype=np.int64)
    kept_x = np.empty(capacity)
    kept = collected = checks = 0
    signals, history = [], []
    precision = ci_halfwidths(kept_s[:0], kept_v[:0], kept_x[:0], n, 0)
    pool = draw_participants(0, config.behaviour, rng)
    progress = tqdm(
        total=config.max_ratings, desc=f"{config.policy} study", unit="rating", leave=False,
        disable=not show_progress,
    )  # fmt: skip
    person = 0
    while collected < config.max_ratings and not allocator.done(precision).all():
        if person >= len(pool):
            pool = pd.concat(
                [pool, draw_participants(1000, config.behaviour, rng)], ignore_index=True
            )
        who = pool.iloc[person]
        images = allocator.choose(config.sitting, precision, rng)
        trials = _with_checks(images, config, rng)
        trials = trials.iloc[: max(1, int(np.ceil(who.leaves_at * len(trials))))]
        is_test = trials["check"].to_numpy() == ""
        true_q = np.where(is_test, quality[trials["stimulus"]], trials["gold_quality"])
        true_s = np.where(is_test, spread[trials["stimulus"]], GOLD_SPREAD)
        score, seconds = rate_online(who, true_q, true_s, trials["asked"].to_numpy(), rng)
        trials = trials.assign(participant=person, score=score, seconds=seconds)
        signal = qc_signals(trials, config.rules.fast_seconds, precision.quality, precision.n)
        signals.append(signal)
        collected += int(is_test.sum())
        checks += int((~is_test).sum())
        progress.update(int(is_test.sum()))
        verdict = config.rules.apply(signal)
        if not verdict["excluded"].iloc[0]:
            m = int(is_test.sum())
            kept_s[kept : kept + m] = trials["stimulus"].to_numpy()[is_test]
            kept_v[kept : kept + m] = person
            kept_x[kept : kept + m] = score[is_test]
            kept += m
            precision = ci_halfwidths(kept_s[:kept], kept_v[:kept], kept_x[:kept], n, person + 1)
        history.append(
            (collected, kept, float(np.max(precision.ci95)), float(np.mean(precision.ci95)),
             float(allocator.done(precision).mean()))
        )  # fmt: skip
        person += 1
    progress.close()
    participants = config.rules.apply(pd.concat(signals, ignore_index=True))
    participants.insert(1, "kind", pool["kind"].to_numpy()[:person])
    return OnlineStudyResult(
        ratings=pd.DataFrame(
            {"participant": kept_v[:kept], "stimulus": kept_s[:kept], "score": kept_x[:kept]}
        ),
        participants=participants,
        precision=precision,
        history=pd.DataFrame(history, columns=["collected", "kept", "max_ci", "mean_ci", "done"]),
        collected=collected,
        check_trials=checks,
        reached_target=bool(allocator.done(precision).all()),
    )


def _with_checks(
    images: np.ndarray, config: OnlineStudyConfig, rng: np.random.Generator
) -> pd.DataFrame:
    """The sitting's pages: the test images with gold and attention trials at random places."""
    k = images.size
    rows = {
        "stimulus": list(images),
        "check": [""] * k,
        "low": [np.nan] * k,
        "high": [np.nan] * k,
        "asked": [np.nan] * k,
        "gold_quality": [np.nan] * k,
    }
    for i in range(config.gold):
        kind = ("gold_high", "gold_low")[i % 2]
        low, high = GOLD_RANGES[kind]
        for key, value in zip(rows, (-1, "gold", low, high, np.nan, GOLD_TRUTH[kind]), strict=True):
            rows[key].append(value)
    for _ in range(config.attention):
        asked = float(rng.choice([1.0, 2.0, 3.0, 4.0]))
        values = (-1, "attention", asked - ATTENTION_TOLERANCE, asked + ATTENTION_TOLERANCE)
        for key, value in zip(rows, (*values, asked, np.nan), strict=True):
            rows[key].append(value)
    frame = pd.DataFrame(rows)
    # Checks go anywhere but first (the first page of a sitting is never a trick).
    order = np.concatenate([[0], 1 + rng.permutation(len(frame) - 1)]) if k else np.arange(0)
    return frame.iloc[order].reset_index(drop=True)


def lab_target(truth: pd.DataFrame, viewers: int = 20, seed: int = 0) -> float:
    """The median 95% CI half-width of a lab study: ``viewers`` careful viewers rate every image."""
    rng = np.random.default_rng(seed)
    people = draw_participants(viewers, OnlineBehaviour(0, 0, 0, 0), rng)
    n = len(truth)
    quality, spread = truth["true_quality"].to_numpy(), truth["spread"].to_numpy()
    scores = [
        rate_online(people.iloc[v], quality, spread, np.full(n, np.nan), rng)[0]
        for v in range(viewers)
    ]
    precision = ci_halfwidths(
        np.tile(np.arange(n), viewers), np.repeat(np.arange(viewers), n), np.concatenate(scores), n
    )
    return float(np.median(precision.ci95))


def summarize(
    result: OnlineStudyResult, truth: pd.DataFrame, target: float, min_trials: int | None
) -> dict[str, float]:
    """The figures the bench reports for one study (see :func:`compare`)."""
    p = result.participants
    careless = p["kind"] == "careless"
    # A drop-out with too few trials to judge is neither caught nor wrongly excluded.
    judged = p["trials"] >= (min_trials or 1)
    true_q = truth["true_quality"].to_numpy()
    est = result.precision.quality
    ok = np.isfinite(est)
    covered = np.abs(est - true_q) <= result.precision.ci95
    first_mean = result.history.loc[result.history["mean_ci"] <= target, "collected"]
    return {
        "collected": result.collected,
        "kept": len(result.ratings),
        "check_trials": result.check_trials,
        "participants": len(p),
        "reached_target": result.reached_target,
        "max_ci": float(np.max(result.precision.ci95)),
        "mean_ci": float(np.mean(result.precision.ci95)),
        "collected_until_mean_ci_on_target": int(first_mean.iloc[0]) if len(first_mean) else -1,
        "rmse": float(np.sqrt(np.mean((est[ok] - true_q[ok]) ** 2))),
        "pearson": float(stats.pearsonr(est[ok], true_q[ok])[0]),
        "ci_coverage": float(np.mean(covered[ok])),
        "careless": int((careless & judged).sum()),
        "careless_caught": int((careless & judged & p["excluded"]).sum()),
        "careful": int((~careless & judged).sum()),
        "careful_excluded": int((~careless & judged & p["excluded"]).sum()),
    }


def compare(
    config: OnlineStudyConfig,
    truth: pd.DataFrame,
    policies: tuple[str, ...] = POLICIES,
    show_progress: bool = True,
    uniform_without_bands: bool = False,
) -> pd.DataFrame:
    """Run the study once per policy (same seed: same truth and participant stream).

    ``uniform_without_bands`` adds the column ``uniform_no_bands``: uniform allocation without
    the quality-range rule (pure round robin, counts level to ±1) — the most favourable baseline,
    since the quality bands cost uniform allocation some of its evenness.
    """
    variants = [(policy, policy, config.quality_bins) for policy in policies]
    if uniform_without_bands:
        variants.insert(1, ("uniform_no_bands", "uniform", 1))
    rows = {}
    for label, policy, bins in variants:
        study = OnlineStudyConfig(**{**config.__dict__, "policy": policy, "quality_bins": bins})
        result = run_online_study(study, truth, show_progress)
        rows[label] = summarize(result, truth, config.target_ci, config.rules.min_trials)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mos.online_study",
        description="Simulate an online study with uniform and adaptive allocation (the app's own "
        "allocator) and print the ratings each needs until every image's 95% CI is within the "
        "target, with accuracy and QC figures (docs/annotate.md, 'Online studies').",
        formatter_class=HelpFormatter,
    )
    defaults = OnlineStudyConfig()
    parser.add_argument("--stimuli", type=int, default=4000, help="images (the paper: 4,000)")
    parser.add_argument(
        "--spreads",
        type=Path,
        nargs="*",
        help="sureal-style CSVs whose per-image score spreads to resample "
        "(e.g. ../shared/data/sureal/*.csv); default: uniform 0.4–1.25",
    )
    parser.add_argument(
        "--target",
        type=float,
        help="95%% CI half-width every image must reach (default: the median of a simulated "
        "20-viewer lab study of the same images)",
    )
    parser.add_argument("--sitting", type=int, default=defaults.sitting, help="test pairs/sitting")
    parser.add_argument("--min-ratings", type=int, default=defaults.min_ratings)
    parser.add_argument("--max-ratings", type=int, default=defaults.max_ratings, help="budget")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--csv", type=Path, help="also write the comparison table here")
    args = parser.parse_args(argv)
    if args.stimuli < 10 or args.sitting < 1 or args.max_ratings < 1 or args.min_ratings < 0:
        parser.error("need ≥ 10 stimuli, a sitting ≥ 1, a budget ≥ 1 and min ratings ≥ 0")
    if args.target is not None and not args.target > 0:
        parser.error("--target must be positive")
    try:
        spreads = (
            np.concatenate([spreads_from_dataset(p) for p in args.spreads])
            if args.spreads
            else None
        )
    except (OSError, ValueError, pd.errors.ParserError) as error:
        parser.error(f"cannot read --spreads: {error}")
    rng = np.random.default_rng(args.seed)
    truth = online_stimuli(args.stimuli, rng, spreads)
    target = args.target if args.target is not None else lab_target(truth, seed=args.seed)
    config = OnlineStudyConfig(
        sitting=args.sitting,
        min_ratings=args.min_ratings,
        target_ci=target,
        max_ratings=args.max_ratings,
        seed=args.seed,
    )
    table = compare(config, truth, uniform_without_bands=True)
    print(f"target 95% CI half-width: {target:.3f}")
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(table.to_string())
    a = table.loc["collected", "adaptive"]
    for baseline in ("uniform", "uniform_no_bands"):
        u = table.loc["collected", baseline]
        print(f"adaptive collected {1 - a / u:.1%} fewer test ratings than {baseline}")
    if args.csv:
        table.to_csv(args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
