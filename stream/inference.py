"""Triton client: one async gRPC request per micro-batch of uint8 images.

The model (``triton_models/tagger``) applies its own vocabulary and calibrated thresholds and returns,
per image, the tags to publish as JSON; the response names the model version that produced them, so a tag
event can never mix the vocabulary of one version with the scores of another.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
import orjson
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from stream import metrics

log = logging.getLogger(__name__)

INPUT_NAME = "IMAGE"
SCORES_OUTPUT = "SCORES"
TAGS_OUTPUT = "TAGS"

#: gRPC status codes that mean "this request itself is wrong": retrying cannot help.
_PERMANENT_STATUS = frozenset({"StatusCode.INVALID_ARGUMENT", "StatusCode.UNIMPLEMENTED"})
MAX_BACKOFF_S = 2.0

#: gRPC reconnects on its own schedule (default backoff grows to 120 s): while it waits, every call fails
#: at once and a restarted Triton would sit unused. Cap it near our own retry backoff instead.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000)),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class ModelInput:
    """What the worker must produce for the model: ``(width, height)`` uint8 RGB, batches up to max."""

    width: int
    height: int
    max_batch_size: int


@dataclass(frozen=True)
class Prediction:
    tags: list[tuple]  # (tag, score), or (tag, score, id) when the model's vocabulary has stable tag ids


class TaggerClient:
    """Async client for the ``tagger`` model. Transient failures are retried with capped backoff."""

    def __init__(self, url: str, model_name: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=CHANNEL_ARGS)
        self.retries = 0

    async def close(self) -> None:
        await self._client.close()

    async def model_input(self) -> ModelInput:
        """Read the input resolution and batch limit from the served model's config (single source)."""
        cfg = (await self._client.get_model_config(self.model_name, as_json=True))["config"]
        (image,) = [i for i in cfg["input"] if i["name"] == INPUT_NAME]
        height, width, _ = (int(d) for d in image["dims"])
        return ModelInput(width=width, height=height, max_batch_size=int(cfg.get("max_batch_size", 1)))

    async def wait_ready(self, poll_s: float = 0.5) -> ModelInput:
        """Block until the model is ready, retrying while Triton is down or still loading."""
        delay = poll_s
        while True:
            try:
                if await self._client.is_model_ready(self.model_name):
                    return await self.model_input()
            except InferenceServerException as exc:
                log.warning("Triton at %s not ready (%s); retrying in %.1fs", self.url, exc.message(), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def is_ready(self, timeout_s: float = 2.0) -> bool:
        """Whether Triton answers and has the model loaded right now (for the worker's readiness)."""
        try:
            return bool(await self._client.is_model_ready(self.model_name, client_timeout=timeout_s))
        except InferenceServerException:
            return False

    async def predict(self, images: np.ndarray) -> tuple[list[Prediction], str]:
        """Tag a uint8 batch ``[N, H, W, 3]``; returns one Prediction per image and the model version.

        Unavailable, overloaded, timed out: retried without end (capped backoff), since every event needs
        Triton and none may be dead-lettered for its absence. A request Triton calls malformed is raised:
        that is a worker/model mismatch, and the agent stops rather than commit past it."""
        delay = 0.2
        while True:
            try:
                with metrics.TRITON_LATENCY.time():
                    return await self._infer_once(images)
            except InferenceServerException as exc:
                if str(exc.status()) in _PERMANENT_STATUS:
                    raise
                self.retries += 1
                metrics.RETRIES.labels("triton").inc()
                log.warning("Triton call failed (%s %s); retry in %.1fs", exc.status(), exc.message(), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def _infer_once(self, images: np.ndarray) -> tuple[list[Prediction], str]:
        inp = grpcclient.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        result = await self._client.infer(
            self.model_name,
            [inp],
            outputs=[grpcclient.InferRequestedOutput(TAGS_OUTPUT)],
            client_timeout=self.timeout_s,
        )
        version = result.get_response().model_version
        rows = result.as_numpy(TAGS_OUTPUT).reshape(-1)
        return [Prediction([tuple(tag) for tag in orjson.loads(row)]) for row in rows], version
