"""Triton client: one async gRPC request per micro-batch of uint8 images.

The model (``triton_models/tagger``) applies its own vocabulary and calibrated thresholds and returns,
per image, the tags to publish as JSON; the response names the model version that produced them, so a tag
event can never mix the vocabulary of one version with the scores of another.

Failures are told apart by what they say about the inputs (docs/reliability.md):

* transient (Triton down, overloaded, past the deadline): retried without end, never a dead letter;
* an answer the worker cannot use (a model error, a missing output, too few or too many rows, a row that is
  not JSON tag pairs): the request is tried ``model_error_attempts`` times, then, if the model still answers
  a blank probe image, split in halves until the inputs it fails on are alone; each of those becomes a
  ``model_error`` dead letter and the rest are tagged. If the probe fails too, the model is broken for every
  input, so the failure is treated as transient;
* a request Triton calls malformed: a worker/model mismatch, raised (the worker stops uncommitted).

With ``embeddings`` on, requests also ask for the ``EMBEDDING`` output when the model's config declares it;
an answer without a usable one (a version exported before it existed) still tags: the photo just has no
embedding to publish.
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

from contracts.records import ErrorCode, PermanentError
from contracts.tensors import EMBEDDING_OUTPUT, INPUT_NAME, TAGS_OUTPUT, ModelInput
from stream import metrics

log = logging.getLogger(__name__)


#: gRPC status codes that mean "this request itself is wrong": retrying cannot help.
_PERMANENT_STATUS = frozenset({"StatusCode.INVALID_ARGUMENT", "StatusCode.UNIMPLEMENTED"})
#: gRPC status codes of a failure inside the model (the Python backend's TritonError): maybe one input's.
_MODEL_STATUS = frozenset({"StatusCode.INTERNAL", "StatusCode.UNKNOWN"})
INITIAL_BACKOFF_S = 0.2
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
class Prediction:
    """One image's tags (sorted, above threshold) and the model version that chose them."""

    tags: list[tuple]  # (tag, score), or (tag, score, id) when the model's vocabulary has stable tag ids
    version: str
    embedding: np.ndarray | None = None  # float16 [D], when asked for and the version has one


class ModelAnswerError(Exception):
    """Triton answered a request, but not with one usable TAGS row per image."""


def parse_answer(result: grpcclient.InferResult, images: int) -> list[Prediction]:
    """One Prediction per image from an inference result; ModelAnswerError naming what is wrong with it."""
    version = result.get_response().model_version
    tags = result.as_numpy(TAGS_OUTPUT)
    if tags is None:
        raise ModelAnswerError(f"the answer has no {TAGS_OUTPUT} output")
    rows = tags.reshape(-1)
    if len(rows) != images:
        raise ModelAnswerError(f"{len(rows)} {TAGS_OUTPUT} rows for {images} images")
    vectors = _embeddings(result, images)
    return [Prediction(_parse_row(i, row), version, vectors[i]) for i, row in enumerate(rows)]


def _embeddings(result: grpcclient.InferResult, images: int) -> list[np.ndarray | None]:
    """Per image, its float16 EMBEDDING row; all None when the answer has none or an unusable one (the
    tags are still good: an embedding is an extra, never a reason to fail the photo)."""
    try:
        vectors = result.as_numpy(EMBEDDING_OUTPUT)
    except Exception:  # an output of a type the client cannot read is as good as none
        vectors = None
    if (
        vectors is None
        or vectors.dtype != np.float16
        or vectors.ndim != 2
        or vectors.shape[0] != images
        or not vectors.shape[1]
    ):
        return [None] * images
    return [row if np.isfinite(row).all() else None for row in vectors]


def _parse_row(index: int, row: object) -> list[tuple]:
    """A TAGS row: JSON ``[[tag, score], ...]``, or ``[[tag, score, id], ...]`` with stable tag ids."""
    try:
        items = orjson.loads(row)  # type: ignore[arg-type]
        if not isinstance(items, list):
            raise TypeError(f"a {type(items).__name__}, not a list")
        tags = []
        for item in items:
            if not (isinstance(item, list) and 2 <= len(item) <= 3 and isinstance(item[0], str)):
                raise ValueError(f"{str(item)[:80]} is not [tag, score] or [tag, score, id]")
            if len(item) == 3 and not isinstance(item[2], str):
                raise ValueError(f"the id of {item[0][:80]!r} is not a string")
            tags.append((item[0], float(item[1]), *item[2:]))
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelAnswerError(
            f"{TAGS_OUTPUT} row {index} is not JSON [[tag, score(, id)], ...]: {exc}"
        ) from None
    return tags


