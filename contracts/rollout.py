"""Which version of the served model is live, which one shadows it, which one a rollback returns to.

The state is three parameters of the model's ``config.pbtxt`` (written by tools/rollout.py through
trainer/rollout.py, read by the worker through Triton in stream/shadow.py), so the writer and the reader
agree on these names here. docs/rollout.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: ``config.pbtxt`` parameters of the served model that say which version is live, which one shadows it and
#: which one a rollback returns to (positive integers as strings; absent or "" means none)
LIVE_PARAM = "darkroom_live_version"
SHADOW_PARAM = "darkroom_shadow_version"
PREVIOUS_PARAM = "darkroom_previous_version"
_VERSION = re.compile(r"[1-9][0-9]{0,9}")


@dataclass(frozen=True)
class Rollout:
    """The served model's rollout state; "" means none (``live`` "": Triton's newest loaded version)."""

    live: str = ""
    shadow: str = ""
    previous: str = ""


def rollout_from_config(config: dict) -> Rollout:
    """The rollout state in a model config as Triton's JSON; ValueError naming a parameter that is not a
    version number. A shadow equal to the live version is no shadow."""
    params = config.get("parameters") if isinstance(config, dict) else None
    params = params if isinstance(params, dict) else {}
    values = []
    for key in (LIVE_PARAM, SHADOW_PARAM, PREVIOUS_PARAM):
        entry = params.get(key)
        value = entry.get("string_value", "") if isinstance(entry, dict) else ""
        if not isinstance(value, str) or (value and not _VERSION.fullmatch(value)):
            raise ValueError(f"model config parameter {key}={str(value)[:40]!r} is not a version number")
        values.append(value)
    live, shadow, previous = values
    return Rollout(live, "" if shadow == live else shadow, previous)
