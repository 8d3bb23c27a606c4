"""Log lines for people (text, the default) or for log pipelines (``DARKROOM_LOG_FORMAT=json``).

In JSON each record is one object per line: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message``, and ``photo_id`` / ``trace_id`` where the code that logs knows them (passed as ``extra``), plus
``exception`` with the traceback. Kubernetes log pipelines (Fluent Bit, Vector, Loki) read it without a parser.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from stream.settings import LOG_FORMATS, Settings

_FIELD = Settings.__dataclass_fields__["log_format"]
LOG_FORMAT_ENV = _FIELD.metadata["env"]  # DARKROOM_LOG_FORMAT
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Attributes a caller may attach with ``extra=`` that JSON lines carry as fields of their own.
CONTEXT_FIELDS = ("photo_id", "trace_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises on an odd message or argument."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def log_format(env: Mapping[str, str] | None = None) -> str:
    """The format ``DARKROOM_LOG_FORMAT`` asks for (``text`` unless set); ValueError naming a bad value."""
    value = (os.environ if env is None else env).get(LOG_FORMAT_ENV, "").strip().lower() or _FIELD.default
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={value!r}: use one of {', '.join(LOG_FORMATS)}")
    return value


def handler(fmt: str) -> logging.Handler:
    """A stderr handler writing ``fmt`` lines."""
    out = logging.StreamHandler()
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return out


def configure(level: int | str = logging.INFO, env: Mapping[str, str] | None = None) -> str:
    """Set up the root logger for a command in the format the environment asks for; returns the format."""
    fmt = log_format(env)
    logging.basicConfig(level=level, handlers=[handler(fmt)], force=True)
    return fmt


def worker_logging_config(level: int | str, env: Mapping[str, str] | None = None) -> dict | None:
    """The ``logging_config`` for Faust's Worker: None (Faust's own coloured text) unless JSON is asked for."""
    if log_format(env) != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
        },
        "root": {
            "level": logging.getLevelName(level) if isinstance(level, int) else level.upper(),
            "handlers": ["default"],
        },
    }
