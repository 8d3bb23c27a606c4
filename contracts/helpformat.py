"""``--help`` that shows every option's default, for each ``darkroom`` command's parser."""

from __future__ import annotations

import argparse
import copy


def shows_default(action: argparse.Action) -> bool:
    """Whether ``--help`` should name the default of ``action``: an option (or optional positional) taking a
    value, whose default is something (not None, an empty list or a flag's False/True)."""
    takes_value = bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
    return (
        takes_value
        and action.nargs != 0
        and action.default is not argparse.SUPPRESS
        and action.default not in (None, [], ())
    )


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help names its default already; an option
    without help gets that alone. Pass as ``formatter_class`` (also to ``add_parser`` of subcommands)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if shows_default(action) and "default" not in text.lower():
            text = f"{text} (default: %(default)s)".strip()
        return text

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)
