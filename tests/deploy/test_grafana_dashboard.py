"""The service dashboard (deploy/grafana/darkroom-service.json): valid Grafana dashboard JSON whose every query
names metrics and labels the worker really exports (read from its exposition), shipped as the ConfigMap that
Grafana's dashboard sidecar loads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "darkroom-service.json"
#: metrics the dashboard may read from elsewhere than the worker: name → what exports it
EXTERNAL = {"keda_scaler_metrics_value": "KEDA's operator (the worker's ScaledObject, consumer lag)"}
#: labels Prometheus adds when it scrapes (ServiceMonitor / pod annotations), KEDA's, and the histogram's ``le``
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint", "le"}
KEDA_LABELS = {"scaledObject", "scaler", "metric", "triggerIndex", "type"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}  # fmt: skip


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queried_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but rows (nested rows' panels included)."""
    found = []
    for panel in board["panels"]:
        found += panel.get("panels", []) if panel["type"] == "row" else [panel]
    return found


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in queried_panels(board) for t in p["targets"]]


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses: label matchers ``{...}`` and ``by``/``on``/... lists
    give labels; identifiers that are not functions, keywords or numbers are metrics."""
    labels: set[str] = set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings can hold anything
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {w.strip() for w in grouping.split(",") if w.strip()}
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors: [5m], [$__rate_interval]
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = match.group(), expr[match.end() :].lstrip()
        if (
            rest.startswith("(")
            or word.lower() in PROMQL_WORDS
            or expr[match.start() - 1 : match.start()] == "$"
        ):
            continue
        names.add(word)
    return names, labels


def exported() -> tuple[set[str], set[str]]:
    """(every series name the worker's /metrics can serve, every label name on them)."""
    metrics.observe_model_version("tagger", "1")  # the model gauge has a series only once Triton answered
    names, labels = set(), set()
    for family in text_string_to_metric_families(metrics.exposition()[0].decode()):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(
            family.type, ("",)
        )
        names |= {family.name + s for s in suffixes}
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    return names, labels


def test_the_dashboard_is_grafana_dashboard_json() -> None:
    board = dashboard()
    assert board["title"] and re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = queried_panels(board)
    ids = [p["id"] for p in board["panels"] + [q for p in board["panels"] for q in p.get("panels", [])]]
    assert len(panels) >= 10 and len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        where = panel["gridPos"]
        assert 0 <= where["x"] and where["x"] + where["w"] <= 24, panel["title"]
        cells = {(where["x"] + i, where["y"] + j) for i in range(where["w"]) for j in range(where["h"])}
        assert not cells & occupied, f"{panel['title']!r} overlaps another panel"
        occupied |= cells
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "table", "gauge", "bargauge", "heatmap"}, panel["type"]
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in panel["targets"]), panel[
            "title"
        ]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["expr"].count("{") == target["expr"].count("}"), target["expr"]


def test_every_metric_and_label_the_dashboard_queries_is_exported() -> None:
    served, served_labels = exported()
    used: set[str] = set()
    for expr in exprs(dashboard()):
        names, labels = promql_names(expr)
        assert names, f"no metric found in {expr!r}"
        unknown = {n for n in names if n not in served and n not in EXTERNAL}
        assert not unknown, f"{expr!r} reads {unknown}, which the worker does not export"
        assert labels <= served_labels | TARGET_LABELS | KEDA_LABELS, (expr, labels - served_labels)
        used |= names
    wanted = {"darkroom_uploads_consumed_total", "darkroom_outputs_produced_total", "darkroom_dead_letters_total",
              "darkroom_upload_to_tag_duration_seconds_bucket", "darkroom_triton_request_duration_seconds_bucket",
              "darkroom_triton_request_images_bucket", "darkroom_uploads_in_flight", "darkroom_build_info",
              "darkroom_model_version_info"}  # fmt: skip
    assert wanted <= used, wanted - used


def test_the_upload_to_tag_panel_shows_p50_p95_p99_of_the_histogram() -> None:
    (panel,) = [p for p in queried_panels(dashboard()) if p["title"] == "Upload to tag latency"]
    quantiles = sorted(
        float(re.match(r"histogram_quantile\(([0-9.]+),", t["expr"]).group(1)) for t in panel["targets"]
    )
    assert quantiles == [0.5, 0.95, 0.99]
    assert all("darkroom_upload_to_tag_duration_seconds_bucket" in t["expr"] for t in panel["targets"])
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_name_extraction_finds_a_misspelt_metric() -> None:
    names, labels = promql_names(
        'histogram_quantile(0.99, sum by (le, pod) (rate(darkrom_upload_seconds_bucket{namespace="a b"}[5m]))) '
        "/ on (pod) group_left (version) darkroom_build_info > 0"
    )
    assert names == {"darkrom_upload_seconds_bucket", "darkroom_build_info"}
    assert labels == {"le", "pod", "namespace", "version"}


def test_the_lag_panels_read_the_workers_scaledobject() -> None:
    scaled = yaml.safe_load((ROOT / "deploy/k8s/base/worker/scaledobject.yaml").read_text())
    for expr in (e for e in exprs(dashboard()) if "keda_scaler_metrics_value" in e):
        assert f'scaledObject="{scaled["metadata"]["name"]}"' in expr


def test_each_overlay_ships_the_dashboard_for_grafanas_sidecar(rendered: list[dict[str, Any]]) -> None:
    (config,) = [
        d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "darkroom-dashboards"
    ]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["darkroom-service.json"]) == dashboard()
