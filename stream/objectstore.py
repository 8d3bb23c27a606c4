"""Photos in S3-compatible object storage: read ``s3://bucket/key`` uploads and list a prefix's photos.

The contract is the one ``stream/fetch.py`` keeps for ``http(s)``: a bucket must be on an explicit allow-list
(none by default, so every ``s3://`` upload is ``forbidden_url`` until an operator names buckets), bytes are
capped (a declared ``ContentLength`` over the cap is refused before any body byte is read; the body is read
in chunks and refused past the cap), and one deadline covers the request and the body, however slowly it
trickles. Failures map onto the same codes: no such key or bucket is ``not_found``; access denied and other
answers that retrying cannot change are ``fetch_failed``; throttling, 5xx, timeouts, refused connections and
missing credentials raise ``SourceUnavailable`` (retried, then ``fetch_unavailable``, replayable).

Credentials come from botocore's standard chain (``AWS_*`` variables, IRSA web identity, EKS Pod Identity,
the shared config files, instance metadata); an endpoint URL points the client at MinIO, Ceph or moto.
botocore is the ``s3`` extra: without it nothing here is imported until a bucket is allowed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from contracts.records import ErrorCode, PermanentError, SourceUnavailable
from stream.clients import IMAGE_SUFFIXES
from stream.settings import Settings, SettingsError

_CHUNK = 64 * 1024
MAX_KEY_BYTES = 1024  # S3's own limit on a key
#: Today's S3 bucket naming rules (3-63 characters, lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ADDRESSING_STYLES = ("auto", "path", "virtual")
#: Error codes S3 (and MinIO, Ceph) answers when the store, not the object, is the problem right now.
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
     "InternalError", "ServiceUnavailable", "ExpiredToken", "TokenRefreshRequired"}
)  # fmt: skip
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket"})
#: One client per process and timeout: botocore clients are thread-safe and keep a connection pool,
#: creating one is not (and costs milliseconds and a credential look-up).
_CLIENTS: dict[tuple[S3Options, float, int], Any] = {}
_CLIENTS_LOCK = threading.Lock()
#: Connections kept per client: the worker's fetch pool runs up to ``batch_size`` (64) reads at once.
_POOL_CONNECTIONS = 64


class ListingError(ValueError):
    """Listing a prefix failed; the message names the prefix and the store's answer."""


