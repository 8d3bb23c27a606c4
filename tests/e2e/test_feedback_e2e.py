"""The whole loop on the real embedded stack: owners' edits on the page → the index shows them → a version
trained on the edit log is rolled out → the next upload's tags reflect the edits; nothing lost on the way."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from confluent_kafka import Producer

from contracts.photos import decode
from contracts.tensors import INPUT_NAME, SCORES_OUTPUT
from search.store import SearchIndex
from stream.clients import photo_id_for, upload_event
from stream.settings import Settings
from tools import feedback
from tools.embedded import Ports, Stack
from trainer.export import versions
from trainer.feedback import heldout
from trainer.serving.tagger_backend import select_tags

pytestmark = pytest.mark.e2e
N_PHOTOS = 80


def _post_edit(stack: Stack, photo_id: str, owner: str, removed: list[str]) -> int:
    body = orjson.dumps({"photo_id": photo_id, "owner": owner, "removed": removed})
    request = urllib.request.Request(
        f"{stack.web_url}api/edit", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=20) as resp:
        return resp.status


def _index_tags(db: Path, photo_id: str) -> list[str] | None:
    if not db.exists():
        return None
    index = SearchIndex(db, readonly=True)
    try:
        hit = index.photo(photo_id)
        return None if hit is None else [t["tag"] for t in hit.tags]
    finally:
        index.close()


def _wait(condition, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def test_edits_on_the_page_train_a_version_that_tags_the_next_upload_without_the_removed_tag(
    synthetic_model, model_repo, tmp_path, outcome_reader
):
    records = [
        json.loads(line) for line in (synthetic_model / "train" / "manifest.jsonl").read_text().splitlines()
    ]
    photos = synthetic_model / "train"
    chosen = records[:N_PHOTOS]
    manifest = tmp_path / "collection.jsonl"  # the published photos, as `feedback train` reads them
    manifest.write_text("".join(json.dumps({**r, "path": str(photos / r["path"])}) + "\n" for r in chosen))
    stack = Stack(tmp_path / "run", model_repo, Ports.free(), file_roots=[photos], with_indexer=True)
    stack.start()
    try:
        producer = Producer({"bootstrap.servers": stack.bootstrap, "acks": "all"})
        ids = {}
        for r in chosen:
            key, value = upload_event(photos / r["path"], owner=r["owner"], user_tags=r["user_tags"])
            producer.produce("photo-uploads", key=key, value=value)
            ids[key] = r
        assert producer.flush(30) == 0
        reader = outcome_reader(stack.bootstrap)
        reader.wait_for(set(ids), timeout_s=120)
        assert set(reader.outcomes) == set(ids)
        assert all([t for t, _ in o] == ["photo-tags"] for o in reader.outcomes.values())
        _wait(lambda: all(_index_tags(stack.index_db, pid) is not None for pid in ids), "the index", 60)

        # the tag version 1 shows most often is wrong, say its owners, on every photo that does not show it
        shown = {pid: _index_tags(stack.index_db, pid) for pid in ids}
        counts: dict[str, int] = {}
        for pid, tags in shown.items():
            for tag in tags:
                if tag not in ids[pid]["labels"]:
                    counts[tag] = counts.get(tag, 0) + 1
        wrong = max(counts, key=counts.get)
        edited = [pid for pid, tags in shown.items() if wrong in tags and wrong not in ids[pid]["labels"]]
        assert len({ids[pid]["owner"] for pid in edited}) >= 3, (
            "too few owners agree for the test to mean anything"
        )
        for pid in edited:
            assert _post_edit(stack, pid, ids[pid]["owner"], [wrong]) == 202
        _wait(
            lambda: all(wrong not in _index_tags(stack.index_db, p) for p in edited),
            "the edits in the index",
            60,
        )

        out = tmp_path / "feedback"
        code = feedback.main([
            "train", "--index", str(stack.index_db), "--manifest", str(manifest), "--checkpoint",
            str(synthetic_model / "checkpoint" / "checkpoint.pt"), "--repo", str(model_repo), "--out", str(out),
            "--votes", "3", "--min-gain", "-1",  # the decision itself is unit-tested; here: the loop
        ])  # fmt: skip
        assert code == 0 and versions(model_repo / "tagger") == [1, 2]
        # the owners' removal passed the vote and is in what version 2 was trained on
        assert [wrong, "removed"] in json.loads((out / "feedback.json").read_text())["corrections"]
        url = f"http://{stack.triton_http}/v2/models/tagger/versions/2/ready"
        _wait(lambda: _ready(url), "Triton to serve version 2", 120)

        # the next uploads of the photos the owners corrected (those trained on, not held out) get version
        # 2's tags, and the removed tag is gone from most of them (version 1 showed it on every one)
        trained = [pid for pid, out_ in zip(edited, heldout(edited, 0.25), strict=True) if not out_]
        again = {f"{pid}-again": pid for pid in trained}
        for new_id, pid in again.items():
            producer.produce("photo-uploads", key=new_id, value=orjson.dumps(
                {"photo_id": new_id, "url": (photos / ids[pid]["path"]).as_uri(), "owner": ids[pid]["owner"]}))  # fmt: skip
        assert producer.flush(30) == 0
        reader.wait_for(set(again), timeout_s=60)
        events = [reader.outcomes[new_id] for new_id in again]
        reader.close()
        assert stack.failed_child() is None
    finally:
        stack.stop()
    assert all(len(outcome) == 1 and outcome[0][0] == "photo-tags" for outcome in events), events
    assert all(event["model_version"] == "2" for ((_, event),) in events), events

    # Each re-upload is tagged exactly as the feedback-trained version 2 tags it offline, from its own files
    # (how far a handful of corrections moves the model is measured in docs/feedback.md, not asserted here:
    # with 5-7 corrected photos among 80 the removed tag's score drops on most, but not always below its
    # threshold).
    expected = _offline_tags(model_repo / "tagger" / "2", [photos / ids[pid]["path"] for pid in trained])
    served = [[t["tag"] for t in event["tags"]] for ((_, event),) in events]
    assert served == expected, (wrong, served, expected)
    assert photo_id_for(photos / ids[trained[0]]["path"]) == trained[0]


def _offline_tags(version_dir: Path, files: list[Path]) -> list[list[str]]:
    """The tags a version's own files give these photos: ONNX Runtime, its thresholds and vocabulary."""
    size = tuple(json.loads((version_dir / "metadata.json").read_text())["input_size"])
    images = np.stack(
        [decode(f.read_bytes(), (size[1], size[0]), Settings().max_image_pixels) for f in files]
    )
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run([SCORES_OUTPUT], {INPUT_NAME: images})[0]
    tags = json.loads((version_dir / "vocab.json").read_text())["tags"]
    thresholds = np.asarray(
        json.loads((version_dir / "thresholds.json").read_text())["thresholds"], np.float32
    )
    return [[tag for tag, _ in row] for row in select_tags(scores, tags, thresholds)]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False
