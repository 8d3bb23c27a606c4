"""``darkroom shadow | compare | promote | rollback``: a candidate version on the live stream, compared with
the live one, made live only through gates, and taken back (docs/rollout.md).

The rollout state lives in the model's ``config.pbtxt`` (trainer/rollout.py), which Triton polls and the
worker reads through Triton (stream/shadow.py). ``compare`` reads a window of ``photo-tags`` and
``photo-tags-shadow``; ``promote`` refuses unless every gate passes on that comparison; each decision of
``promote`` and ``rollback`` is appended to a JSON-lines log with its numbers and printed as a table.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from contracts.helpformat import DefaultsHelpFormatter
from contracts.records import parse_rfc3339
from contracts.rollout import Rollout
from stream.settings import Settings, SettingsError
from stream.shadow import in_shadow
from tools.edit_agreement import Corrections, EditScore, corrections, score
from tools.triton_metrics import scrape, version_costs
from trainer.rollout import apply_rollout, rollout_of

console = Console()

#: how many of the photos where the versions disagree most a comparison lists
TOP_DISAGREEMENTS = 20


# -- reading the topics ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TagEvent:
    """The fields of a tag event a comparison uses, validated."""

    photo_id: str
    version: str
    tags: frozenset[str]
    url: str
    uploaded_at: float
    tagged_at: float


def parse_tag_event(value: bytes | None) -> TagEvent | None:
    """A tag event from a topic's raw value; None for anything that is not one (counted by the caller)."""
    try:
        event = orjson.loads(value or b"")
        if not isinstance(event, dict):
            return None
        photo_id, version, tags = event.get("photo_id"), event.get("model_version"), event.get("tags")
        if not (isinstance(photo_id, str) and isinstance(version, str) and isinstance(tags, list)):
            return None
        names = [t.get("tag") for t in tags if isinstance(t, dict)]
        if len(names) != len(tags) or not all(isinstance(n, str) for n in names):
            return None
        url = event.get("url") if isinstance(event.get("url"), str) else ""
        return TagEvent(
            photo_id,
            version,
            frozenset(names),
            url,
            parse_rfc3339(str(event.get("uploaded_at"))).timestamp(),
            parse_rfc3339(str(event.get("tagged_at"))).timestamp(),
        )
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None


#: records per partition read before the offset the broker names for the window's start: its answer may be a
#: batch late, and the records' own timestamps decide anyway
WINDOW_BACKSTEP = 10_000
#: a partition that delivers nothing for this long has been read to its end. Watermarks are not used: the
#: embedded broker (Tansu) reports a high watermark behind the records it serves (measured: 38 for 49)
WINDOW_IDLE_S = 2.0