@dataclass(frozen=True)
class S3Options:
    """Where the object store is and which buckets uploads may name (settings ``DARKROOM_S3_*``)."""

    #: ``DARKROOM_S3_ENDPOINT_URL``: an S3-compatible server (MinIO, Ceph, moto); empty means AWS itself
    endpoint_url: str | None = None
    #: ``DARKROOM_S3_ALLOWED_BUCKETS`` (comma-separated): the only buckets ``s3://`` uploads may read
    allowed_buckets: frozenset[str] = frozenset()
    #: ``DARKROOM_S3_REGION``: empty means botocore's own (``AWS_REGION``, the config file)
    region: str | None = None
    #: ``DARKROOM_S3_ADDRESSING_STYLE``: ``path`` for most MinIO/Ceph set-ups, ``auto`` for AWS
    addressing_style: str = "auto"

    def __post_init__(self) -> None:
        """Refuse values that would only fail later, at the first upload, far from their cause."""
        for bucket in self.allowed_buckets:
            if not _BUCKET.fullmatch(bucket) or ".." in bucket:
                raise SettingsError(f"DARKROOM_S3_ALLOWED_BUCKETS: {bucket!r} is not an S3 bucket name")
        if self.addressing_style not in _ADDRESSING_STYLES:
            raise SettingsError(
                f"DARKROOM_S3_ADDRESSING_STYLE={self.addressing_style!r}: use one of {', '.join(_ADDRESSING_STYLES)}"
            )
        if self.endpoint_url and not re.match(r"https?://[^/]", self.endpoint_url):
            raise SettingsError(f"DARKROOM_S3_ENDPOINT_URL={self.endpoint_url!r} is not an http(s) URL")
        if self.allowed_buckets and importlib.util.find_spec("botocore") is None:
            raise SettingsError(
                "DARKROOM_S3_ALLOWED_BUCKETS is set but botocore is not installed: pip install 'darkroom[s3]'"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Options:
        """The object-store part of the worker's settings (``DARKROOM_S3_*``)."""
        buckets = settings.s3_allowed_buckets.split(",")
        return cls(
            endpoint_url=settings.s3_endpoint_url or None,
            allowed_buckets=frozenset(b.strip() for b in buckets if b.strip()),
            region=settings.s3_region or None,
            addressing_style=settings.s3_addressing_style or "auto",
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Options:
        """Read the ``DARKROOM_S3_*`` variables of ``env`` (default: ``os.environ``)."""
        return cls.from_settings(Settings.from_env(env))


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key; the key is taken literally, as the AWS CLI does.

    ``forbidden_url`` for anything else, and for keys S3 or a path-style proxy could read as another object:
    ``.``/``..`` segments (``s3://ok/../other/x`` must not reach bucket ``other``), control characters, text
    that is not UTF-8, more than 1024 bytes.
    """
    if url[:5].lower() != "s3://":
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"not an s3:// URL: {url[:200]!r}")
    bucket, _, key = url[5:].partition("/")
    if not key:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"s3 URL without a key: {url[:200]!r}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"s3 key is not valid UTF-8: {url[:200]!r}") from None
    if size > MAX_KEY_BYTES:
        raise PermanentError(
            ErrorCode.FORBIDDEN_URL, f"s3 key is {size} bytes, S3's limit is {MAX_KEY_BYTES}"
        )
    if any(ord(c) < 0x20 or c == "\x7f" for c in key):
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"control character in s3 key {url[:200]!r}")
    if any(part in (".", "..") for part in key.split("/")):
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"'.' or '..' segment in s3 key {url[:200]!r}")
    return bucket, key


def read_s3(url: str, options: S3Options, max_bytes: int, timeout_s: float) -> bytes:
    """Return the bytes of the object at ``s3://bucket/key``, within ``max_bytes`` and ``timeout_s``.

    PermanentError (with the dead-letter code) when retrying cannot help, SourceUnavailable when it may.
    """
    deadline = time.monotonic() + timeout_s
    bucket, key = parse_s3_url(url)
    if bucket not in options.allowed_buckets:
        raise PermanentError(
            ErrorCode.FORBIDDEN_URL, f"bucket {bucket[:100]!r} is not in DARKROOM_S3_ALLOWED_BUCKETS"
        )
    from botocore import exceptions as boto
    from urllib3.exceptions import HTTPError as URLLib3Error

    #: no usable answer this time: timeouts, connections, credentials the chain could not find or refresh
    transient = (boto.ConnectionError, boto.HTTPClientError, boto.NoCredentialsError,
                 boto.PartialCredentialsError, boto.CredentialRetrievalError, URLLib3Error, OSError)  # fmt: skip
    try:
        # no retries inside botocore: the worker retries SourceUnavailable itself, with backoff and a count
        response = _client(options, timeout_s, attempts=1).get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            length = response.get("ContentLength")
            if length is not None and length > max_bytes:
                raise PermanentError(
                    ErrorCode.TOO_LARGE, f"{url[:200]!r} is {length} bytes, limit {max_bytes}"
                )
            data = _read_capped(body, url, max_bytes, deadline)
        finally:
            body.close()
    except boto.ClientError as exc:
        raise _client_error(exc, url) from None
    except transient as exc:
        raise SourceUnavailable(
            f"cannot read {url[:200]!r}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    except boto.BotoCoreError as exc:  # e.g. a parameter botocore refuses: retrying cannot change it
        raise PermanentError(ErrorCode.FETCH_FAILED, _cannot_read(url, exc)) from None
    if length is not None and len(data) != length:  # the connection ended early
        raise SourceUnavailable(f"{url[:200]!r}: got {len(data)} of {length} bytes")
    return data


def _read_capped(body: Any, url: str, max_bytes: int, deadline: float) -> bytes:
    """Read the body chunk by chunk: stop past ``max_bytes`` and at the deadline.

    ``read1`` of the underlying urllib3 response returns what one socket read gives; botocore's ``read(n)``
    would wait for all ``n`` bytes, resetting the socket timeout at each trickled byte, deadline or not.
    """
    raw = body._raw_stream  # botocore.response.StreamingBody exposes no read1 of its own
    chunks: list[bytes] = []
    total = 0
    while not raw.closed:  # http.client drops the socket at the end of the body
        body.set_socket_timeout(_remaining(deadline, url))
        chunk = raw.read1(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise PermanentError(ErrorCode.TOO_LARGE, f"{url[:200]!r} is over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _remaining(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise SourceUnavailable(f"reading {url[:200]!r} took longer than its deadline")
    return left


def _cannot_read(url: str, exc: Exception) -> str:
    return f"cannot read {url[:200]!r}: {type(exc).__name__}: {str(exc)[:300]}"


def _client_error(exc: Any, url: str) -> Exception:
    """The store answered with an error: which dead-letter code, or worth a retry."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    detail = f"{url[:200]!r}: {code or 'HTTP ' + str(status)} {str(error.get('Message', ''))[:200]}".rstrip()
    if code in _NOT_FOUND_CODES or status in (404, 410):
        return PermanentError(ErrorCode.NOT_FOUND, detail)
    if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
        return SourceUnavailable(detail)
    # AccessDenied (403) and the rest: the store refuses this object; fixing its policy and replaying helps
    return PermanentError(ErrorCode.FETCH_FAILED, detail)


def list_s3_photos(prefix_url: str, options: S3Options, page_size: int = 1000) -> Iterator[str]:
    """``s3://bucket/key`` of every photo (by file suffix) under ``s3://bucket/prefix``, page by page.

    For ``darkroom publish`` and ``backfill``: the bucket need not be on the worker's allow-list (the
    worker decides what it reads). Any failure raises ListingError naming the prefix and the cause.
    """
    bucket, _, prefix = prefix_url[5:].partition("/")
    if prefix_url[:5].lower() != "s3://" or not _BUCKET.fullmatch(bucket):
        raise ListingError(f"{prefix_url[:200]!r} is not s3://bucket/prefix with a valid bucket name")
    from botocore.exceptions import BotoCoreError, ClientError

    pages = _client(options, timeout_s=30.0, attempts=3).get_paginator("list_objects_v2")
    try:
        for page in pages.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            for item in page.get("Contents", []):
                key = item["Key"]
                if os.path.splitext(key)[1].lower() in IMAGE_SUFFIXES:
                    yield f"s3://{bucket}/{key}"
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ListingError(
            f"cannot list {prefix_url[:200]!r}: {error.get('Code')} {error.get('Message', '')}"
        ) from None
    except BotoCoreError as exc:
        raise ListingError(f"cannot list {prefix_url[:200]!r}: {exc}") from None


def _client(options: S3Options, timeout_s: float, attempts: int) -> Any:
    """The process's S3 client for these options, connect/read timeout and attempts, made once."""
    with _CLIENTS_LOCK:
        key = (options, timeout_s, attempts)
        if key not in _CLIENTS:
            import botocore.session
            from botocore.config import Config

            config = Config(
                region_name=options.region,
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"mode": "standard", "total_max_attempts": attempts},
                max_pool_connections=_POOL_CONNECTIONS,
                # the body is read beneath botocore (see _read_capped), where its checksum wrapper never looks
                response_checksum_validation="when_required",
                s3={"addressing_style": options.addressing_style},
                user_agent_extra="darkroom-tagger",
            )
            _CLIENTS[key] = botocore.session.get_session().create_client(
                "s3", endpoint_url=options.endpoint_url, config=config
            )
        return _CLIENTS[key]
