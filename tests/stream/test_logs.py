"""``DARKROOM_LOG_FORMAT=json``: one JSON object per line, from the CLI and from the Faust worker alike."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import orjson
import pytest

from stream.logs import JsonFormatter, configure, log_format


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "stream.agents", logging.WARNING, __file__, 1, "dead letter %s: %s", ("p1", "[/x]"), None
    )
    record.__dict__.update(extra)
    return record


def test_a_json_line_has_time_level_logger_message_and_the_photo_it_is_about() -> None:
    line = JsonFormatter().format(_record(photo_id="p1", trace_id="4bf92f3577b34da6a3ce929d0e0e4736"))
    entry = orjson.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "stream.agents"
    assert entry["message"] == "dead letter p1: [/x]"
    assert entry["photo_id"] == "p1" and entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert "\n" not in line


def test_an_exception_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: bad" in orjson.loads(line)["exception"]


def test_text_is_the_default_and_an_unknown_format_is_named() -> None:
    assert log_format({}) == "text"
    assert log_format({"DARKROOM_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(ValueError, match="DARKROOM_LOG_FORMAT='xml'"):
        log_format({"DARKROOM_LOG_FORMAT": "xml"})
    assert configure(env={"DARKROOM_LOG_FORMAT": "json"}) == "json"
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    configure(env={})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_faust_worker_writes_only_json_lines(tmp_path) -> None:
    """A worker whose broker is unreachable logs its start and its failure, every line a JSON object."""
    env = {
        **os.environ,
        "DARKROOM_LOG_FORMAT": "json",
        "DARKROOM_KAFKA_BOOTSTRAP": f"127.0.0.1:{_free_port()}",
        "DARKROOM_TRITON_GRPC": f"127.0.0.1:{_free_port()}",
        "DARKROOM_WEB_PORT": str(_free_port()),
        "DARKROOM_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) >= 3, proc.stdout + proc.stderr
    entries = [orjson.loads(line) for line in lines]  # raises on any line that is not JSON
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["level"] == "ERROR" for e in entries)
