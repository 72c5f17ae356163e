"""How long an online sitting really is, from the study's configuration: what the consent and
the instructions promise a crowd participant (never a lab sitting's hour and break)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from annotate.practice import LEVELS


@dataclass(frozen=True)
class SittingLength:
    """The pages of one online sitting and the time they take."""

    practice: int
    warmups: int
    pairs: int
    checks: int
    seconds_per_page: float
    limit_minutes: float
    idle_minutes: float
    break_after_minutes: float
    break_minutes: float

    @classmethod
    def from_config(cls, config: Any) -> SittingLength:
        """``seconds_per_page``: the grey screen, the minimum viewing time and
        ``ONLINE_DECISION_SECONDS`` (moving both sliders once the pair has been looked at)."""
        return cls(
            practice=len(config["TRAINING_STIMULI"]) or len(LEVELS),
            warmups=int(config["WARMUP_TRIALS"]),
            pairs=int(config["ONLINE_SITTING_PAIRS"]),
            checks=int(config["ONLINE_GOLD_TRIALS"]) + int(config["ONLINE_ATTENTION_CHECKS"]),
            seconds_per_page=(config["GREY_SCREEN_MS"] + config["MIN_VIEWING_MS"]) / 1000
            + float(config["ONLINE_DECISION_SECONDS"]),
            limit_minutes=float(config["SESSION_LIMIT_MINUTES"]),
            idle_minutes=float(config["SITTING_IDLE_MINUTES"]),
            break_after_minutes=float(config["BREAK_AFTER_MINUTES"]),
            break_minutes=float(config["BREAK_MINUTES"]),
        )

    @property
    def pages(self) -> int:
        """Rated pages: warm-ups, test pairs and checks (practice comes before)."""
        return self.warmups + self.pairs + self.checks

    @property
    def minutes(self) -> int:
        """The expected length, practice included, rounded up to a whole minute."""
        return max(1, math.ceil((self.practice + self.pages) * self.seconds_per_page / 60))

    def sentence(self) -> str:
        """The length in words, as the consent and the instructions state it."""
        text = (
            f"It takes about {_count(self.minutes, 'minute')}: "
            f"{_count(self.practice, 'practice pair')}, then {_count(self.pages, 'page')} to "
            f"rate ({self.warmups} warm-up, {_count(self.pairs + self.checks, 'pair')}). The "
            f"sitting closes after {self.limit_minutes:g} minutes, or after "
            f"{self.idle_minutes:g} minutes without activity."
        )
        if self.break_after_minutes < self.limit_minutes:
            text += (
                f" If it lasts longer than {self.break_after_minutes:g} minutes you get a "
                f"{self.break_minutes:g}-minute break."
            )
        return text


def _count(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless the number is one (a pilot has one practice pair)."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def consent_text(config: Any) -> str:
    """The online consent: ``ONLINE_CONSENT_TEXT`` with ``{length}`` filled in (checked at
    start-up: it is the one placeholder)."""
    return str(config["ONLINE_CONSENT_TEXT"]).format(
        length=SittingLength.from_config(config).sentence()
    )
