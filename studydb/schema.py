"""SQLAlchemy 2.0 typed ORM models of a subjective study.

A *viewer* sits one or more *sessions*; each session covers one *group* of at most 400 stimuli
(ITU-R BT.500: one sitting of at most an hour). Every submitted trial is one *rating* row holding
both dimensions of CMC-Bench (consistency and perception, 0–5) and the NSFW flag. Ratings are keyed
by (session, position) so that a re-submitted form can never be counted twice. Warm-up
(stabilizing) trials are stored like the others but flagged, and every reader leaves them out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 5
"""Bumped whenever a table changes, so an old study database can be recognised and upgraded.

2: ``trials`` (the per-viewer order kept on the server) and the break/closing fields of sessions.
3: the sitting lifecycle — ``sessions.last_active_at`` / ``trained_at``, one open sitting per
viewer (a partial unique index), ``trials.served_at`` and ``ratings.scale``.
4: quality control of online studies — ``trials.check_kind`` / ``accept_low`` / ``accept_high``
(gold trials and attention checks with their accepted score range) and ``ratings.check_kind``
(so that readers leave check trials out of every MOS without a join).
5: online studies at crowd scale — ``sessions.outcome`` / ``outcome_reasons`` (which completion
code a completed sitting got, and why), ``ratings.slider_events`` (how often the sliders moved),
``throttle_events`` (the online entry throttle and display-check tries, in the database so that
they hold across server processes and restarts) and an index on ``ratings.nsfw``.
"""

CHECK_KINDS = ("gold", "attention")
"""Values of ``check_kind``: a trial with a known answer, or one that asks for a given score.
NULL is an ordinary test trial."""

OUTCOMES = ("paid", "failed_checks")
"""Values of ``sessions.outcome``: a completed online sitting whose checks passed (the paying
completion code) or failed (the code that asks for a return or a manual review)."""
CLOSED_REASONS = ("completed", "time limit", "abandoned", "closed by experimenter")
"""Why a sitting closed (``sessions.closed_reason``); NULL while it is open."""
ONE_OPEN_SITTING = "uq_one_open_sitting_per_viewer"

SCORE_MIN = 0.0
SCORE_MAX = 5.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of every table of a study database."""


class StudyInfo(Base):
    """Key/value facts about the study itself (schema version, title), one row per key."""

    __tablename__ = "study_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StudyGroup(Base):
    """A group of at most ~400 stimuli that one viewer rates in one sitting."""

    __tablename__ = "study_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)

    stimuli: Mapped[list[Stimulus]] = relationship(back_populates="group")


class Stimulus(Base):
    """One distorted image shown beside its reference, with the generation metadata of the manifest."""

    __tablename__ = "stimuli"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True, doc="the manifest's image id")
    distorted_path: Mapped[str] = mapped_column(Text)
    reference_path: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(255), doc="reference (content) id")
    model: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str | None] = mapped_column(String(16))
    strength: Mapped[float | None] = mapped_column(Float)
    content_type: Mapped[str | None] = mapped_column(String(16))
    caption: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="any further manifest columns (seed, bits, bpp, codec …)"
    )
    group_id: Mapped[int | None] = mapped_column(ForeignKey("study_groups.id"))
    withheld: Mapped[bool] = mapped_column(
        Boolean, default=False, doc="withdrawn from later viewers (e.g. after NSFW reports)"
    )

    group: Mapped[StudyGroup | None] = relationship(back_populates="stimuli")


class Viewer(Base):
    """A pseudonymous participant; no name or e-mail is ever stored."""

    __tablename__ = "viewers"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True, doc="pseudonymous id / resume code")
    age: Mapped[int | None] = mapped_column(Integer)
    gender: Mapped[str | None] = mapped_column(String(32))
    vision_screening: Mapped[str | None] = mapped_column(
        String(255), doc="acuity / colour-vision result entered by staff"
    )
    consented_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    sessions: Mapped[list[Session]] = relationship(back_populates="viewer")


