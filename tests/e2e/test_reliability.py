"""Reliability and input safety on the real embedded stack (Tansu broker, tritonserver, Faust worker).

One stack for the module, run the way a failure would hit it: a corpus of hostile uploads, kill -9 of the
worker mid-batch, Triton stopped for 20 s, a second worker joining mid-stream. Every test checks the
invariant on the photos it published: each has an outcome, duplicates are identical, nothing is invented.
Measured numbers are printed (``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import base64
import itertools
import re
import shutil
import signal
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition
from PIL import Image

from tests.e2e.bad_inputs import TAGGED, HostileHTTP, build_corpus, event
from tools.embedded import Ports, Stack
from trainer.data.synthetic import make_photo_set

pytestmark = pytest.mark.e2e
INPUTS: set[str] = set()  # every photo_id this module publishes: no output may name another
PUBLISHED = [0]  # records this module published to photo-uploads (the group must commit all of them)
RESUME_LIMIT_S = 20.0  # after Triton is ready again, every upload published during its outage is tagged
GROUP = f"darkroom-reliability-{uuid.uuid4().hex[:8]}"
WORKER_ENV = {
    "DARKROOM_GROUP_ID": GROUP,
    "DARKROOM_SESSION_TIMEOUT_S": "6",  # a killed worker's partitions move on sooner
    "DARKROOM_ALLOW_LOOPBACK_HTTP": "true",  # the hostile web server listens on 127.0.0.1 only
    "DARKROOM_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
    "DARKROOM_MAX_IMAGE_PIXELS": "20000000",
    "DARKROOM_FETCH_TIMEOUT_S": "1.5",
    "DARKROOM_FETCH_ATTEMPTS": "2",
    "DARKROOM_BATCH_SIZE": "8",
}


#: Appended to the served model.py: a solid magenta image makes scoring fail, as a model bug on one input
#: would. Synthetic photos are never solid magenta, so every other drill sees the model unchanged.
POISON = """

def _scores_failing_on_magenta(self, images):
    colour = images.reshape(len(images), -1, 3).mean(axis=1)
    if ((colour[:, 0] > 250) & (colour[:, 1] < 5) & (colour[:, 2] > 250)).any():
        raise RuntimeError("cannot score a solid magenta image")
    return _onnx_scores(self, images)


_onnx_scores = OnnxScores.__call__
OnnxScores.__call__ = _scores_failing_on_magenta
"""


@pytest.fixture(scope="module")
def env(synthetic_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    shutil.copytree(synthetic_model / "repo", base / "triton_models")
    with (base / "triton_models" / "tagger" / "1" / "model.py").open("a") as fh:
        fh.write(POISON)
    photos, outside = base / "photos", base / "outside"
    photos.mkdir()
    outside.mkdir()
    manifest = make_photo_set(photos / "set", 24, seed=5, size=(320, 240), split="rel")
    files = sorted(manifest.parent.glob("*.jpg"))
    stack = Stack(
        base / "run", base / "triton_models", Ports.free(), file_roots=[photos], worker_env=WORKER_ENV
    )
    stack.start()
    web = HostileHTTP(files[0].read_bytes())
    producer = Producer({"bootstrap.servers": stack.bootstrap, "acks": "all", "message.max.bytes": 2_000_000})
    yield {
        "stack": stack,
        "photos": photos,
        "outside": outside,
        "files": files,
        "web": web,
        "producer": producer,
    }
    web.close()
    producer.flush(10)
    del producer  # librdkafka's own logging would report the broker going away below
    stack.stop()


def publish(env: dict, items: list[tuple[str, bytes | None]]) -> None:
    for photo_id, value in items:
        env["producer"].produce("photo-uploads", key=photo_id, value=value)
        INPUTS.add(photo_id)
        PUBLISHED[0] += 1
    assert env["producer"].flush(30) == 0


def good_uploads(env: dict, prefix: str, n: int) -> list[tuple[str, bytes]]:
    files = itertools.cycle(env["files"])
    return [(f"{prefix}-{i:04d}", event(f"{prefix}-{i:04d}", next(files).as_uri())) for i in range(n)]


def worker_metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = re.escape(name + ("{" + labels + "}" if labels else "")) + r" ([0-9.e+-]+)"
    match = re.search(r"^" + pattern + r"$", text, re.M)
    return float(match.group(1)) if match else 0.0


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def memory_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) for k in ("VmRSS", "VmHWM")}


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now (a process still starting refuses the connection)."""
    try:
        return http_status(url) == 200
    except OSError:
        return False


