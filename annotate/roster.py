"""Every participant and sitting at crowd size, computed in the background for the admin pages.

At a crowd launch the study has thousands of participants: the admin pages show a summary first,
then one page of a table at a time (sortable, filterable: :mod:`annotate.tables`), read from a
:class:`Roster` that a background thread recomputes when ratings or sittings have changed — a
page load never reads every rating. Per participant: the last sitting's state, completion, the
QC verdict of :mod:`mos.qc` with its reasons, and the action to take on the recruitment
platform (:func:`submission_action`), exported in Prolific's bulk format.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session as OrmSession

from annotate import sittings
from annotate.background import LatestResult
from annotate.tally import TrialTally
from mos.qc import ExclusionRules
from studydb import Rating, Session, Trial, Viewer

ACTIONS = ("approve", "reject", "review")
"""What the researcher does with a participant's submission on the platform (Prolific's bulk
actions: approve, reject, or look at it by hand first)."""
STATES = ("open", "completed", "abandoned", "time limit", "closed by experimenter", "no sitting")


def submission_action(
    completed: bool, excluded: bool, attention_failures: int, tolerated: int | None = 0
) -> str:
    """The platform action for a participant, derived from :mod:`mos.qc`'s verdict.

    Approve a completed sitting the QC rules keep. Reject one that failed more attention checks
    than the rules tolerate (``tolerated``; None: the rule is off) — the ground Prolific's
    policy accepts for a rejection — and is excluded. Everything else —
    excluded for other reasons (agreement, gold trials, timing, straight-lining), or a sitting
    not completed — is for the researcher to review before deciding.
    """
    if completed and not excluded:
        return "approve"
    if completed and tolerated is not None and attention_failures > tolerated:
        return "reject"
    return "review"


@dataclass
class Roster:
    """One background computation: per participant and per sitting, and the summary."""

    participants: pd.DataFrame
    sittings: pd.DataFrame
    summary: dict
    version: tuple
    computed_at: dt.datetime
    seconds: float


class RosterCache(LatestResult):
    """The app's latest :class:`Roster`, recomputed in the background when the study moved."""

    def __init__(
        self,
        engine: Engine,
        tally: TrialTally,
        rules: ExclusionRules,
        design: sittings.Design,
        refresh_seconds: float,
    ) -> None:
        super().__init__("roster", refresh_seconds)
        self.engine = engine
        self.tally = tally
        self.rules = rules
        self.design = design

    def compute(self) -> Roster:
        return compute(self.engine, self.tally, self.rules, self.design)


def version(db: OrmSession) -> tuple:
    """What a roster depends on, in three index look-ups: the highest rating and sitting ids and
    the number of closed sittings (a close changes no id)."""
    top_rating = db.scalar(select(func.coalesce(func.max(Rating.id), 0)))
    top_sitting, closed = db.execute(
        select(func.coalesce(func.max(Session.id), 0), func.count(Session.closed_reason))
    ).one()
    return int(top_rating), int(top_sitting), int(closed)


def compute(
    engine: Engine, tally: TrialTally, rules: ExclusionRules, design: sittings.Design
) -> Roster:
    started = time.perf_counter()
    with OrmSession(engine) as db:
        sittings.expire(db, design, sittings.now())  # an abandoned sitting shows as such
        stamp = version(db)
        table = sitting_table(db)
        viewers = pd.DataFrame(
            db.execute(select(Viewer.id, Viewer.code)).all(), columns=["viewer_id", "participant"]
        )
    verdicts = tally.verdicts(rules).rename(columns={"participant": "viewer_id"})
    people = participant_table(viewers, table, verdicts, rules.max_attention_failures)
    summary = {
        "participants": len(people),
        "sittings": len(table),
        "ratings": int(table["rated"].sum()) if len(table) else 0,
        **{f"state:{s}": int((people["state"] == s).sum()) for s in STATES},
        **{f"action:{a}": int((people["action"] == a).sum()) for a in ACTIONS},
        "excluded": int(people["excluded"].sum()),
    }
    return Roster(
        participants=people,
        sittings=table,
        summary=summary,
        version=stamp,
        computed_at=dt.datetime.now(dt.UTC),
        seconds=time.perf_counter() - started,
    )


def sitting_table(db: OrmSession) -> pd.DataFrame:
    """Every sitting with its participant, times, trials rated / planned and state."""
    rated = select(Rating.session_id, func.count().label("rated")).group_by(Rating.session_id)
    planned = select(Trial.session_id, func.count().label("planned")).group_by(Trial.session_id)
    rated, planned = rated.subquery(), planned.subquery()
    rows = db.execute(
        select(
            Session.id,
            Session.viewer_id,
            Viewer.code.label("participant"),
            Session.group_id.label("group"),
            Session.started_at.label("started"),
            Session.last_active_at.label("last"),
            func.coalesce(Session.closed_reason, "open").label("state"),
            func.coalesce(Session.outcome, "").label("outcome"),
            func.coalesce(rated.c.rated, 0).label("rated"),
            func.coalesce(planned.c.planned, 0).label("planned"),
        )
        .join(Viewer, Viewer.id == Session.viewer_id)
        .outerjoin(rated, rated.c.session_id == Session.id)
        .outerjoin(planned, planned.c.session_id == Session.id)
        .order_by(Session.id.desc())
    ).all()
    columns = [
        "id",
        "viewer_id",
        "participant",
        "group",
        "started",
        "last",
        "state",
        "outcome",
        "rated",
        "planned",
    ]
    return pd.DataFrame(rows, columns=columns)


def participant_table(
    viewers: pd.DataFrame,
    table: pd.DataFrame,
    verdicts: pd.DataFrame,
    max_attention_failures: int | None = 0,
) -> pd.DataFrame:
    """One row per participant: the last sitting's state, completion-code outcome and progress,
    the QC signals and verdict (``excluded``, ``reasons``) and the platform ``action``."""
    last = table.sort_values("id").groupby("viewer_id").tail(1)
    count = table.groupby("viewer_id").size().rename("sittings")
    people = (
        viewers.merge(
            last[["viewer_id", "state", "outcome", "rated", "planned", "last"]], how="left"
        )
        .merge(count, left_on="viewer_id", right_index=True, how="left")
        .merge(verdicts, on="viewer_id", how="left")
    )
    people["state"] = people["state"].fillna("no sitting")
    people["outcome"] = people["outcome"].fillna("")
    for column in ("sittings", "rated", "planned", "trials", "gold_failures", "attention_failures",
                   "gold_trials", "attention_trials", "fast_trials"):  # fmt: skip
        people[column] = people[column].fillna(0).astype(int)
    people["excluded"] = people["excluded"].astype("boolean").fillna(False).astype(bool)
    people["reasons"] = people["reasons"].astype(object).fillna("")
    people["completed"] = people["state"] == "completed"
    people["action"] = [
        submission_action(c, e, a, max_attention_failures)
        for c, e, a in zip(
            people["completed"], people["excluded"], people["attention_failures"], strict=True
        )
    ]
    people["why"] = [
        reasons or ("" if completed else f"sitting not completed ({state})")
        for reasons, completed, state in zip(
            people["reasons"], people["completed"], people["state"], strict=True
        )
    ]
    return people.drop(columns=["viewer_id"])
