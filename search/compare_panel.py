"""The search page's rollout panel: the latest ``darkroom compare --json`` summary, checked and cut down to
what the panel shows (``GET /api/compare``; docs/rollout.md).

The file is written by another process (``darkroom compare`` run on a schedule), so every field is treated
as hostile: wrong types are dropped, lists are capped, strings are cut, and the page shows it all as text.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import orjson

#: a summary bigger than this is not one ``darkroom compare`` wrote
MAX_SUMMARY_BYTES = 4 * 1024 * 1024
#: tags shown, those whose rate differs most between the versions first
PANEL_TAGS = 12
#: photos where the versions disagree most, shown
PANEL_DISAGREEMENTS = 6
MAX_TEXT = 200


class PanelError(ValueError):
    """The summary file cannot be shown; the message names the file and the problem."""


def panel(path: Path) -> dict:
    """The panel's data from the summary at ``path``; PanelError when it is missing or not a summary."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SUMMARY_BYTES + 1)
        written = path.stat().st_mtime
    except OSError as exc:
        raise PanelError(f"no compare summary at {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SUMMARY_BYTES:
        raise PanelError(f"{path} is over {MAX_SUMMARY_BYTES} bytes: not a compare summary")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise PanelError(f"{path} is not JSON: write it with `darkroom compare --json`") from None
    if not isinstance(data, dict) or not isinstance(data.get("tags"), dict):
        raise PanelError(f"{path} is not a `darkroom compare --json` summary")
    tags = [
        {"tag": _text(name), "live_rate": _number(s.get("live_rate")), "shadow_rate": _number(s.get("shadow_rate")),
         "agreement": _number(s.get("agreement"))}
        for name, s in data["tags"].items() if isinstance(s, dict)
    ]  # fmt: skip
    tags.sort(key=lambda t: (-abs(t["shadow_rate"] - t["live_rate"]), t["tag"]))
    disagreements = [
        {"photo_id": _text(d.get("photo_id")), "jaccard": _number(d.get("jaccard")),
         "only_live": _texts(d.get("only_live")), "only_shadow": _texts(d.get("only_shadow"))}
        for d in _list(data.get("disagreements"))[:PANEL_DISAGREEMENTS] if isinstance(d, dict)
    ]  # fmt: skip
    edits = data.get("edits") if isinstance(data.get("edits"), dict) else {}
    costs = data.get("costs") if isinstance(data.get("costs"), dict) else {}
    return {
        "live_version": _text(data.get("live_version")),
        "shadow_version": _text(data.get("shadow_version")),
        "compared": int(_number(data.get("compared"))),
        "agreement": _number(data.get("agreement")),
        "shadow_missing": _number(data.get("shadow_missing")),
        "edited": int(_number(data.get("edited"))),
        "edits": {_text(v): _number(e.get("agreement")) for v, e in list(edits.items())[:4] if isinstance(e, dict)},
        "costs": {
            _text(v): {k: _number(c.get(k)) or None for k in ("request_p50_us", "request_p99_us", "compute_us_per_image")}
            for v, c in list(costs.items())[:4] if isinstance(c, dict)
        },
        "tags": tags[:PANEL_TAGS],
        "disagreements": disagreements,
        "age_s": max(0.0, time.time() - written),
    }  # fmt: skip


def _text(value: object) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _texts(value: object) -> list[str]:
    return [_text(v) for v in _list(value)[:20] if isinstance(v, str)]


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _number(value: object) -> float:
    """A finite number, or 0 for anything else (None: no measurement)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return float(value)