def wait_until(check, timeout_s: float, what: str, poll_s: float = 0.2) -> float:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout_s``. Returns the seconds taken."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f}s"
        time.sleep(poll_s)
    return time.monotonic() - started


def committed(bootstrap: str) -> int:
    """Offsets the worker group has committed on ``photo-uploads``, summed over its partitions. (Tansu's
    ListOffsets "latest" answers the last batch's base offset + 1, so end offsets are not compared here:
    the count of records this module published is.)"""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:  # committed() is an OffsetFetch: it reads the group's offsets without joining the group
        parts = [
            TopicPartition("photo-uploads", p) for p in sorted(consumer.partitions_for_topic("photo-uploads"))
        ]
        return sum(consumer.committed(tp) or 0 for tp in parts)
    finally:
        consumer.close()


def assert_invariant(reader, photo_ids: set[str]) -> int:
    """Every id has an outcome, every output names an input, duplicates equal (but for ``tagged_at``).
    Returns the number of duplicate outputs."""
    assert set(reader.outcomes) <= INPUTS, "an output names a photo that was never uploaded"
    missing = sorted(photo_ids - set(reader.outcomes))
    assert not missing, f"{len(missing)} uploads have no outcome, e.g. {missing[:5]}"
    duplicates = 0
    for pid in photo_ids:
        outs = reader.outcomes[pid]
        assert all(topic == "photo-tags" for topic, _ in outs), (pid, outs)
        first = {k: v for k, v in outs[0][1].items() if k != "tagged_at"}
        for _, other in outs[1:]:
            assert {k: v for k, v in other.items() if k != "tagged_at"} == first, f"{pid}: duplicates differ"
        duplicates += len(outs) - 1
    return duplicates


def test_hostile_corpus_each_gets_its_code_worker_stays_up_with_bounded_memory(env, outcome_reader):
    stack, port = env["stack"], env["stack"].ports.worker_web
    pid = stack.child("worker").proc.pid
    publish(env, good_uploads(env, "warmup", 16))
    reader = outcome_reader(stack.bootstrap)
    reader.wait_for({f"warmup-{i:04d}" for i in range(16)}, timeout_s=60, grace_s=0)
    before = memory_kb(pid)

    cases = build_corpus(env["photos"], env["outside"], Image.open(env["files"][1]), env["web"].base)
    bad = [c for c in cases if c.expect != TAGGED]
    assert len(bad) >= 40
    started = time.monotonic()
    publish(env, [(c.photo_id, c.value) for c in cases])
    reader.wait_for({c.photo_id for c in cases}, timeout_s=120)
    elapsed = time.monotonic() - started

    wrong = []
    for c in cases:
        outs = reader.outcomes.get(c.photo_id, [])
        got = [("tagged" if topic == "photo-tags" else letter["error"]) for topic, letter in outs]
        if got != [c.expect]:
            wrong.append(f"{c.photo_id} ({c.what}): expected {c.expect}, got {got}")
    assert not wrong, "\n".join(wrong)
    for c in bad:  # the raw value is kept, as text or base64, truncated only past the documented cap
        [(_, letter)] = reader.outcomes[c.photo_id]
        assert letter["source"]["topic"] == "photo-uploads" and letter["original_size"] == len(c.value or b"")
        if c.value is not None:
            kept = (
                letter["original"].encode()
                if letter["original_encoding"] == "text"
                else base64.b64decode(letter["original"])
            )
            assert c.value.startswith(kept) and (kept == c.value) != letter["original_truncated"], c.photo_id
    upright = reader.outcomes["img-orientation-1.png"][0][1]["tags"]
    for o in range(2, 9):
        assert reader.outcomes[f"img-orientation-{o}.png"][0][1]["tags"] == upright, f"orientation {o}"

    assert stack.child("worker").proc.poll() is None and stack.child("worker").proc.pid == pid
    assert http_status(f"http://127.0.0.1:{port}/health/live") == 200
    after = memory_kb(pid)
    growth_mb = (after["VmRSS"] - before["VmRSS"]) / 1024
    print(f"\ncorpus: {len(cases)} uploads ({len(bad)} bad) in {elapsed:.1f}s; worker RSS "
          f"{before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MB (+{growth_mb:.0f}), "
          f"peak {after['VmHWM'] / 1024:.0f} MB")  # fmt: skip
    assert growth_mb < 150, f"worker RSS grew by {growth_mb:.0f} MB over the corpus"
    for code in {c.expect for c in bad}:
        expected = sum(c.expect == code for c in bad)
        assert worker_metric(port, "darkroom_dead_letters_total", f'code="{code}"') == expected, code

    publish(env, [("after-corpus", event("after-corpus", env["files"][2].as_uri()))])
    reader.wait_for({"after-corpus"}, timeout_s=30, grace_s=0)
    assert [t for t, _ in reader.outcomes["after-corpus"]] == ["photo-tags"]


