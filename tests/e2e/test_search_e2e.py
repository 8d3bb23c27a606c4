"""Upload → tag → index → search on the real stack (Tansu, tritonserver, worker, indexer as child processes),
then a new model version and a backfill: search reflects version 2 for every photo, with no duplicates."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from search.backfill import main as backfill
from search.cli import search_main
from search.store import SearchIndex
from stream.clients import UploadPublisher, photo_id_for, upload_event
from tools.embedded import Ports, Stack
from trainer.data.synthetic import make_photo_set
from trainer.export import write_version

pytestmark = pytest.mark.e2e
N_PHOTOS = 8


def wait_until(what: str, check, timeout_s: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        dead = stack.failed_child()
        assert dead is None, f"{dead.name} exited; see {dead.log}"
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(0.5)


def versions_indexed(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    index = SearchIndex(db, readonly=True)
    try:
        return index.counts()["photos_by_version"]
    finally:
        index.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return orjson.loads(resp.read())


def search_json(capsys, query: str, db: Path) -> list[dict]:
    """``darkroom search QUERY --json``: its hits (asserting it found some)."""
    capsys.readouterr()  # drop what came before (progress output)
    assert search_main([query, "--db", str(db), "--json", "--limit", "50"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_upload_tag_index_search_then_retag_with_version_2(
    checkpoint, model_repo, tmp_path, capsys, outcome_reader
):
    manifest = make_photo_set(tmp_path / "photos", N_PHOTOS, seed=4242, size=(320, 240), split="search")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    paths = [manifest.parent / r["path"] for r in records]
    stack = Stack(tmp_path / "run", model_repo, Ports.free(), file_roots=[manifest.parent], with_indexer=True)
    stack.start()
    try:
        publisher = UploadPublisher(stack.bootstrap)
        for path in paths:
            publisher.send(*upload_event(path))
        publisher.flush()
        wait_until(
            "version-1 tags of every photo in the index",
            lambda: versions_indexed(stack.index_db) == {"1": N_PHOTOS},
            90,
            stack,
        )

        # search finds a photo by its top tag: the CLI, and the page's API (with its thumbnail)
        index = SearchIndex(stack.index_db, readonly=True)
        target = next(h for h in index.recent(N_PHOTOS) if h.tags)
        index.close()
        query = target.tags[0]["tag"]
        hits_v1 = search_json(capsys, query, stack.index_db)
        assert target.photo_id in [h["photo_id"] for h in hits_v1]
        assert all(query in {t["tag"] for t in h["tags"]} and h["model_version"] == "1" for h in hits_v1)
        api = get_json(f"{stack.web_url}api/search?q={query}&limit=50")
        assert [p["photo_id"] for p in api["photos"]] == [h["photo_id"] for h in hits_v1]
        with urllib.request.urlopen(f"{stack.web_url}thumbs/{target.photo_id}.jpg", timeout=10) as resp:
            assert resp.headers["Content-Type"] == "image/jpeg" and len(resp.read()) > 1000

        # a new model version (the same weights, so the same tags), served once Triton has polled it
        assert write_version(model_repo, checkpoint).name == "2"
        ready = f"http://{stack.triton_http}/v2/models/tagger/versions/2/ready"
        wait_until("Triton serving version 2", lambda: _http_ok(ready), 60, stack)
        argv = [
            "--dir",
            str(manifest.parent),
            "--bootstrap",
            stack.bootstrap,
            "--state",
            str(tmp_path / "backfill.json"),
        ]
        assert backfill([*argv, "--rate", "100"]) == 0
        wait_until(
            "version-2 tags of every photo in the index",
            lambda: versions_indexed(stack.index_db) == {"2": N_PHOTOS},
            90,
            stack,
        )

        hits_v2 = search_json(capsys, query, stack.index_db)
        assert {h["model_version"] for h in hits_v2} == {"2"}
        assert [h["photo_id"] for h in hits_v2] == [h["photo_id"] for h in hits_v1]  # same photos, once each
        assert [h["tags"] for h in hits_v2] == [h["tags"] for h in hits_v1]  # same weights, same tags
        stats = get_json(f"{stack.web_url}api/stats")
        assert stats["photos"] == N_PHOTOS and stats["photos_by_version"] == {"2": N_PHOTOS}
        assert stats["latency_ms"] is not None and stats["tag_events"] == 2 * N_PHOTOS

        # an independent reader of photo-tags: each photo has exactly one event per version
        reader = outcome_reader(stack.bootstrap, topics=("photo-tags",))
        ids = {photo_id_for(p) for p in paths}
        reader.wait_for(ids, timeout_s=10, grace_s=1)
        assert {pid: sorted(e["model_version"] for _, e in reader.outcomes[pid]) for pid in ids} == {
            pid: ["1", "2"] for pid in ids
        }
    finally:
        stack.stop()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
