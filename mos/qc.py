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
- **spread** — the standard deviation of the participant's own scores (a straight-liner's is ~0);
- **timing regularity** — the standard deviation of the participant's response times (page served
  to rating stored) over test trials: a person's times vary by seconds, a script that waits a
  fixed time between pages has a spread of a few hundredths;
- **interaction** — per rating the page counts the slider moves and the time to the first one
  (schema ≥ 5); a test trial with no slider move or no first input was not made on the page.

:class:`ExclusionRules` holds the thresholds (defaults documented on each field); :meth:`apply`
returns each participant's decision with every reason. The same code runs live in the app, in the
simulated online studies (``mos.online_study``) and in ``mos.compute --exclude``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from operator import getitem
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from mos.ratings import (
    InputError,
    RatingTable,
    compact_codes,
    dictionary_codes,
    first_line,
    load_study,
    take_rows,
    warmup_flags,
)
from mos.study_sql import OPTIONAL_COLUMNS, has_check_column, trials_query, whole_ids
from studydb import Rating, make_engine

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
    "time_spread",
    "no_input_trials",
    "slider_events",
    "first_input_median",
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
    fast_seconds: float = 2.0
    """A test trial answered within this many seconds counts as too fast. The lab app refuses a
    rating sooner than ``GREY_SCREEN_MS + MIN_VIEWING_MS`` (1.6 s by default) after serving, so
    the threshold must lie above that floor to ever fire there (the app checks at start-up)."""
    max_fast_share: float | None = 0.2
    """More than this share of too-fast test trials excludes."""
    min_agreement: float | None = 0.3
    """A correlation with the others below this excludes (when it is known: ≥ 5 shared images)."""
    min_score_std: float | None = 0.15
    """Scores this constant (a straight-liner) exclude."""
    min_time_spread: float | None = 0.3
    """Response times whose standard deviation (seconds, over at least ``MIN_TIMED`` test trials)
    is below this exclude: equal waits between pages are a script's, never a person's."""
    max_no_input_share: float | None = 0.2
    """More than this share of test trials with no slider move or no first input recorded by the
    page excludes (judged only where the study records them, schema ≥ 5)."""

    def apply(self, signals: pd.DataFrame) -> pd.DataFrame:
        """``signals`` (one row per participant, :data:`SIGNAL_COLUMNS`) with ``excluded`` and
        ``reasons`` (semicolon-separated, empty for a kept participant) added."""
        reasons = [[] for _ in range(len(signals))]

        def rule(mask: np.ndarray, text: str) -> None:
            for i in np.flatnonzero(mask):
                reasons[i].append(text)

        s = signals

        def below(column: str, minimum: float | None, text: str) -> None:
            """A known signal under its floor (an unknown one, NaN, never excludes)."""
            if minimum is not None:
                values = s[column].to_numpy(dtype=float)
                rule(np.isfinite(values) & (values < minimum), text.format(minimum))

        def share_over(column: str, maximum: float | None, text: str) -> None:
            """A share of the participant's test trials over its ceiling."""
            if maximum is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    share = s[column].to_numpy(dtype=float) / s["trials"].to_numpy()
                rule(np.nan_to_num(share) > maximum, text.format(maximum))

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
        share_over(
            "fast_trials",
            self.max_fast_share,
            f"over {{:.0%}} of trials faster than {self.fast_seconds:g} s",
        )
        below("agreement", self.min_agreement, "agreement with others below {:g}")
        below("score_std", self.min_score_std, "score spread below {:g} (straight-lining)")
        below(
            "time_spread", self.min_time_spread, "response times too regular (spread below {:g} s)"
        )
        share_over(
            "no_input_trials",
            self.max_no_input_share,
            "over {:.0%} of trials without a slider move on the page",
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

    ``trials`` columns: participant, stimulus (integer code), score, and optionally seconds,
    check (``"gold"``, ``"attention"`` or empty), low and high (a check's accepted score range),
    slider_events and first_input: an absent column, or NaN, is unknown (never failed).
    Agreement: with ``others_quality`` (and ``others_count``), against those per-image values —
    the live case, where the others' estimate excludes this participant already; without them,
    leave-one-out against the mean of every other participant's rating of the same image.
    """
    score = trials["score"].to_numpy(dtype=float)
    column = _optional_columns(trials)
    if "check" in trials:
        gold = (trials["check"] == "gold").to_numpy()  # on a Categorical: compares codes
        attention = (trials["check"] == "attention").to_numpy()
        test = ~(gold | attention)
        failed = (score < column("low")) | (score > column("high"))
    else:  # no checks: every trial is a test trial
        gold = attention = failed = np.zeros(score.size, dtype=bool)
        test = ~gold
    every_test = bool(test.all())  # a study without checks: no copies
    stimulus = trials["stimulus"].to_numpy().astype(np.int64, copy=False)
    tested_score = score if every_test else score[test]
    # The others' mean of each image is computed on a second core (numpy's passes leave the
    # interpreter free) while the participants are numbered and each one's scores centred here
    # (a step the agreement and the spread share). The rest runs a step at a time: each step
    # holds several arrays of one value per trial (80 MB each at 10 M trials), and two steps
    # side by side set the run's peak memory.
    with ThreadPoolExecutor(1) as pool:
        others = pool.submit(
            _others_mean, stimulus if every_test else stimulus[test], tested_score,
            others_quality, others_count,
        )  # fmt: skip
        del stimulus
        codes, participant = _sorted_codes(trials["participant"])
        m = codes.size
        tested = participant if every_test else participant[test]
        own = _Centred.of(tested, tested_score, m)
        agreement = _agreement(own, *others.result(), m)
        del others
    frame = _other_signals(
        codes, participant, test, own, (gold, attention, failed), column, fast_seconds
    )
    frame["agreement"] = agreement
    del own, tested, tested_score
    for name, values in _input_signals(participant, test, column, m).items():
        frame[name] = values
    return frame[list(SIGNAL_COLUMNS)]


@dataclass
class _Centred:
    """Each participant's scores centred on their mean: the spread and the agreement both start
    from it (one pass over the trials, not two)."""

    participant: np.ndarray
    score: np.ndarray
    n: np.ndarray
    """Trials per participant."""
    deviation: np.ndarray
    """Per trial, its score minus its participant's mean."""
    squares: np.ndarray
    """Per participant, the sum of squared deviations."""

    @classmethod
    def of(cls, participant: np.ndarray, score: np.ndarray, m: int) -> _Centred:
        n = np.bincount(participant, minlength=m)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(participant, weights=score, minlength=m) / n
        deviation = mean[participant]
        np.subtract(score, deviation, out=deviation)
        squares = np.bincount(participant, weights=deviation * deviation, minlength=m)
        return cls(participant, score, n, deviation, squares)


def _other_signals(
    codes: np.ndarray,
    participant: np.ndarray,
    test: np.ndarray,
    own: _Centred,
    checks: tuple[np.ndarray, np.ndarray, np.ndarray],
    column,
    fast_seconds: float,
) -> pd.DataFrame:
    """Every signal of :func:`qc_signals` but the agreement and the page's input
    (:func:`_input_signals`). ``own``: the test trials' centred scores; ``checks``: per trial,
    gold, attention, failed."""
    m = codes.size
    gold, attention, failed = checks

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(participant[mask], minlength=m)

    with np.errstate(invalid="ignore", divide="ignore"):
        var = own.squares / np.maximum(own.n - 1, 0)
    seconds = column("seconds")
    timed = test & np.isfinite(seconds)
    n_timed = count(timed)
    # One array of one value per trial (80 MB at 10 M trials), worked in place rather than
    # selections of the timed trials: those not timed weigh 0, which leaves every participant's
    # sums as they are.
    with np.errstate(invalid="ignore", divide="ignore"):
        deviation = np.where(timed, seconds, 0.0)
        mean_time = np.bincount(participant, weights=deviation, minlength=m) / n_timed
        deviation -= mean_time[participant]
        deviation *= deviation
        deviation[~timed] = 0.0
        time_var = np.bincount(participant, weights=deviation, minlength=m) / np.maximum(
            n_timed - 1, 0
        )
    del deviation
    return pd.DataFrame(
        {
            "participant": codes,
            "trials": own.n,
            "gold_trials": count(gold),
            "gold_failures": count(gold & failed),
            "attention_trials": count(attention),
            "attention_failures": count(attention & failed),
            "fast_trials": count(test & (seconds < fast_seconds)),
            "score_std": np.sqrt(var),
            "time_spread": np.where(n_timed >= MIN_TIMED, np.sqrt(time_var), np.nan),
        }
    )


def _input_signals(
    participant: np.ndarray, test: np.ndarray, column, m: int
) -> dict[str, np.ndarray]:
    """Each participant's test trials without input (no slider move, or no first-move time),
    mean slider moves and median time to the first move, over the test trials whose page
    counted its moves (schema ≥ 5); NaN where none."""
    events = column("slider_events")
    known = test & np.isfinite(events)
    by, events = participant[known], events[known]
    # One array of the known trials' values at a time (80 MB each at 10 M trials).
    mean_events = _per_participant(by, events, m, "mean")
    no_input = events <= 0
    del events
    first_input = column("first_input")[known]
    no_input |= ~np.isfinite(first_input)
    return {
        "no_input_trials": np.bincount(by[no_input], minlength=m),
        "slider_events": mean_events,
        "first_input_median": _per_participant(by, first_input, m, "median"),
    }


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)``, sorting only the distinct values (hashed, or a
    Categorical's categories) rather than every row."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        names = values.cat.categories.to_numpy(dtype=object)
        used = np.flatnonzero(np.bincount(codes, minlength=names.size))  # counted, not sorted
        order = used[np.argsort(names[used])]
        rank = np.empty(names.size, dtype=np.intp)
        rank[order] = np.arange(order.size)
        return names[order], rank[codes]
    inverse, uniques = pd.factorize(values.to_numpy(), sort=True)
    return np.asarray(uniques), inverse.astype(np.intp, copy=False)


def _optional_columns(trials: pd.DataFrame):
    """A reader of the optional float columns of ``trials``: an absent column reads as unknown
    (NaN), one value repeated without being stored once per trial."""

    def column(name: str) -> np.ndarray:
        if name in trials:
            return trials[name].to_numpy(dtype=float)
        return np.broadcast_to(np.float64(np.nan), (len(trials),))

    return column


MIN_TIMED = 5
"""Test trials with a known response time needed before their spread is judged."""


def _per_participant(participant: np.ndarray, values: np.ndarray, m: int, how: str) -> np.ndarray:
    """``how`` ("mean", "median") of each participant's known ``values``; NaN where none."""
    out = np.full(m, np.nan)
    summary = pd.Series(values).groupby(participant).agg(how)  # NaN values are skipped
    out[summary.index.to_numpy(dtype=np.int64)] = summary.to_numpy(dtype=float)
    return out


def _others_mean(
    stimulus: np.ndarray,
    score: np.ndarray,
    others_quality: np.ndarray | None,
    others_count: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per trial, the others' value of its image and whether it counts (at least two others
    rated it): with ``others_quality`` (and ``others_count``) those per-image values, else the
    mean of every other rating of the image (leave-one-out)."""
    # In place where it can be (a crowd study has tens of millions of trials): every array
    # here is one value per trial.
    with np.errstate(invalid="ignore", divide="ignore"):
        if others_quality is None:
            n_images = int(stimulus.max()) + 1 if stimulus.size else 0
            total = np.bincount(stimulus, weights=score, minlength=n_images)
            others_n = np.bincount(stimulus, minlength=n_images)[stimulus]
            others_n -= 1
            other = total.astype(np.float64, copy=False)[stimulus]  # (int when empty)
            other -= score
            other /= others_n
        else:
            other = np.asarray(others_quality, dtype=float)[stimulus]
            others_n = (
                np.asarray(others_count)[stimulus]
                if others_count is not None
                else np.full(stimulus.size, 2)
            )
        use = (others_n >= 2) & np.isfinite(other)
    return other, use


def _agreement(
    own: _Centred, other: np.ndarray, use: np.ndarray, m: int, min_shared: int = 5
) -> np.ndarray:
    """Per-participant Pearson r between own scores and the others' values ``other`` of the same
    images, over the trials ``use`` (vectorised); NaN with fewer than ``min_shared``."""
    if not use.all():  # own scores centred again over the trials that count
        own = _Centred.of(own.participant[use], own.score[use], m)
        other = other[use]
    del use
    p, dx, n = own.participant, own.deviation, own.n
    with np.errstate(invalid="ignore", divide="ignore"):
        my = np.bincount(p, weights=other, minlength=m) / n
        dy = my[p]
        np.subtract(other, dy, out=dy)
        sy = np.bincount(p, weights=dy * dy, minlength=m)
        dy *= dx
        cov = np.bincount(p, weights=dy, minlength=m)
        r = cov / np.sqrt(own.squares * sy)
    return np.where(n >= min_shared, r, np.nan)


def load_trials(
    source: str | Path, dimension: str, table: pa.Table | None = None, *, study_read: bool = False
) -> pd.DataFrame:
    """Every non-warm-up trial of a study, checks included, as :func:`qc_signals` reads them.

    A study database: the check kind and accepted range come from ``trials`` (schema ≥ 4; an older
    study has no checks), the seconds from the trial's latest serving to the submission. A CSV:
    the columns viewer, stimulus, ``dimension`` and optionally check, accept_low, accept_high,
    seconds and warmup. ``table``: the trials as :func:`mos.ratings.load_study` read them with
    the ratings (a CSV's cells, a SQLite study's trials in those columns), else they are read
    here by the same reader — unless ``study_read``: ``load_study`` has read this study already
    and could not yield its trials (a column the driver cannot type), so they are read through
    SQLAlchemy at once. Raises :class:`InputError` for anything unreadable.
    """
    text = str(source)
    path = Path(text).expanduser()
    if table is None and "://" not in text and not study_read:
        table = load_study(path, (dimension,), trials_of=dimension)[1]
    if table is not None:
        frame = _trials_from_arrow(table, path, dimension)
    else:  # another database, or a SQLite study the driver cannot type
        frame = _trials_from_database(text, dimension)
    # Any compact numbering will do (the stimuli only group trials): a study's ids as they are.
    try:
        stimulus = whole_ids(frame["stimulus"].to_numpy(), "stimulus")
    except ValueError as error:
        raise InputError(f"{text}: cannot read the study's trials ({error})") from None
    frame["stimulus"] = compact_codes(stimulus)
    return frame


def exclude_participants(
    table: RatingTable, trials: pd.DataFrame, rules: ExclusionRules
) -> tuple[RatingTable, pd.DataFrame]:
    """Apply ``rules`` to the signals of ``trials``; return the table without the excluded
    participants' ratings, and the per-participant verdicts (signals, excluded, reasons)."""
    verdicts = rules.apply(qc_signals(trials, rules.fast_seconds))
    excluded = set(verdicts.loc[verdicts["excluded"], "participant"].astype(str))
    drop = np.array([str(code) in excluded for code in table.viewer_ids])
    keep = ~drop[table.viewer]
    if not keep.any():
        raise InputError("the exclusion rules exclude every participant; see --exclude options")
    return _select_rows(table, keep), verdicts


def _select_rows(table: RatingTable, keep: np.ndarray) -> RatingTable:
    """The table's rows ``keep``, with viewers, stimuli and sessions re-coded densely.

    Ten million rows: the columns are selected on two cores (numpy's selections leave the
    interpreter free)."""
    with ThreadPoolExecutor(2) as pool:
        codes = [
            pool.submit(_recoded, c, keep) for c in (table.viewer, table.stimulus, table.session)
        ]
        scores = {name: pool.submit(getitem, values, keep) for name, values in table.scores.items()}
        nsfw = None if table.nsfw is None else pool.submit(getitem, table.nsfw, keep)
        (viewer, viewers), (stimulus, stimuli), (session, sessions) = (c.result() for c in codes)
        return replace(
            table,
            viewer=viewer,
            stimulus=stimulus,
            session=session,
            scores={name: job.result() for name, job in scores.items()},
            nsfw=None if nsfw is None else nsfw.result(),
            viewer_ids=table.viewer_ids[viewers],
            stimulus_ids=table.stimulus_ids[stimuli],
            n_sessions=sessions.size,
        )


def _recoded(codes: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes[keep], return_inverse=True)`` by counting (codes are dense), not by
    sorting the ratings; no look-up at all when every code is still present (the stimuli, when
    no image lost all its raters)."""
    kept = codes[keep]
    present = np.bincount(kept, minlength=int(codes.max(initial=-1)) + 1) > 0
    if present.all():
        return kept.astype(np.intp, copy=False), np.arange(present.size)
    new_code = np.cumsum(present) - 1
    return new_code[kept].astype(np.intp, copy=False), np.flatnonzero(present)


def trials_frame(raw: pd.DataFrame, dimension: str = "consistency") -> pd.DataFrame:
    """The rows of :func:`mos.study_sql.trials_query` as :func:`qc_signals` reads them (stimulus ids kept)."""
    if dimension not in raw:
        raise InputError(f"unknown score column '{dimension}'")
    frame = raw.rename(columns={dimension: "score"})
    submitted, shown = _timestamps(frame["submitted_at"]), _timestamps(frame["served_at"])
    frame = frame.assign(seconds=(submitted - shown).dt.total_seconds())
    if "first_input_at" in frame:
        first, revealed = _timestamps(frame["first_input_at"]), _timestamps(frame["revealed_at"])
        frame["first_input_seconds"] = (first - revealed).dt.total_seconds()
    return _normalized(frame)


TIME_COLUMNS = ("submitted_at", "served_at", "first_input_at", "revealed_at")


def _timestamps(values: pd.Series) -> pd.Series:
    """Stored times as UTC: SQLite's ISO text through pandas' vectorised ISO 8601 parser, and
    anything else it refuses element by element (``format="mixed"``)."""
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        return pd.to_datetime(values, utc=True, format="mixed")


def _trials_from_database(location: str, dimension: str) -> pd.DataFrame:
    """The study's trials, only the columns QC reads, through SQLAlchemy and pandas: any
    database URL, or a SQLite study whose columns the ADBC driver cannot type."""
    engine = None
    try:
        engine = make_engine(location, read_only=True)
        query = trials_query(has_check_column(engine), has_check_column(engine, "slider_events"))
        needed = {"participant", "stimulus", dimension, *TIME_COLUMNS, *OPTIONAL_COLUMNS}
        if dimension not in query.selected_columns.keys():
            raise InputError(f"unknown score column '{dimension}'")
        rows = query.subquery()
        with engine.connect() as connection:
            raw = pd.read_sql(select(*(c for c in rows.c if c.name in needed)), connection)
            rated = connection.execute(
                select(func.count()).select_from(Rating).where(Rating.is_warmup.is_(False))
            ).scalar_one()
        if len(raw) < rated:  # the query's joins leave out a rating whose sitting is not there
            raise InputError(
                f"{location}: {rated - len(raw)} rating(s) name a sitting (or a sitting a viewer) "
                "that is not in the study"
            )
        return trials_frame(raw, dimension)
    except (SQLAlchemyError, ImportError, pd.errors.DatabaseError) as error:
        raise InputError(
            f"{location}: cannot read the study's trials ({first_line(error)})"
        ) from error
    except (ValueError, TypeError) as error:  # a stored time that is no date and time
        raise InputError(
            f"{location}: a trial's stored time cannot be read ({first_line(error)})"
        ) from None
    finally:
        if engine is not None:
            engine.dispose()


def _trials_from_arrow(table: pa.Table, path: Path, dimension: str) -> pd.DataFrame:
    """The trials of a CSV read by :func:`mos.ratings.read_csv_table` (the formula escape undone,
    so a participant is the viewer the ratings name), or of a study (:func:`_sqlite_trials`):
    text stays integer codes over its distinct values, numbers are parsed once per distinct
    text, and a column without a value (absent or empty) is not stored: it is unknown."""
    missing = {"viewer", "stimulus", dimension} - set(table.column_names)
    if missing:
        raise InputError(f"{path}: no column(s) {', '.join(sorted(missing))}")
    try:
        warmup = warmup_flags(table)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InputError(f"{path}: 'warmup' column unreadable ({error})") from error
    rows = np.flatnonzero(~warmup) if warmup.any() else None
    viewer = table.column("viewer")
    if viewer.null_count:
        raise InputError(f"{path}: {viewer.null_count} rating(s) have an empty viewer")
    names = viewer.chunk(0).dictionary.to_numpy(zero_copy_only=False) if viewer.num_chunks else []
    participant = pd.Categorical.from_codes(
        take_rows(dictionary_codes(viewer), rows), categories=pd.Index(names)
    )
    columns = {
        "participant": participant,
        "stimulus": take_rows(_codes(table.column("stimulus")), rows),
        "score": _numbers(table.column(dimension), rows),
    }
    known = {n for n in table.column_names if table.column(n).null_count < table.num_rows}
    if "check" in known:
        columns["check"] = _check_column(table.column("check"), rows)
    for name, source in CSV_NUMBERS.items():
        if source in known:
            columns[name] = _sparse_if_rare(_numbers(table.column(source), rows))
    return pd.DataFrame(columns, copy=False)  # the arrays as they are: no second copy


def _sparse_if_rare(values: np.ndarray) -> np.ndarray | pd.arrays.SparseArray:
    """``values``, only its known ones stored where few are known — a check's accepted range,
    known for the few check trials: 80 MB per column at 10 M trials otherwise, held while QC
    runs (:func:`qc_signals` reads it whole, once, at its start)."""
    known = np.count_nonzero(~np.isnan(values))
    if known > values.size // SPARSE_SHARE:
        return values
    return pd.arrays.SparseArray(values, fill_value=np.nan)


SPARSE_SHARE = 8
"""A column of trials with at most one known value in this many is held sparse."""


CSV_NUMBERS = {
    "seconds": "seconds",
    "low": "accept_low",
    "high": "accept_high",
    "slider_events": "slider_events",
    "first_input": "first_input_seconds",
}
"""The optional number columns of :func:`qc_signals` and the CSV columns they are read from."""


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Integer codes of a column: a text column's dictionary codes, or its integers."""
    if pa.types.is_dictionary(column.type):
        return dictionary_codes(column)
    return column.to_numpy()


def _numbers(column: pa.ChunkedArray, rows: np.ndarray | None) -> np.ndarray:
    """A column as floats over ``rows``; text that is no number or an empty cell is NaN
    (unknown, never failed). Text is parsed once per distinct value."""
    if pa.types.is_dictionary(column.type):
        values = column.chunk(0).dictionary.to_numpy(zero_copy_only=False) if column.chunks else []
        parsed = np.append(
            pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float), np.nan
        )
        return parsed[take_rows(dictionary_codes(column), rows)]  # code -1 (empty): the NaN
    # Unsafe: a whole number beyond 2^53 (a count or a time nobody could mean) is rounded to
    # the nearest float, as every other reader of it would, rather than refused by Arrow.
    floats = pc.cast(column, pa.float64(), safe=False)
    return take_rows(floats.to_numpy(zero_copy_only=False), rows)


def _check_column(column: pa.ChunkedArray, rows: np.ndarray | None) -> pd.Categorical:
    """The check kind of each row ("" for a test trial); an unknown kind is an input error."""
    if not pa.types.is_dictionary(column.type):  # numbers: every one an unknown kind
        column = pa.chunked_array([pc.dictionary_encode(column.cast(pa.string()).combine_chunks())])
    kinds = [str(k) for k in column.chunk(0).dictionary.to_pylist()] if column.chunks else []
    if "" not in kinds:
        kinds.append("")
    codes = take_rows(dictionary_codes(column), rows)
    codes = np.where(codes < 0, kinds.index(""), codes)  # an empty cell: a test trial
    _refuse_unknown_kinds({kinds[c] for c in np.flatnonzero(np.bincount(codes))})
    return pd.Categorical.from_codes(codes, categories=kinds)


def _refuse_unknown_kinds(kinds: set[str]) -> None:
    bad = sorted(kinds - {"", *CHECK_KINDS})
    if bad:
        raise InputError(
            f"unknown check kind(s): {', '.join(bad)} (known: {', '.join(CHECK_KINDS)})"
        )


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(**{c: np.nan for c in OPTIONAL_COLUMNS if c not in frame})
    out = frame[["participant", "stimulus", "score", "seconds", "check"]].copy()
    out["check"] = out["check"].astype(object).fillna("").astype(str)
    _refuse_unknown_kinds(set(out["check"]))
    out["low"] = pd.to_numeric(frame["accept_low"], errors="coerce").to_numpy()
    out["high"] = pd.to_numeric(frame["accept_high"], errors="coerce").to_numpy()
    out["seconds"] = pd.to_numeric(out["seconds"], errors="coerce")
    out["slider_events"] = pd.to_numeric(frame["slider_events"], errors="coerce").to_numpy()
    out["first_input"] = pd.to_numeric(frame["first_input_seconds"], errors="coerce").to_numpy()
    out["participant"] = out["participant"].astype(str)
    return out.reset_index(drop=True)
