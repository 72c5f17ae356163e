"""Quality control of online participants: per-participant signals and the exclusion rules.

After ITU-T P.808 (crowdsourced listening tests, clause 8 and Annex): a participant's ratings are
dropped when they fail the study's built-in controls, and the report says who was dropped and why.
The signals, all per participant:

- **gold trials** — pairs with a known answer (a reference against itself must score high, a
  strongly degraded pair low); a gold trial *fails* when its score lies outside its accepted range;
- **attention checks** — a page that asks for a given score ("set the slider to 1"); fails
  outside the accepted range;
- **timing** — test trials answered faster than ``fast_seconds`` (too fast to have looked);
- **agreement** — Pearson correlation of the participant's scores with the other participants'
  (bias-corrected) mean of the same images, over images that at least two others rated;
- **spread** — the standard deviation of the participant's own scores (a straight-liner's is ~0).

:class:`ExclusionRules` holds the thresholds (defaults documented on each field); :meth:`apply`
returns each participant's decision with every reason. The same code runs live in the app, in the
simulated online studies (``mos.online_study``) and in ``mos.compute --exclude``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

CHECK_KINDS = ("gold", "attention")
"""Values of a trial's ``check`` column; anything else (empty) is a test trial."""

SIGNAL_COLUMNS = (
    "participant",
    "trials",
    "gold_trials",
    "gold_failures",
    "attention_trials",
    "attention_failures",
    "fast_trials",
    "agreement",
    "score_std",
)


@dataclass(frozen=True)
class ExclusionRules:
    """When a participant's ratings are excluded; a rule set to None is off.

    Defaults follow P.808's practice of zero tolerance on gold and attention trials, and its
    correlation floor, loosened where a careful but erratic rater would otherwise be lost.
    """

    min_trials: int | None = 10
    """Fewer test trials than this (a drop-out in the first minute): too little to judge or use."""
    max_gold_failures: int | None = 0
    """Any failed gold trial excludes (a careful rater passes them: they are unambiguous)."""
    max_attention_failures: int | None = 0
    """Any failed attention check excludes."""
    fast_seconds: float = 1.5
    """A test trial answered within this many seconds counts as too fast."""
    max_fast_share: float | None = 0.2
    """More than this share of too-fast test trials excludes."""
    min_agreement: float | None = 0.3
    """A correlation with the others below this excludes (when it is known: ≥ 5 shared images)."""
    min_score_std: float | None = 0.15
    """Scores this constant (a straight-liner) exclude."""

    def apply(self, signals: pd.DataFrame) -> pd.DataFrame:
        """``signals`` (one row per participant, :data:`SIGNAL_COLUMNS`) with ``excluded`` and
        ``reasons`` (semicolon-separated, empty for a kept participant) added."""
        reasons = [[] for _ in range(len(signals))]

        def rule(mask: np.ndarray, text: str) -> None:
            for i in np.flatnonzero(mask):
                reasons[i].append(text)

        s = signals
        if self.min_trials is not None:
            rule(s["trials"].to_numpy() < self.min_trials, f"fewer than {self.min_trials} trials")
        if self.max_gold_failures is not None:
            rule(
                s["gold_failures"].to_numpy() > self.max_gold_failures,
                f"failed more than {self.max_gold_failures} gold trial(s)",
            )
        if self.max_attention_failures is not None:
            rule(
                s["attention_failures"].to_numpy() > self.max_attention_failures,
                f"failed more than {self.max_attention_failures} attention check(s)",
            )
        if self.max_fast_share is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                share = s["fast_trials"].to_numpy() / s["trials"].to_numpy()
            rule(
                np.nan_to_num(share) > self.max_fast_share,
                f"over {self.max_fast_share:.0%} of trials faster than {self.fast_seconds:g} s",
            )
        if self.min_agreement is not None:
            agreement = s["agreement"].to_numpy(dtype=float)
            rule(
                np.isfinite(agreement) & (agreement < self.min_agreement),
                f"agreement with others below {self.min_agreement:g}",
            )
        if self.min_score_std is not None:
            spread = s["score_std"].to_numpy(dtype=float)
            rule(
                np.isfinite(spread) & (spread < self.min_score_std),
                f"score spread below {self.min_score_std:g} (straight-lining)",
            )
        out = signals.copy()
        out["excluded"] = [bool(r) for r in reasons]
        out["reasons"] = ["; ".join(r) for r in reasons]
        return out

    def describe(self) -> dict[str, object]:
        """The rules as a plain dict (written into reports, so a result names its rules)."""
        return asdict(self)


