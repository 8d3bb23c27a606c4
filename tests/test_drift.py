"""`darkroom drift`'s rule: quiet on a steady stream, alarming on a shift and on a silenced tag."""

from __future__ import annotations

import numpy as np

from tools.drift import MIN_TRAILING, Bucket, bucket_events, drift_alarms, quartiles, robust_z

#: per-tag probabilities of the synthetic steady stream; "night" and "sky" depend on the share of night photos
DAY_TAGS = {
    "beach": 0.12,
    "dog": 0.05,
    "portrait": 0.3,
    "food": 0.08,
    "city": 0.2,
    "tree": 0.25,
    "rare": 0.004,
}
PHOTOS_PER_BUCKET = 400


def stream(buckets: int, night_share: list[float], seed: int) -> list[Bucket]:
    """Hourly buckets of photos: night photos get "night" (0.9) and seldom "sky" (0.05), day photos "sky"
    (0.6) and seldom "night" (0.02); the other tags are independent of the hour."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(buckets):
        n = int(rng.poisson(PHOTOS_PER_BUCKET))
        night = rng.random(n) < night_share[i]
        counts = {t: int((rng.random(n) < p).sum()) for t, p in DAY_TAGS.items()}
        counts["night"] = int(np.where(night, rng.random(n) < 0.9, rng.random(n) < 0.02).sum())
        counts["sky"] = int(np.where(night, rng.random(n) < 0.05, rng.random(n) < 0.6).sum())
        out.append(Bucket(i * 3600.0, n, {t: c for t, c in counts.items() if c}))
    return out


def test_a_steady_stream_raises_no_alarm_over_a_week() -> None:
    for seed in range(3):
        buckets = stream(24 * 7, [0.1] * (24 * 7), seed)
        assert drift_alarms(buckets) == [], seed


def test_a_night_surge_alarms_its_tags_in_the_first_shifted_bucket_and_no_other() -> None:
    shift_at = 48
    share = [0.1] * shift_at + [0.6] * 6
    alarms = drift_alarms(stream(len(share), share, seed=7))
    assert alarms, "the surge went unnoticed"
    first = min(a.start for a in alarms)
    assert first == shift_at * 3600.0
    assert {a.tag for a in alarms if a.start == first} == {"night", "sky"}
    assert all(a.start >= first for a in alarms) and {a.tag for a in alarms} == {"night", "sky"}
    night = next(a for a in alarms if a.tag == "night" and a.start == first)
    assert night.z > 4 and night.rate > 0.4 and night.median < 0.15


def test_a_silenced_tag_alarms() -> None:
    buckets = stream(30, [0.1] * 30, seed=3)
    silenced = [
        Bucket(b.start, b.photos, {t: c for t, c in b.counts.items() if t != "dog"}) for b in buckets[24:]
    ]
    alarms = drift_alarms([*buckets[:24], *silenced])
    assert {a.tag for a in alarms} == {"dog"} and min(a.start for a in alarms) == 24 * 3600.0
    assert all(a.rate == 0.0 and a.z < -3 for a in alarms)


def test_a_short_band_or_a_small_bucket_is_not_judged() -> None:
    buckets = stream(MIN_TRAILING + 1, [0.1] * MIN_TRAILING + [0.9], seed=1)
    assert drift_alarms(buckets[:MIN_TRAILING] + buckets[MIN_TRAILING:], min_trailing=MIN_TRAILING + 1) == []
    tiny = Bucket(buckets[-1].start, 10, {"night": 9})
    assert drift_alarms([*buckets[:MIN_TRAILING], tiny]) == []


def test_quartiles_interpolate_like_promql_and_the_noise_floor_holds() -> None:
    assert quartiles([4, 1, 3, 2]) == (1.75, 2.5, 3.25)
    assert quartiles([0.2] * 10) == (0.2, 0.2, 0.2)
    z, median = robust_z(0.25, [0.2] * 10, photos=400)  # a flat band: sigma is the binomial noise
    assert median == 0.2 and abs(z - 0.05 / np.sqrt(0.2 * 0.8 / 400)) < 1e-9
    z, _ = robust_z(1 / 400, [0.0] * 10, photos=400)  # one emission of a tag never seen: z = 1
    assert abs(z - 1.0) < 1e-9


def test_events_fall_into_buckets_with_empty_ones_kept() -> None:
    events = [(0.0, frozenset({"a"})), (10.0, frozenset({"a", "b"})), (7300.0, frozenset())]
    buckets = bucket_events(events, 3600.0)
    assert [(b.start, b.photos, b.counts) for b in buckets] == [
        (0.0, 2, {"a": 2, "b": 1}),
        (3600.0, 0, {}),
        (7200.0, 1, {}),
    ]
