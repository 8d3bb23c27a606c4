"""Worker settings: defaults in code, overridden by ``DARKROOM_*`` environment variables, then CLI flags.

The same ``darkroom worker`` runs embedded (loopback broker and Triton) and distributed (a Kafka cluster,
Triton on GPU nodes): only these values change. ``ENV_VARS`` is the single list of variables the worker
reads; the Kubernetes manifests are tested against it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from contracts import topics
from contracts.tensors import MODEL_NAME

#: memory the worker needs besides photos: interpreter, Faust, Kafka and gRPC buffers, model-sized batches
PROCESS_RESERVE_BYTES = 512 * 1024**2
#: the most a decode holds per pixel of its photo: the decoded frame (Pillow stores RGB and RGBA in 4 bytes),
#: one converted copy (the RGB that alpha is composited into, or a transposed frame) and a byte of slack for
#: the decoder's own buffers; stream/fetch.py keeps to it, tests/stream/test_byte_budget.py measures it
DECODE_BYTES_PER_PIXEL = 9
#: time a rebalance needs besides the agent's grace period (commit, flush, JoinGroup), at least
REBALANCE_MARGIN_S = 5.0


#: ``DARKROOM_LOG_FORMAT``: text for people, json for log pipelines (stream/logs.py)
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """A setting has a value the worker cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the worker needs to know about its surroundings."""

    #: Kafka bootstrap servers, comma-separated host:port
    kafka_bootstrap: str = field(default="127.0.0.1:9092", metadata={"env": "DARKROOM_KAFKA_BOOTSTRAP"})
    #: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``, for every Kafka client (worker, indexer, CLI);
    #: see stream/kafka_security.py and docs/deploy.md "Kafka security"
    kafka_security_protocol: str = field(
        default="PLAINTEXT", metadata={"env": "DARKROOM_KAFKA_SECURITY_PROTOCOL"}
    )
    #: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (with a ``SASL_*`` protocol)
    kafka_sasl_mechanism: str = field(default="", metadata={"env": "DARKROOM_KAFKA_SASL_MECHANISM"})
    #: the SASL user
    kafka_sasl_username: str = field(default="", metadata={"env": "DARKROOM_KAFKA_SASL_USERNAME"})
    #: the SASL password (kept out of the settings' repr: settings are logged, the password must not be)
    kafka_sasl_password: str = field(default="", repr=False, metadata={"env": "DARKROOM_KAFKA_SASL_PASSWORD"})
    #: PEM file of the CA that signed the brokers' certificates (empty: the system's CAs)
    kafka_ssl_cafile: str = field(default="", metadata={"env": "DARKROOM_KAFKA_SSL_CAFILE"})
    #: PEM client certificate, for brokers that require mutual TLS (with the key file)
    kafka_ssl_certfile: str = field(default="", metadata={"env": "DARKROOM_KAFKA_SSL_CERTFILE"})
    #: PEM private key of the client certificate
    kafka_ssl_keyfile: str = field(default="", metadata={"env": "DARKROOM_KAFKA_SSL_KEYFILE"})
    #: the topic of new uploads (input)
    uploads_topic: str = field(default=topics.UPLOADS, metadata={"env": "DARKROOM_UPLOADS_TOPIC"})
    #: the topic of tag events (output, for search indexing)
    tags_topic: str = field(default=topics.TAGS, metadata={"env": "DARKROOM_TAGS_TOPIC"})
    #: the dead-letter topic: bad input, with a reason code and the original value
    dlq_topic: str = field(default=topics.DLQ, metadata={"env": "DARKROOM_DLQ_TOPIC"})
    #: the topic of a shadow (candidate) model version's tag events, never indexed (docs/rollout.md)
    shadow_tags_topic: str = field(default=topics.SHADOW_TAGS, metadata={"env": "DARKROOM_SHADOW_TAGS_TOPIC"})
    #: the topic of users' tag edits (the search page and ``darkroom edit`` write it, the indexer applies it)
    edits_topic: str = field(default=topics.EDITS, metadata={"env": "DARKROOM_EDITS_TOPIC"})
    #: where the indexer dead-letters edits it refuses (malformed, rate-limited, someone else's photo)
    edits_dlq_topic: str = field(default=topics.EDITS_DLQ, metadata={"env": "DARKROOM_EDITS_DLQ_TOPIC"})
    #: publish each tagged photo's backbone embedding (float16) to the embeddings topic, acknowledged with its
    #: tag event, so training need not run the backbone again (docs/feedback.md); only model versions that
    #: declare an ``EMBEDDING`` output have one
    publish_embeddings: bool = field(default=False, metadata={"env": "DARKROOM_PUBLISH_EMBEDDINGS"})
    #: the topic of the photos' embeddings (schemas/photo-embeddings.schema.json), with publish_embeddings
    embeddings_topic: str = field(default=topics.EMBEDDINGS, metadata={"env": "DARKROOM_EMBEDDINGS_TOPIC"})
    #: edits one owner may make per ``edit_rate_window_s`` (by the records' timestamps); more are
    #: dead-lettered ``rate_limited``
    edit_rate_limit: int = field(default=600, metadata={"env": "DARKROOM_EDIT_RATE_LIMIT"})
    #: the window of ``edit_rate_limit``, seconds
    edit_rate_window_s: float = field(default=3600.0, metadata={"env": "DARKROOM_EDIT_RATE_WINDOW_S"})
    #: distinct owners who must make the same correction of a tag (add it, or remove it) before it enters
    #: global training; below that an edit changes only its owner's own photos
    edit_votes: int = field(default=3, metadata={"env": "DARKROOM_EDIT_VOTES"})
    #: the workers' consumer group
    group_id: str = field(default="darkroom-tagger", metadata={"env": "DARKROOM_GROUP_ID"})
    #: Triton's gRPC endpoint, host:port
    triton_grpc: str = field(default="127.0.0.1:8001", metadata={"env": "DARKROOM_TRITON_GRPC"})
    #: the Triton model the worker asks for tags
    model_name: str = field(default=MODEL_NAME, metadata={"env": "DARKROOM_MODEL_NAME"})
    #: events per micro-batch (acked together, in order)
    batch_size: int = field(default=64, metadata={"env": "DARKROOM_BATCH_SIZE"})
    #: images per Triton request: a micro-batch is inferred in chunks of this many as its photos are decoded
    infer_batch_size: int = field(default=16, metadata={"env": "DARKROOM_INFER_BATCH_SIZE"})
    #: micro-batches in flight at once (decoding the next overlaps inference of the current)
    pipeline_depth: int = field(default=2, metadata={"env": "DARKROOM_PIPELINE_DEPTH"})
    #: how long a micro-batch waits for more events before it starts, seconds. 0 (the default): a batch starts
    #: as soon as one of the ``pipeline_depth`` slots is free, with whatever has queued meanwhile, so batches
    #: grow with the load by themselves; a window holds its slot while it waits (docs/performance.md)
    batch_window_s: float = field(default=0.0, metadata={"env": "DARKROOM_BATCH_WINDOW_S"})
    #: threads decoding photos
    decode_threads: int = field(default=2, metadata={"env": "DARKROOM_DECODE_THREADS"})
    #: folders ``file://`` uploads may read, ``os.pathsep``-separated (none by default)
    file_roots: str = field(default="", metadata={"env": "DARKROOM_FILE_ROOTS"})
    #: the most bytes a photo may have (``too_large`` past it)
    max_image_bytes: int = field(default=25 * 1024 * 1024, metadata={"env": "DARKROOM_MAX_IMAGE_BYTES"})
    #: the most pixels a photo may have, checked from its header before decoding (``too_many_pixels``)
    max_image_pixels: int = field(default=50_000_000, metadata={"env": "DARKROOM_MAX_IMAGE_PIXELS"})
    #: what one fetch may take end to end (resolution, connection, headers, body), seconds
    fetch_timeout_s: float = field(default=10.0, metadata={"env": "DARKROOM_FETCH_TIMEOUT_S"})
    #: tries per upload when its source times out or answers 5xx/429, then dead letter ``fetch_unavailable``
    fetch_attempts: int = field(default=3, metadata={"env": "DARKROOM_FETCH_ATTEMPTS"})
    #: development only: let ``http://`` uploads reach 127.0.0.0/8 and ::1 (never other private addresses)
    allow_loopback_http: bool = field(default=False, metadata={"env": "DARKROOM_ALLOW_LOOPBACK_HTTP"})
    #: a site's own image origins that may be private, comma-separated: host names (``images.internal.example``,
    #: ``*.internal.example``) may resolve to private addresses; CIDRs (``10.20.0.0/16``, ``fd00::/8``) admit
    #: their addresses for any host; cloud metadata addresses only by their own /32 or /128 (stream/origins.py)
    allowed_origins: str = field(default="", metadata={"env": "DARKROOM_ALLOWED_ORIGINS"})
    #: seconds an idle ``http(s)`` connection is kept for the next fetch from the same origin; 0: no reuse
    fetch_keepalive_s: float = field(default=4.0, metadata={"env": "DARKROOM_FETCH_KEEPALIVE_S"})
    #: the most frames an animation may have, counted before any is decoded (``too_many_frames``)
    max_frames: int = field(default=100, metadata={"env": "DARKROOM_MAX_FRAMES"})
    #: what one decode may take, seconds, from when a thread picks the photo up (``decode_timeout``)
    decode_timeout_s: float = field(default=10.0, metadata={"env": "DARKROOM_DECODE_TIMEOUT_S"})
    #: aiokafka ``enable_idempotence`` (needs InitProducerId v0, which embedded Tansu rejects; on for Kafka)
    producer_idempotence: bool = field(default=False, metadata={"env": "DARKROOM_PRODUCER_IDEMPOTENCE"})
    #: on SIGTERM, how long an in-flight batch may take to finish before the worker exits without committing
    drain_timeout_s: float = field(default=30.0, metadata={"env": "DARKROOM_DRAIN_TIMEOUT_S"})
    #: what one Triton request may take before it is retried, seconds
    triton_timeout_s: float = field(default=10.0, metadata={"env": "DARKROOM_TRITON_TIMEOUT_S"})
    #: the consumer group's session timeout: a worker silent this long is taken out of the group, seconds
    session_timeout_s: float = field(default=10.0, metadata={"env": "DARKROOM_SESSION_TIMEOUT_S"})
    #: how often a reader (worker, indexer, CLI) fetches a partition again from an offset a fetch skipped
    #: before it reads past it; the embedded broker can serve a later record before an earlier one
    #: (stream/gaps.py). 0: never (Kafka itself does not); a gap that stays is a transaction marker
    kafka_gap_retries: int = field(default=3, metadata={"env": "DARKROOM_KAFKA_GAP_RETRIES"})
    #: the address the health and metrics pages listen on (``0.0.0.0`` in the container image)
    web_bind: str = field(default="127.0.0.1", metadata={"env": "DARKROOM_WEB_BIND"})
    #: the port of ``/health/live``, ``/health/ready`` and ``/metrics``
    web_port: int = field(default=6066, metadata={"env": "DARKROOM_WEB_PORT"})
    #: Faust's data folder (the worker keeps no state there; tables are in memory)
    data_dir: str = field(default="/tmp/darkroom-worker", metadata={"env": "DARKROOM_DATA_DIR"})
    #: ``text`` (the default) or ``json``: one JSON object per log line, for log pipelines (stream/logs.py)
    log_format: str = field(default="text", metadata={"env": "DARKROOM_LOG_FORMAT"})
    #: an S3-compatible server for ``s3://`` uploads (MinIO, Ceph, moto); empty means AWS itself
    s3_endpoint_url: str = field(default="", metadata={"env": "DARKROOM_S3_ENDPOINT_URL"})
    #: the only buckets ``s3://`` uploads may read, comma-separated; none by default, so every ``s3://``
    #: upload is ``forbidden_url`` until a site names its own
    s3_allowed_buckets: str = field(default="", metadata={"env": "DARKROOM_S3_ALLOWED_BUCKETS"})
    #: the object store's region; empty means botocore's own (``AWS_REGION``, the config file)
    s3_region: str = field(default="", metadata={"env": "DARKROOM_S3_REGION"})
    #: ``path`` for most MinIO/Ceph set-ups, ``auto`` (or ``virtual``) for AWS
    s3_addressing_style: str = field(default="auto", metadata={"env": "DARKROOM_S3_ADDRESSING_STYLE"})
    #: decode threads stuck past ``decode_timeout_s`` and still running, from which liveness fails (restart)
    max_abandoned_decodes: int = field(default=8, metadata={"env": "DARKROOM_MAX_ABANDONED_DECODES"})
    #: the worker's memory limit (Kubernetes: the container's, from the downward API); photos are budgeted
    #: from it (``fetch_budget_bytes``) so that an OOM kill, which is never dead-lettered, cannot happen
    memory_limit_bytes: int = field(default=2 * 1024**3, metadata={"env": "DARKROOM_MEMORY_LIMIT_BYTES"})
    #: tries of a Triton request whose answer is unusable before its inputs are narrowed down (model_error)
    model_error_attempts: int = field(default=3, metadata={"env": "DARKROOM_MODEL_ERROR_ATTEMPTS"})
    #: on a rebalance, how long batches in flight may take to finish before they are given back unacked
    rebalance_grace_s: float = field(default=5.0, metadata={"env": "DARKROOM_REBALANCE_GRACE_S"})
    #: how long the group waits for members to rejoin during a rebalance (Kafka's rebalance timeout)
    rebalance_timeout_s: float = field(default=60.0, metadata={"env": "DARKROOM_REBALANCE_TIMEOUT_S"})
    #: share of uploads (0..1, chosen by photo_id) also tagged by the shadow version, when the model's config
    #: names one (docs/rollout.md)
    shadow_fraction: float = field(default=1.0, metadata={"env": "DARKROOM_SHADOW_FRACTION"})
    #: Triton requests waiting for the shadow version; past this the newest is dropped (counted), never the live
    shadow_queue: int = field(default=8, metadata={"env": "DARKROOM_SHADOW_QUEUE"})
    #: what one shadow request may take; a late or failed one is counted and dropped, never retried, seconds
    shadow_timeout_s: float = field(default=10.0, metadata={"env": "DARKROOM_SHADOW_TIMEOUT_S"})
    #: how often the worker reads the live and shadow versions from the model's config in Triton, seconds
    rollout_refresh_s: float = field(default=2.0, metadata={"env": "DARKROOM_ROLLOUT_REFRESH_S"})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``), then apply non-None ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name in env:
                values[f.name] = _convert(name, env[name], f.type)
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values that would only fail later, far from their cause."""
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"DARKROOM_LOG_FORMAT={self.log_format!r}: use {' or '.join(LOG_FORMATS)}")
        if not 1 <= self.web_port <= 65535:
            raise SettingsError(f"DARKROOM_WEB_PORT must be 1..65535, got {self.web_port}")
        for name in ("batch_size", "pipeline_depth", "infer_batch_size", "decode_threads", "fetch_attempts",
                     "max_frames", "max_abandoned_decodes", "model_error_attempts", "shadow_queue",
                     "edit_rate_limit", "edit_votes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env_name(name)} must be >= 1, got {getattr(self, name)}")
        if self.fetch_keepalive_s < 0:
            raise SettingsError(f"DARKROOM_FETCH_KEEPALIVE_S must be >= 0, got {self.fetch_keepalive_s}")
        if self.kafka_gap_retries < 0:
            raise SettingsError(f"DARKROOM_KAFKA_GAP_RETRIES must be >= 0, got {self.kafka_gap_retries}")
        if not 0.0 <= self.shadow_fraction <= 1.0:
            raise SettingsError(f"DARKROOM_SHADOW_FRACTION must be within 0..1, got {self.shadow_fraction}")
        if self.batch_window_s < 0:
            raise SettingsError(f"DARKROOM_BATCH_WINDOW_S must be >= 0, got {self.batch_window_s}")
        for name in ("fetch_timeout_s", "decode_timeout_s", "triton_timeout_s", "drain_timeout_s",
                     "rebalance_grace_s", "rebalance_timeout_s", "shadow_timeout_s", "rollout_refresh_s",
                     "edit_rate_window_s"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be > 0, got {getattr(self, name)}")
        if (
            self.fetch_budget_bytes < self.max_image_bytes
        ):  # one photo at the cap must fit, or fetches wait forever
            raise SettingsError(
                f"DARKROOM_MEMORY_LIMIT_BYTES={self.memory_limit_bytes} leaves {self.fetch_budget_bytes} bytes "
                f"for fetched photos after {PROCESS_RESERVE_BYTES} for the process and {self.decode_threads} "
                f"decode(s) (DARKROOM_DECODE_THREADS) of up to {self.decode_memory_bytes} bytes; one photo "
                f"needs DARKROOM_MAX_IMAGE_BYTES={self.max_image_bytes}: raise the limit or lower the "
                "decode threads, DARKROOM_MAX_IMAGE_PIXELS or DARKROOM_MAX_IMAGE_BYTES"
            )
        if self.rebalance_grace_s + REBALANCE_MARGIN_S > self.rebalance_timeout_s:
            raise SettingsError(
                f"DARKROOM_REBALANCE_GRACE_S ({self.rebalance_grace_s}) + {REBALANCE_MARGIN_S}s must not exceed "
                f"DARKROOM_REBALANCE_TIMEOUT_S ({self.rebalance_timeout_s}): the group would evict the worker"
            )
        self._validate_kafka_security()

    def _validate_kafka_security(self) -> None:
        """TLS/SASL settings that fit together and files that exist, checked before any client connects."""
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(
                f"DARKROOM_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise SettingsError(
                    f"DARKROOM_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r} is not one of "
                    f"{', '.join(KAFKA_SASL_MECHANISMS)} (needed with {protocol})"
                )
            for name in ("kafka_sasl_username", "kafka_sasl_password"):
                if not getattr(self, name):
                    raise SettingsError(f"{_env_name(name)} is required with {protocol}")
        else:
            for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, name):
                    raise SettingsError(
                        f"{_env_name(name)} is set but DARKROOM_KAFKA_SECURITY_PROTOCOL={protocol} "
                        "does not use SASL (SASL_SSL or SASL_PLAINTEXT does)"
                    )
        tls_files = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        for name in tls_files:
            path = getattr(self, name)
            if path and not protocol.endswith("SSL"):
                raise SettingsError(
                    f"{_env_name(name)} is set but DARKROOM_KAFKA_SECURITY_PROTOCOL={protocol} "
                    "does not use TLS (SSL or SASL_SSL does)"
                )
            if path and not os.path.isfile(path):
                raise SettingsError(f"{_env_name(name)}={path!r}: no such file")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise SettingsError(
                "DARKROOM_KAFKA_SSL_CERTFILE and DARKROOM_KAFKA_SSL_KEYFILE go together (a client "
                "certificate needs its key)"
            )

    @property
    def decode_memory_bytes(self) -> int:
        """The most one decode holds: its bytes and ``DECODE_BYTES_PER_PIXEL`` per pixel at the pixel cap."""
        return self.max_image_bytes + DECODE_BYTES_PER_PIXEL * self.max_image_pixels

    @property
    def fetch_budget_bytes(self) -> int:
        """Bytes that fetched photos (being fetched or waiting to decode) may hold at once: the memory limit
        less the process's own share and the decode threads' worst case."""
        return (
            self.memory_limit_bytes - PROCESS_RESERVE_BYTES - self.decode_threads * self.decode_memory_bytes
        )

    @functools.cached_property
    def allowed_roots(self) -> tuple[str, ...]:
        """Directories under which ``file://`` URLs may be read (``os.pathsep``-separated setting), resolved
        once: every photo read checks against them."""
        return tuple(os.path.realpath(p) for p in self.file_roots.split(os.pathsep) if p)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)


def _env_name(name: str) -> str:
    """The environment variable of setting ``name``."""
    return next(f.metadata["env"] for f in fields(Settings) if f.name == name)


ENV_VARS: frozenset[str] = frozenset(f.metadata["env"] for f in fields(Settings))
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _convert(name: str, raw: str, type_name: object) -> object:
    if str(type_name) == "bool":
        if raw.strip().lower() not in _BOOLS:
            raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")
        return _BOOLS[raw.strip().lower()]
    kind = {"int": int, "float": float, "str": str}[str(type_name)]
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