def read_window(
    bootstrap: str, topics: list[str], since_s: float, settings: Settings, timeout_s: float = 300.0
) -> dict[str, list[bytes | None]]:
    """Every value written to ``topics`` from ``since_s`` seconds ago until now (by record timestamp), per
    topic. A partition is done when it delivers a record from after the start of the read, or nothing for
    ``WINDOW_IDLE_S``."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from stream.clients import GapHealingReader
    from stream.gaps import OffsetGaps
    from stream.kafka_security import librdkafka_config

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "darkroom-rollout",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
            **librdkafka_config(settings),
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        missing = [t for t in topics if t not in metadata.topics]
        if missing:
            raise KafkaException(f"topic(s) not found on {bootstrap}: {', '.join(missing)}")
        now_ms = int(time.time() * 1000)
        since_ms = now_ms - int(since_s * 1000)
        wanted = [
            TopicPartition(t, p, since_ms) for t in topics for p in sorted(metadata.topics[t].partitions)
        ]
        starts = consumer.offsets_for_times(wanted, timeout=10)
        for tp in starts:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            tp.offset = max(low, (high if tp.offset < 0 else tp.offset) - WINDOW_BACKSTEP)
        out: dict[str, list[bytes | None]] = {t: [] for t in topics}
        pending = {(tp.topic, tp.partition) for tp in starts}
        consumer.assign(starts)
        reader = GapHealingReader(consumer, OffsetGaps(settings.kafka_gap_retries))  # stream/gaps.py
        reader.started(starts)
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while pending and time.monotonic() - last < WINDOW_IDLE_S:
            if time.monotonic() > deadline:
                raise KafkaException(f"reading the window took over {timeout_s:.0f}s; give fewer --minutes")
            msg = consumer.poll(0.2)
            if msg is None or msg.error() or not reader.admit([msg]):
                continue
            stamp = msg.timestamp()[1]
            if stamp > now_ms:  # past the window: this partition is read
                pending.discard((msg.topic(), msg.partition()))
                consumer.pause([TopicPartition(msg.topic(), msg.partition())])
                continue
            last = time.monotonic()
            if stamp >= since_ms:
                out[msg.topic()].append(msg.value())
        return out
    finally:
        consumer.close()


# -- comparing ------------------------------------------------------------------------------------------------
@dataclass
class TagStats:
    live: int = 0  # photos (of the compared ones) the live version gave this tag
    shadow: int = 0
    both: int = 0

    @property
    def agreement(self) -> float:
        """Jaccard of the photo sets: both / (live + shadow - both); 1.0 when neither gives the tag."""
        union = self.live + self.shadow - self.both
        return self.both / union if union else 1.0


@dataclass
class Comparison:
    """A window of the stream, live version against shadow version."""

    live_version: str
    shadow_version: str
    live_photos: int  # photos the live version tagged in the window
    expected_shadow: int  # of those, the ones the shadow fraction selects
    compared: int  # of those, the ones with a shadow event
    agreement: float  # mean per-photo Jaccard of the two tag sets (both empty: 1)
    tags: dict[str, TagStats]
    disagreements: list[dict]  # the photos where the versions disagree most
    latency: dict[str, dict[str, float]]  # per version: end-to-end (upload → tag event) p50/p99, seconds
    shadow_delay: dict[str, float]  # shadow event after the live one, p50/p99, seconds
    skipped: int = 0  # values in the window that are not tag events
    #: per version, agreement with owners' corrections on the compared photos they edited
    edits: dict[str, EditScore] = field(default_factory=dict)
    edits_skipped: int = 0  # values of the edits topic that are not valid edits
    #: per version, request duration and compute cost from Triton's metrics (tools/triton_metrics.py)
    costs: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def edited(self) -> int:
        """Compared photos an owner corrected."""
        return self.edits[self.live_version].photos if self.edits else 0

    @property
    def shadow_missing(self) -> float:
        """The share of selected photos without a shadow event: failures, timeouts and drops."""
        return 1.0 - self.compared / self.expected_shadow if self.expected_shadow else 0.0

    def rate(self, tag: str, side: str) -> float:
        return getattr(self.tags[tag], side) / self.compared if self.compared else 0.0

    def summary(self) -> dict:
        data = asdict(self)
        data["shadow_missing"] = self.shadow_missing
        data["edited"] = self.edited
        data["edits"] = {v: e.to_json() for v, e in self.edits.items()}
        data["tags"] = {
            t: {**asdict(s), "agreement": s.agreement, "live_rate": self.rate(t, "live"),
                "shadow_rate": self.rate(t, "shadow")}
            for t, s in sorted(self.tags.items())
        }  # fmt: skip
        return data


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "n": 0}
    ordered = sorted(values)

    def q(p: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 1)) - 1))]

    return {"p50": q(0.5), "p99": q(0.99), "n": len(ordered)}


def compare(
    live_values: list[bytes | None],
    shadow_values: list[bytes | None],
    live_version: str,
    shadow_version: str,
    fraction: float = 1.0,
    until: float | None = None,
    edits: dict[str, Corrections] | None = None,
) -> Comparison:
    """Compare the two versions on the photos both tagged (the last event per photo and version counts:
    redelivered events carry the same tags). Live events tagged after ``until`` (POSIX seconds) are not
    expected to have their shadow event yet, so they are left out of the comparison. Compared photos with
    owners' corrections in ``edits`` score each version against them."""
    skipped = 0
    live: dict[str, TagEvent] = {}
    shadow: dict[str, TagEvent] = {}
    for values, version, into in ((live_values, live_version, live), (shadow_values, shadow_version, shadow)):
        for value in values:
            event = parse_tag_event(value)
            if event is None:
                skipped += 1
            elif event.version == version:
                into[event.photo_id] = event
    selected = [
        pid for pid, e in live.items() if in_shadow(pid, fraction) and (until is None or e.tagged_at <= until)
    ]
    pairs = [(live[pid], shadow[pid]) for pid in selected if pid in shadow]
    tags: dict[str, TagStats] = {}
    scored = []
    edit_scores = {live_version: EditScore(), shadow_version: EditScore()}
    for a, b in pairs:
        fix = (edits or {}).get(a.photo_id)
        if fix is not None:
            score(a.tags, fix, edit_scores[live_version])
            score(b.tags, fix, edit_scores[shadow_version])
        for tag in a.tags | b.tags:
            stats = tags.setdefault(tag, TagStats())
            stats.live += tag in a.tags
            stats.shadow += tag in b.tags
            stats.both += tag in a.tags and tag in b.tags
        scored.append((jaccard(a.tags, b.tags), -len(a.tags ^ b.tags), a.photo_id, a, b))
    scored.sort(key=lambda s: (s[0], s[1], s[2]))
    disagreements = [
        {"photo_id": pid, "url": a.url, "jaccard": j, "live": sorted(a.tags), "shadow": sorted(b.tags),
         "only_live": sorted(a.tags - b.tags), "only_shadow": sorted(b.tags - a.tags)}
        for j, _, pid, a, b in scored[:TOP_DISAGREEMENTS] if j < 1.0
    ]  # fmt: skip
    return Comparison(
        live_version=live_version,
        shadow_version=shadow_version,
        live_photos=len(live),
        expected_shadow=len(selected),
        compared=len(pairs),
        agreement=statistics.fmean(s[0] for s in scored) if scored else 0.0,
        tags=tags,
        disagreements=disagreements,
        latency={
            live_version: _quantiles([e.tagged_at - e.uploaded_at for e in live.values()]),
            shadow_version: _quantiles([e.tagged_at - e.uploaded_at for e in shadow.values()]),
        },
        shadow_delay=_quantiles([b.tagged_at - a.tagged_at for a, b in pairs]),
        skipped=skipped,
        edits=edit_scores,
    )


