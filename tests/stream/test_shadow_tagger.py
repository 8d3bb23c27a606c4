"""The shadow side of the worker: the rollout state it reads, which photos it shadows, and that its queue and
its failures stay away from the live path."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from prometheus_client import REGISTRY

from contracts.records import Upload
from contracts.rollout import LIVE_PARAM, PREVIOUS_PARAM, SHADOW_PARAM, Rollout, rollout_from_config
from stream.inference import TaggerClient
from stream.settings import Settings
from stream.shadow import ShadowTagger, in_shadow


def _params(**values: object) -> dict:
    return {"parameters": {k: {"string_value": v} for k, v in values.items()}}


def test_rollout_state_is_read_from_the_model_config_parameters() -> None:
    config = _params(**{LIVE_PARAM: "3", SHADOW_PARAM: "4", PREVIOUS_PARAM: "2", "intra_op_threads": "1"})
    assert rollout_from_config(config) == Rollout("3", "4", "2")
    assert rollout_from_config({"parameters": {}}) == Rollout()  # not under rollout control
    assert rollout_from_config({}) == Rollout()
    assert rollout_from_config(_params(**{LIVE_PARAM: "3", SHADOW_PARAM: "3"})) == Rollout("3", "", "")


@pytest.mark.parametrize("bad", ["0", "-1", "v2", "1.5", "1" * 11, " 2", 7])
def test_a_parameter_that_is_not_a_version_number_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match=SHADOW_PARAM):
        rollout_from_config(_params(**{LIVE_PARAM: "1", SHADOW_PARAM: bad}))


def test_hostile_config_shapes_read_as_no_rollout() -> None:
    for config in ({"parameters": []}, {"parameters": {LIVE_PARAM: "1"}}, [], None):
        assert rollout_from_config(config) == Rollout()  # type: ignore[arg-type]


def test_the_shadow_fraction_selects_by_photo_id_alone_and_about_that_share() -> None:
    ids = [f"photo-{i}" for i in range(20_000)]
    picked = [p for p in ids if in_shadow(p, 0.25)]
    assert 0.23 < len(picked) / len(ids) < 0.27
    assert picked == [p for p in ids if in_shadow(p, 0.25)]  # the same ids every time (redeliveries)
    assert set(picked) <= {p for p in ids if in_shadow(p, 0.5)}  # a larger fraction keeps these
    assert all(in_shadow(p, 1.0) for p in ids[:100]) and not any(in_shadow(p, 0.0) for p in ids[:100])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _uploads(n: int, prefix: str) -> list[Upload]:
    return [
        Upload(photo_id=f"{prefix}-{i}", url="file:///x.jpg", uploaded_at="2026-12-01T00:00:00Z")
        for i in range(n)
    ]


def _count(version: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "darkroom_shadow_photos_total", {"model_version": version, "outcome": outcome}
    )
    return value or 0.0


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def send(self, *args: object) -> asyncio.Future:
        self.sent.append(args)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_without_a_shadow_version_nothing_is_queued() -> None:
    async def run() -> None:
        settings = Settings(triton_grpc=f"127.0.0.1:{_closed_port()}")
        shadow = ShadowTagger(settings, TaggerClient(settings.triton_grpc, settings.model_name))
        shadow.submit(_uploads(4, "none"), np.zeros((4, 8, 8, 3), np.uint8))
        assert shadow.queue.empty()
        await shadow.close()

    asyncio.run(run())


def test_a_full_shadow_queue_drops_the_new_chunk_and_counts_it_without_waiting() -> None:
    async def run() -> None:
        settings = Settings(triton_grpc=f"127.0.0.1:{_closed_port()}", shadow_queue=2)
        shadow = ShadowTagger(settings, TaggerClient(settings.triton_grpc, settings.model_name))
        shadow.rollout = Rollout(live="1", shadow="77")
        before = _count("77", "dropped")
        images = np.zeros((3, 8, 8, 3), np.uint8)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(5):
            shadow.submit(_uploads(3, f"drop{i}"), images)
        assert loop.time() - started < 0.5  # submit never waits
        assert shadow.queue.qsize() == 2
        assert _count("77", "dropped") - before == 9  # three chunks of three photos
        await shadow.close()

    asyncio.run(run())


def test_shadow_failures_are_counted_never_retried_and_publish_nothing() -> None:
    """Triton unreachable: each queued chunk is tried once, counted as failed, and the task goes on."""

    async def run() -> None:
        settings = Settings(triton_grpc=f"127.0.0.1:{_closed_port()}", shadow_timeout_s=5.0)
        shadow = ShadowTagger(settings, TaggerClient(settings.triton_grpc, settings.model_name))
        shadow.rollout = Rollout(live="1", shadow="78")
        producer = RecordingProducer()
        before = _count("78", "failed") + _count("78", "timeout")
        task = asyncio.create_task(shadow.run(lambda: producer))
        shadow.submit(_uploads(2, "fail-a"), np.zeros((2, 8, 8, 3), np.uint8))
        shadow.submit(_uploads(3, "fail-b"), np.zeros((3, 8, 8, 3), np.uint8))
        for _ in range(200):
            if _count("78", "failed") + _count("78", "timeout") - before >= 5:
                break
            await asyncio.sleep(0.05)
        assert _count("78", "failed") + _count("78", "timeout") - before == 5
        assert shadow.queue.empty() and not task.done() and producer.sent == []
        assert shadow.client.retries == 0
        task.cancel()
        await shadow.close()

    asyncio.run(run())


def test_refresh_keeps_the_last_state_when_triton_cannot_be_asked() -> None:
    async def run() -> None:
        settings = Settings(triton_grpc=f"127.0.0.1:{_closed_port()}")
        live = TaggerClient(settings.triton_grpc, settings.model_name, timeout_s=1.0)
        shadow = ShadowTagger(settings, live)
        shadow.rollout, live.version = Rollout("5", "6"), "5"
        await shadow.refresh()
        assert (shadow.rollout, live.version) == (Rollout("5", "6"), "5")
        await shadow.close()
        await live.close()

    asyncio.run(run())
