"""Manifests: how a real photo collection is described to the trainer, and how its photos are decoded.

A manifest is a JSONL file, one photo per line::

    {"path": "2016/img_0001.jpg", "user_tags": ["beach", "vacation"], "split": "train", "owner": "u42"}
    {"url": "https://example.org/p/9.jpg", "labels": ["sea", "sky"], "split": "test"}

``path`` (relative to the manifest's folder, or absolute) or ``url`` (``file://``, ``http(s)://``) is
required; ``user_tags`` (what the uploader wrote: the noisy training signal) and ``labels`` (clean, verified
concepts: fine-tuning and evaluation) are lists of strings, at least one of them present; ``split`` and
``owner`` are optional strings. Other keys are kept and ignored. A malformed line is an error that names
the line and the field; a photo that is missing, corrupt or not an image is *skipped*, counted and listed,
because a big collection always has some.

Photos are decoded by the worker's own ``contracts.photos.decode`` (so training sees serving's pixels) once per
(manifest, resolution) into a uint8 ``.npy`` cache beside it: realistic 640–1600 px JPEGs decode slowly,
and every epoch and every experiment reuses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import track

from contracts.photos import decode
from stream.fetch import fetch

#: Keys a manifest line may carry that the trainer reads.
FIELDS = ("path", "url", "user_tags", "labels", "split", "owner")
MAX_PIXELS = 50_000_000
MAX_BYTES = 64 * 1024 * 1024

#: Turns a photo's tags into a multi-hot target (``Vocabulary.encode``).
Encoder = Callable[[list[str]], np.ndarray]


class ManifestError(ValueError):
    """A manifest that cannot be read at all, or a line that breaks the format (names file, line, field)."""


@dataclass(frozen=True)
class PhotoRecord:
    """One manifest line, validated."""

    source: str  # an absolute path or a URL
    user_tags: tuple[str, ...] | None
    labels: tuple[str, ...] | None
    split: str | None = None
    owner: str | None = None


@dataclass
class PhotoSet:
    """Decoded photos of a manifest and their targets over one label space."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    user_targets: np.ndarray | None  # float32 [N, K] from user tags, where every kept line has them
    clean_targets: np.ndarray | None  # float32 [N, K] from clean labels, where every kept line has them
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)


def _string_list(value: object, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: {key!r} must be a list of strings, got {json.dumps(value)[:80]}")
    return tuple(value)


def read_manifest(manifest: Path, split: str | None = None) -> list[PhotoRecord]:
    """Validate and read every line of ``manifest`` (only lines of ``split`` when given)."""
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist (expected a JSONL file)")
    records = []
    try:
        text = manifest.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"manifest {manifest} is not UTF-8 text (byte {exc.start}): expected JSONL"
        ) from None
    except OSError as exc:
        raise ManifestError(f"manifest {manifest}: {exc.strerror or exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{manifest} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: each line must be a JSON object")
        if ("path" in row) == ("url" in row):
            raise ManifestError(f"{where}: give exactly one of 'path' or 'url'")
        source = row.get("path", row.get("url"))
        if not isinstance(source, str) or not source:
            raise ManifestError(f"{where}: 'path'/'url' must be a non-empty string")
        if "path" in row:
            source = str(Path(source) if os.path.isabs(source) else (manifest.parent / source).absolute())
        user = _string_list(row["user_tags"], where, "user_tags") if "user_tags" in row else None
        labels = _string_list(row["labels"], where, "labels") if "labels" in row else None
        if user is None and labels is None:
            raise ManifestError(f"{where}: give 'user_tags' or 'labels' (or both)")
        for key in ("split", "owner"):
            if key in row and not isinstance(row[key], str):
                raise ManifestError(f"{where}: {key!r} must be a string")
        if split is None or row.get("split") == split:
            records.append(PhotoRecord(source, user, labels, row.get("split"), row.get("owner")))
    if not records:
        raise ManifestError(f"{manifest}: no photos" + (f" with split {split!r}" if split else ""))
    return records


def read_photo_bytes(source: str) -> bytes:
    """The bytes of a manifest photo: a local path, a ``file://`` URL or a public ``http(s)`` URL."""
    if source.startswith(("http://", "https://")):
        return fetch(source, [], MAX_BYTES, timeout_s=30.0)  # the worker's fetch: size cap, SSRF guard
    if source.startswith("file://"):
        source = urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    with open(source, "rb") as fh:
        return fh.read(MAX_BYTES + 1)


def decode_photos(
    sources: list[str], size: int, description: str = "decoding"
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode ``sources`` to ``size``x``size`` uint8; returns (images, kept indices, skipped with reasons)."""
    images, kept, skipped = [], [], []
    for i, source in enumerate(track(sources, description=description, transient=True)):
        try:
            images.append(decode(read_photo_bytes(source), (size, size), max_pixels=MAX_PIXELS))
        except Exception as exc:  # noqa: BLE001 - any unreadable photo is skipped and reported
            skipped.append((source, f"{type(exc).__name__}: {exc}"))
            continue
        kept.append(i)
    empty = np.zeros((0, size, size, 3), np.uint8)
    return (np.stack(images) if images else empty), kept, skipped


def cached_decode(
    records: list[PhotoRecord], size: int, cache_dir: Path | None, description: str = "decoding"
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """``decode_photos`` through a ``.npy`` cache keyed by the sources (and their mtimes) and ``size``."""
    sources = [r.source for r in records]
    if cache_dir is None:
        return decode_photos(sources, size, description)
    key = hashlib.sha1(json.dumps([size, sources, [_mtime(s) for s in sources]]).encode()).hexdigest()[:16]
    images_path, meta_path = cache_dir / f"{key}-{size}.npy", cache_dir / f"{key}-{size}.json"
    if images_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return np.load(images_path), meta["kept"], [tuple(s) for s in meta["skipped"]]  # type: ignore[misc]
    images, kept, skipped = decode_photos(sources, size, description)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(images_path, images)
    meta_path.write_text(json.dumps({"kept": kept, "skipped": skipped}))
    return images, kept, skipped


def _mtime(source: str) -> float:
    try:
        return os.stat(source).st_mtime
    except OSError:
        return -1.0


def encode_targets(rows: Iterable[tuple[str, ...] | None], encode: Encoder) -> np.ndarray | None:
    """Stack ``encode(tags)`` over rows; None when any row lacks that kind of tag."""
    rows = list(rows)
    if not rows or any(r is None for r in rows):
        return None
    return np.stack([encode(list(r)) for r in rows]).astype(np.float32)


def load_photo_set(
    manifest: Path, encode: Encoder, size: int, split: str | None = None, cache_dir: Path | None = None
) -> PhotoSet:
    """Read ``manifest``, decode its photos (cached) and encode user tags and labels with ``encode``."""
    records = read_manifest(manifest, split)
    images, kept, skipped = cached_decode(records, size, cache_dir, f"decoding {manifest.name}")
    if not kept:
        raise ManifestError(f"{manifest}: none of its {len(records)} photos could be read")
    rows = [records[i] for i in kept]
    return PhotoSet(
        images,
        encode_targets((r.user_tags for r in rows), encode),
        encode_targets((r.labels for r in rows), encode),
        skipped,
    )