# -- gates ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gates:
    """Limits a shadow version must keep to be promoted (``darkroom promote --help``)."""

    min_photos: int = 100  # compared photos at least
    min_agreement: float = 0.5  # mean per-photo Jaccard at least
    max_rate_ratio: float = 3.0  # per tag, (shadow + 1) / (live + 1) emissions within [1/r, r]
    min_support: int = 5  # tags the live or the shadow version gave at least this often are checked
    max_shadow_missing: float = 0.01  # share of selected photos without a shadow event
    max_shadow_delay_s: float = 2.0  # p99 of the shadow event's delay after the live one
    max_edit_drop: float = 0.05  # on edited photos, shadow agreement with owners at least live's minus this
    min_edited: int = 20  # the edits gate is checked only with at least this many edited photos


@dataclass
class Gate:
    name: str
    passed: bool
    value: object
    limit: object
    detail: str = ""


def check_gates(c: Comparison, g: Gates) -> list[Gate]:
    """Every gate with its number and limit; the version may go live only if all passed."""
    checked = {t: s for t, s in c.tags.items() if max(s.live, s.shadow) >= g.min_support}
    silenced = sorted(t for t, s in checked.items() if s.live >= g.min_support and s.shadow == 0)
    ratios = {t: (s.shadow + 1) / (s.live + 1) for t, s in checked.items() if t not in silenced}
    off = sorted((t for t, r in ratios.items() if not 1 / g.max_rate_ratio <= r <= g.max_rate_ratio),
                 key=lambda t: -abs(ratios[t] - 1))  # fmt: skip
    worst = max(ratios.values(), key=lambda r: max(r, 1 / r), default=1.0)
    if c.edited >= g.min_edited:
        change = c.edits[c.shadow_version].agreement - c.edits[c.live_version].agreement
        edits_gate = Gate("owners' edits: agreement change", change >= -g.max_edit_drop, round(change, 4),
                          f">= -{g.max_edit_drop}", f"{c.edited} edited photos")  # fmt: skip
    else:
        edits_gate = Gate("owners' edits: agreement change", True, "-", f">= -{g.max_edit_drop}",
                          f"not checked: {c.edited} edited photos < {g.min_edited}")  # fmt: skip
    return [
        Gate("photos compared", c.compared >= g.min_photos, c.compared, f">= {g.min_photos}"),
        Gate("agreement (mean Jaccard)", c.agreement >= g.min_agreement, round(c.agreement, 4),
             f">= {g.min_agreement}"),
        Gate("no tag silenced", not silenced, len(silenced), "0", ", ".join(silenced[:10])),
        Gate("per-tag rate change", not off, round(worst, 3),
             f"within x{g.max_rate_ratio}", ", ".join(f"{t} x{ratios[t]:.2f}" for t in off[:10])),
        Gate("shadow missing (errors, drops)", c.shadow_missing <= g.max_shadow_missing,
             round(c.shadow_missing, 4), f"<= {g.max_shadow_missing}"),
        Gate("shadow delay p99 (s)", c.shadow_delay["p99"] <= g.max_shadow_delay_s,
             round(c.shadow_delay["p99"], 3), f"<= {g.max_shadow_delay_s}"),
        edits_gate,
    ]  # fmt: skip


