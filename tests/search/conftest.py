"""Search-side fixtures: tag events to index, and a real Tansu broker (no Triton, no worker) for the
consumer and the backfill."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream.settings import Settings
from tools.embedded import Ports, _kafka_answers, create_topics, tansu_binary


def _tag_value(
    photo_id: str, tags: dict[str, float], version: int = 1, tagged_at: str = "2026-01-01T00:00:05Z"
) -> bytes:
    """A ``photo-tags`` value as the worker writes it (tags sorted by score)."""
    ranked = sorted(tags.items(), key=lambda kv: -kv[1])
    return orjson.dumps(
        {
            "photo_id": photo_id,
            "tags": [{"tag": t, "score": s} for t, s in ranked],
            "model": "tagger",
            "model_version": str(version),
            "uploaded_at": "2026-01-01T00:00:00Z",
            "tagged_at": tagged_at,
        }
    )


@pytest.fixture
def tag_value():
    """Build a ``photo-tags`` value: ``tag_value(photo_id, {tag: score}, version=1, tagged_at=...)``."""
    return _tag_value


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Tansu broker on a free port with the three topics; yields its bootstrap address."""
    port = Ports.free().kafka
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    bootstrap = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _kafka_answers(bootstrap):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Tansu did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        create_topics(bootstrap, Settings())
        yield bootstrap
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def jpeg(tmp_path: Path):
    """Write a small solid-colour JPEG and return its path."""
    from PIL import Image

    def make(name: str, color: tuple[int, int, int] = (200, 120, 40)) -> Path:
        path = tmp_path / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (320, 240), color).save(path, quality=85)
        return path

    return make
