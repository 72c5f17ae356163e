"""One ``--help`` layout for every command: each option's default shown once, and only where it
says something (argparse's own ArgumentDefaultsHelpFormatter prints "(default: None)" on required
options, repeats a default the help text already states, and shows nothing for options without a
help text — which hid ``train_iqa``'s 50 epochs)."""

from __future__ import annotations

import argparse
import copy


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the text already names its default, the
    option is required, or there is no default worth printing (None, False, empty)."""

    def add_argument(self, action: argparse.Action) -> None:
        if action.help is not argparse.SUPPRESS and _shows_default(action):
            action = copy.copy(action)  # the parser's own action stays as it is
            text = (action.help or "").rstrip()
            action.help = f"{text} (default: %(default)s)" if text else "default: %(default)s"
        super().add_argument(action)


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    if not action.option_strings or action.required:  # positionals and required options
        return False
    if default is None or default is argparse.SUPPRESS or default is False or default in ([], ""):
        return False
    if isinstance(action, argparse._HelpAction | argparse._VersionAction):
        return False
    return "default" not in (action.help or "").lower()