# -- reports --------------------------------------------------------------------------------------------------
def print_comparison(c: Comparison, top_tags: int = 15) -> None:
    console.print(
        f"live v{c.live_version} vs shadow v{c.shadow_version}: {c.compared} photos compared "
        f"({c.live_photos} tagged live, {c.expected_shadow} selected for the shadow, "
        f"{c.shadow_missing:.1%} without a shadow event); mean agreement {c.agreement:.3f}"
    )
    table = Table(title="tags whose rate differs most")
    for col in ("tag", "live rate", "shadow rate", "agreement"):
        table.add_column(col, justify="left" if col == "tag" else "right")
    ordered = sorted(c.tags, key=lambda t: -abs(c.rate(t, "shadow") - c.rate(t, "live")))
    for tag in ordered[:top_tags]:
        table.add_row(
            tag, f"{c.rate(tag, 'live'):.3f}", f"{c.rate(tag, 'shadow'):.3f}", f"{c.tags[tag].agreement:.3f}"
        )
    console.print(table)
    lat = Table(title="latency, upload → tag event (s)")
    for col in ("version", "p50", "p99", "events"):
        lat.add_column(col, justify="right")
    for version, q in c.latency.items():
        lat.add_row(f"v{version}", f"{q['p50']:.3f}", f"{q['p99']:.3f}", str(q["n"]))
    lat.add_row("shadow delay", f"{c.shadow_delay['p50']:.3f}", f"{c.shadow_delay['p99']:.3f}",
                str(c.shadow_delay["n"]))  # fmt: skip
    console.print(lat)
    if c.edited:
        edits = Table(title=f"agreement with owners' edits ({c.edited} edited photos)")
        for col in ("version", "agreement", "recall of added", "removed still emitted", "added missed"):
            edits.add_column(col, justify="right")
        for version, e in c.edits.items():
            edits.add_row(f"v{version}", f"{e.agreement:.3f}", f"{e.recall:.3f}",
                          f"{e.false_positives}/{e.removed}", f"{e.false_negatives}/{e.added}")  # fmt: skip
        console.print(edits)
    else:
        console.print("no compared photo has an owner's edit")
    if c.costs:
        console.print(_costs_table(c))


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def _per_image(q: dict) -> str:
    return "-" if q["compute_us_per_image"] is None else f"{q['compute_us_per_image']:.0f}"


def _costs_table(c: Comparison) -> Table:
    table = Table(title="Triton, per version: request duration (ms) and compute per image (µs)")
    for col in ("version", "request p50", "request p99", "compute µs/image", "images", "requests"):
        table.add_column(col, justify="right")
    for version, q in c.costs.items():
        table.add_row(f"v{version}", _ms(q["request_p50_us"]), _ms(q["request_p99_us"]), _per_image(q),
                      f"{q['images']:.0f}", f"{q['requests']:.0f}")  # fmt: skip
    return table


def print_gates(gates: list[Gate]) -> None:
    table = Table(title="promotion gates")
    for col in ("gate", "value", "limit", "result", "detail"):
        table.add_column(col)
    for g in gates:
        table.add_row(g.name, str(g.value), str(g.limit), "[green]pass[/]" if g.passed else "[red]FAIL[/]",
                      g.detail)  # fmt: skip
    console.print(table)


