"""Streaming readers for the two inputs of the vocabulary step: a search-query log and a user-tag manifest.

Both are read line by line in binary (memory stays flat: bounded counters, a bounded parse cache and a
fixed-size photo sample), and every line that cannot be used is counted with its line number and a reason
instead of stopping the run, unless ``strict`` asks for the first one to be an error.

* Query log: TSV ``query<TAB>count``; an optional first line ``query<TAB>count`` is a header.
* Manifest: JSONL ``{"path", "owner", "user_tags": [...], "labels"?: [...]}``; ``path`` is relative to the
  manifest's folder (or absolute, or ``file://``); ``labels`` (clean truth) is only read for ``--truth``.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import orjson

from trainer.vocab.counting import DistinctCount, HeavyHitters, stable_hash
from trainer.vocab.normalize import TagNormalizer, fold

Progress = Callable[[int], None]  # called with the bytes read so far
_PRUNE_EVERY = 1 << 16
_MAX_EXAMPLES = 20
_MAX_FORMS = 32
_QUERY_CACHE = 1 << 14


class InputError(ValueError):
    """An input that cannot be used: the message names the file, the line and the fix."""


@dataclass
class BadLines:
    """Unusable lines of one input: how many, why, and the first few with their line numbers."""

    file: str
    total: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, reason: str, strict: bool) -> None:
        if strict:
            raise InputError(
                f"{self.file}:{line}: {reason} (run without --strict to count and skip bad lines)"
            )
        self.total += 1
        self.reasons[reason.split(":")[0]] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append((line, reason))

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "reasons": dict(self.reasons),
            "examples": [list(e) for e in self.examples],
        }


@dataclass
class SearchDemand:
    """Query volume per set of tags a query contains (``("beach", "sunset") → 1234``)."""

    lines: int
    queries: int  # usable lines
    volume: int  # sum of their counts
    tagsets: HeavyHitters
    bad: BadLines

    def per_tag(self) -> Counter:
        """Search volume reaching each tag: every query counts for each tag it contains."""
        demand: Counter = Counter()
        for tags, count in self.tagsets.counts.items():
            for tag in tags:
                demand[tag] += count
        return demand

    def coverage(self, vocabulary: set[str], ignore: Callable[[str], bool]) -> dict[str, float]:
        """Share of all search volume whose query names any vocabulary tag (``any``), and whose every tag
        other than ``ignore``-d ones (stop tags) is in the vocabulary (``all``). Evicted long-tail queries
        count as not covered, so both are lower bounds."""
        hit_any = hit_all = 0
        for tags, count in self.tagsets.counts.items():
            content = [t for t in tags if not ignore(t)]
            if any(t in vocabulary for t in content):
                hit_any += count
                if all(t in vocabulary for t in content):
                    hit_all += count
        total = max(self.volume, 1)
        return {"any": hit_any / total, "all": hit_all / total}


def _utf8_error(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8: byte {exc.start + 1} of the line"
    return None


def read_query_log(
    path: Path,
    normalizer: TagNormalizer,
    strict: bool = False,
    progress: Progress | None = None,
    capacity: int = 50_000,
) -> SearchDemand:
    """Stream a ``query<TAB>count`` log into search demand per tag set."""
    bad = BadLines(str(path))
    tagsets = HeavyHitters(capacity)
    counts = tagsets.counts

    @lru_cache(maxsize=_QUERY_CACHE)  # the head of a log repeats; the long tail must not grow memory
    def parse(raw: bytes) -> tuple[str, ...] | None:
        try:
            return normalizer.tags_of(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return None

    lines = queries = volume = 0
    with _open(path) as fh:
        for lines, line in enumerate(fh, 1):
            query, tab, rest = line.partition(b"\t")
            try:
                if not tab or b"\t" in rest:
                    raise ValueError
                count = int(rest)
            except ValueError:
                if not line.strip():
                    continue
                if lines == 1 and query.strip().lower() == b"query":
                    continue  # header
                if not tab or b"\t" in rest:
                    columns = line.count(b"\t") + 1
                    reason = f"wrong column count: {columns} columns, expected 2 (query<TAB>count)"
                else:
                    reason = f"count is not an integer: {rest.strip()[:40]!r}"
                bad.add(lines, _utf8_error(line) or reason, strict)
                continue
            tags = parse(query)
            if tags is None:
                bad.add(lines, _utf8_error(query) or "invalid UTF-8", strict)
                continue
            if count < 0:
                bad.add(lines, f"negative count: {count}", strict)
                continue
            queries += 1
            volume += count
            counts[tags] = counts.get(tags, 0) + count
            if not lines & (_PRUNE_EVERY - 1):
                if len(counts) > capacity:
                    tagsets.prune()
                    counts = tagsets.counts
                if progress is not None:
                    progress(fh.tell())
    tagsets.prune()
    return SearchDemand(lines=lines, queries=queries, volume=volume, tagsets=tagsets, bad=bad)


@dataclass(frozen=True)
class ProbePhoto:
    """A photo kept in the fixed-size sample the visualness probe looks at."""

    path: Path
    owner: int  # stable hash: the probe's folds split by owner
    tags: frozenset[str]


@dataclass
class TagUsage:
    """How many distinct photos and owners use each tag, plus a uniform photo sample for the probe."""

    lines: int
    photos: int
    owners: DistinctCount
    tag_photos: HeavyHitters
    tag_owners: dict[str, DistinctCount]
    forms: dict[str, Counter]  # tag -> folded surface forms users wrote for it
    sample: list[ProbePhoto]
    truth: Counter  # clean labels (folded) -> photos, when the manifest has them
    bad: BadLines


def _image_path(raw: object, root: Path) -> Path | None:
    if not isinstance(raw, str) or not raw:
        return None
    if raw.startswith("file://"):
        return Path(raw[len("file://") :])
    if "://" in raw:
        return None  # remote images are not fetched by the vocabulary step
    return root / raw


def _validate_photo(record: object) -> str | None:
    if not isinstance(record, dict):
        return f"not a JSON object: {type(record).__name__}"
    tags = record.get("user_tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return "user_tags must be a list of strings"
    owner = record.get("owner")
    if owner is not None and not isinstance(owner, (str, int)):
        return f"owner must be a string, got {type(owner).__name__}"
    return None


def read_manifest(
    path: Path,
    normalizer: TagNormalizer,
    strict: bool = False,
    progress: Progress | None = None,
    sample_size: int = 1500,
    seed: int = 0,
    capacity: int = 100_000,
) -> TagUsage:
    """Stream a user-tag manifest into per-tag photo and owner counts and a reservoir sample of photos.

    A photo without an owner counts as one shared unknown owner, so anonymous uploads cannot add owners."""
    bad = BadLines(str(path))
    tag_photos = HeavyHitters(capacity)
    counts = tag_photos.counts
    tag_owners: dict[str, DistinctCount] = {}
    forms: dict[str, Counter] = {}
    owners = DistinctCount(k=4096)
    truth: Counter = Counter()
    sample: list[ProbePhoto] = []
    rng = random.Random(seed)
    root = path.parent
    lines = photos = sampled_from = 0
    with _open(path) as fh:
        for lines, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                bad.add(lines, _utf8_error(line) or f"broken JSON: {exc}", strict)
                continue
            problem = _validate_photo(record)
            if problem is not None:
                bad.add(lines, problem, strict)
                continue
            photos += 1
            owner_hash = stable_hash(str(record.get("owner") or "\0unknown"))
            owners.add(owner_hash)
            tags: set[str] = set()
            for raw in record["user_tags"]:
                found = normalizer.tags_in(raw)
                tags.update(found)
                if len(found) == 1:
                    _note_form(forms, found[0], raw)
            for tag in tags:
                counts[tag] = counts.get(tag, 0) + 1
                sketch = tag_owners.get(tag)
                if sketch is None:
                    sketch = tag_owners[tag] = DistinctCount()
                sketch.add(owner_hash)
            labels = record.get("labels")
            if isinstance(labels, list):
                truth.update(fold(x) for x in labels if isinstance(x, str))
            image = _image_path(record.get("path"), root)
            if image is not None:
                sampled_from += 1
                item = ProbePhoto(image, owner_hash, frozenset(tags))
                if len(sample) < sample_size:
                    sample.append(item)
                else:
                    slot = rng.randrange(sampled_from)
                    if slot < sample_size:
                        sample[slot] = item
            if not lines & (_PRUNE_EVERY - 1):
                if len(counts) > capacity:
                    for tag in tag_photos.prune():
                        tag_owners.pop(tag, None)
                        forms.pop(tag, None)
                    counts = tag_photos.counts
                if progress is not None:
                    progress(fh.tell())
    for tag in tag_photos.prune():
        tag_owners.pop(tag, None)
        forms.pop(tag, None)
    return TagUsage(lines, photos, owners, tag_photos, tag_owners, forms, sample, truth, bad)


def _note_form(forms: dict[str, Counter], tag: str, raw: str) -> None:
    form = fold(raw)
    if form == tag:
        return
    seen = forms.get(tag)
    if seen is None:
        seen = forms[tag] = Counter()
    if form in seen or len(seen) < _MAX_FORMS:
        seen[form] += 1


def _open(path: Path):  # type: ignore[no-untyped-def]
    """Open an input for binary line reading, with an error that names it and says what is wrong."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable (check its permissions)")
    return path.open("rb", buffering=1 << 20)