def test_an_input_the_model_fails_on_is_dead_lettered_model_error_and_the_rest_are_tagged(
    env, outcome_reader
):
    stack, port = env["stack"], env["stack"].ports.worker_web
    worker = stack.child("worker").proc
    magenta = env["photos"] / "magenta.png"
    Image.new("RGB", (200, 200), (255, 0, 255)).save(magenta)
    uploads = good_uploads(env, "model-error", 15)
    uploads.insert(7, ("model-error-magenta", event("model-error-magenta", magenta.as_uri())))
    publish(env, uploads)
    reader = outcome_reader(stack.bootstrap)
    ids = {pid for pid, _ in uploads}
    reader.wait_for(ids, timeout_s=120)
    outs = reader.outcomes.pop("model-error-magenta", [])
    assert [(topic, letter["error"]) for topic, letter in outs] == [("photo-uploads-dlq", "model_error")], (
        outs
    )
    assert "cannot score a solid magenta image" in outs[0][1]["detail"]
    assert_invariant(reader, ids - {"model-error-magenta"})  # the rest of its batch: tag events
    assert stack.child("worker").proc is worker and worker.poll() is None, "the worker restarted"
    assert worker_metric(port, "darkroom_retries_total", 'target="model"') >= 2
    assert worker_metric(port, "darkroom_dead_letters_total", 'code="model_error"') == 1


def test_kill_9_mid_batch_then_restart_loses_nothing(env, outcome_reader):
    """Triton is frozen (SIGSTOP) while the uploads arrive, so a batch is surely unfinished when the worker
    is killed: its events must come back from the uncommitted offsets, not from luck."""
    stack, port = env["stack"], env["stack"].ports.worker_web
    triton = stack.child("triton").proc
    uploads = good_uploads(env, "kill9", 240)
    triton.send_signal(signal.SIGSTOP)
    try:
        publish(env, uploads)
        wait_until(lambda: worker_metric(port, "darkroom_uploads_in_flight") > 0, 30, "a batch in flight")
        in_flight = worker_metric(port, "darkroom_uploads_in_flight")
        assert stack.kill_child("worker", signal.SIGKILL) == -signal.SIGKILL
    finally:
        triton.send_signal(signal.SIGCONT)
    killed_at = time.monotonic()
    uncommitted = PUBLISHED[0] - committed(stack.bootstrap)
    assert in_flight > 0 and uncommitted >= in_flight, (in_flight, uncommitted)
    stack.start_worker()
    reader = outcome_reader(stack.bootstrap)
    ids = {pid for pid, _ in uploads}
    reader.wait_for(ids, timeout_s=120)
    duplicates = assert_invariant(reader, ids)
    print(f"\nkill -9 with {in_flight:.0f} events in flight ({uncommitted} uncommitted): all {len(ids)} "
          f"tagged {time.monotonic() - killed_at:.1f}s after the kill, {duplicates} duplicates (identical)")  # fmt: skip