def write_html(c: Comparison, path: Path, file_roots: list[Path]) -> None:
    """An HTML report: the tag table and the disagreements with thumbnails (only of ``file://`` photos
    under ``file_roots``; any other URL is shown as text, never fetched)."""
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{c.rate(t, 'live'):.3f}</td><td>{c.rate(t, 'shadow'):.3f}</td>"
        f"<td>{s.agreement:.3f}</td></tr>"
        for t, s in sorted(
            c.tags.items(), key=lambda kv: -abs(c.rate(kv[0], "shadow") - c.rate(kv[0], "live"))
        )
    )
    figures = "".join(
        f"<figure>{_thumbnail(d['url'], file_roots)}<figcaption><b>{html.escape(d['photo_id'])}</b> "
        f"Jaccard {d['jaccard']:.2f}<br>only v{html.escape(c.live_version)}: "
        f"{html.escape(', '.join(d['only_live']) or '-')}<br>only v{html.escape(c.shadow_version)}: "
        f"{html.escape(', '.join(d['only_shadow']) or '-')}</figcaption></figure>"
        for d in c.disagreements
    )
    edits = "".join(
        f"<tr><td>v{html.escape(v)}</td><td>{e.agreement:.3f}</td><td>{e.recall:.3f}</td>"
        f"<td>{e.false_positives}/{e.removed}</td><td>{e.false_negatives}/{e.added}</td></tr>"
        for v, e in c.edits.items()
    )
    costs = "".join(
        f"<tr><td>v{html.escape(v)}</td><td>{_ms(q['request_p50_us'])}</td><td>{_ms(q['request_p99_us'])}</td>"
        f"<td>{_per_image(q)}</td>"
        f"<td>{q['images']:.0f}</td></tr>"
        for v, q in c.costs.items()
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>Darkroom compare</title><style>body{font:14px sans-serif}"
        "figure{display:inline-block;width:220px;vertical-align:top;margin:6px}img{max-width:200px}"
        "td{padding:2px 8px}</style>"
        f"<h1>live v{html.escape(c.live_version)} vs shadow v{html.escape(c.shadow_version)}</h1>"
        f"<p>{c.compared} photos compared; mean agreement {c.agreement:.3f}; "
        f"{c.shadow_missing:.1%} without a shadow event</p><h2>Where they disagree most</h2>{figures}"
        f"<h2>Tags</h2><table><tr><th>tag</th><th>live rate</th><th>shadow rate</th><th>agreement</th></tr>"
        f"{rows}</table><h2>Agreement with owners' edits ({c.edited} edited photos)</h2>"
        "<table><tr><th>version</th><th>agreement</th><th>recall of added</th><th>removed still emitted</th>"
        f"<th>added missed</th></tr>{edits}</table>"
        + (
            "<h2>Triton, per version</h2><table><tr><th>version</th><th>request p50 (ms)</th>"
            f"<th>request p99 (ms)</th><th>compute µs/image</th><th>images</th></tr>{costs}</table>"
            if c.costs
            else ""
        )
    )


def _thumbnail(url: str, file_roots: list[Path]) -> str:
    from urllib.parse import unquote, urlparse

    from PIL import Image, UnidentifiedImageError

    parsed = urlparse(url)
    if parsed.scheme != "file":
        return f"<code>{html.escape(url[:200])}</code>"
    path = Path(unquote(parsed.path)).resolve()
    if not any(path.is_relative_to(root.resolve()) for root in file_roots):
        return f"<code>{html.escape(url[:200])}</code>"
    try:
        with Image.open(path) as img:
            if img.width * img.height > 50_000_000:
                raise ValueError("too many pixels")
            img.draft("RGB", (200, 200))
            img = img.convert("RGB")
            img.thumbnail((200, 200))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return f"<code>{html.escape(url[:200])}</code>"
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="">'


