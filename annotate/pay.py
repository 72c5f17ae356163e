"""Honest pay in online studies: whose id is accepted, and which completion code a sitting earns.

A crowd platform pays on the completion code it is given back, so the code is the study's only
lever on pay. Prolific (and most panels) accept several codes per study: one that approves the
submission, others that ask for a return or mark it for a manual review. ``COMPLETION_CODES``
names one per :data:`studydb.schema.OUTCOMES`:

- ``paid`` — a completed sitting that passed its own checks;
- ``failed_checks`` — a completed sitting whose gold trials, attention checks, timing or slider
  use broke the QC rules (:mod:`mos.qc`); an empty code shows none and asks for a return.

The verdict is the participant's own evidence only: :class:`mos.qc.ExclusionRules` without the
agreement rule, which depends on the other participants (it still excludes from the MOS), and
without the minimum number of trials (the server, not the participant, sets that). It is
taken once, when the completed sitting is first shown its end page, and stored on the sitting
(``sessions.outcome``, schema 5) so the admin and the exports show what each participant got.

Participant ids are normalised before they name anyone: surrounding blanks are dropped and,
for platforms whose ids are case-insensitive (``ONLINE_ID_CASE``), folded to the platform's case,
so ``5F3A…`` and ``5f3a…`` are one participant. ``ONLINE_ID_PATTERNS`` optionally pins each
platform's id format (Prolific: 24 hexadecimal characters); once set, only the platforms it
names can enter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session as OrmSession

from mos.qc import ExclusionRules, qc_signals, trials_frame
from mos.study_sql import trials_query
from studydb import Session
from studydb.schema import OUTCOMES

CODE_PATTERN = re.compile(r"[A-Za-z0-9_\-]{0,64}")
"""A completion code goes into the platform's URL: letters, digits, ``_`` and ``-`` only."""
CASES = {"lower": str.lower, "upper": str.upper}
PROLIFIC_ID = r"[0-9a-f]{24}"
"""A Prolific participant id (after folding to lower case), for ``ONLINE_ID_PATTERNS``."""


@dataclass(frozen=True)
class PaySettings:
    """``COMPLETION_CODES``, ``COMPLETION_URL``, ``ONLINE_ID_CASE`` and ``ONLINE_ID_PATTERNS``."""

    codes: dict[str, str]
    url: str
    cases: dict[str, str]
    patterns: dict[str, re.Pattern]

    @classmethod
    def from_config(cls, config: Any, platforms: tuple[str, ...]) -> PaySettings:
        """Checked at start-up: a mistake here would cost every participant their pay."""
        if config.get("COMPLETION_CODE"):
            raise ValueError(
                "COMPLETION_CODE is replaced by COMPLETION_CODES = {'paid': '…', "
                "'failed_checks': '…'} (one code per outcome; see docs/annotate.md)"
            )
        codes = config.get("COMPLETION_CODES") or {}
        if not isinstance(codes, dict) or set(codes) != set(OUTCOMES):
            raise ValueError(f"COMPLETION_CODES must name exactly the outcomes {OUTCOMES}")
        for outcome, code in codes.items():
            if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
                raise ValueError(
                    f"COMPLETION_CODES[{outcome!r}] = {code!r}: up to 64 letters, digits, _ or -"
                )
        if codes["paid"] and codes["paid"] == codes["failed_checks"]:
            raise ValueError(
                "COMPLETION_CODES: the failed_checks code must differ from the paid one"
            )
        url = str(config.get("COMPLETION_URL") or "")
        if not codes["paid"] and (codes["failed_checks"] or url):
            # Every honest completer would be sent nowhere, or only the failing ones get a code.
            raise ValueError(
                "COMPLETION_CODES['paid'] is empty while "
                + ("a failed_checks code" if codes["failed_checks"] else "COMPLETION_URL")
                + " is set: set the platform's paying code (only a study without pay, "
                "with neither codes nor COMPLETION_URL, has no paid code)"
            )
        cases = config.get("ONLINE_ID_CASE") or {}
        patterns = config.get("ONLINE_ID_PATTERNS") or {}
        for name, table, example in (
            ("ONLINE_ID_CASE", cases, "{'prolific': 'lower'}"),
            ("ONLINE_ID_PATTERNS", patterns, "{'prolific': r'[0-9a-f]{24}'}"),
        ):
            if not isinstance(table, dict):
                raise ValueError(
                    f"{name} must be a table of platform → value, e.g. {example}, not {table!r}"
                )
            unknown = set(table) - set(platforms)
            if unknown:
                raise ValueError(
                    f"{name}: unknown platform(s) {sorted(unknown)} (known: {platforms})"
                )
        bad = {p: c for p, c in cases.items() if c not in CASES}
        if bad:
            raise ValueError(f"ONLINE_ID_CASE: {bad} — each platform's case is 'lower' or 'upper'")
        compiled = {}
        for platform, pattern in patterns.items():
            try:
                compiled[platform] = re.compile(pattern)
            except (re.error, TypeError) as error:
                raise ValueError(f"ONLINE_ID_PATTERNS[{platform!r}] {pattern!r}: {error}") from None
        return cls(dict(codes), url, dict(cases), compiled)

    def normalised_id(self, platform: str, participant: str) -> str | None:
        """The participant id as the study stores it; None when it breaks the platform's
        configured pattern, or comes by a platform the patterns do not name (a study that pins
        Prolific ids is entered by Prolific's link only: another platform's parameters would
        let any string, or a Prolific id in the other case, in as a new participant)."""
        value = participant.strip()
        if platform in self.cases:
            value = CASES[self.cases[platform]](value)
        if not self.patterns:
            return value
        pattern = self.patterns.get(platform)
        return value if pattern is not None and pattern.fullmatch(value) else None

    def completion(self, outcome: str | None) -> dict[str, Any]:
        """What the end page shows for a sitting's outcome (None: not completed)."""
        code = self.codes.get(outcome, "") if outcome else ""
        url = self.url.format(code=code) if self.url and code else ""
        return {"outcome": outcome, "completed": outcome is not None, "code": code, "url": url}


def pay_rules(rules: ExclusionRules) -> ExclusionRules:
    """The QC rules that decide pay: all but agreement with the others (not the participant's
    own doing, and unknown for the first participants of a study) and the minimum number of
    trials (the server sets a sitting's length; a completed one near a study's end is short)."""
    return replace(rules, min_agreement=None, min_trials=None)


def judge(db: OrmSession, sitting: Session, rules: ExclusionRules) -> tuple[str, str]:
    """(outcome, reasons) of a completed sitting from its own trials under :func:`pay_rules`."""
    raw = pd.read_sql(trials_query().where(Session.id == sitting.id), db.connection())
    if raw.empty:
        return "failed_checks", "no rating"
    rules = pay_rules(rules)
    verdict = rules.apply(qc_signals(trials_frame(raw), rules.fast_seconds)).iloc[0]
    return ("failed_checks" if verdict["excluded"] else "paid"), verdict["reasons"]


def settle(db: OrmSession, sitting: Session, rules: ExclusionRules) -> str | None:
    """The sitting's outcome, judged and stored (commits) the first time it is asked for; None
    for a sitting that was not completed (it earns no code)."""
    if sitting.closed_reason != "completed":
        return None
    if sitting.outcome is None:
        sitting.outcome, sitting.outcome_reasons = judge(db, sitting, rules)
        db.commit()
    return sitting.outcome