def test_sigterm_drains_the_batch_in_flight_and_commits(env, outcome_reader):
    """Triton is frozen (SIGSTOP) so a batch is surely in flight when SIGTERM comes; Triton then thaws and
    the stopping worker must finish that batch, commit, exit 0 and leave nothing to redeliver."""
    stack, port = env["stack"], env["stack"].ports.worker_web
    triton = stack.child("triton").proc
    uploads = good_uploads(env, "sigterm", 24)
    triton.send_signal(signal.SIGSTOP)
    try:
        publish(env, uploads)
        deadline = time.monotonic() + 30
        while worker_metric(port, "darkroom_uploads_in_flight") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker_metric(port, "darkroom_uploads_in_flight") > 0
        worker = stack.child("worker")
        worker.proc.send_signal(signal.SIGTERM)
        time.sleep(2)
        assert worker.proc.poll() is None, "the worker exited with a batch in flight"
    finally:
        triton.send_signal(signal.SIGCONT)
    code = stack.kill_child("worker", signal.SIGTERM)  # already stopping: this waits for the exit
    assert code == 0, f"worker exited {code} on SIGTERM (70 = could not drain in time)"
    reader = outcome_reader(stack.bootstrap)
    reader.poll(1)
    ids = {pid for pid, _ in uploads}
    drained = len(ids & set(reader.outcomes))
    stack.start_worker()
    reader.wait_for(ids, timeout_s=60)
    duplicates = assert_invariant(reader, ids)
    print(
        f"\nSIGTERM with Triton frozen: {drained} of {len(ids)} drained before exit 0, {duplicates} duplicates"
    )
    assert drained > 0 and duplicates == 0, "the drained batch was not committed"


def test_triton_down_20s_nothing_dead_lettered_and_resumes_quickly(env, outcome_reader):
    stack, port = env["stack"], env["stack"].ports.worker_web
    retries_before = worker_metric(port, "darkroom_retries_total", 'target="triton"')
    stack.kill_child("triton", signal.SIGTERM)
    stopped_at = time.monotonic()
    uploads = good_uploads(env, "outage", 48)
    publish(env, uploads)
    ready_url = f"http://127.0.0.1:{port}/health/ready"
    wait_until(lambda: http_status(ready_url) == 503, 15, "readiness 503 while Triton is down")
    assert http_status(f"http://127.0.0.1:{port}/health/live") == 200, "liveness must not depend on Triton"
    time.sleep(max(0.0, 20 - (time.monotonic() - stopped_at)))
    stack.restart_triton()
    ready_at = time.monotonic()
    reader = outcome_reader(stack.bootstrap)
    ids = {pid for pid, _ in uploads}
    while time.monotonic() - ready_at < 60 and not ids <= set(reader.outcomes):
        reader.poll(0.2)
    resumed_s = time.monotonic() - ready_at
    reader.poll(2)
    duplicates = assert_invariant(reader, ids)  # also: every outcome is a tag event, no dead letter
    retries = worker_metric(port, "darkroom_retries_total", 'target="triton"') - retries_before
    print(f"\nTriton down {ready_at - stopped_at:.0f}s (restart included): {retries:.0f} retries, all {len(ids)} "
          f"tagged {resumed_s:.1f}s after Triton was ready, {duplicates} duplicates")  # fmt: skip
    # measured 1.1-3.5 s; the margin is for a loaded 2-core machine (a stuck reconnect took 30 s and more)
    assert resumed_s <= RESUME_LIMIT_S, f"took {resumed_s:.1f}s after Triton was ready"
    assert retries > 0
    assert http_status(f"http://127.0.0.1:{port}/health/ready") == 200


