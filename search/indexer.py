"""``darkroom index`` and ``darkroom search``: the reference consumer of ``photo-tags``.

The index is one SQLite file. ``photos`` holds, per photo_id, the tags of the newest model version seen
(versions compare numerically; an older or equal version never overwrites, so replays change nothing).
Search runs on an FTS5 table over the tag vocabulary (porter stemming: "beaches" finds "beach"), joined to
each photo's scored tags. The indexer also reads ``photo-uploads`` (for each photo's URL, so the page can
show thumbnails) and ``photo-uploads-dlq`` (for the dead-letter counters). Every batch of records and the
next offsets of their partitions are written in one transaction: a restarted indexer resumes exactly where
the index stands, and a search never sees a photo half-way between two versions.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stream.events import PermanentError, parse_rfc3339, parse_upload
from stream.settings import Settings, SettingsError

console = Console(stderr=True)

DEFAULT_DB_ENV = "DARKROOM_INDEX_DB"
DEFAULT_DB = Path("run/index.sqlite")
MAX_QUERY_TERMS = 8
SCHEMA_VERSION = "2"  # 2: photos.url, the URL of the tag event whose tags the row holds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    photo_id      TEXT PRIMARY KEY,
    model         TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    tags          TEXT NOT NULL,  -- the event's tags, JSON, sorted by score
    uploaded_at   TEXT NOT NULL,
    tagged_at     TEXT NOT NULL,
    indexed_at    REAL NOT NULL,
    url           TEXT  -- the tag event's url (null from workers that predate it: then the upload's)
);
CREATE INDEX IF NOT EXISTS photos_newest ON photos (tagged_at DESC);
CREATE TABLE IF NOT EXISTS tag_names (tag_id INTEGER PRIMARY KEY, tag TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE IF NOT EXISTS tag_search USING fts5 (tag, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS photo_tags (
    photo_id TEXT NOT NULL,
    tag_id   INTEGER NOT NULL,
    score    REAL NOT NULL,
    PRIMARY KEY (photo_id, tag_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS photo_tags_by_tag ON photo_tags (tag_id, score DESC);
CREATE TABLE IF NOT EXISTS uploads (
    photo_id    TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    owner       TEXT,
    uploaded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    source_topic     TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    INTEGER NOT NULL,
    photo_id         TEXT,
    error            TEXT NOT NULL,
    at               TEXT NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE TABLE IF NOT EXISTS offsets (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


class InvalidEvent(ValueError):
    """A record the index cannot use; the message names the field and what was expected."""


# -- records ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TagEvent:
    """A validated ``photo-tags`` value (schemas/photo-tags.schema.json)."""

    photo_id: str
    tags: tuple[tuple[str, float], ...]
    model: str
    model_version: int
    uploaded_at: str
    tagged_at: str
    url: str | None = None


def parse_tag_event(raw: bytes | None) -> TagEvent:
    """Validate a raw ``photo-tags`` value; unknown fields are ignored (the contract evolves additively)."""
    data = _json_object(raw)
    photo_id = _string(data, "photo_id")
    model = _string(data, "model")
    version_text = _string(data, "model_version")
    if not version_text.isascii() or not version_text.isdigit() or version_text.startswith("0"):
        raise InvalidEvent(f"'model_version' must be a positive integer as a string, got {version_text!r}")
    tags = data.get("tags")
    if not isinstance(tags, list):
        raise InvalidEvent("'tags' must be a list of {tag, score} objects")
    parsed: list[tuple[str, float]] = []
    for item in tags:
        tag = item.get("tag") if isinstance(item, dict) else None
        score = item.get("score") if isinstance(item, dict) else None
        if (
            not isinstance(tag, str)
            or not tag
            or isinstance(score, bool)
            or not isinstance(score, int | float)
        ):
            raise InvalidEvent(
                f"each tag must be {{'tag': non-empty str, 'score': number}}, got {item!r:.100}"
            )
        if not 0.0 <= score <= 1.0:
            raise InvalidEvent(f"score of tag {tag!r} is {score}, expected 0..1")
        parsed.append((tag, float(score)))
    url = data.get("url")
    if url is not None and (not isinstance(url, str) or not url):
        raise InvalidEvent("'url' must be a non-empty string when present")
    stamps = {key: _string(data, key) for key in ("uploaded_at", "tagged_at")}
    for key, text in stamps.items():
        try:
            parse_rfc3339(text)
        except ValueError:
            raise InvalidEvent(f"'{key}' {text!r} is not an RFC 3339 timestamp") from None
    return TagEvent(
        photo_id, tuple(parsed), model, int(version_text), stamps["uploaded_at"], stamps["tagged_at"], url
    )


@dataclass(frozen=True)
class DeadLetter:
    """The fields of a ``photo-uploads-dlq`` value the index counts (schemas/photo-uploads-dlq.schema.json)."""

    source: tuple[str, int, int]
    photo_id: str | None
    error: str
    at: str


def parse_dead_letter(raw: bytes | None) -> DeadLetter:
    """Validate a raw dead letter; its source (topic, partition, offset) identifies it across redeliveries."""
    data = _json_object(raw)
    source = data.get("source")
    if not isinstance(source, dict):
        raise InvalidEvent("'source' must be an object {topic, partition, offset}")
    topic, partition, offset = source.get("topic"), source.get("partition"), source.get("offset")
    if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(offset, int):
        raise InvalidEvent(
            f"'source' must be {{topic: str, partition: int, offset: int}}, got {source!r:.100}"
        )
    photo_id = data.get("photo_id")
    if photo_id is not None and not isinstance(photo_id, str):
        raise InvalidEvent("'photo_id' must be a string or null")
    return DeadLetter((topic, partition, offset), photo_id, _string(data, "error"), _string(data, "at"))


def _json_object(raw: bytes | None) -> dict:
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(data).__name__}")
    return data


def _string(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"'{key}' is required and must be a non-empty string")
    return value


# -- live counters ---------------------------------------------------------------------------------------------
class LiveCounters:
    """Throughput and upload → tag latency over the tag events of the last ``window_s`` seconds (by their
    ``tagged_at``), shared between the consuming thread and the page's threads."""

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, float | None]] = deque()
        self.applied = 0

    def record(self, event: TagEvent, first_version: bool) -> None:
        """Count one applied tag event; its latency only if it tagged a new photo (a re-tag by a backfill
        keeps the photo's original upload time, which says nothing about the pipeline's latency)."""
        tagged = parse_rfc3339(event.tagged_at).timestamp()
        latency = tagged - parse_rfc3339(event.uploaded_at).timestamp() if first_version else None
        with self._lock:
            self.applied += 1
            self._recent.append((tagged, latency if latency is None or latency >= 0 else None))

    def snapshot(self, now: float | None = None) -> dict:
        """``{"tag_events", "throughput_per_s", "latency_ms": {"p50", "p95"} | None}`` for the window."""
        now = time.time() if now is None else now
        with self._lock:
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()
            recent = list(self._recent)
            applied = self.applied
        throughput = 0.0
        if recent:
            span = max(1.0, now - min(t for t, _ in recent))
            throughput = len(recent) / span
        latencies = sorted(lat for _, lat in recent if lat is not None)
        latency = None
        if latencies:
            latency = {
                "p50": round(1000 * latencies[len(latencies) // 2]),
                "p95": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]),
            }
        return {
            "tag_events": applied,
            "throughput_per_s": round(throughput, 2),
            "latency_ms": latency,
            "window_s": self.window_s,
        }


