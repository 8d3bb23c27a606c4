"""Shadow tagging: a candidate model version tags the live stream beside the live one (docs/rollout.md).

Which version is live and which one shadows it is state of the served model, written by ``darkroom shadow``,
``promote`` and ``rollback`` into its ``config.pbtxt`` as parameters (contracts/rollout.py), next to a
version policy that loads exactly those versions. The worker reads them from Triton (``get_model_config``)
before its first request and every ``rollout_refresh_s``, so the same mechanism works wherever Triton polls
the repository (``darkroom up``, the Kubernetes deployment). A model without these parameters is served as
before: the worker names no version, Triton picks the newest loaded.

The shadow never delays or endangers the live path: the live batch hands its decoded images over without
waiting (``ShadowTagger.submit``), a bounded queue drops the newest shadow work when full, a shadow request
is tried once within ``shadow_timeout_s``, and its failures are counted in metrics, not retried and never
seen by the live batch. Shadow events go to ``photo-tags-shadow`` after the live batch's own events; they
are best effort (a worker crash or a drop leaves a photo without one) and never indexed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time

import numpy as np
from prometheus_client import Counter, Histogram
from tritonclient.utils import InferenceServerException

from contracts.records import Upload, now_rfc3339, tag_event
from contracts.rollout import Rollout, rollout_from_config
from stream.inference import ModelAnswerError, TaggerClient
from stream.settings import Settings

log = logging.getLogger(__name__)

SHADOW_PHOTOS = Counter(
    "darkroom_shadow_photos",
    "Photos for the shadow version, by version and outcome (tagged, dropped, failed, timeout, unpublished)",
    ["model_version", "outcome"],
)
SHADOW_LATENCY = Histogram(
    "darkroom_shadow_triton_request_duration_seconds",
    "Shadow version's Triton request latency",
    ["model_version"],
)
ROLLOUT_CHANGES = Counter(
    "darkroom_rollout_changes", "Live/shadow version changes the worker applied", ["live", "shadow"]
)


def in_shadow(photo_id: str, fraction: float) -> bool:
    """Whether ``photo_id`` is one of the ``fraction`` of uploads the shadow tags: decided by the id alone,
    so a redelivered upload is shadowed again or not at all, and ``darkroom compare`` can tell which."""
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(photo_id.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


class ShadowTagger:
    """The shadow side of one worker: the rollout state it follows, its queue and its publishing task."""

    def __init__(self, settings: Settings, live: TaggerClient) -> None:
        self.settings = settings
        self.live = live
        self.client = TaggerClient(settings.triton_grpc, settings.model_name, settings.shadow_timeout_s)
        self.rollout = Rollout()
        self.queue: asyncio.Queue[tuple[str, list[Upload], np.ndarray]] = asyncio.Queue(settings.shadow_queue)

    # -- the rollout state ----------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the rollout state from Triton and apply it: the live client's version and the shadow's.
        Triton unreachable or a bad parameter: the state stays as it was (logged)."""
        try:
            rollout = rollout_from_config(await self.live.model_config())
        except InferenceServerException as exc:
            log.info("rollout state not read (%s); keeping live=%r", exc.message(), self.rollout.live)
            return
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("rollout state not applied: %s", exc)
            return
        if rollout != self.rollout:
            log.info(
                "rollout: live version %r, shadow %r", rollout.live or "newest", rollout.shadow or "none"
            )
            ROLLOUT_CHANGES.labels(rollout.live or "newest", rollout.shadow or "none").inc()
        self.rollout = rollout
        self.live.version = rollout.live

    async def watch(self) -> None:
        """Refresh the rollout state every ``rollout_refresh_s`` (a worker task)."""
        while True:
            await asyncio.sleep(self.settings.rollout_refresh_s)
            await self.refresh()

    # -- shadow tagging --------------------------------------------------------------------------------------
    def submit(self, uploads: list[Upload], images: np.ndarray) -> None:
        """Hand a live chunk's uploads and decoded images to the shadow, without waiting: when no shadow is
        configured this does nothing; when the queue is full the chunk is dropped and counted."""
        version = self.rollout.shadow
        if not version:
            return
        keep = [i for i, u in enumerate(uploads) if in_shadow(u.photo_id, self.settings.shadow_fraction)]
        if not keep:
            return
        try:
            self.queue.put_nowait((version, [uploads[i] for i in keep], images[keep]))
        except asyncio.QueueFull:
            SHADOW_PHOTOS.labels(version, "dropped").inc(len(keep))

    async def run(self, producer_of: callable) -> None:  # type: ignore[valid-type]
        """Tag what ``submit`` queued, one request at a time (a worker task). ``producer_of()`` is the app's
        producer, read when first needed (it exists only once the app runs)."""
        while True:
            version, uploads, images = await self.queue.get()
            try:
                await self._tag(version, uploads, images, producer_of())
            except Exception:  # a shadow bug must not stop the worker: counted and logged
                log.exception("shadow tagging of %d photo(s) failed", len(uploads))
                SHADOW_PHOTOS.labels(version, "failed").inc(len(uploads))

    async def _tag(self, version: str, uploads: list[Upload], images: np.ndarray, producer: object) -> None:
        started = time.monotonic()
        try:
            predictions = await asyncio.wait_for(
                self.client.predict_once(images, version), self.settings.shadow_timeout_s
            )
        except TimeoutError:
            SHADOW_PHOTOS.labels(version, "timeout").inc(len(uploads))
            return
        except (InferenceServerException, ModelAnswerError) as exc:
            SHADOW_PHOTOS.labels(version, "failed").inc(len(uploads))
            log.info("shadow version %s failed on %d photo(s): %s", version, len(uploads), str(exc)[:300])
            return
        SHADOW_LATENCY.labels(version).observe(time.monotonic() - started)
        tagged_at = now_rfc3339()
        topic = self.settings.shadow_tags_topic
        model = self.settings.model_name
        for upload, prediction in zip(uploads, predictions, strict=True):
            value = tag_event(upload, prediction.tags, model, prediction.version, tagged_at, shadow=True)
            ack = await producer.send(topic, upload.photo_id.encode(), value, None, None, None)  # type: ignore[attr-defined]
            ack.add_done_callback(functools.partial(_count_delivery, version))
        SHADOW_PHOTOS.labels(version, "tagged").inc(len(uploads))

    async def close(self) -> None:
        await self.client.close()


def _count_delivery(version: str, ack: asyncio.Future) -> None:
    """A shadow event the broker did not take is counted, not retried (nothing waits for it)."""
    if ack.cancelled() or ack.exception() is not None:
        SHADOW_PHOTOS.labels(version, "unpublished").inc()
