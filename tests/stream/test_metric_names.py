"""Every metric the worker exports follows the Prometheus naming conventions, read from the text the worker's
``/metrics`` page serves (``stream.metrics.exposition``) with prometheus_client's own parser; a later metric with a
bad name fails here. The build and model-version info gauges say what runs."""

from __future__ import annotations

import asyncio
import platform
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from contracts.tensors import ModelInput
from stream import metrics
from stream.inference import Prediction
from stream.settings import Settings
from stream.tagging import BatchTagger
from stream.version import package_version

#: prometheus_client's default collectors (process, Python GC and version): not ours to name
STANDARD_PREFIXES = ("process_", "python_")
#: what a histogram may measure: time (always as a duration), sizes, or a count of named things per observation
HISTOGRAM_UNITS = ("_duration_seconds", "_bytes", "_images")
#: units that are not base units (Prometheus wants seconds and bytes), and words that name no quantity
NON_BASE_UNITS = {"ms", "us", "ns", "millis", "milliseconds", "microseconds", "minutes", "hours", "days",
                  "kb", "mb", "gb", "kib", "mib", "gib", "kilobytes", "megabytes", "percent"}  # fmt: skip
VAGUE_WORDS = {"latency", "time", "size", "count", "num", "stats"}
RESERVED_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total", "_info")


def families(text: str) -> list[Metric]:
    return list(text_string_to_metric_families(text))


def served() -> list[Metric]:
    """The worker's metric families as its ``/metrics`` page serves them."""
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return families(body.decode())


def problems(family: Metric) -> list[str]:
    """What is wrong with one family's name, type, help and samples (empty: it follows the conventions)."""
    name, kind = family.name, family.type
    words = name.split("_")
    found = []
    if not re.fullmatch(r"darkroom(_[a-z][a-z0-9]*)+", name):
        found.append("not darkroom_ + lower snake case")
    if not family.documentation.strip():
        found.append("no help text")
    if kind not in ("counter", "gauge", "histogram", "summary"):
        found.append(f"type {kind}: use a counter, gauge, histogram or a count-and-sum summary")
    if NON_BASE_UNITS & set(words):
        found.append(f"non-base unit {sorted(NON_BASE_UNITS & set(words))}: use seconds or bytes")
    if VAGUE_WORDS & set(words) or re.search(r"_(in|out)$", name):
        found.append("a vague word: say what is counted or measured, and in which unit")
    for unit in ("seconds", "bytes"):
        if unit in words and not name.endswith(f"_{unit}"):
            found.append(f"the unit {unit} must end the name")
    if name.endswith("_seconds") and not name.endswith("_duration_seconds"):
        found.append("a time: name it *_duration_seconds")
    if kind == "histogram" and not name.endswith(HISTOGRAM_UNITS):
        found.append(f"a histogram's name ends with its unit, one of {HISTOGRAM_UNITS}")
    # The parser strips a counter's _total from the family name: its samples keep it.
    if name.endswith(RESERVED_SUFFIXES[:-1]) and not (kind == "gauge" and name.endswith("_info")):
        found.append("a reserved suffix (_bucket, _count, _sum, _created, _total) in the name")
    if name.endswith("_info") and kind != "gauge":
        found.append("_info is for gauges")
    for sample in family.samples:
        suffix = sample.name[len(name) :]
        if kind == "counter" and suffix != "_total":
            found.append(f"counter sample {sample.name}: counters end in _total")
        if kind == "gauge" and suffix:
            found.append(f"gauge sample {sample.name} is not named as its family")
        if kind == "histogram" and suffix not in ("_bucket", "_count", "_sum"):
            found.append(f"histogram sample {sample.name}")
        if kind == "summary" and suffix not in (
            "_count",
            "_sum",
        ):  # quantiles cannot be summed across workers
            found.append(f"summary sample {sample.name}: count and sum only")
        if name.endswith("_info") and (sample.value != 1 or not sample.labels):
            found.append("an _info gauge is 1 and says what it says in labels")
        for label in sample.labels:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", label):
                found.append(f"label {label!r} is not lower snake case")
    return found


