"""Model rollout on the real embedded stack: version 2 goes live while uploads stream through, and nothing
is lost, duplicated, mixed between versions or errors."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import torch
import tritonclient.http as httpclient
from confluent_kafka import Producer

from contracts.photos import decode
from stream.settings import Settings
from tools.embedded import Ports, Stack
from trainer import export
from trainer.data.synthetic import make_photo_set
from trainer.export import ServingConfig, versions, write_version
from trainer.serving import tagger_backend
from trainer.serving.tagger_backend import select_tags

pytestmark = pytest.mark.e2e
N_FILES = 200  # distinct small JPEGs, reused under distinct photo_ids
MIN_UPLOADS = 1000
AFTER_LIVE = 250  # uploads published after version 2 is live, so both versions serve a share


def second_version(checkpoint: dict) -> dict:
    """A checkpoint whose tags differ visibly from version 1's: other head biases and lower thresholds."""
    state = dict(checkpoint["state_dict"])
    bias = next(k for k in reversed(state) if k.endswith("bias"))
    gen = torch.Generator().manual_seed(2)
    state[bias] = state[bias] + torch.randn(state[bias].shape, generator=gen) * 0.5
    thresholds = [max(0.05, t - 0.15) for t in checkpoint["thresholds"]]
    return {**checkpoint, "state_dict": state, "thresholds": thresholds}


def expected_tags(version_dir: Path, images: np.ndarray) -> list[list[tuple[str, float]]]:
    """What this version produces for each image, computed offline from the version's own files."""
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(["SCORES"], {"IMAGE": images})[0]
    tags = json.loads((version_dir / "vocab.json").read_text())["tags"]
    thresholds = np.asarray(
        json.loads((version_dir / "thresholds.json").read_text())["thresholds"], np.float32
    )
    return select_tags(scores, tags, thresholds)


def upload(photo_id: str, path: Path) -> bytes:
    return orjson.dumps({"photo_id": photo_id, "url": path.as_uri(), "uploaded_at": "2026-11-29T00:00:00Z"})


def test_version_2_goes_live_under_load_and_every_event_matches_the_version_it_names(
    checkpoint, model_repo, tmp_path, outcome_reader
):
    manifest = make_photo_set(tmp_path / "photos", N_FILES, seed=5, size=(160, 120), split="rollout")
    files = sorted(manifest.parent.glob("*.jpg"))
    stack = Stack(tmp_path / "run", model_repo, Ports.free(), file_roots=[tmp_path / "photos"])
    stack.start()
    try:
        producer = Producer({"bootstrap.servers": stack.bootstrap, "acks": "all", "linger.ms": 5})
        published: dict[str, Path] = {}

        def publish(n: int) -> None:
            for _ in range(n):
                pid = f"rollout-{len(published):05d}"
                published[pid] = files[len(published) % N_FILES]
                producer.produce("photo-uploads", key=pid, value=upload(pid, published[pid]))
            producer.poll(0)

        exported: list[Path] = []
        exporter = threading.Thread(
            target=lambda: exported.append(write_version(model_repo, second_version(checkpoint)))
        )
        live_at = None
        while live_at is None or len(published) < max(MIN_UPLOADS, live_at + AFTER_LIVE):
            publish(20)
            time.sleep(0.1)  # a steady stream, about 200 uploads/s offered
            if len(published) == 200:
                exporter.start()  # publish version 2 while uploads are in flight
            if live_at is None and exported and _version_ready(stack, 2) and not _version_ready(stack, 1):
                live_at = len(published)
            assert len(published) < 5000, "version 2 did not replace version 1 in time"
        assert producer.flush(30) == 0
        print(f"\npublished {len(published)} uploads; version 2 took over after {live_at}")

        reader = outcome_reader(stack.bootstrap)
        reader.wait_for(set(published), timeout_s=150)
        assert stack.failed_child() is None
        failures = _triton_failures(stack)
        reader.close()
        logs = {c.name: c.log.read_text(errors="replace") for c in stack.children}
    finally:
        stack.stop()

    assert versions(model_repo / "tagger") == [1, 2] and exported[0].name == "2"
    assert set(reader.outcomes) == set(published), "an upload has no outcome, or an output names no upload"
    events = {}
    for pid, outcomes in reader.outcomes.items():
        assert [topic for topic, _ in outcomes] == ["photo-tags"], (pid, outcomes)
        events[pid] = outcomes[0][1]
    by_version = {v: sum(e["model_version"] == v for e in events.values()) for v in ("1", "2")}
    assert by_version["1"] + by_version["2"] == len(events) and min(by_version.values()) >= 100, by_version

    size = (checkpoint["input_size"][1], checkpoint["input_size"][0])
    images = np.stack([decode(f.read_bytes(), size, Settings().max_image_pixels) for f in files])
    want = {
        v: dict(zip(files, expected_tags(model_repo / "tagger" / v, images), strict=True)) for v in ("1", "2")
    }
    assert want["1"] != want["2"], "the two versions must tag differently for this test to mean anything"
    for pid, event in events.items():
        expected = want[event["model_version"]][published[pid]]
        assert [t["tag"] for t in event["tags"]] == [t for t, _ in expected], (pid, event, expected)
        assert np.allclose([t["score"] for t in event["tags"]], [s for _, s in expected], atol=2e-4)

    # Triton without a GPU logs one E line at startup ("CudaDriverHelper has not been initialized"): not ours.
    triton_errors = [
        line
        for line in logs["triton"].splitlines()
        if line.startswith("E") and "CudaDriverHelper" not in line
    ]
    worker_errors = [line for line in logs["worker"].splitlines() if " ERROR " in line or "CRITICAL" in line]
    retries = [line for line in logs["worker"].splitlines() if "Triton call failed" in line]
    assert not triton_errors and not worker_errors and not retries, (triton_errors, worker_errors, retries)
    assert failures == {}, f"Triton counted failed requests: {failures}"
    print(f"events by version {by_version}")