# -- the index -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    """One photo as the index has it, with the query's relevance (the sum of the matched tags' scores)."""

    photo_id: str
    tags: list[dict]
    model: str
    model_version: str
    uploaded_at: str
    tagged_at: str
    relevance: float = 0.0

    def to_json(self) -> dict:
        return {
            "photo_id": self.photo_id,
            "tags": self.tags,
            "model": self.model,
            "model_version": self.model_version,
            "uploaded_at": self.uploaded_at,
            "tagged_at": self.tagged_at,
            "relevance": round(self.relevance, 4),
        }


@dataclass
class Record:
    """One consumed Kafka record, as the index applies it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float | None = None  # seconds; an upload without uploaded_at is dated by it


@dataclass
class Applied:
    """What one batch did to the index."""

    tag_events: int = 0  # events that changed a photo (new photo or newer model version)
    stale: int = 0  # replays and older versions: ignored
    uploads: int = 0
    dead_letters: int = 0
    invalid: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Topics:
    """The names of the three topics (from Settings: DARKROOM_*_TOPIC)."""

    uploads: str = "photo-uploads"
    tags: str = "photo-tags"
    dlq: str = "photo-uploads-dlq"

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(settings.uploads_topic, settings.tags_topic, settings.dlq_topic)

    def all(self) -> list[str]:
        return [self.uploads, self.tags, self.dlq]


class SearchIndex:
    """The SQLite search index: one writer (the indexer), any number of readers (search, the page)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(
                    f"no search index at {self.path}; build one with `darkroom index --db {self.path}`"
                )
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(photos)")}
            if "url" not in columns:  # an index written by schema version 1
                self._db.execute("ALTER TABLE photos ADD COLUMN url TEXT")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        self._db.execute("PRAGMA busy_timeout = 5000")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writing -----------------------------------------------------------------------------------------------
    def apply(
        self, records: Sequence[Record], topics: Topics, counters: LiveCounters | None = None
    ) -> Applied:
        """Apply a batch and remember each partition's next offset, all in one transaction."""
        applied = Applied()
        changed: list[tuple[TagEvent, bool]] = []
        with self._transaction() as db:
            for rec in records:
                try:
                    if rec.topic == topics.tags:
                        event = parse_tag_event(rec.value)
                        outcome = self._upsert_tags(db, event)
                        if outcome is None:
                            applied.stale += 1
                        else:
                            applied.tag_events += 1
                            changed.append((event, outcome))
                    elif rec.topic == topics.uploads:
                        self._upsert_upload(db, rec.value, rec.timestamp)
                        applied.uploads += 1
                    elif rec.topic == topics.dlq:
                        letter = parse_dead_letter(rec.value)
                        db.execute(
                            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                            (*letter.source, letter.photo_id, letter.error, letter.at),
                        )
                        applied.dead_letters += 1
                except InvalidEvent as exc:
                    applied.invalid.append(f"{rec.topic}[{rec.partition}]@{rec.offset}: {exc}")
                db.execute(
                    "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                    "DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                    (rec.topic, rec.partition, rec.offset + 1),
                )
        if counters is not None:
            for event, first in changed:
                counters.record(event, first)
        return applied

    def upsert(self, event: TagEvent) -> bool:
        """Apply one tag event outside the consumer (tests, tools); True if it changed the index."""
        with self._transaction() as db:
            return self._upsert_tags(db, event) is not None

    def _upsert_tags(self, db: sqlite3.Connection, event: TagEvent) -> bool | None:
        """Replace the photo's tags if ``event`` is from a newer model version. Returns None if it is not
        (a replay or an older version), else whether the photo is new to the index."""
        row = db.execute("SELECT model_version FROM photos WHERE photo_id = ?", (event.photo_id,)).fetchone()
        if row is not None and row[0] >= event.model_version:
            return None
        tags_json = orjson.dumps([{"tag": t, "score": s} for t, s in event.tags]).decode()
        db.execute(
            "INSERT OR REPLACE INTO photos VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (event.photo_id, event.model, event.model_version, tags_json, event.uploaded_at,
             event.tagged_at, time.time(), event.url),
        )  # fmt: skip
        db.execute("DELETE FROM photo_tags WHERE photo_id = ?", (event.photo_id,))
        for tag, score in event.tags:
            db.execute(
                "INSERT INTO photo_tags VALUES (?, ?, ?) ON CONFLICT DO UPDATE "
                "SET score = max(score, excluded.score)",
                (event.photo_id, self._tag_id(db, tag), score),
            )
        return row is None

    @staticmethod
    def _tag_id(db: sqlite3.Connection, tag: str) -> int:
        row = db.execute("SELECT tag_id FROM tag_names WHERE tag = ?", (tag,)).fetchone()
        if row is not None:
            return row[0]
        tag_id = db.execute("INSERT INTO tag_names (tag) VALUES (?)", (tag,)).lastrowid
        db.execute("INSERT INTO tag_search (rowid, tag) VALUES (?, ?)", (tag_id, tag))
        return tag_id  # type: ignore[return-value]

    @staticmethod
    def _upsert_upload(db: sqlite3.Connection, raw: bytes | None, timestamp: float | None) -> None:
        try:
            upload = parse_upload(raw, timestamp)
        except PermanentError as exc:
            raise InvalidEvent(exc.detail) from None
        db.execute(
            "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)",
            (upload.photo_id, upload.url, upload.owner, upload.uploaded_at),
        )

    def reset(self) -> None:
        """Forget everything: photos, uploads, dead letters and offsets (a new broker, or a rebuild)."""
        with self._transaction() as db:
            for table in (
                "photos",
                "photo_tags",
                "tag_names",
                "tag_search",
                "uploads",
                "dead_letters",
                "offsets",
            ):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    # -- reading -----------------------------------------------------------------------------------------------
    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read of every partition the index has consumed."""
        return {
            (t, p): o for t, p, o in self._db.execute("SELECT topic, partition, next_offset FROM offsets")
        }

    def search(self, query: str, limit: int = 20) -> list[Hit]:
        """Photos carrying a tag that matches every term of ``query``, best first.

        A term matches a tag through FTS5 (case-folded, porter-stemmed); a photo's relevance is the sum, over
        the terms, of its best matching tag's score. Ties go to the most recently tagged photo."""
        terms = query_terms(query)
        if not terms:
            return []
        # The matching tag ids stay inside SQLite: a common term can match more tags than a statement may
        # have variables (32766 in most builds), so only the terms are bound.
        wanted = " UNION ALL ".join(
            f"SELECT {i}, rowid FROM tag_search WHERE tag_search MATCH ?" for i in range(len(terms))
        )
        params = [f'"{term}"' for term in terms]
        sql = f"""
            WITH wanted (term, tag_id) AS ({wanted}),
            best AS (
                SELECT pt.photo_id, w.term, max(pt.score) AS score
                FROM wanted w JOIN photo_tags pt ON pt.tag_id = w.tag_id
                GROUP BY pt.photo_id, w.term
            ),
            matched AS (
                SELECT photo_id, sum(score) AS relevance FROM best
                GROUP BY photo_id HAVING count(*) = ?
            )
            SELECT p.photo_id, p.tags, p.model, p.model_version, p.uploaded_at, p.tagged_at, m.relevance
            FROM matched m JOIN photos p USING (photo_id)
            ORDER BY m.relevance DESC, p.tagged_at DESC, p.photo_id
            LIMIT ?
        """  # noqa: S608 - only placeholders are interpolated
        return [_hit(row) for row in self._db.execute(sql, [*params, len(terms), limit])]

    def recent(self, limit: int = 24) -> list[Hit]:
        """The most recently tagged photos."""
        rows = self._db.execute(
            "SELECT photo_id, tags, model, model_version, uploaded_at, tagged_at, 0.0 FROM photos "
            "ORDER BY tagged_at DESC, photo_id LIMIT ?",
            (limit,),
        )
        return [_hit(row) for row in rows]

    def photo(self, photo_id: str) -> Hit | None:
        """One photo, or None if the index has no tags for it."""
        row = self._db.execute(
            "SELECT photo_id, tags, model, model_version, uploaded_at, tagged_at, 0.0 FROM photos "
            "WHERE photo_id = ?",
            (photo_id,),
        ).fetchone()
        return _hit(row) if row else None

    def url_of(self, photo_id: str) -> str | None:
        """The URL of the event whose tags the index holds for the photo (a photo_id uploaded twice shows the
        photo its tags describe); for tag events without ``url`` (older workers), the latest upload's."""
        row = self._db.execute(
            "SELECT coalesce((SELECT url FROM photos WHERE photo_id = ?1), "
            "(SELECT url FROM uploads WHERE photo_id = ?1))",
            (photo_id,),
        ).fetchone()
        return row[0]

    def counts(self) -> dict:
        """Photos (by model version) and dead letters (by error code)."""
        versions = dict(self._db.execute("SELECT model_version, count(*) FROM photos GROUP BY model_version"))
        errors = dict(self._db.execute("SELECT error, count(*) FROM dead_letters GROUP BY error"))
        return {
            "photos": sum(versions.values()),
            "photos_by_version": {str(v): n for v, n in sorted(versions.items())},
            "dead_letters": sum(errors.values()),
            "dead_letters_by_error": errors,
        }


