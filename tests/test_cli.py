"""``darkroom --help`` lists every subcommand, each with its one-line description."""

from __future__ import annotations

import subprocess
import sys

from tools.cli import PASSTHROUGH, build_parser


def test_help_lists_every_subcommand_with_its_description() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    text = " ".join(proc.stdout.split())  # argparse wraps long descriptions
    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them here
    assert set(PASSTHROUGH) <= set(commands)
    for name in commands:
        assert f" {name} " in text, f"{name} missing from darkroom --help"
    for name, (_, _, description) in PASSTHROUGH.items():
        assert f"{name} {description}" in text, f"{name}: {description!r} missing from darkroom --help"
