"""``darkroom backfill``: re-publish upload events for an existing archive, so a new model version re-tags it.

The archive is a manifest (JSONL, one photo a line) or a folder of images. Each photo is published under the
same photo_id that ``darkroom publish`` gives it (or the manifest's own ``photo_id``), so its new tag event
replaces the old one in the index instead of adding a second photo. Publishing is paced (``--rate``) so a
backfill does not starve live uploads, and resumable: after every checkpoint the producer is flushed and the
number of photos done is written to a state file; a rerun skips them (at least once: a photo published just
before an interruption may be published again, which the index ignores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from contracts.helpformat import DefaultsHelpFormatter
from contracts.records import PermanentError, now_rfc3339, parse_upload, upload_value
from stream.clients import UploadPublisher, check_broker, photo_id_for, photo_paths
from stream.settings import Settings, SettingsError

console = Console(stderr=True)
CHECKPOINT_EVERY = 100
CHECKPOINT_EVERY_S = 2.0


class ArchiveError(ValueError):
    """A manifest line or a folder that cannot be backfilled; the message names it."""


@dataclass(frozen=True)
class ArchivePhoto:
    """One photo of the archive, ready to publish; ``local`` is its file when it has one (else None)."""

    photo_id: str
    value: bytes
    local: Path | None


def manifest_photos(manifest: Path) -> Iterator[ArchivePhoto]:
    """Photos of a JSONL manifest, in file order. A line has ``path`` (relative to the manifest's folder) or
    ``url``, and optionally ``photo_id``, ``owner``, ``uploaded_at``, ``user_tags`` (the trainer's manifests
    qualify as they are; their ``labels`` are ignored)."""
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ArchiveError(f"cannot read manifest {manifest}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ArchiveError(f"{where}: expected a JSON object, got {type(record).__name__}")
        local: Path | None = None
        if isinstance(record.get("path"), str) and record["path"]:
            local = (manifest.parent / record["path"]).resolve()
            url = local.as_uri()
        elif isinstance(record.get("url"), str) and record["url"]:
            url = record["url"]
            if url.startswith("file://"):
                local = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        else:
            raise ArchiveError(f"{where}: needs a 'path' (relative to the manifest) or a 'url'")
        photo_id = record.get("photo_id") or (photo_id_for(local) if local else None)
        if photo_id is None:
            raise ArchiveError(f"{where}: a photo given by http(s) 'url' needs its 'photo_id'")
        yield ArchivePhoto(photo_id, _upload_value(where, photo_id, url, record), local)


def folder_photos(folder: Path) -> Iterator[ArchivePhoto]:
    """Image files under ``folder`` (sorted walk), with the ids ``darkroom publish`` gives them."""
    if not folder.is_dir():
        raise ArchiveError(f"{folder} is not a folder")
    for path in photo_paths([folder]):
        photo_id = photo_id_for(path)
        yield ArchivePhoto(photo_id, _upload_value(str(path), photo_id, path.resolve().as_uri(), {}), path)


def _upload_value(where: str, photo_id: str, url: str, record: dict) -> bytes:
    raw = upload_value(
        photo_id, url, record.get("owner"), record.get("user_tags") or [], record.get("uploaded_at")
    )
    try:
        parse_upload(raw)  # the worker's own validation: a bad line fails here, not as a dead letter later
    except PermanentError as exc:
        raise ArchiveError(f"{where}: {exc.detail}") from None
    return raw


# -- resumable state -------------------------------------------------------------------------------------------
@dataclass
class State:
    """How far a backfill of one source got: the first ``done`` photos (in order) are delivered."""

    path: Path
    source: str
    done: int = 0
    total: int = 0

    @classmethod
    def load(cls, path: Path, source: str) -> State:
        if not path.exists():
            return cls(path, source)
        try:
            data = json.loads(path.read_text())
            if data["source"] != source:
                raise ArchiveError(
                    f"state file {path} belongs to {data['source']}, not {source}; pass another --state"
                )
            return cls(path, source, int(data["done"]), int(data.get("total", 0)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(
                f"state file {path} is unreadable ({exc}); delete it or pass --restart"
            ) from None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps({"source": self.source, "done": self.done, "total": self.total, "at": now_rfc3339()})
            + "\n"
        )
        os.replace(tmp, self.path)  # a crash leaves the old state or the new one, never half of one


def default_state_path(source: Path) -> Path:
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    return Path("run") / "backfill" / f"{source.name}-{digest}.json"


class Pacer:
    """Spaces calls ``1/rate`` seconds apart on average (bursts are not caught up after a pause). ``clock``
    and ``sleep`` are the time functions it uses (tests pass a fake clock)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self.next_at = clock()

    def wait(self) -> None:
        now = self.clock()
        if self.next_at > now:
            self.sleep(self.next_at - now)
        self.next_at = max(self.next_at, now - self.interval) + self.interval


# -- command line ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog="darkroom backfill",
        description="Re-publish upload events for an existing archive (rate-limited, resumable), "
        "so the model version Triton serves now re-tags it.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="JSONL: one photo a line ({path|url, photo_id?, ...})")
    source.add_argument("--dir", type=Path, help="a folder of images (walked, sorted)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default DARKROOM_KAFKA_BOOTSTRAP)")
    parser.add_argument("--rate", type=float, default=50.0, help="upload events per second (default 50)")
    parser.add_argument("--limit", type=int, help="publish at most this many photos in this run")
    parser.add_argument(
        "--state", type=Path, help="progress file (default run/backfill/<source>-<hash>.json)"
    )
    parser.add_argument(
        "--restart", action="store_true", help="ignore saved progress: start from the first photo"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``darkroom backfill``: 0 when the archive is done, 1 on a broker failure midway, 2 on bad input or an
    unreachable broker, 130 when interrupted (progress saved: rerun to continue)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.rate <= 0:
        console.print(f"[red]error:[/] --rate must be > 0, got {args.rate}")
        return 2
    if args.limit is not None and args.limit < 1:
        console.print(f"[red]error:[/] --limit must be >= 1, got {args.limit}")
        return 2
    try:
        settings = Settings.from_env(kafka_bootstrap=args.bootstrap)
        source = (args.manifest or args.dir).resolve()
        photos = list(manifest_photos(source) if args.manifest else folder_photos(source))
        state_path = args.state or default_state_path(source)
        state = State(state_path, str(source)) if args.restart else State.load(state_path, str(source))
    except (ArchiveError, SettingsError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    state.total = len(photos)
    if state.done >= len(photos):
        console.print(
            f"{source}: all {len(photos)} photo(s) already backfilled ({state.path}); --restart to redo"
        )
        return 0
    from confluent_kafka import KafkaException

    try:
        check_broker(settings.kafka_bootstrap, [settings.uploads_topic], settings)
    except KafkaException as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}; nothing published", soft_wrap=True)
        return 2
    return _publish(photos, state, settings, args.rate, args.limit)


def _checkpoint(publisher: UploadPublisher, state: State, reached: int) -> None:
    """Wait for the broker to acknowledge everything sent, then record it: the state never runs ahead."""
    publisher.flush()
    state.done = reached
    state.save()


def _publish(
    photos: list[ArchivePhoto], state: State, settings: Settings, rate: float, limit: int | None
) -> int:
    from confluent_kafka import KafkaException

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    publisher = UploadPublisher(settings.kafka_bootstrap, settings.uploads_topic, settings)
    pacer = Pacer(rate)
    end = len(photos) if limit is None else min(len(photos), state.done + limit)
    resumed_at, sent, missing = state.done, 0, []
    last_checkpoint = time.monotonic()
    columns = (TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("backfill", total=len(photos), completed=state.done)
            reached = state.done  # photos before this position are sent (delivered once flushed)
            for position in range(state.done, end):
                if stop:
                    break
                photo = photos[position]
                if photo.local is not None and not photo.local.is_file():
                    missing.append(str(photo.local))  # gone from the archive: nothing to re-tag
                else:
                    pacer.wait()
                    publisher.send(photo.photo_id, photo.value)
                    sent += 1
                reached = position + 1
                progress.advance(task)
                if (
                    reached - state.done >= CHECKPOINT_EVERY
                    or time.monotonic() - last_checkpoint > CHECKPOINT_EVERY_S
                ):
                    _checkpoint(publisher, state, reached)
                    last_checkpoint = time.monotonic()
            _checkpoint(publisher, state, reached)
    except KafkaException as exc:
        console.print(
            f"[red]error:[/] {exc}; progress saved in {state.path} (photos before #{state.done + 1})"
        )
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for path in missing[:10]:
        console.print(f"[yellow]skipped[/] {path}: no such file")
    console.print(
        f"published {sent} upload event(s) to {settings.uploads_topic} (photos {resumed_at + 1}–{state.done} of "
        f"{len(photos)}); {len(missing)} missing file(s) skipped; progress in {state.path}"
    )
    if stop:
        console.print("interrupted: run the same command again to continue")
        return 130
    return 0
