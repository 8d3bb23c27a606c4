"""The fetch + decode stage's functions: an upload's photo into the model's input, or a dead letter."""

from __future__ import annotations

import logging
import time

import numpy as np

from contracts.photos import decode
from contracts.records import (
    ErrorCode,
    PermanentError,
    Upload,
)
from contracts.tensors import ModelInput
from stream import metrics
from stream.fetch import fetch
from stream.settings import Settings

log = logging.getLogger(__name__)


def decode_photo(data: bytes | bytearray, settings: Settings, model_input: ModelInput) -> np.ndarray:
    """Decode into the model's input; PermanentError for anything, a decoder bug on hostile input included."""
    try:
        return decode(
            data, (model_input.width, model_input.height), settings.max_image_pixels, settings.max_frames
        )
    except PermanentError:
        raise
    except Exception as exc:  # a decoder bug on hostile input must not take the worker down
        raise PermanentError(ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from None


def read_and_decode_upload(
    upload: Upload, settings: Settings, model_input: ModelInput
) -> tuple[Upload, np.ndarray]:
    """A ``file://`` photo read (under the allowed roots) and decoded in one go."""
    started = time.monotonic()
    s = settings
    try:
        data = fetch(upload.url, s.allowed_roots, s.max_image_bytes, s.fetch_timeout_s, s.allow_loopback_http)
        return upload, decode_photo(data, settings, model_input)
    finally:
        metrics.LOAD_SECONDS.observe(time.monotonic() - started)
