"""CSV cells that a spreadsheet must not run as formulas, and their exact original text.

The lab app's CSV exports go to people who open them in spreadsheets, and some cells hold text
typed by participants or staff (an NSFW reason, a vision-screening note). OWASP's "CSV injection"
advice: a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
prefixed with an apostrophe, which spreadsheets display as text. ``mos`` reads the same files, so
the rule is kept here, beside the schema both stages share, with its exact inverse (a cell that
already starts with an apostrophe before one of those characters is escaped too, so that
``restore(neutralise(text)) == text`` for every text).
"""

from __future__ import annotations

import re

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"
RESTORE_PATTERN = r"^'([=+\-@\t\r'])"
"""An escaped cell: the apostrophe is dropped, the character after it kept (also for Arrow)."""


def neutralise(text: str) -> str:
    """``text``, with an apostrophe in front when a spreadsheet would read it as a formula."""
    if text.startswith(FORMULA_STARTS) or re.match(RESTORE_PATTERN, text):
        return ESCAPE + text
    return text


def restore(text: str) -> str:
    """The inverse of :func:`neutralise`."""
    return re.sub(RESTORE_PATTERN, r"\1", text, count=1)
