"""Values the pages derive from the study's stimuli to rate, kept per app while those are
unchanged: the display check's needs, the practice pairs, the allocator's eligible images."""

from __future__ import annotations

import time

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from studydb import Stimulus


def per_stimuli_set(name: str, db: OrmSession, compute):
    """``compute()``, kept in the app until the study's stimuli change (those to rate: their
    number, highest id and id sum — ``annotate import`` adds rows, the admin withholds or
    restores one; the check pairs the online mode adds, kept out of every plan, do not count):
    what every participant's pages derive from the stimuli is computed once, not on every
    request. The stimuli are looked at once every :data:`STIMULI_RECHECK_S` at most.

    The values of one set of stimuli live in their own dict: a computation that began before a
    change lands in the old set's dict, never under the new key."""
    holder = current_app.extensions.setdefault("per_stimuli_set", {})
    state = holder.get("state")  # (looked at, key, values)
    moment = time.monotonic()
    if state is None or moment - state[0] > STIMULI_RECHECK_S:
        to_rate = Stimulus.withheld.is_(False)
        key = tuple(
            db.execute(
                select(func.count(), func.max(Stimulus.id), func.sum(Stimulus.id)).where(to_rate)
            ).one()
        )
        values = state[2] if state is not None and state[1] == key else {}
        holder["state"] = state = (moment, key, values)
    values = state[2]
    if name not in values:
        values[name] = compute()
    return values[name]


STIMULI_RECHECK_S = 1.0
"""How stale the per-stimuli values may be: an import shows within a second."""
