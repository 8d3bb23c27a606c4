"""``darkroom drift``: per-tag drift of the live model, from the tag topic, for users without Prometheus.

The rule is the one of deploy/prometheus/darkroom-drift-rules.yaml: a tag's emission rate (tag events that
carry it / tag events) in a bucket is compared with the same tag's rates in the trailing buckets by a robust
z-score, ``(rate - median) / sigma`` with ``sigma = max(IQR / 1.349, sqrt(median (1 - median) / n), 1 / n)``
(``n`` the bucket's photos):
the interquartile spread of the trailing band, but never below the binomial noise of the bucket itself, so a
quiet band cannot turn counting noise into an alarm. A tag alarms when ``|z| > Z_THRESHOLD`` in a bucket of
at least ``MIN_PHOTOS`` photos with at least ``MIN_TRAILING`` trailing buckets. A tag that stops firing
alarms when it was expected ``SILENCED_MIN_EXPECTED`` times (the rules' DarkroomTagSilenced).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from contracts.helpformat import DefaultsHelpFormatter
from stream.settings import Settings, SettingsError

console = Console()

#: |robust z| above which a tag's rate has left its trailing band (the Prometheus rules use the same). A day
#: is about 24 x (vocabulary size) tests, 10,000 for the general tagger: at 4 a Gaussian tail alone would
#: alarm about once every two days, and tag counts are skewed binomials with heavier upper tails; at 5, about
#: once in half a year
Z_THRESHOLD = 5.0
#: trailing buckets a band needs before it can alarm (its median and quartiles are noisy below that)
MIN_TRAILING = 12
#: photos a bucket needs before its rates are judged
MIN_PHOTOS = 50
#: a tag that would have been expected this many times in a bucket (band median x photos) and was not seen
#: once alarms as silenced, whatever its z (a Poisson count of mean 10 is 0 with probability 5e-5)
SILENCED_MIN_EXPECTED = 10.0
#: the Gaussian IQR: a normal distribution's interquartile range in standard deviations
IQR_SIGMAS = 1.349


@dataclass(frozen=True)
class Bucket:
    """One time bucket of a model version's tag events: photos and how many carried each tag."""

    start: float
    photos: int
    counts: dict[str, int]


@dataclass(frozen=True)
class Alarm:
    tag: str
    start: float  # the bucket's start (POSIX seconds)
    rate: float
    median: float
    z: float


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(q25, median, q75) by linear interpolation, as PromQL's quantile_over_time computes them."""
    ordered = sorted(values)

    def q(p: float) -> float:
        rank = p * (len(ordered) - 1)
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    return q(0.25), q(0.5), q(0.75)


def robust_z(rate: float, band: list[float], photos: int) -> tuple[float, float]:
    """(z, median) of ``rate`` against ``band`` (the trailing rates), with the binomial floor on sigma."""
    q25, median, q75 = quartiles(band)
    n = max(photos, 1)
    sigma = max((q75 - q25) / IQR_SIGMAS, math.sqrt(max(median * (1 - median), 0.0) / n), 1.0 / n)
    return (rate - median) / sigma, median


def drift_alarms(
    buckets: list[Bucket],
    trailing: int = 24,
    threshold: float = Z_THRESHOLD,
    min_photos: int = MIN_PHOTOS,
    min_trailing: int = MIN_TRAILING,
) -> list[Alarm]:
    """Every (bucket, tag) whose rate left the band of the ``trailing`` buckets before it, oldest first.
    Tags are those seen in the bucket or in its band, so a silenced tag is judged too."""
    alarms = []
    for i, bucket in enumerate(buckets):
        band = [b for b in buckets[max(0, i - trailing) : i] if b.photos >= min_photos]
        if bucket.photos < min_photos or len(band) < min_trailing:
            continue
        tags = set(bucket.counts).union(*(b.counts for b in band))
        for tag in sorted(tags):
            rate = bucket.counts.get(tag, 0) / bucket.photos
            z, median = robust_z(rate, [b.counts.get(tag, 0) / b.photos for b in band], bucket.photos)
            silenced = rate == 0.0 and median * bucket.photos >= SILENCED_MIN_EXPECTED
            if abs(z) > threshold or silenced:
                alarms.append(Alarm(tag, bucket.start, rate, median, z))
    return alarms


def bucket_events(events: list[tuple[float, frozenset[str]]], bucket_s: float) -> list[Bucket]:
    """Buckets of ``bucket_s`` seconds (empty ones included, as 0 photos) from (tagged_at, tags) pairs."""
    if not events:
        return []
    first = min(t for t, _ in events) // bucket_s * bucket_s
    photos: dict[int, int] = defaultdict(int)
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for at, tags in events:
        index = int((at - first) // bucket_s)
        photos[index] += 1
        for tag in tags:
            counts[index][tag] += 1
    return [
        Bucket(first + i * bucket_s, photos.get(i, 0), dict(counts.get(i, {})))
        for i in range(max(photos) + 1)
    ]


def main(argv: list[str] | None = None) -> int:
    """``darkroom drift``: read the tag topic's window, print each tag's alarms; exit 1 with --fail-on-alarm
    when the newest bucket alarms, 2 for bad input."""
    from confluent_kafka import KafkaException

    from tools.rollout import parse_tag_event, read_window

    parser = argparse.ArgumentParser(
        prog="darkroom drift", description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: DARKROOM_KAFKA_BOOTSTRAP)")
    parser.add_argument("--hours", type=float, default=24.0, help="the window: the last N hours")
    parser.add_argument("--bucket-minutes", type=float, default=60.0)
    parser.add_argument("--trailing", type=int, default=24, help="buckets in a tag's trailing band")
    parser.add_argument("--threshold", type=float, default=Z_THRESHOLD, help="|robust z| that alarms")
    parser.add_argument("--min-photos", type=int, default=MIN_PHOTOS)
    parser.add_argument("--version", help="the model version (default: the one of the newest event)")
    parser.add_argument("--fail-on-alarm", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.bucket_minutes <= 0 or args.hours <= 0 or args.trailing < 1:
            raise ValueError("--hours, --bucket-minutes and --trailing must be positive")
        settings = Settings.from_env()
        values = read_window(
            args.bootstrap or settings.kafka_bootstrap, [settings.tags_topic], args.hours * 3600, settings
        )[settings.tags_topic]
    except (ValueError, OSError, KafkaException, SettingsError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    parsed = [e for e in map(parse_tag_event, values) if e is not None]
    if not parsed:
        console.print("no tag events in the window")
        return 0
    version = args.version or max(parsed, key=lambda e: e.tagged_at).version
    events = [(e.tagged_at, e.tags) for e in parsed if e.version == version]
    buckets = bucket_events(events, args.bucket_minutes * 60)
    alarms = drift_alarms(buckets, args.trailing, args.threshold, args.min_photos)
    console.print(
        f"v{version}: {len(events)} tag events in {len(buckets)} buckets of {args.bucket_minutes:g} min; "
        f"{len(values) - len(parsed)} values were not tag events; {len(alarms)} alarm(s)"
    )
    if alarms:
        import time

        table = Table(title=f"tags outside their trailing band (|robust z| > {args.threshold:g})")
        for col in ("bucket (UTC)", "tag", "rate", "band median", "z"):
            table.add_column(col)
        for a in alarms:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a.start))
            table.add_row(when, a.tag, f"{a.rate:.3f}", f"{a.median:.3f}", f"{a.z:+.1f}")
        console.print(table)
    newest = buckets[-1].start if buckets else None
    if args.fail_on_alarm and any(a.start == newest for a in alarms):
        return 1
    return 0
