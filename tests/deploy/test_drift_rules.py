"""The drift rules and dashboard in deploy/: valid PromQL over metrics the worker exports or the rules record,
with the thresholds of `darkroom drift` (tools/drift.py), so that both say the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import yaml
from prometheus_client import REGISTRY

from stream.shadow import SHADOW_LATENCY, SHADOW_PHOTOS
from stream.tagrates import TagRates
from tools.drift import MIN_PHOTOS, SILENCED_MIN_EXPECTED, Z_THRESHOLD

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "darkroom-drift-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "darkroom-drift.json"
NAME = re.compile(r"\b(darkroom[a-z0-9_:]*)")


def exported() -> set[str]:
    """The sample names the worker's /metrics shows once it has tagged and shadowed a photo."""
    TagRates().observe("990", [("beach", 0.5)])
    SHADOW_PHOTOS.labels("991", "tagged").inc()
    SHADOW_LATENCY.labels("991").observe(0.1)
    return {s.name for metric in REGISTRY.collect() for s in metric.samples if s.name.startswith("darkroom")}


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_rule_is_valid_promql_over_exported_or_recorded_series() -> None:
    names = exported()
    recorded = {r["record"] for r in rules() if "record" in r}
    assert {"darkroom_tag_score_count", "darkroom_tag_score_sum", "darkroom_tagged_photos_total"} <= names
    for rule in rules():
        assert ("record" in rule) != ("alert" in rule), rule
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        unknown = set(NAME.findall(rule["expr"])) - names - recorded
        assert not unknown, (rule.get("record") or rule.get("alert"), unknown)
    assert all(re.fullmatch(r"darkroom:[a-z0-9_]+:[a-z0-9_]+", name) for name in recorded), recorded


def test_the_alerts_use_the_thresholds_of_darkroom_drift() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == {"DarkroomTagRateDrift", "DarkroomTagSilenced"}
    drift = " ".join(alerts["DarkroomTagRateDrift"]["expr"].split())
    assert f"abs(darkroom:tag_rate:zscore) > {Z_THRESHOLD:g}" in drift
    assert f"darkroom:tagged_photos:increase1h >= {MIN_PHOTOS}" in drift
    silenced = " ".join(alerts["DarkroomTagSilenced"]["expr"].split())
    assert f">= {SILENCED_MIN_EXPECTED:g}" in silenced
    assert all(a["labels"]["severity"] and a["annotations"]["summary"] for a in alerts.values())


def test_the_dashboard_queries_parse_and_name_only_known_series() -> None:
    names = exported() | {r["record"] for r in rules() if "record" in r}
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "darkroom-drift" and dashboard["panels"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert set(re.findall(r"\$(\w+)", expr)) <= variables, expr
            promql_parser.parse(re.sub(r"\$\w+", "x", expr))
            assert set(NAME.findall(expr)) <= names, (panel["title"], expr)
