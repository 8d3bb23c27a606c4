"""Per-tag metrics of the live model keep a bounded set of label values whatever the model answers."""

from __future__ import annotations

from prometheus_client import REGISTRY

from stream.tagrates import OTHER, TAG_SCORE, TagRates


def _labels(version: str) -> set[str]:
    return {
        s.labels["tag"]
        for metric in REGISTRY.collect()
        if metric.name == "darkroom_tag_score"
        for s in metric.samples
        if s.labels.get("model_version") == version and s.name.endswith("_count")
    }


def _count(version: str, tag: str) -> float:
    return (
        REGISTRY.get_sample_value("darkroom_tag_score_count", {"model_version": version, "tag": tag}) or 0.0
    )


def test_emissions_and_score_sums_are_counted_per_version_and_tag() -> None:
    rates = TagRates()
    rates.observe("901", [("beach", 0.9), ("sky", 0.5, "n09436708")])
    rates.observe("901", [("beach", 0.7)])
    assert _count("901", "beach") == 2 and _count("901", "sky") == 1
    total = REGISTRY.get_sample_value("darkroom_tag_score_sum", {"model_version": "901", "tag": "beach"})
    assert abs(total - 1.6) < 1e-9
    assert REGISTRY.get_sample_value("darkroom_tagged_photos_total", {"model_version": "901"}) == 2


def test_label_values_are_bounded_per_version_and_hostile_tags_never_become_labels() -> None:
    rates = TagRates(max_tags=3)
    hostile = ["a" * 500, "x\ny", '"}\n evil{', "", "\u202e", OTHER]
    rates.observe("902", [(t, 0.5) for t in hostile])
    rates.observe("902", [(f"tag{i}", 0.5) for i in range(10)])
    assert _labels("902") == {"tag0", "tag1", "tag2", OTHER}
    assert _count("902", OTHER) == len(hostile) + 7
    rates.observe("x1", [("beach", 0.5)])  # not a version number: never a label
    assert _labels("x1") == set()


def test_only_a_few_versions_keep_series_and_the_version_being_tagged_always_does() -> None:
    rates = TagRates(max_versions=2)
    for version in ("910", "911", "912"):
        rates.observe(version, [("beach", 0.5)])
    assert _labels("910") == set() and _labels("911") == _labels("912") == {"beach"}
    rates.observe("905", [("sky", 0.5)])  # an older version again, as after a rollback: it is counted
    assert _labels("905") == {"sky"} and _labels("911") == set() and _labels("912") == {"beach"}
    assert set(rates.tags) == {"905", "912"}
    TAG_SCORE.clear()