def _triton_failures(stack: Stack) -> dict[str, float]:
    """Triton's own count of failed inference requests, per model and version, where it is not zero."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.triton_metrics}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    rows = [
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("nv_inference_request_failure")
    ]
    return {labels: float(value) for labels, value in rows if float(value)}


def _version_ready(stack: Stack, version: int) -> bool:
    import urllib.error
    import urllib.request

    url = f"http://{stack.triton_http}/v2/models/tagger/versions/{version}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_gpu_variant_front_pairs_each_version_with_the_same_version_of_its_scores_model(
    synthetic_model, checkpoint, tmp_path, monkeypatch
):
    """The GPU layout on the embedded server, which has no TensorRT backend: ``tagger_trt`` is served by a
    Python-backend stand-in running the very ONNX graph the plan would be built from. Version 1 is there at
    start, version 2 is added while the server runs (the poller loads it); with both live, each version of
    ``tagger`` must answer with its own plan's scores and its own thresholds."""
    repo = tmp_path / "gpu_repo"
    serving = ServingConfig(num_versions=2)
    real_config = export.model_config
    exporting: list[dict] = []

    def stand_in_config(name: str, target: str, size: tuple, serving: ServingConfig, **kw: object) -> str:
        if target == "gpu":  # the stand-in: same name, versions and tensors, Python backend on the CPU
            return real_config(name, "cpu", size, ServingConfig(num_versions=serving.num_versions + 1))
        return real_config(name, target, size, serving, **kw)

    def stand_in_plan(onnx_path: Path, plan_path: Path, **kw: object) -> dict:
        folder, ckpt = plan_path.parent, exporting[-1]
        shutil.copyfile(onnx_path, folder / "model.onnx")
        shutil.copyfile(tagger_backend.__file__, folder / "model.py")
        (folder / "vocab.json").write_text(json.dumps(ckpt["vocab"]))
        (folder / "thresholds.json").write_text(json.dumps({"thresholds": ckpt["thresholds"]}))
        return {"precision": "stand-in (ONNX Runtime)"}

    monkeypatch.setattr(export, "model_config", stand_in_config)

    def export_version(ckpt: dict) -> Path:
        exporting.append(ckpt)
        return write_version(repo, ckpt, serving=serving, target="gpu", build_plan=stand_in_plan)

    size = tuple(checkpoint["input_size"])
    files = sorted((synthetic_model / "val").glob("*.jpg"))[:16]
    images = np.stack(
        [decode(f.read_bytes(), (size[1], size[0]), Settings().max_image_pixels) for f in files]
    )
    export_version(checkpoint)
    with Stack(tmp_path / "run", repo, Ports.free(), with_worker=False) as stack:
        export_version(second_version(checkpoint))
        client = httpclient.InferenceServerClient(stack.triton_http)
        deadline = time.monotonic() + 60
        while not (client.is_model_ready("tagger", "2") and client.is_model_ready("tagger_trt", "2")):
            assert time.monotonic() < deadline, "tagger version 2 did not load"
            time.sleep(0.5)
        for version in ("1", "2"):
            inp = httpclient.InferInput("IMAGE", list(images.shape), "UINT8")
            inp.set_data_from_numpy(images)
            result = client.infer("tagger", [inp], model_version=version)
            assert result.get_response()["model_version"] == version
            got = [orjson.loads(row) for row in result.as_numpy("TAGS").reshape(-1)]
            want = expected_tags(repo / "tagger" / version, images)
            assert [[t for t, _ in row] for row in got] == [[t for t, _ in row] for row in want], version
        client.close()
        log = stack.children[-1].log.read_text(errors="replace")
    assert not [line for line in log.splitlines() if line.startswith("E") and "CudaDriverHelper" not in line]
    assert expected_tags(repo / "tagger" / "1", images) != expected_tags(repo / "tagger" / "2", images)