def query_terms(query: str) -> list[str]:
    """The words of a query (letters and digits only, lower case, at most MAX_QUERY_TERMS, no repeats):
    anything else is a separator, so no input can reach FTS5 as query syntax."""
    words = "".join(c if c.isalnum() else " " for c in query.lower()).split()
    return list(dict.fromkeys(words))[:MAX_QUERY_TERMS]


def _hit(row: tuple) -> Hit:
    photo_id, tags, model, version, uploaded_at, tagged_at, relevance = row
    return Hit(photo_id, orjson.loads(tags), model, str(version), uploaded_at, tagged_at, float(relevance))


# -- consuming -------------------------------------------------------------------------------------------------
def consume(
    index: SearchIndex,
    bootstrap: str,
    topics: Topics,
    counters: LiveCounters | None = None,
    stop: threading.Event | None = None,
    once: bool = False,
    topic_wait_s: float = 30.0,
    settings: Settings | None = None,
) -> Iterator[Applied]:
    """Read the three topics into ``index``, resuming from the offsets it stores; yield each batch's effect.

    Partitions are assigned directly (no consumer-group join, no committed offsets: the index holds them).
    ``once``: stop when every partition is read up to its end as of the start. TLS/SASL come from
    ``settings`` (default: plaintext)."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        TIMESTAMP_NOT_AVAILABLE,
        Consumer,
        KafkaException,
        TopicPartition,
    )

    from stream.kafka_security import librdkafka_config

    stop = stop or threading.Event()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "darkroom-indexer",  # required by librdkafka; never joined, never committed
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,  # bounds upload → searchable latency (Tansu holds fetches this long)
            **librdkafka_config(settings or Settings()),
        }
    )
    try:
        partitions = _wait_for_partitions(consumer, topics.all(), topic_wait_s, stop)
        stored = index.offsets()
        consumer.assign([TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in partitions])
        ends: dict[tuple[str, int], int] = {}
        if once:
            for t, p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if high > max(low, stored.get((t, p), 0)):
                    ends[(t, p)] = high
        while not stop.is_set():
            if once and not ends:
                return
            messages = consumer.consume(num_messages=500, timeout=0.5)
            records = []
            for msg in messages:
                if msg.error():
                    if msg.error().fatal():
                        raise KafkaException(msg.error())
                    continue  # transient: librdkafka retries by itself
                kind, millis = msg.timestamp()
                timestamp = millis / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else None
                records.append(Record(msg.topic(), msg.partition(), msg.offset(), msg.value(), timestamp))
            if records:
                yield index.apply(records, topics, counters)
            if ends:  # positions, not the last record seen: control records are never delivered
                positions = consumer.position([TopicPartition(t, p) for t, p in ends])
                for tp in positions:
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        del ends[(tp.topic, tp.partition)]
    finally:
        consumer.close()


def _wait_for_partitions(
    consumer: object, topics: list[str], wait_s: float, stop: threading.Event
) -> list[tuple[str, int]]:
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + wait_s
    while True:
        metadata = consumer.list_topics(timeout=10)  # type: ignore[attr-defined]
        missing = [t for t in topics if t not in metadata.topics or not metadata.topics[t].partitions]
        if not missing:
            return [(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]
        if time.monotonic() > deadline or stop.is_set():
            raise KafkaException(
                f"topic(s) {', '.join(missing)} not found on the broker after {wait_s:.0f}s; "
                "start it with `darkroom up`, or set DARKROOM_*_TOPIC to the names your cluster uses"
            )
        time.sleep(1.0)


# -- command line ------------------------------------------------------------------------------------------------
def default_db() -> Path:
    """``$DARKROOM_INDEX_DB``, else ``run/index.sqlite`` (where ``darkroom up`` keeps it by default)."""
    return Path(os.environ.get(DEFAULT_DB_ENV) or DEFAULT_DB)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkroom index",
        description="Index tag events (and upload URLs, dead letters) into a SQLite search index; "
        "optionally serve the search page. Topic names come from DARKROOM_*_TOPIC.",
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default DARKROOM_KAFKA_BOOTSTRAP)")
    parser.add_argument(
        "--db", type=Path, default=None, help=f"index file (default ${DEFAULT_DB_ENV} or {DEFAULT_DB})"
    )
    parser.add_argument("--once", action="store_true", help="index what the topics hold now, then exit")
    parser.add_argument(
        "--reset", action="store_true", help="empty the index and read the topics from the start"
    )
    parser.add_argument("--serve", action="store_true", help="serve the search page while indexing")
    parser.add_argument("--web-port", type=int, default=8080, help="port of the search page (default 8080)")
    parser.add_argument(
        "--web-bind", default="127.0.0.1", help="address of the search page (default 127.0.0.1)"
    )
    parser.add_argument(
        "--file-root",
        type=Path,
        action="append",
        help="folder whose file:// photos the page may show as thumbnails (repeatable; default: cwd)",
    )
    parser.add_argument(
        "--topic-wait", type=float, default=30.0, help="seconds to wait for the topics to exist"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``darkroom index``: consume until SIGTERM/Ctrl-C (or, with ``--once``, until caught up)."""
    from confluent_kafka import KafkaException

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.once and args.serve:
        console.print("[red]error:[/] --once and --serve exclude each other: a page needs a running indexer")
        return 2
    try:
        settings = Settings.from_env(kafka_bootstrap=args.bootstrap)
    except SettingsError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    db_path = args.db or default_db()
    try:
        index = SearchIndex(db_path)
    except sqlite3.DatabaseError as exc:
        console.print(
            f"[red]error:[/] {escape(str(db_path))} is not a usable search index ({escape(str(exc))}); "
            "pass another --db"
        )
        return 2
    if args.reset:
        index.reset()
    topics, counters, stop = Topics.from_settings(settings), LiveCounters(), threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    server = None
    if args.serve:
        from search.web import serve

        roots = [str(p) for p in (args.file_root or [Path.cwd()])]
        try:
            server = serve(db_path, counters, args.web_bind, args.web_port, roots, settings)
        except OSError as exc:
            console.print(f"[red]error:[/] cannot serve the page on {args.web_bind}:{args.web_port}: {escape(str(exc))}; "
                          "pick another --web-port")  # fmt: skip
            return 2
        console.print(f"search page: http://{args.web_bind}:{args.web_port}/")
    console.print(
        escape(f"indexing {', '.join(topics.all())} from {settings.kafka_bootstrap} into {db_path}")
    )
    total = Applied()
    last_report = time.monotonic()
    try:
        for applied in consume(
            index, settings.kafka_bootstrap, topics, counters, stop, args.once, args.topic_wait, settings
        ):
            _accumulate(total, applied)
            for problem in applied.invalid[:5]:
                console.print(f"[yellow]skipped[/] {escape(problem)}")
            if time.monotonic() - last_report > 5:
                _report(total)
                last_report = time.monotonic()
    except KafkaException as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    finally:
        if server is not None:
            server.shutdown()
        index.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _report(total)
    return 0