def qc_signals(
    trials: pd.DataFrame,
    fast_seconds: float = ExclusionRules.fast_seconds,
    others_quality: np.ndarray | None = None,
    others_count: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-participant signals from per-trial rows.

    ``trials`` columns: participant, stimulus (integer code), score, seconds (NaN if unknown),
    check (``"gold"``, ``"attention"`` or empty), low and high (a check's accepted score range).
    Agreement: with ``others_quality`` (and ``others_count``), against those per-image values —
    the live case, where the others' estimate excludes this participant already; without them,
    leave-one-out against the mean of every other participant's rating of the same image.
    """
    check = trials["check"].fillna("").to_numpy()
    score = trials["score"].to_numpy(dtype=float)
    failed = (score < trials["low"].to_numpy(dtype=float)) | (
        score > trials["high"].to_numpy(dtype=float)
    )
    codes, participant = np.unique(trials["participant"].to_numpy(), return_inverse=True)
    m = codes.size
    test = ~np.isin(check, CHECK_KINDS)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(participant[mask], minlength=m)

    seconds = trials["seconds"].to_numpy(dtype=float)
    n_test = count(test)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(participant[test], weights=score[test], minlength=m) / n_test
        var = np.bincount(
            participant[test], weights=(score[test] - mean[participant[test]]) ** 2, minlength=m
        ) / np.maximum(n_test - 1, 0)
    frame = pd.DataFrame(
        {
            "participant": codes,
            "trials": n_test,
            "gold_trials": count(check == "gold"),
            "gold_failures": count((check == "gold") & failed),
            "attention_trials": count(check == "attention"),
            "attention_failures": count((check == "attention") & failed),
            "fast_trials": count(test & (seconds < fast_seconds)),
            "agreement": _agreement(
                participant[test],
                trials["stimulus"].to_numpy()[test].astype(np.int64),
                score[test],
                m,
                others_quality,
                others_count,
            ),
            "score_std": np.sqrt(var),
        }
    )
    return frame


def _agreement(
    participant: np.ndarray,
    stimulus: np.ndarray,
    score: np.ndarray,
    m: int,
    others_quality: np.ndarray | None,
    others_count: np.ndarray | None,
    min_shared: int = 5,
) -> np.ndarray:
    """Per-participant Pearson r between own scores and the others' per-image means (vectorised)."""
    if others_quality is None:
        n_images = int(stimulus.max()) + 1 if stimulus.size else 0
        total = np.bincount(stimulus, weights=score, minlength=n_images)
        count = np.bincount(stimulus, minlength=n_images)
        others_n = count[stimulus] - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            other = (total[stimulus] - score) / others_n
    else:
        other = np.asarray(others_quality, dtype=float)[stimulus]
        others_n = (
            np.asarray(others_count)[stimulus]
            if others_count is not None
            else np.full(stimulus.size, 2)
        )
    use = (others_n >= 2) & np.isfinite(other)
    p, x, y = participant[use], score[use], other[use]
    n = np.bincount(p, minlength=m).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.bincount(p, weights=x, minlength=m) / n
        my = np.bincount(p, weights=y, minlength=m) / n
        dx, dy = x - mx[p], y - my[p]
        cov = np.bincount(p, weights=dx * dy, minlength=m)
        sx = np.bincount(p, weights=dx * dx, minlength=m)
        sy = np.bincount(p, weights=dy * dy, minlength=m)
        r = cov / np.sqrt(sx * sy)
    return np.where(n >= min_shared, r, np.nan)
