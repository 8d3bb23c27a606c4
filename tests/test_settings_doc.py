"""docs/settings.md lists every DARKROOM_* setting with its default and meaning, in step with the code."""

from __future__ import annotations

from dataclasses import fields

from stream.settings import ENV_VARS, Settings
from tools.settingsdoc import PAGE, comments, render, rows


def test_every_setting_says_what_it_means() -> None:
    docs = comments()
    undocumented = [f.metadata["env"] for f in fields(Settings) if not docs.get(f.name)]
    assert not undocumented, f"add a #: comment above these fields in stream/settings.py: {undocumented}"


def test_the_page_is_what_the_code_generates() -> None:
    assert PAGE.read_text() == render(), "regenerate it: python -m tools.settingsdoc --write"
    assert {env for env, _, _ in rows()} == ENV_VARS


def test_a_field_without_a_comment_would_be_caught(monkeypatch) -> None:
    """The check above can fail: a setting whose comment is missing shows as undocumented."""
    import tools.settingsdoc as doc

    source = doc.inspect.getsource(Settings).replace("    #: the workers' consumer group\n", "")
    monkeypatch.setattr(doc.inspect, "getsource", lambda _: source)
    assert not doc.comments().get("group_id")
