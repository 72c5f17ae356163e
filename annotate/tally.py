"""The online allocator's and quality control's view of the study, kept up to date incrementally.

Opening an online sitting needs every participant's QC verdict (to leave the excluded out) and
every image's precision (:func:`studydb.allocation.ci_halfwidths`) — figures over *all* ratings.
Reading all of them through ORM objects on every sitting open took seconds at the paper's size
and grew with the study (issue 19). Ratings are append-only, so :class:`TrialTally` holds the
submitted trials as numpy columns and reads, on each use, only the rows added since it last
looked — one Core ``SELECT`` of the needed columns over the primary key. The database stays the
one truth: each server process keeps its own tally of it, so several worker processes agree.

Computed figures are memoised per (rows held, eligible stimuli); a sitting open during a launch
burst, with no new rating since the last open, reuses them. Rating POSTs never touch the tally.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session as OrmSession

from annotate.stimuli_set import per_stimuli_set
from mos.qc import ExclusionRules, qc_signals, trials_frame
from mos.study_sql import trials_query
from studydb import Rating, Session, Stimulus, Trial
from studydb.allocation import Precision, ci_halfwidths

_log = logging.getLogger(__name__)

RECOUNT_S = 2.0
"""How often at most the tally counts the ratings it holds (a removal shows within that)."""
REREAD = 2000
"""How far below the highest rating id seen a missing id is looked for again on each update: on
PostgreSQL an id is drawn at insert but becomes visible at commit, so a short transaction holding
a lower id can commit after a higher one was read. Only the missing ids (gaps: such late commits,
or ids of rolled-back inserts) are asked for, not the rows already held."""


_EMPTY = pd.DataFrame(
    columns=["participant", "stimulus", "consistency", "submitted_at", "served_at", "check",
             "accept_low", "accept_high"]
)  # fmt: skip
"""What :func:`mos.qc.trials_frame` reads, without rows (a study before its first rating)."""


@dataclass
class AllocationState:
    """The study as the allocator sees it: eligible stimuli (ids), references, precision."""

    stimuli: np.ndarray
    reference: np.ndarray
    reference_paths: list[str]
    precision: Precision
    signals: pd.DataFrame
    """The QC verdicts (participant: the viewer's id; :meth:`TrialTally.verdicts`)."""


@dataclass
class _Columns:
    """Submitted non-warm-up trials in rating-id order: the ids the tally needs, and the rows as
    :func:`mos.qc.trials_frame` normalises them (whatever columns :func:`mos.study_sql.trials_query`
    selects, so QC here judges on exactly what ``mos.compute --exclude`` judges on), with the
    participant given by the viewer's id."""

    rating: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    trial: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # _trial_key
    viewer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frame: pd.DataFrame | None = None

    def extend(self, other: _Columns) -> _Columns:
        frames = [f for f in (self.frame, other.frame) if f is not None]
        return _Columns(
            rating=np.concatenate([self.rating, other.rating]),
            trial=np.concatenate([self.trial, other.trial]),
            viewer=np.concatenate([self.viewer, other.viewer]),
            frame=pd.concat(frames, ignore_index=True) if frames else None,
        )

    def take(self, order: np.ndarray) -> _Columns:
        return _Columns(
            rating=self.rating[order],
            trial=self.trial[order],
            viewer=self.viewer[order],
            frame=None if self.frame is None else self.frame.iloc[order].reset_index(drop=True),
        )


class TrialTally:
    """One process's incrementally read copy of the study's submitted trials (thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._rows = _Columns()
        self._seen = np.zeros(0, np.int64)  # every rating id read, warm-ups included (sorted)
        self._counted_at = -np.inf  # when the ratings held were last counted
        self._counting = threading.Lock()  # held while a count runs (one at a time)
        self._removal_found = threading.Event()  # a count found fewer rows than held
        self._codes: dict[int, str] = {}
        self._read = threading.Lock()
        self._memo: dict[tuple, tuple] = {}
        self._memo_lock = threading.Lock()
        self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # open sitting → (keys, ids)
        self._plans_lock = threading.Lock()

    def update(self) -> _Columns:
        """Read the rows added since the last update; return every row held (an immutable
        snapshot: later updates build new arrays)."""
        with self._read, self.engine.connect() as connection:
            # The highest id bounds the read: a closed id range is an index scan whatever the
            # database's statistics say (PostgreSQL, before its first ANALYZE of a bulk-loaded
            # study, planned "id > top" as a scan of every rating and trial: 50 ms per open).
            highest = connection.scalar(select(func.max(Rating.id)))
            if self._seen.size and self._rows_went_away(highest):
                self._forget()
            top = int(self._seen[-1]) if self._seen.size else 0
            window = np.arange(max(1, top - REREAD + 1), top + 1)
            gaps = np.setdiff1d(window, self._seen[-REREAD:], assume_unique=True)
            if (highest is None or highest <= top) and not gaps.size:
                return self._rows  # nothing new: no second query
            new = Rating.id.between(top + 1, highest if highest is not None else top)
            if gaps.size:
                new = or_(new, Rating.id.in_(gaps.tolist()))
            found = connection.execute(
                trials_query(warmups=True).where(new).order_by(Rating.id)
            ).all()
            if found:
                self._seen = _merged(self._seen, np.array([r.rating_id for r in found]))
                scored = [r for r in found if not r.warmup]
                if not scored:
                    return self._rows
                self._codes.update((r.viewer_id, r.participant) for r in scored)
                added = _columns(scored)
                merged = self._rows.extend(added)
                if added.rating.size and self._rows.rating.size and added.rating[0] < top:
                    merged = _sorted(merged)  # a late commit of a lower id
                self._rows = merged
            return self._rows

    def _rows_went_away(self, highest: int | None) -> bool:
        """Whether ratings the tally holds are no longer in the database: a restore from a
        backup or a removed batch takes ids backwards, and new ratings would reuse them. A
        ``highest`` id below the one held is the sign of a restore (from the primary key, at
        once); fewer rows at or below it than the tally read is the sign of any removal — a
        count over the primary key that grows with the study, so it runs on a thread of its own
        once every :data:`RECOUNT_S`, never on a sitting open, and its finding is acted on at
        the next update. A late commit only ever adds rows there."""
        top = int(self._seen[-1])
        if highest is None or highest < top:
            return True
        if self._removal_found.is_set():
            self._removal_found.clear()
            return True
        due = time.monotonic() - self._counted_at >= RECOUNT_S
        if due and self._counting.acquire(blocking=False):
            self._counted_at = time.monotonic()
            try:
                threading.Thread(
                    target=self._recount, args=(top, int(self._seen.size)), daemon=True
                ).start()
            except RuntimeError as error:  # no thread to be had now: count another time
                self._counting.release()
                _log.warning("cannot start the count of the ratings held: %s", error)
        return False

    def _recount(self, top: int, held: int) -> None:
        """Count the ratings at or below ``top`` (the tally held ``held`` ids there)."""
        try:
            with self.engine.connect() as connection:
                present = connection.scalar(select(func.count()).where(Rating.id <= top))
            if present < held:
                self._removal_found.set()
        except Exception as error:  # noqa: BLE001 - e.g. the database briefly unreachable
            _log.warning("counting the ratings held failed (counted again later): %s", error)
        finally:
            self._counting.release()

    def _forget(self) -> None:
        """Start again from an empty tally (the next read takes the whole table once)."""
        self._rows = _Columns()
        self._seen = np.zeros(0, np.int64)
        self._removal_found.clear()
        self._codes = {}
        with self._memo_lock:
            self._memo = {}
        with self._plans_lock:
            self._plans = {}

    def codes(self) -> dict[int, str]:
        """Viewer id → participant code of every viewer with a row held."""
        with self._read:
            return dict(self._codes)

    def verdicts(self, rules: ExclusionRules, rows: _Columns | None = None) -> pd.DataFrame:
        """Every participant's QC signals, ``excluded`` and ``reasons`` (participant: viewer id)
        of ``rows`` (default: an update's)."""
        rows = self.update() if rows is None else rows
        return self._memoised(("verdicts", rows.rating.size, rules), lambda: _verdicts(rows, rules))

    def state(self, db: OrmSession, practice_keys: frozenset[str], rules: ExclusionRules):
        """The :class:`AllocationState` of now: kept participants' test ratings (memoised) plus
        the trials planned in open sittings (read on every call: they change with each open)."""
        rows = self.update()
        ids, references, paths = self._eligible(db, practice_keys)
        signals = self.verdicts(rules, rows)  # the same rows: one read of the database
        key = ("precision", rows.rating.size, rules, hash(ids.tobytes()))
        precision = self._memoised(key, lambda: _precision(rows, signals, ids))
        planned = self._planned(db, rows)
        index = pd.Series(np.arange(ids.size), index=ids)
        waiting = index.reindex(planned).dropna().to_numpy(dtype=np.int64)
        counted = Precision(
            quality=precision.quality,
            ci95=precision.ci95,
            n=precision.n + np.bincount(waiting, minlength=ids.size),
        )
        return AllocationState(ids, references, paths, counted, signals)

    def _planned(self, db: OrmSession, rows: _Columns) -> np.ndarray:
        """Stimulus ids of the test trials planned in open sittings and not rated yet: they
        count towards each image's number, so simultaneous participants do not all get the same
        images. A sitting's plan never changes once drawn, so each open sitting's test trials
        are read once and kept; what is rated comes from the tally's rows (read before the open
        sittings, so a rating arriving in between counts as planned, never twice nor not at all)."""
        still_open = db.scalars(select(Session.id).where(Session.closed_reason.is_(None))).all()
        with self._plans_lock:
            current = set(still_open)
            self._plans = {s: p for s, p in self._plans.items() if s in current}
            new = [s for s in still_open if s not in self._plans]
            if new:
                found = db.execute(_plans_query(new)).all()
                for sitting in new:
                    self._plans[sitting] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
                by_sitting: dict[int, list] = {}
                for sitting, position, stimulus in found:
                    by_sitting.setdefault(sitting, []).append((position, stimulus))
                for sitting, trials in by_sitting.items():
                    plan = np.array(trials, dtype=np.int64)
                    self._plans[sitting] = (_trial_key(sitting, plan[:, 0]), plan[:, 1])
            plans = list(self._plans.values())
        if not plans:
            return np.zeros(0, np.int64)
        keys = np.concatenate([k for k, _ in plans])
        stimuli = np.concatenate([s for _, s in plans])
        recent = rows.trial[rows.trial >= keys.min()] if keys.size else rows.trial[:0]
        return stimuli[~np.isin(keys, recent)]

    def _memoised(self, key: tuple, compute):
        with self._memo_lock:
            if key not in self._memo:
                self._memo = {k: v for k, v in self._memo.items() if k[0] != key[0]}
                self._memo[key] = compute()
            return self._memo[key]

    @staticmethod
    def _eligible(db: OrmSession, practice_keys: frozenset[str]):
        """(stimulus ids, reference codes, reference paths) of the images a sitting may show:
        not withheld (the check pairs the online mode adds are stored withheld), not a practice
        stimulus. Computed once per set of stimuli to rate (:func:`annotate.stimuli_set.
        per_stimuli_set`): the check pairs added on most sitting opens of a launch leave it."""

        def compute():
            to_rate = db.execute(
                select(Stimulus.id, Stimulus.key, Stimulus.reference, Stimulus.reference_path)
                .where(Stimulus.withheld.is_(False))
                .order_by(Stimulus.id)
            ).all()
            return _eligible(to_rate, practice_keys)

        # Looked at on every open (one aggregate query): a stimulus the admin has just withheld
        # must not be planned, nor lend its image to an attention check, even for a second.
        return per_stimuli_set(("eligible", practice_keys), db, compute, max_age=0)


def _eligible(to_rate: list, practice_keys: frozenset[str]):
    rows = [r for r in to_rate if r.key not in practice_keys]
    ids = np.array([r.id for r in rows], dtype=np.int64)
    references = pd.factorize(pd.Series([r.reference or r.reference_path for r in rows]))[0]
    return ids, references, [r.reference_path for r in rows]


def _columns(rows) -> _Columns:
    viewer = np.array([r.viewer_id for r in rows], dtype=np.int64)
    frame = trials_frame(pd.DataFrame([tuple(r) for r in rows], columns=list(rows[0]._fields)))
    frame["participant"] = viewer
    return _Columns(
        rating=np.array([r.rating_id for r in rows], dtype=np.int64),
        trial=_trial_key(
            np.array([r.session_id for r in rows], dtype=np.int64),
            np.array([r.position for r in rows], dtype=np.int64),
        ),
        viewer=viewer,
        frame=frame,
    )


def _merged(seen: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``np.union1d(seen, found)`` for the sorted ids read (``found``, ordered by id): appended
    when all lie above the ids seen, as they do but for a late commit — sorting the study's ids
    again on every sitting open took 60 ms at the paper's size."""
    if not seen.size or found[0] > seen[-1]:
        return np.concatenate([seen, found])
    return np.union1d(seen, found)


def _sorted(rows: _Columns) -> _Columns:
    return rows.take(np.argsort(rows.rating, kind="stable"))


def _verdicts(rows: _Columns, rules: ExclusionRules) -> pd.DataFrame:
    if rows.frame is None:
        return rules.apply(qc_signals(trials_frame(_EMPTY), rules.fast_seconds))
    return rules.apply(qc_signals(rows.frame, rules.fast_seconds))


def _precision(rows: _Columns, signals: pd.DataFrame, stimuli: np.ndarray) -> Precision:
    """Each eligible image's precision from the test ratings of the participants QC keeps."""
    excluded = signals.loc[signals["excluded"], "participant"].to_numpy()
    index = pd.Series(np.arange(stimuli.size), index=stimuli)
    if rows.frame is None:
        return ci_halfwidths(np.zeros(0), np.zeros(0), np.zeros(0), stimuli.size, 0)
    stimulus = rows.frame["stimulus"].to_numpy(dtype=np.int64)
    check = rows.frame["check"].to_numpy()
    test = (check == "") & ~np.isin(rows.viewer, excluded) & np.isin(stimulus, stimuli)
    codes = pd.factorize(rows.viewer[test])[0]
    return ci_halfwidths(
        index.loc[stimulus[test]].to_numpy(),
        codes,
        rows.frame["score"].to_numpy(dtype=float)[test],
        stimuli.size,
        int(codes.max()) + 1 if codes.size else 0,
    )


def _plans_query(sittings: list[int]):
    """(sitting, position, stimulus) of the test trials of ``sittings`` (trials' primary key)."""
    return select(Trial.session_id, Trial.position, Trial.stimulus_id).where(
        Trial.session_id.in_(sittings),
        Trial.is_warmup.is_(False),
        Trial.check_kind.is_(None),
    )


def _trial_key(sitting, position):
    """One integer per (sitting, position): a trial's identity in numpy set operations."""
    return np.asarray(sitting, dtype=np.int64) * 2**20 + np.asarray(position, dtype=np.int64)