def _accumulate(total: Applied, batch: Applied) -> None:
    total.tag_events += batch.tag_events
    total.stale += batch.stale
    total.uploads += batch.uploads
    total.dead_letters += batch.dead_letters
    total.invalid.extend(batch.invalid[: max(0, 100 - len(total.invalid))])


def _report(total: Applied) -> None:
    console.print(
        f"indexed {total.tag_events} tag event(s) ({total.stale} replayed or older), {total.uploads} upload(s), "
        f"{total.dead_letters} dead letter(s); {len(total.invalid)} invalid record(s) skipped"
    )


def search_main(argv: list[str] | None = None) -> int:
    """``darkroom search "beach sunset"``: ranked photo ids with their tags. Exit 1 when nothing matches."""
    parser = argparse.ArgumentParser(
        prog="darkroom search", description="Search the index that `darkroom index` (or `up`) keeps."
    )
    parser.add_argument("query", nargs="+", help="words; a photo must carry a tag matching each")
    parser.add_argument(
        "--db", type=Path, default=None, help=f"index file (default ${DEFAULT_DB_ENV} or {DEFAULT_DB})"
    )
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    query = " ".join(args.query)
    if not query_terms(query):
        console.print(f"[red]error:[/] the query {escape(repr(query))} has no words to search for")
        return 2
    if args.limit < 1:
        console.print(f"[red]error:[/] --limit must be >= 1, got {args.limit}")
        return 2
    try:
        index = SearchIndex(args.db or default_db(), readonly=True)
        hits = index.search(query, args.limit)
    except (FileNotFoundError, sqlite3.DatabaseError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    if args.json:
        for hit in hits:
            sys.stdout.write(orjson.dumps(hit.to_json()).decode() + "\n")
    else:
        print_hits(query, hits)
    return 0 if hits else 1


def print_hits(query: str, hits: Iterable[Hit], out: Console | None = None) -> None:
    """A table of ranked hits: photo id, relevance, model version and tags. Every value from the index or the
    query is printed as plain text: a tag like ``[/x]`` or ``[bold]`` is not Rich markup."""
    hits = list(hits)
    out = out or Console()
    if not hits:
        out.print(Text(f"no photo matches {query!r}"))
        return
    table = Table(title=Text(f"{len(hits)} photo(s) for {query!r}"), title_justify="left")
    for col in ("#", "photo", "relevance", "model", "tags"):
        table.add_column(col)
    for rank, hit in enumerate(hits, 1):
        tags = ", ".join(f"{t['tag']} {t['score']:.2f}" for t in hit.tags)
        cells = (str(rank), hit.photo_id, f"{hit.relevance:.2f}", f"{hit.model} v{hit.model_version}", tags)
        table.add_row(*map(Text, cells))
    out.print(table)