class Session(Base):
    """A viewer's sitting over one group of stimuli, in an order drawn for that viewer."""

    __tablename__ = "sessions"
    __table_args__ = (
        # One open sitting per viewer, enforced by the database: two simultaneous form posts
        # cannot both open one (the second insert fails and the app resumes the first).
        Index(
            ONE_OPEN_SITTING,
            "viewer_id",
            unique=True,
            sqlite_where=text("closed_reason IS NULL"),
            postgresql_where=text("closed_reason IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    viewer_id: Mapped[int] = mapped_column(ForeignKey("viewers.id"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("study_groups.id"))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    environment: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="screen size, device pixel ratio, browser, display/distance/lighting notes"
    )
    closed_reason: Mapped[str | None] = mapped_column(
        String(32), doc="one of CLOSED_REASONS — NULL while the sitting is open"
    )
    last_active_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="last page served or rating stored: idle sittings expire"
    )
    trained_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="when the viewer finished this sitting's practice"
    )
    break_due_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="when the next enforced rest starts"
    )
    break_until: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="end of the rest in progress"
    )
    outcome: Mapped[str | None] = mapped_column(
        String(32), doc="one of OUTCOMES once a completed online sitting is judged, else NULL"
    )
    outcome_reasons: Mapped[str | None] = mapped_column(
        Text, doc="why the checks failed (semicolon-separated); empty when paid"
    )

    viewer: Mapped[Viewer] = relationship(back_populates="sessions")
    ratings: Mapped[list[Rating]] = relationship(back_populates="session")
    trials: Mapped[list[Trial]] = relationship(back_populates="session", order_by="Trial.position")


class Trial(Base):
    """One planned presentation: the order is drawn per viewer and kept here, on the server.

    A rating for (session, position) can only be accepted for the trial planned there, so a forged
    or replayed form cannot rate another image.
    """

    __tablename__ = "trials"

    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    stimulus_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    is_warmup: Mapped[bool] = mapped_column(Boolean, default=False)
    is_repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    shown_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="first time the trial's page was served (never moves)"
    )
    served_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="latest serving: the minimum viewing time runs from here"
    )
    check_kind: Mapped[str | None] = mapped_column(
        String(16), doc="one of CHECK_KINDS for a quality-control trial, NULL for a test trial"
    )
    accept_low: Mapped[float | None] = mapped_column(
        Float, doc="a check trial passes when its score lies in [accept_low, accept_high]"
    )
    accept_high: Mapped[float | None] = mapped_column(Float)

    session: Mapped[Session] = relationship(back_populates="trials")
    stimulus: Mapped[Stimulus] = relationship()


class Rating(Base):
    """One submitted trial: both CMC-Bench scores of one stimulus by one viewer in one session."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("session_id", "position", name="uq_rating_session_position"),
        CheckConstraint(
            f"consistency IS NULL OR (consistency >= {SCORE_MIN} AND consistency <= {SCORE_MAX})",
            name="ck_consistency_range",
        ),
        CheckConstraint(
            f"perception IS NULL OR (perception >= {SCORE_MIN} AND perception <= {SCORE_MAX})",
            name="ck_perception_range",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    stimulus_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, doc="0-based place of the trial in the session")
    consistency: Mapped[float | None] = mapped_column(Float)
    perception: Mapped[float | None] = mapped_column(Float)
    nsfw: Mapped[bool] = mapped_column(
        Boolean, default=False, index=True, doc="indexed: the dashboard's NSFW queue reads these"
    )
    nsfw_reason: Mapped[str | None] = mapped_column(Text)
    is_warmup: Mapped[bool] = mapped_column(Boolean, default=False)
    is_repeat: Mapped[bool] = mapped_column(
        Boolean, default=False, doc="a planted repetition to measure self-consistency"
    )
    shown_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    first_input_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    slider_events: Mapped[int | None] = mapped_column(
        Integer, doc="slider moves (pointer or key) the page counted; NULL before schema 5"
    )
    scale: Mapped[float | None] = mapped_column(
        Float, doc="common factor both images were drawn at (1 = one image pixel per screen pixel)"
    )
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    check_kind: Mapped[str | None] = mapped_column(
        String(16), doc="copied from the trial: check trials never enter a MOS"
    )

    session: Mapped[Session] = relationship(back_populates="ratings")
    stimulus: Mapped[Stimulus] = relationship()


class ThrottleEvent(Base):
    """One counted event of a throttle (an entry from an address, a failed display check of a
    participant): kept in the database so that every server process counts the same events."""

    __tablename__ = "throttle_events"
    __table_args__ = (Index("ix_throttle_scope_key_at", "scope", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), doc="which throttle, e.g. 'online-entry'")
    key: Mapped[str] = mapped_column(String(255), doc="whom it counts: an address, a viewer id")
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