def test_worker_joining_while_triton_is_down_rebalances_without_eviction_and_loses_nothing(
    env, outcome_reader
):
    """Triton stopped with a batch in flight, a second worker joins: the rebalance must complete during the
    outage (the first worker gives up what it holds, unacked, instead of waiting for Triton), neither worker
    may be evicted or restart, and once Triton is back every upload is tagged and every offset committed."""
    stack, port = env["stack"], env["stack"].ports.worker_web
    first = stack.child("worker").proc
    stack.kill_child("triton", signal.SIGTERM)
    stopped_at = time.monotonic()
    uploads = good_uploads(env, "outage-join", 64)
    publish(env, uploads)
    wait_until(lambda: worker_metric(port, "darkroom_uploads_in_flight") > 0, 30, "a batch in flight")
    assignments = worker_metric(port, "darkroom_partition_assignments_total")
    web2 = Ports.free().worker_web
    second = stack._spawn_worker("worker-2", web2)  # start_worker would wait for readiness, i.e. Triton
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{web2}/health/live"), 60, "worker-2 up")
        joined_s = wait_until(
            lambda: (
                worker_metric(web2, "darkroom_partition_assignments_total") > 0
                and worker_metric(port, "darkroom_partition_assignments_total") > assignments
            ),
            60,
            "the rebalance completed while Triton was down",
            poll_s=0.5,
        )
        time.sleep(max(0.0, 25 - (time.monotonic() - stopped_at)))  # the outage outlasts session timeouts
        stack.restart_triton()
        reader = outcome_reader(stack.bootstrap)
        ids = {pid for pid, _ in uploads}
        reader.wait_for(ids, timeout_s=60)
        duplicates = assert_invariant(reader, ids)  # every outcome a tag event: nothing dead-lettered
        wait_until(lambda: committed(stack.bootstrap) == PUBLISHED[0], 30, "every offset committed", 1.0)
        counts = [worker_metric(p, "darkroom_partition_assignments_total") for p in (port, web2)]
        time.sleep(10)  # longer than the session timeout: an evicted member would rejoin within it
        assert [worker_metric(p, "darkroom_partition_assignments_total") for p in (port, web2)] == counts, (
            "the group kept rebalancing after Triton came back"
        )
        assert first.poll() is None and second.proc.poll() is None, "a worker exited"
        print(f"\nworker joined during a {time.monotonic() - stopped_at:.0f}s Triton outage: rebalanced "
              f"{joined_s:.1f}s after it started, all {len(ids)} tagged, {duplicates} duplicates, "
              f"assignments {counts}")  # fmt: skip
        assert stack.kill_child("worker-2", signal.SIGTERM) == 0, "worker-2 did not stop cleanly"
    finally:
        if second in stack.children:
            stack.kill_child("worker-2", signal.SIGKILL)
        if not any(c.name == "triton" for c in stack.children):
            stack.restart_triton()  # the next drills need it


def test_second_worker_joining_mid_stream_keeps_the_invariant_and_commits(env, outcome_reader):
    stack = env["stack"]
    uploads = iter(good_uploads(env, "rebalance", 2000))
    sent: list[str] = []
    commits = [committed(stack.bootstrap)]
    stop = threading.Event()

    def feed() -> None:  # the stream goes on while the group rebalances; commits are sampled each second
        for tick in itertools.count():
            if stop.is_set():
                return
            batch = list(itertools.islice(uploads, 8))
            publish(env, batch)
            sent.extend(pid for pid, _ in batch)
            if tick % 4 == 3:
                commits.append(committed(stack.bootstrap))
            time.sleep(0.25)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        web2 = Ports.free().worker_web
        stack.start_worker("worker-2", web_port=web2)
        deadline = time.monotonic() + 40
        while worker_metric(web2, "darkroom_uploads_consumed_total") == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(4)
    finally:
        stop.set()
        feeder.join()
    reader = outcome_reader(stack.bootstrap)
    reader.wait_for(set(sent), timeout_s=120)
    duplicates = assert_invariant(reader, set(sent))
    deadline = time.monotonic() + 30
    while commits[-1] < PUBLISHED[0] and time.monotonic() < deadline:
        time.sleep(1)
        commits.append(committed(stack.bootstrap))
    second = worker_metric(web2, "darkroom_uploads_consumed_total")
    print(
        f"\nrebalance: {len(sent)} uploads, worker-2 took {second:.0f}; {duplicates} duplicates; "
        f"committed {commits[0]} -> {commits[-1]} of {PUBLISHED[0]} records"
    )
    assert second > 0, "the second worker never got a partition"
    assert commits == sorted(commits) and len(set(commits)) > 2, f"commits did not keep advancing: {commits}"
    assert commits[-1] == PUBLISHED[0], f"committed {commits[-1]} of {PUBLISHED[0]} records"
