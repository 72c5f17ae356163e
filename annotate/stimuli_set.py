"""Values the pages derive from the study's stimuli to rate, kept per app while those are
unchanged: the display check's needs, the practice pairs, the allocator's eligible images."""

from __future__ import annotations

import time

from flask import current_app
from sqlalchemy import BigInteger, cast, func, literal, select
from sqlalchemy.orm import Session as OrmSession

from studydb import Stimulus


def per_stimuli_set(name: object, db: OrmSession, compute, max_age: float | None = None) -> object:
    """``compute()``, kept in the app until the study's stimuli change (those to rate — ``annotate
    import`` adds rows, the admin withholds or restores one; the check pairs the online mode adds,
    kept out of every plan, do not count): what every participant's pages derive from the
    stimuli is computed once, not on every request. The stimuli are looked at once every
    ``max_age`` seconds at most (default :data:`STIMULI_RECHECK_S`; 0: on every call, for a
    value that must never be stale, such as the images a new sitting may be planned from).

    A set of stimuli is known by its number, highest id, id sum and a sum of hashed ids (one
    aggregate query): withholding some and restoring others with the same count and sum still
    changes it. The values of one set live in their own dict: a computation that began before a
    change lands in the old set's dict, never under the new key."""
    holder = current_app.extensions.setdefault("per_stimuli_set", {})
    state = holder.get("state")  # (looked at, key, values)
    moment = time.monotonic()
    limit = STIMULI_RECHECK_S if max_age is None else max_age
    if state is None or moment - state[0] >= limit:
        key = tuple(db.execute(_fingerprint()).one())
        values = state[2] if state is not None and state[1] == key else {}
        holder["state"] = state = (moment, key, values)
    values = state[2]
    if name not in values:
        values[name] = compute()
    return values[name]


STIMULI_RECHECK_S = 1.0
"""How stale the per-stimuli values may be: an import shows within a second."""


def _fingerprint():
    """Count, highest id, id sum and hashed-id sum of the stimuli to rate (not withheld). The hash
    — a multiplicative one, then two rounds of multiplying by its own low bits, each modulo a prime
    below 2³² (every step fits 64-bit integers, and so does the sum) — is far from linear: sets
    with the same count and id sum (two ids swapped for two others, or sets equal in their sums
    of squares and cubes too) get different sums of hashes."""
    big = BigInteger()  # PostgreSQL would type the literals as the 32-bit id column
    hashed = (cast(Stimulus.id, big) * literal(2654435761, big)) % literal(PRIME, big)
    for low, add in ((65521, 1), (65519, 3)):
        hashed = (hashed * (hashed % low + add)) % literal(PRIME, big)
    return select(
        func.count(), func.max(Stimulus.id), func.sum(Stimulus.id), func.sum(hashed)
    ).where(Stimulus.withheld.is_(False))


PRIME = 4294967291
"""The largest prime below 2³²."""
