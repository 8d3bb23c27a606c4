"""The search index: one SQLite file holding each photo's newest tags, searchable by tag words.

The index is one SQLite file. ``photos`` holds, per photo_id, the tags of the newest model version seen
(versions compare numerically; an older or equal version never overwrites, so replays change nothing).
Search runs on an FTS5 table over the tag vocabulary (porter stemming: "beaches" finds "beach"), joined to
each photo's scored tags. The indexer also reads ``photo-uploads`` (for each photo's URL, so the page can
show thumbnails) and ``photo-uploads-dlq`` (for the dead-letter counters), and ``photo-tag-edits``: owners'
edits, which change what search finds for their own photos (search/edits.py). Every batch of records and the
next offsets of their partitions are written in one transaction: a restarted indexer resumes exactly where
the index stands, and a search never sees a photo half-way between two versions.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from contracts import topics
from contracts.edits import EditRejected
from contracts.records import (
    InvalidEvent,
    PermanentError,
    TagEvent,
    parse_dead_letter,
    parse_tag_event,
    parse_upload,
)
from search import edits
from search.counters import LiveCounters
from stream.settings import Settings

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
    edits: int = 0  # owners' tag edits applied
    #: refused edits' dead letters, (key, value): produced to the edits' dead-letter topic before the batch
    #: commits (``before_commit``), so none is lost and a replay repeats identical ones
    edit_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class TopicNames:
    """The names of the topics the index reads, and the one it writes: refused edits' dead letters (from
    Settings: DARKROOM_*_TOPIC)."""

    uploads: str = topics.UPLOADS
    tags: str = topics.TAGS
    dlq: str = topics.DLQ
    edits: str = topics.EDITS
    edits_dlq: str = topics.EDITS_DLQ

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(
            settings.uploads_topic, settings.tags_topic, settings.dlq_topic, settings.edits_topic,
            settings.edits_dlq_topic,
        )  # fmt: skip

    def all(self) -> list[str]:
        """The topics the indexer reads."""
        return [self.uploads, self.tags, self.dlq, self.edits]


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
            self._db.executescript(edits.SCHEMA)
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
        self,
        records: Sequence[Record],
        topics: TopicNames,
        counters: LiveCounters | None = None,
        edit_limits: edits.EditLimits | None = None,
        before_commit: Callable[[Applied], None] | None = None,
    ) -> Applied:
        """Apply a batch and remember each partition's next offset, all in one transaction. ``before_commit``
        runs inside it (the consumer produces the refused edits' dead letters there: if that fails, the
        batch is not committed and is read again)."""
        applied = Applied()
        edit_limits = edit_limits or edits.EditLimits()
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
                    elif rec.topic == topics.edits:
                        source = (rec.topic, rec.partition, rec.offset)
                        try:
                            edits.apply_edit(db, rec.value, source, rec.timestamp, edit_limits, self._tag_id)
                            applied.edits += 1
                        except EditRejected as exc:
                            applied.edit_letters.append(
                                edits.edit_dead_letter(rec.value, exc, source, rec.timestamp)
                            )
                except InvalidEvent as exc:
                    applied.invalid.append(f"{rec.topic}[{rec.partition}]@{rec.offset}: {exc}")
                db.execute(
                    "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                    "DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                    (rec.topic, rec.partition, rec.offset + 1),
                )
            if before_commit is not None:
                before_commit(applied)
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
        edits.remember_prediction(db, event.photo_id, tags_json)
        edits.refresh(db, event.photo_id, self._tag_id)  # the model's tags with the owner's edits applied
        return row is None

    @staticmethod
    def _tag_id(db: sqlite3.Connection, tag: str) -> int:
        row = db.execute("SELECT tag_id FROM tag_names WHERE tag = ?", (tag,)).fetchone()
        if row is not None:
            return row[0]
        tag_id = db.execute("INSERT INTO tag_names (tag) VALUES (?)", (tag,)).lastrowid
        db.execute("INSERT INTO tag_search (rowid, tag) VALUES (?, ?)", (tag_id, tag))
        return tag_id  # type: ignore[return-value]

    def _upsert_upload(self, db: sqlite3.Connection, raw: bytes | None, timestamp: float | None) -> None:
        try:
            upload = parse_upload(raw, timestamp)
        except PermanentError as exc:
            raise InvalidEvent(exc.detail) from None
        db.execute(
            "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)",
            (upload.photo_id, upload.url, upload.owner, upload.uploaded_at),
        )
        edits.refresh(db, upload.photo_id, self._tag_id)  # the owner is known now: their edits apply

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
                *edits.TABLES,
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

    def edited_photos(self) -> list[edits.PhotoLabels]:
        """Every photo its owner edited, with what they said about it (the training side's edit log)."""
        return edits.owner_labels(self._db)

    def owner_of(self, photo_id: str) -> str | None:
        """The owner the photo's upload names (None: no owner, or no upload indexed)."""
        row = self._db.execute("SELECT owner FROM uploads WHERE photo_id = ?", (photo_id,)).fetchone()
        return row[0] if row else None

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