class TaggerClient:
    """Async client for the ``tagger`` model. Transient failures are retried with capped backoff."""

    def __init__(
        self,
        url: str,
        model_name: str,
        timeout_s: float = 10.0,
        model_error_attempts: int = 3,
        embeddings: bool = False,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.model_error_attempts = model_error_attempts
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=CHANNEL_ARGS)
        self.retries = 0
        #: the version every request asks for ("": Triton's choice, the newest loaded); read at each attempt,
        #: so a promotion (stream/shadow.py RolloutWatcher) applies to the next try of a waiting request too
        self.version = ""
        self.want_embeddings = embeddings
        #: whether requests ask for EMBEDDING: wanted, and the model's config declares it (read with the config)
        self.embeddings = False
        self._declared: bool | None = None  # what the config said last time (a change is logged)

    async def close(self) -> None:
        await self._client.close()

    async def model_input(self) -> ModelInput:
        """Read the input resolution and batch limit from the served model's config (single source)."""
        cfg = await self.model_config()
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

    async def predict(self, images: np.ndarray) -> list[Prediction | PermanentError]:
        """Tag a uint8 batch ``[N, H, W, 3]``: per image, its Prediction or its ``model_error``.

        Transient failures are retried without end (every event needs Triton, none may be dead-lettered
        for its absence); unusable answers are narrowed down to the inputs they come from (module doc)."""
        delay = INITIAL_BACKOFF_S
        while True:
            answer = await self._tries(images)
            if not isinstance(answer, ModelAnswerError):
                return answer
            probe = await self._tries(np.zeros((1, *images.shape[1:]), np.uint8), attempts=1)
            if not isinstance(probe, ModelAnswerError):
                break  # the model answers a blank image: the fault lies with (some of) these inputs
            # The model fails on a blank image too: it is broken for everything, not for these inputs.
            self._count_retry("triton", f"model fails on a blank probe too ({answer})", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        if len(images) == 1:
            detail = f"{answer} ({self.model_error_attempts} tries; a blank probe image was answered)"
            return [PermanentError(ErrorCode.MODEL_ERROR, detail)]
        half = len(images) // 2
        return [*await self.predict(images[:half]), *await self.predict(images[half:])]

    async def _tries(
        self, images: np.ndarray, attempts: int | None = None
    ) -> list[Prediction] | ModelAnswerError:
        """Up to ``attempts`` (default ``model_error_attempts``) usable-answer tries of one request, each
        retried without end while Triton is unavailable; the last ModelAnswerError if none was usable."""
        attempts = attempts or self.model_error_attempts
        delay = INITIAL_BACKOFF_S
        for attempt in range(1, attempts + 1):
            try:
                return await self._answer(images)
            except ModelAnswerError as exc:
                error = exc
            if attempt < attempts:
                self._count_retry("model", str(error), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        return error

    async def _answer(self, images: np.ndarray) -> list[Prediction]:
        """One usable answer for ``images``, retrying transient failures without end."""
        delay = INITIAL_BACKOFF_S
        while True:
            try:
                with metrics.TRITON_LATENCY.time():
                    result = await self._infer_once(images)
                return parse_answer(result, len(images))
            except InferenceServerException as exc:
                status = str(exc.status())
                if status in _PERMANENT_STATUS:
                    raise
                if status in _MODEL_STATUS:
                    raise ModelAnswerError(f"model error {status}: {exc.message()}") from None
                self._count_retry("triton", f"{exc.status()} {exc.message()}", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _count_retry(self, target: str, reason: str, delay: float) -> None:
        self.retries += 1
        metrics.RETRIES.labels(target).inc()
        log.warning("Triton call failed (%s); retry in %.1fs", reason[:300], delay)

    async def predict_once(self, images: np.ndarray, version: str) -> list[Prediction]:
        """One request to ``version``, no retry (the shadow's way: failures are counted, not retried);
        InferenceServerException or ModelAnswerError when it fails."""
        return parse_answer(await self._infer_once(images, version, embeddings=False), len(images))

    async def model_config(self) -> dict:
        """The served model's config as Triton's JSON (the rollout's live and shadow versions are in it)."""
        cfg = (await self._client.get_model_config(self.model_name, as_json=True))["config"]
        declared = any(o.get("name") == EMBEDDING_OUTPUT for o in cfg.get("output", []))
        if self.want_embeddings and declared != self._declared:
            log.warning(
                "model %s %s an %s output: embeddings are %s",
                self.model_name, "declares" if declared else "does not declare", EMBEDDING_OUTPUT,
                "published" if declared else "not published (export a new version to get them)",
            )  # fmt: skip
        self._declared = declared
        self.embeddings = self.want_embeddings and declared
        return cfg

    async def _infer_once(
        self, images: np.ndarray, version: str | None = None, embeddings: bool = True
    ) -> grpcclient.InferResult:
        inp = grpcclient.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        return await self._client.infer(
            self.model_name,
            [inp],
            model_version=self.version if version is None else version,
            outputs=[
                grpcclient.InferRequestedOutput(name)
                for name in (TAGS_OUTPUT, *([EMBEDDING_OUTPUT] if embeddings and self.embeddings else []))
            ],
            client_timeout=self.timeout_s,
        )
