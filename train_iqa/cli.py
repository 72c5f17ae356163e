"""What the three ``train_iqa`` commands share on the command line: one-line usage errors and
argument types that refuse impossible values before any work starts."""

from __future__ import annotations

import argparse
import sys

from cmc_common.help import HelpFormatter


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: …``) and exit status 2, like every
    other bad input of this stage, instead of the usage block followed by the error; every
    default shown once in ``--help`` (the one layout of every command,
    :class:`cmc_common.help.HelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 — argparse's hook
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """An integer ≥ 1 (image size, epochs, batch size, bootstrap rounds)."""
    return _checked(text, int, "an integer", lambda v: v >= 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (DataLoader workers, --save-every)."""
    return _checked(text, int, "an integer", lambda v: v >= 0, "must be 0 or more")


def fraction(text: str) -> float:
    """A share strictly between 0 and 1 (test and validation fractions)."""
    return _checked(text, float, "a number", lambda v: 0 < v < 1, "must be between 0 and 1")


def positive_float(text: str) -> float:
    """A number > 0 (learning rate)."""
    return _checked(text, float, "a number", lambda v: v > 0, "must be positive")


def _checked(text: str, cast, kind: str, valid, rule: str):
    """``cast(text)`` if it parses and is ``valid``; else argparse's one-line usage error."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"{value} {rule}")
    return value


def report_left_out(prog: str, left_out: list[str], column: str) -> None:
    """Say on stderr which stimuli had no value in ``column`` and were left out (never silently)."""
    if left_out:
        print(
            f"{prog}: note: {len(left_out)} stimuli without a '{column}' left out "
            f"(first: {left_out[0]})",
            file=sys.stderr,
        )
