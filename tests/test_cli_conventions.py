"""What every ``darkroom`` command does alike: an unreachable broker is one line and exit 2 (the bootstrap read
from ``DARKROOM_KAFKA_BOOTSTRAP``, librdkafka's own log lines kept off the terminal), and ``--help`` shows
each option's default."""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from contracts.helpformat import shows_default
from tools.cli import PASSTHROUGH, build_parser

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: every command that talks to Kafka, with arguments that get it that far (``{tmp}``: a folder with a photo)
KAFKA_COMMANDS = {
    "publish": ["publish", "{tmp}/photos"],
    "tail": ["tail", "--idle-timeout", "5"],
    "index": ["index", "--once", "--db", "{tmp}/index.sqlite"],
    "backfill": ["backfill", "--dir", "{tmp}/photos", "--state", "{tmp}/state.json"],
}


@pytest.mark.parametrize("command", sorted(KAFKA_COMMANDS))
def test_an_unreachable_broker_is_one_line_naming_it_and_exit_2(command: str, tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "photos" / "a.jpg")
    bootstrap = f"127.0.0.1:{closed_port()}"
    argv = [a.format(tmp=tmp_path) for a in KAFKA_COMMANDS[command]]
    env = {**os.environ, "DARKROOM_KAFKA_BOOTSTRAP": bootstrap, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, lines
    assert len(lines) == 1 and f"cannot reach Kafka at {bootstrap}" in lines[0], lines
    # A refused connection is decisive: no waiting out the 10 s metadata deadline (which would say "within").
    assert "within" not in lines[0] and "Connection refused" in lines[0], lines
    assert elapsed < 60, f"{command} took {elapsed:.0f}s"
    assert not (tmp_path / "state.json").exists()  # a backfill that sent nothing saved no progress


class _Parsed(Exception):
    """Raised in place of parsing, once the parser of a passthrough command is built."""


def command_parsers(monkeypatch: pytest.MonkeyPatch) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser: the built-in ones from ``build_parser``, the passthrough ones caught as
    their entry point parses ``--help``."""
    parsers = dict(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse keeps them here
    built: list[argparse.ArgumentParser] = []

    def catch(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        built.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    for name, (module, func, _) in PASSTHROUGH.items():
        with pytest.raises(_Parsed):
            getattr(importlib.import_module(module), func)(["--help"])
        parsers[name] = built.pop()
    return parsers


def spelled(default: object) -> set[str]:
    """The ways a help text may write ``default``."""
    forms = {str(default)}
    if isinstance(default, float) and default.is_integer():
        forms.add(str(int(default)))
    if isinstance(default, list | tuple):
        forms |= {",".join(map(str, default)), " ".join(map(str, default))}
    return forms


def test_every_subcommand_help_shows_the_defaults_of_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    parsers = command_parsers(monkeypatch)
    assert set(PASSTHROUGH) | {"up", "worker", "publish", "tail", "model", "demo"} <= set(parsers)
    missing = []
    for name, parser in parsers.items():
        for action in parser._actions:  # noqa: SLF001
            if not shows_default(action):
                continue
            text = " ".join(parser._get_formatter()._format_action(action).split())  # noqa: SLF001
            if "default" not in text.lower() or not any(form in text for form in spelled(action.default)):
                missing.append(f"darkroom {name} {'/'.join(action.option_strings)}: {text!r}")
    assert not missing, "\n".join(missing)


def test_the_help_formatter_adds_a_default_only_where_one_is_missing() -> None:
    from contracts.helpformat import DefaultsHelpFormatter

    parser = argparse.ArgumentParser(prog="x", formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--db", help="index file (default $DARKROOM_INDEX_DB)")
    parser.add_argument("--once", action="store_true", help="stop when caught up")
    text = " ".join(parser.format_help().split())
    assert "events per second (default: 50.0)" in text and "--port PORT (default: 8080)" in text
    assert "index file (default $DARKROOM_INDEX_DB)" in text and "(default: None)" not in text
    assert "stop when caught up (default" not in text
