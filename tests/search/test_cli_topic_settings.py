"""Every command that talks to Kafka takes its bootstrap and topic names from the same ``DARKROOM_*`` settings:
pointed (by environment only) at a real broker and a topic it does not have, each names that topic."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from search.backfill import main as backfill_main
from search.cli import main as index_main
from tools.cli import main


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (32, 24)).save(folder / "a.jpg")
    return folder


@pytest.mark.parametrize(
    ("variable", "argv", "code"),
    [
        ("DARKROOM_UPLOADS_TOPIC", ["publish", "{photos}"], 2),
        ("DARKROOM_TAGS_TOPIC", ["tail", "--idle-timeout", "1"], 2),
        ("DARKROOM_DLQ_TOPIC", ["tail", "--idle-timeout", "1"], 2),
        ("DARKROOM_UPLOADS_TOPIC", ["backfill", "--dir", "{photos}", "--state", "{photos}/../state.json"], 2),
        ("DARKROOM_TAGS_TOPIC", ["index", "--once", "--topic-wait", "1", "--db", "{photos}/../i.sqlite"], 1),
    ],
)
def test_commands_read_bootstrap_and_topics_from_the_environment(
    broker: str, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, variable: str,
    argv: list[str], code: int,
) -> None:  # fmt: skip
    monkeypatch.setenv("DARKROOM_KAFKA_BOOTSTRAP", broker)
    monkeypatch.setenv(variable, "no-such-topic-here")
    args = [a.format(photos=photos) for a in argv]
    entry = {"backfill": backfill_main, "index": index_main}.get(args[0])
    assert (entry(args[1:]) if entry else main(args)) == code
    err = " ".join(capsys.readouterr().err.split())
    assert "no-such-topic-here" in err and "not found" in err, err