def test_every_worker_metric_follows_the_prometheus_conventions() -> None:
    metrics.observe_model_version("tagger", "1")  # so the info gauge has its series too
    ours = [f for f in served() if not f.name.startswith(STANDARD_PREFIXES)]
    assert len(ours) >= 14, [f.name for f in ours]
    bad = {f.name: problems(f) for f in ours if problems(f)}
    assert not bad, bad
    kinds = {f.name: f.type for f in ours}
    assert kinds["darkroom_upload_to_tag_duration_seconds"] == "histogram"
    assert kinds["darkroom_triton_request_duration_seconds"] == "histogram"
    assert kinds["darkroom_photo_load_duration_seconds"] == "histogram"
    assert kinds["darkroom_build_info"] == kinds["darkroom_model_version_info"] == "gauge"


def test_the_checks_reject_names_against_the_conventions() -> None:
    """Each bad metric of a scratch registry is caught, with the reason; the good ones pass."""
    registry = CollectorRegistry()
    bad = {
        "darkroom_triton_seconds": Histogram("darkroom_triton_seconds", "h", registry=registry),
        "darkroom_fetch_latency": Histogram("darkroom_fetch_latency", "h", registry=registry),
        "darkroom_events_in": Counter("darkroom_events_in", "c", registry=registry),
        "darkroom_queue_total": Gauge("darkroom_queue_total", "g", registry=registry),
        "darkroom_decode_ms": Gauge("darkroom_decode_ms", "g", registry=registry),
        "darkroom_held_bytes_now": Gauge("darkroom_held_bytes_now", "g", registry=registry),
        "darkroom_rollout_info": Gauge("darkroom_rollout_info", "g", registry=registry),
        "tagger_photos": Gauge("tagger_photos", "g", registry=registry),
        "darkroom_batch": Histogram("darkroom_batch", "h", registry=registry),
    }
    bad["darkroom_rollout_info"].set(2)
    Counter("darkroom_photos_tagged", "c", registry=registry)
    Histogram("darkroom_fetch_duration_seconds", "h", registry=registry)
    Gauge("darkroom_model_info", "g", ["version"], registry=registry).labels("7").set(1)
    reported = {family.name: problems(family) for family in families(generate_latest(registry).decode())}
    for name in bad:
        assert reported[name], f"{name} passed the checks"
    assert reported["darkroom_photos_tagged"] == []
    assert reported["darkroom_fetch_duration_seconds"] == [] and reported["darkroom_model_info"] == []


def sample(name: str) -> dict[tuple, float]:
    """The served samples of one gauge: label values → value."""
    (family,) = [f for f in served() if f.name == name]
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def test_build_info_names_this_version_and_python() -> None:
    assert sample("darkroom_build_info") == {
        (("python", platform.python_version()), ("version", package_version())): 1.0
    }


def test_the_served_model_version_follows_the_version_triton_names(tmp_path) -> None:
    """Tag an upload with answers from version 3, then 4: the gauge names only the version of the latest answer."""
    from PIL import Image

    from tests.stream.test_tagging import FakeBroker, event, fake_topics, upload

    Image.new("RGB", (64, 48), (220, 20, 20)).save(tmp_path / "red.png")

    class Triton:
        version = "3"

        async def predict(self, images):  # type: ignore[no-untyped-def]
            return [Prediction([("red", 0.9)], self.version) for _ in images]

    async def tag(tagger: BatchTagger, broker: FakeBroker, offset: int) -> None:
        done = asyncio.ensure_future(
            tagger.process([event(offset, upload(f"p{offset}", tmp_path / "red.png"), "p")])
        )
        while not broker.acks:
            await asyncio.sleep(0.01)
        broker.ack_all()
        await asyncio.wait_for(done, 10)
        broker.acks.clear()

    async def scenario() -> list[dict]:
        broker = FakeBroker()
        topics = fake_topics(broker)
        tagger = BatchTagger(Settings(file_roots=str(tmp_path), model_name="tagger"), topics)  # type: ignore[arg-type]
        tagger.client = Triton()  # type: ignore[assignment]
        tagger.model_input = ModelInput(width=32, height=32, max_batch_size=8)
        seen = []
        for offset, version in enumerate(("3", "4")):
            tagger.client.version = version  # type: ignore[attr-defined]
            await tag(tagger, broker, offset)
            seen.append(sample("darkroom_model_version_info"))
        return seen

    after_3, after_4 = asyncio.run(scenario())
    assert after_3 == {(("model", "tagger"), ("version", "3")): 1.0}
    assert after_4 == {(("model", "tagger"), ("version", "4")): 1.0}