def read_rollout(model_dir: Path) -> Rollout:
    """The rollout state in ``model_dir/config.pbtxt`` (all "" when the model is not under rollout control);
    ValueError naming the file when it has none or a parameter is not a version number."""
    from trainer.export import read_model_config  # the exporter imports torch: only when needed

    path = model_dir / "config.pbtxt"
    if not path.is_file():
        raise ValueError(f"{path} not found: is {model_dir} a model of the Triton repository?")
    try:
        return rollout_of(read_model_config(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def write_rollout(model_dir: Path, rollout: Rollout) -> None:
    """Make ``rollout`` the model's state (and its scores model's versions, where it is a front); every
    version it names must exist. The config is replaced atomically: Triton sees the old or the new state."""
    from google.protobuf import text_format

    from trainer.export import _write_config, read_model_config, versions

    if not rollout.live:
        raise ValueError("a rollout needs a live version")
    present = {str(v) for v in versions(model_dir)}
    for role in ("live", "shadow", "previous"):
        value = getattr(rollout, role)
        if value and value not in present:
            raise ValueError(
                f"{role} version {value} is not in {model_dir} (versions: {', '.join(sorted(present, key=int))})"
            )
    path = model_dir / "config.pbtxt"
    config = read_model_config(path)
    apply_rollout(config, rollout)
    # A front's scores model (the GPU plan, or the ONNX Runtime backend's model) loads the same versions.
    scores = config.parameters["scores_model"].string_value if "scores_model" in config.parameters else ""
    scores_dir = model_dir.parent / scores
    if scores and scores_dir.parent == model_dir.parent and (scores_dir / "config.pbtxt").is_file():
        plan = read_model_config(scores_dir / "config.pbtxt")
        plan.ClearField("version_policy")
        plan.version_policy.specific.versions.extend(sorted({int(v) for v in vars(rollout).values() if v}))
        _write_config(scores_dir, text_format.MessageToString(plan))  # first: the front's versions need it
    _write_config(model_dir, text_format.MessageToString(config))


# -- the decision log -----------------------------------------------------------------------------------------
def log_decision(path: Path, record: dict) -> None:
    """Append one decision with its numbers to the JSON-lines log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(orjson.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}) + b"\n")


# -- commands -------------------------------------------------------------------------------------------------
@dataclass
class Context:
    model_dir: Path
    log: Path
    settings: Settings
    bootstrap: str
    rollout: Rollout = field(default_factory=Rollout)


def _context(args: argparse.Namespace) -> Context:
    settings = Settings.from_env()
    model_dir = args.repo / args.name
    return Context(
        model_dir=model_dir,
        log=args.log or args.repo / "rollout-log.jsonl",
        settings=settings,
        bootstrap=getattr(args, "bootstrap", None) or settings.kafka_bootstrap,
        rollout=read_rollout(model_dir),
    )


def _compare_window(ctx: Context, args: argparse.Namespace, shadow_version: str) -> Comparison:
    if args.minutes <= 0 or args.settle < 0 or not (args.fraction is None or 0 <= args.fraction <= 1):
        raise ValueError("--minutes must be > 0, --settle >= 0 and --fraction within 0..1")
    if not ctx.rollout.live:
        raise ValueError(
            f"{ctx.model_dir} is not under rollout control: start with `darkroom shadow VERSION`"
        )
    if args.edit_hours < 0:
        raise ValueError("--edit-hours must be >= 0")
    s = ctx.settings
    values = read_window(ctx.bootstrap, [s.tags_topic, s.shadow_tags_topic], args.minutes * 60, s)
    fixes, skipped = corrections(_read_edits(ctx, args))
    fraction = s.shadow_fraction if args.fraction is None else args.fraction
    until = time.time() - args.settle
    c = compare(
        values[s.tags_topic], values[s.shadow_tags_topic], ctx.rollout.live, shadow_version, fraction, until,
        fixes,
    )  # fmt: skip
    c.edits_skipped = skipped
    if args.triton_metrics:
        c.costs = version_costs(scrape(args.triton_metrics), args.name, [c.live_version, c.shadow_version])
    return c


def _read_edits(ctx: Context, args: argparse.Namespace) -> list[bytes | None]:
    """The owners' edits of the last ``--edit-hours`` (at least the window: an edit follows its tag event),
    none where the broker has no edits topic (a deployment from before edits)."""
    from confluent_kafka import KafkaException

    if args.edit_hours == 0:
        return []
    topic = ctx.settings.edits_topic
    since = max(args.minutes * 60, args.edit_hours * 3600)
    try:
        return read_window(ctx.bootstrap, [topic], since, ctx.settings)[topic]
    except KafkaException as exc:
        if "not found" not in str(exc):
            raise
        console.print(f"no owners' edits read: {exc}", highlight=False)
        return []


def cmd_shadow(args: argparse.Namespace) -> int:
    from trainer.export import versions

    ctx = _context(args)
    present = [str(v) for v in versions(ctx.model_dir)]
    live = args.live or ctx.rollout.live
    if not live:  # first use: the version serving now, Triton's newest, other than the candidate
        older = [v for v in present if v != args.version]
        if not older:
            raise ValueError(
                f"{ctx.model_dir} has no version to keep live besides {args.version}; give --live"
            )
        live = older[-1]
    shadow = "" if args.stop else (args.version or "")
    if shadow and shadow == live:
        raise ValueError(f"version {shadow} is live already; a shadow must be another version")
    rollout = Rollout(live, shadow, ctx.rollout.previous if ctx.rollout.previous != live else "")
    write_rollout(ctx.model_dir, rollout)
    log_decision(ctx.log, {"action": "shadow", "rollout": asdict(rollout), "was": asdict(ctx.rollout)})
    console.print(
        f"live v{live}" + (f", shadow v{shadow}" if shadow else ", no shadow") + f" ({ctx.model_dir})"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    ctx = _context(args)
    shadow = args.shadow or ctx.rollout.shadow
    if not shadow:
        raise ValueError("no shadow version configured; give --shadow VERSION")
    c = _compare_window(ctx, args, shadow)
    print_comparison(c)
    if args.json:  # replaced atomically: the search page's rollout panel may be reading it
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps(c.summary(), indent=1) + "\n")
        partial.replace(args.json)
    if args.html:
        write_html(c, args.html, args.file_root or [Path.cwd()])
        console.print(f"report: {args.html.resolve()}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    ctx = _context(args)
    version = args.version
    if version == ctx.rollout.live:
        raise ValueError(f"version {version} is live already")
    c = _compare_window(ctx, args, version)
    gates = check_gates(c, Gates(args.min_photos, args.min_agreement, args.max_rate_ratio, args.min_support,
                                 args.max_shadow_missing, args.max_shadow_delay, args.max_edit_drop,
                                 args.min_edited))  # fmt: skip
    print_comparison(c)
    print_gates(gates)
    passed = all(g.passed for g in gates)
    record = {
        "action": "promote", "version": version, "decision": "promoted" if passed else "refused",
        "was": asdict(ctx.rollout), "gates": [asdict(g) for g in gates],
        "comparison": {k: v for k, v in c.summary().items() if k != "tags"},
    }  # fmt: skip
    if passed:
        rollout = Rollout(live=version, shadow="", previous=ctx.rollout.live)
        write_rollout(ctx.model_dir, rollout)
        record["rollout"] = asdict(rollout)
    log_decision(ctx.log, record)
    if passed:
        console.print(f"[green]promoted[/] v{version}: live now (previous v{ctx.rollout.live} stays loaded)")
        return 0
    console.print(f"[red]refused[/] v{version}: {', '.join(g.name for g in gates if not g.passed)}")
    return 1


def cmd_rollback(args: argparse.Namespace) -> int:
    ctx = _context(args)
    if not ctx.rollout.previous:
        raise ValueError(f"{ctx.model_dir} names no previous version to roll back to")
    rollout = Rollout(live=ctx.rollout.previous, shadow="", previous=ctx.rollout.live)
    write_rollout(ctx.model_dir, rollout)
    log_decision(ctx.log, {"action": "rollback", "reason": args.reason, "was": asdict(ctx.rollout),
                           "rollout": asdict(rollout)})  # fmt: skip
    console.print(f"rolled back: live v{rollout.live} (v{rollout.previous} stays loaded, not live)")
    return 0


def _common(parser: argparse.ArgumentParser, window: bool) -> None:
    parser.add_argument(
        "--repo", type=Path, default=Path("triton_models"), help="the Triton model repository"
    )
    parser.add_argument("--name", default="tagger", help="the model (default tagger)")
    parser.add_argument("--log", type=Path, help="decision log (default REPO/rollout-log.jsonl)")
    if window:
        parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: DARKROOM_KAFKA_BOOTSTRAP)")
        parser.add_argument("--minutes", type=float, default=60.0, help="the window: the last N minutes")
        parser.add_argument("--fraction", type=float, help="the workers' DARKROOM_SHADOW_FRACTION")
        parser.add_argument("--settle", type=float, default=5.0, metavar="SECONDS",
                            help="live events younger than this need no shadow event yet (default 5)")  # fmt: skip
        parser.add_argument(
            "--edit-hours",
            type=float,
            default=168.0,
            help="owners' edits of the last N hours are scored (default 168; 0: none)",
        )
        parser.add_argument("--triton-metrics", metavar="URL",
                            help="Triton's metrics page (e.g. http://127.0.0.1:8002/metrics): per-version "
                                 "request duration and compute cost")  # fmt: skip


def build_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"darkroom {command}",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    if command == "shadow":
        p.add_argument("version", nargs="?", help="the candidate version to shadow the live one")
        p.add_argument("--live", help="the live version (default: as configured, else the newest other)")
        p.add_argument("--stop", action="store_true", help="stop shadowing (the live version stays)")
        _common(p, window=False)
        p.set_defaults(func=cmd_shadow)
    elif command == "compare":
        _common(p, window=True)
        p.add_argument("--shadow", help="the shadow version (default: as configured)")
        p.add_argument("--json", type=Path, help="write the numbers as JSON")
        p.add_argument("--html", type=Path, help="write an HTML report with thumbnails")
        p.add_argument("--file-root", type=Path, action="append", help="folder thumbnails may be read from")
        p.set_defaults(func=cmd_compare)
    elif command == "promote":
        p.add_argument("version", help="the shadow version to make live")
        _common(p, window=True)
        g = Gates()
        p.add_argument("--min-photos", type=int, default=g.min_photos, help="photos compared, at least")
        p.add_argument(
            "--min-agreement",
            type=float,
            default=g.min_agreement,
            help="mean per-photo Jaccard of the tag sets, at least",
        )
        p.add_argument(
            "--max-rate-ratio",
            type=float,
            default=g.max_rate_ratio,
            help="per tag, (shadow + 1) / (live + 1) emissions within [1/R, R]",
        )
        p.add_argument(
            "--min-support",
            type=int,
            default=g.min_support,
            help="tags given this often by either version are checked for silencing and rate",
        )
        p.add_argument(
            "--max-shadow-missing",
            type=float,
            default=g.max_shadow_missing,
            help="share of selected photos without a shadow event, at most",
        )
        p.add_argument(
            "--max-shadow-delay",
            type=float,
            default=g.max_shadow_delay_s,
            metavar="SECONDS",
            help="p99 of the shadow event's delay after the live one, at most",
        )
        p.add_argument(
            "--max-edit-drop",
            type=float,
            default=g.max_edit_drop,
            help="on photos owners edited, the shadow's agreement with their edits may be at most this "
            "much below the live version's",
        )
        p.add_argument(
            "--min-edited",
            type=int,
            default=g.min_edited,
            help="the edits gate is checked only with at least this many edited photos compared",
        )
        p.set_defaults(func=cmd_promote)
    else:
        _common(p, window=False)
        p.add_argument("--reason", default="", help="why, for the log")
        p.set_defaults(func=cmd_rollback)
    return p


def main(command: str, argv: list[str]) -> int:
    """Run ``darkroom COMMAND``; one error line and exit 2 for bad input, Kafka or the repository."""
    from confluent_kafka import KafkaException

    args = build_parser(command).parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, KafkaException, SettingsError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2


def shadow_main(argv: list[str] | None = None) -> int:
    return main("shadow", sys.argv[1:] if argv is None else argv)


def compare_main(argv: list[str] | None = None) -> int:
    return main("compare", sys.argv[1:] if argv is None else argv)


def promote_main(argv: list[str] | None = None) -> int:
    return main("promote", sys.argv[1:] if argv is None else argv)


def rollback_main(argv: list[str] | None = None) -> int:
    return main("rollback", sys.argv[1:] if argv is None else argv)
