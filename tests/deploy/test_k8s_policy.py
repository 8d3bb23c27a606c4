"""Policy tests over the rendered overlays: what every pod, Service and setting must satisfy to deploy.

The worker's environment is checked against ``stream.settings`` itself (``ENV_VARS`` and ``Settings``), so a
renamed or misspelt variable fails here rather than being silently ignored in a cluster.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream.settings import ENV_VARS, Settings
from trainer.tensorrt import TRITON_IMAGE

Resource = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]

WORKER = "darkroom-worker"
TRITON = "triton"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


# --- helpers: find things in a rendered overlay -----------------------------------------------------


def of_kind(docs: list[Resource], kind: str) -> list[Resource]:
    """Every resource of ``kind``."""
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Resource], kind: str, name: str) -> Resource:
    """The resource of ``kind`` named ``name`` (kustomize's hash suffix on generated names is ignored)."""
    found = [
        d
        for d in of_kind(docs, kind)
        if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", d["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def workloads(docs: list[Resource]) -> list[Resource]:
    """Every resource that runs pods."""
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Resource) -> Resource:
    """The pod spec of a Deployment-like workload."""
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Resource) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(docs: list[Resource]) -> Iterator[tuple[Resource, Resource]]:
    """(workload, container) for every container, init containers included."""
    for w in workloads(docs):
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield w, c


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` form, or a bare map as in Services) matches ``labels``."""
    match = selector.get("matchLabels", selector) if "matchExpressions" not in selector else None
    assert match is not None, "matchExpressions selectors are not used here; extend this helper if needed"
    return all(labels.get(k) == v for k, v in match.items())


def container_env(docs: list[Resource], container: Resource) -> dict[str, str]:
    """A container's environment: envFrom ConfigMaps (with prefix), then `env` (literal or ConfigMap key)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
            env.update({source.get("prefix", "") + k: v for k, v in data.items()})
        else:
            # Secrets are created out of band (never committed); they must be optional so pods still start.
            assert source["secretRef"].get("optional") is True, f"{container['name']}: non-optional {source}"
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = one(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif "resourceFieldRef" in var.get("valueFrom", {}):  # the downward API: the container's resources
            ref = var["valueFrom"]["resourceFieldRef"]
            kind, _, name = ref["resource"].partition(".")
            value = quantity(container["resources"][kind][name]) / quantity(ref.get("divisor", 1))
            env[var["name"]] = str(int(value))
        else:
            env[var["name"]] = f"<{next(iter(var['valueFrom']))}>"
    return env


def worker_container(docs: list[Resource]) -> Resource:
    return pod_spec(one(docs, "Deployment", WORKER))["containers"][0]


def worker_settings(docs: list[Resource]) -> Settings:
    """What ``darkroom worker`` would run with in this overlay, parsed by the worker's own ``Settings``."""
    return Settings.from_env(container_env(docs, worker_container(docs)))


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (``500m`` -> 0.5, ``2Gi`` -> 2 * 2**30)."""
    units = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert m and (m[2] == "" or m[2] in units), f"not a quantity: {value!r}"
    return float(m[1]) * units.get(m[2], 1)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# --- the overlay as a whole ---------------------------------------------------------------------------


def test_overlay_renders_the_whole_deployment(rendered: list[Resource]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    for kind, count in {
        "Namespace": 1,
        "Deployment": 2,
        "Service": 2,
        "ConfigMap": 3,  # worker and Triton settings, Grafana dashboards
        "PodDisruptionBudget": 2,
        "PersistentVolumeClaim": 1,
        "ScaledObject": 1,
        "KafkaTopic": 7,  # uploads, tags, dead letters, shadow tags; tag edits and theirs; embeddings
        "ServiceMonitor": 2,
    }.items():
        assert kinds.count(kind) == count, f"{kind}: {kinds.count(kind)} rendered, expected {count}"
    assert of_kind(rendered, "NetworkPolicy"), "no NetworkPolicy rendered"


def test_namespace_enforces_restricted_pod_security(rendered: list[Resource]) -> None:
    ns = of_kind(rendered, "Namespace")[0]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    app = {d["metadata"]["namespace"] for d in rendered if d["kind"] not in {"Namespace", "KafkaTopic"}}
    assert app == {ns["metadata"]["name"]}, f"app resources outside namespace {ns['metadata']['name']}: {app}"


def test_images_are_pinned(rendered: list[Resource]) -> None:
    for w, c in containers(rendered):
        image = c["image"]
        if "@sha256:" in image:
            continue
        name, colon, tag = image.rpartition(":")
        assert colon and tag != "latest" and "/" not in tag, f"{w['metadata']['name']}: unpinned {image!r}"


# --- pods: probes, resources, security ----------------------------------------------------------------


def test_every_container_has_startup_readiness_and_liveness_probes(rendered: list[Resource]) -> None:
    for w, c in containers(rendered):
        ports = {p["name"] for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{w['metadata']['name']}/{c['name']}: no {probe}"
            get = c[probe].get("httpGet")
            assert get, f"{w['metadata']['name']}/{c['name']}: {probe} is not an HTTP probe"
            assert get["port"] in ports, f"{c['name']}: {probe} port {get['port']!r} is not a container port"


def test_triton_probes_use_the_v2_health_endpoints(rendered: list[Resource]) -> None:
    c = pod_spec(one(rendered, "Deployment", TRITON))["containers"][0]
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_worker_probes_use_its_health_endpoints(rendered: list[Resource]) -> None:
    c = worker_container(rendered)
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/health/live"


def test_every_container_has_requests_and_limits(rendered: list[Resource]) -> None:
    for w, c in containers(rendered):
        where = f"{w['metadata']['name']}/{c['name']}"
        res = c.get("resources", {})
        requests, limits = res.get("requests", {}), res.get("limits", {})
        for key in ("cpu", "memory"):
            assert key in requests and key in limits, f"{where}: {key} request and limit both required"
            assert quantity(limits[key]) >= quantity(requests[key]), f"{where}: {key} limit < request"
        for key in set(requests) | set(limits):
            if "/" in key:  # extended resources (nvidia.com/gpu) cannot be overcommitted
                assert requests.get(key) == limits.get(key), f"{where}: {key} request != limit"


def test_every_pod_runs_with_restricted_security(rendered: list[Resource]) -> None:
    for w in workloads(rendered):
        name, spec = w["metadata"]["name"], pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot"
        assert pod_sc.get("runAsUser", 0) != 0, f"{name}: pod runs as uid 0"
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: pod seccomp"
        assert spec.get("automountServiceAccountToken") is False, f"{name}: needs no API token"
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{name}: {host}"
        assert not any("hostPath" in v for v in spec.get("volumes", [])), f"{name}: hostPath volume"
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc, where = c.get("securityContext", {}), f"{name}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert sc.get("privileged") is not True, f"{where}: privileged"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop"
            assert not sc.get("capabilities", {}).get("add"), f"{where}: capabilities.add"
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, f"{where}: runs as uid 0"
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in empty_dirs, f"{where}: /tmp must be an emptyDir (read-only root)"


# --- selectors and ports ------------------------------------------------------------------------------


def test_workload_selectors_match_their_pod_labels(rendered: list[Resource]) -> None:
    for w in workloads(rendered):
        assert selects(w["spec"]["selector"], pod_labels(w)), (
            f"{w['metadata']['name']}: selector misses its pods"
        )


def test_pdbs_and_services_select_exactly_one_workload(rendered: list[Resource]) -> None:
    for d in of_kind(rendered, "PodDisruptionBudget") + of_kind(rendered, "Service"):
        selector = d["spec"]["selector"]
        assert selector, f"{d['kind']} {d['metadata']['name']}: empty selector"
        matched = [w["metadata"]["name"] for w in workloads(rendered) if selects(selector, pod_labels(w))]
        assert len(matched) == 1, f"{d['kind']} {d['metadata']['name']} selects {matched}"


def test_network_policies_select_existing_pods(rendered: list[Resource]) -> None:
    for np in of_kind(rendered, "NetworkPolicy"):
        selector = np["spec"]["podSelector"]
        if selector:
            assert any(selects(selector, pod_labels(w)) for w in workloads(rendered)), np["metadata"]["name"]
        for rule in np["spec"].get("ingress", []) + np["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    matched = [w for w in workloads(rendered) if selects(peer["podSelector"], pod_labels(w))]
                    assert matched, f"{np['metadata']['name']}: peer {peer} selects no pod of this namespace"


def test_service_ports_are_named_and_target_container_ports(rendered: list[Resource]) -> None:
    for svc in of_kind(rendered, "Service"):
        (w,) = [w for w in workloads(rendered) if selects(svc["spec"]["selector"], pod_labels(w))]
        cports = [p for c in pod_spec(w)["containers"] for p in c.get("ports", [])]
        for port in svc["spec"]["ports"]:
            assert port.get("name") in {"http", "grpc", "metrics"}, (
                f"{svc['metadata']['name']}: port name {port}"
            )
            target = port.get("targetPort", port["port"])
            matched = [p for p in cports if target in (p.get("name"), p["containerPort"])]
            assert len(matched) == 1, f"{svc['metadata']['name']}: targetPort {target!r} is no container port"
            assert matched[0]["name"] == port["name"], f"{svc['metadata']['name']}: port names differ"
            assert matched[0].get("protocol", "TCP") == port.get("protocol", "TCP")
            assert matched[0]["containerPort"] == port["port"], (
                f"{svc['metadata']['name']}: {port} renumbered"
            )


def test_triton_exposes_http_grpc_and_metrics(rendered: list[Resource]) -> None:
    svc = one(rendered, "Service", TRITON)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }


# --- the worker's settings ----------------------------------------------------------------------------


def test_worker_sets_only_variables_the_worker_reads(rendered: list[Resource]) -> None:
    for w, c in containers(rendered):
        if not c["image"].split("/")[-1].startswith("darkroom:"):
            continue  # Triton's environment is checked against its own arguments below
        unknown = sorted(set(container_env(rendered, c)) - ENV_VARS)
        assert not unknown, (
            f"{w['metadata']['name']}/{c['name']} sets variables darkroom worker never reads: {unknown}"
        )
        assert c.get("args", c.get("command")) == ["worker"], f"{c['name']}: does not run `darkroom worker`"


def test_worker_settings_parse_and_point_at_the_deployed_services(rendered: list[Resource]) -> None:
    settings = worker_settings(rendered)  # raises SettingsError on a value the worker cannot use
    c = worker_container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert settings.web_bind == "0.0.0.0", "probes and Prometheus cannot reach a loopback-bound web server"
    assert settings.web_port == ports["http"]
    host, port = host_port(settings.triton_grpc)
    triton = one(rendered, "Service", TRITON)
    assert host in {
        triton["metadata"]["name"],
        f"{triton['metadata']['name']}.{triton['metadata']['namespace']}.svc",
    }
    assert port == next(p["port"] for p in triton["spec"]["ports"] if p["name"] == "grpc")


def test_worker_writes_only_to_emptydirs(rendered: list[Resource]) -> None:
    settings = worker_settings(rendered)
    spec = pod_spec(one(rendered, "Deployment", WORKER))
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    mounts = [m for m in worker_container(rendered)["volumeMounts"] if m["name"] in empty_dirs]
    assert any(settings.data_dir.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), (
        settings.data_dir
    )


def test_worker_memory_budget_follows_the_pod_memory_limit(rendered: list[Resource]) -> None:
    container = worker_container(rendered)
    limit = quantity(container["resources"]["limits"]["memory"])
    assert (
        int(container_env(rendered, container)["DARKROOM_MEMORY_LIMIT_BYTES"]) == limit
    )  # a raised limit follows
    settings = worker_settings(rendered)  # validated: one photo at the caps fits what the limit leaves
    assert settings.fetch_budget_bytes >= settings.max_image_bytes


def test_worker_cpu_request_covers_its_decode_threads(rendered: list[Resource]) -> None:
    cpu = quantity(worker_container(rendered)["resources"]["requests"]["cpu"])
    assert cpu >= worker_settings(rendered).decode_threads, "each decode thread needs a core"


def test_worker_replicas_are_left_to_the_autoscaler(rendered: list[Resource]) -> None:
    assert "replicas" not in one(rendered, "Deployment", WORKER)["spec"]


# --- Kafka: autoscaling on lag and the topics -----------------------------------------------------------


def test_scaledobject_scales_the_worker_on_its_consumer_lag(rendered: list[Resource]) -> None:
    settings = worker_settings(rendered)
    so = one(rendered, "ScaledObject", WORKER)["spec"]
    assert so["scaleTargetRef"]["name"] == one(rendered, "Deployment", WORKER)["metadata"]["name"]
    (trigger,) = so["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == settings.kafka_bootstrap
    assert meta["consumerGroup"] == settings.group_id
    assert meta["topic"] == settings.uploads_topic
    assert int(meta["lagThreshold"]) > 0
    uploads = [t for t in of_kind(rendered, "KafkaTopic") if t["spec"]["topicName"] == settings.uploads_topic]
    assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"] <= uploads[0]["spec"]["partitions"], (
        "more replicas than partitions would sit idle"
    )


def test_kafka_topics_are_the_workers_four_and_the_edits_with_a_longer_lived_dlq(
    rendered: list[Resource],
) -> None:
    settings = worker_settings(rendered)
    topics = {t["spec"]["topicName"]: t for t in of_kind(rendered, "KafkaTopic")}
    assert set(topics) == {
        settings.uploads_topic, settings.tags_topic, settings.dlq_topic, settings.shadow_tags_topic,
        settings.edits_topic,
        settings.edits_dlq_topic,
        settings.embeddings_topic,
    }  # fmt: skip
    retention = {name: int(t["spec"]["config"]["retention.ms"]) for name, t in topics.items()}
    assert retention[settings.dlq_topic] > max(
        retention[settings.uploads_topic], retention[settings.tags_topic]
    )
    assert retention[settings.edits_topic] == -1, "the edit log is training data: kept until deleted"
    assert retention[settings.embeddings_topic] < retention[settings.tags_topic], "recomputable: kept briefly"
    bootstrap_host, _ = host_port(settings.kafka_bootstrap.split(",")[0])
    cluster = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics.values()}
    namespaces = {t["metadata"]["namespace"] for t in topics.values()}
    assert len(cluster) == 1 and len(namespaces) == 1
    # Strimzi names the bootstrap Service <cluster>-kafka-bootstrap in the cluster's namespace.
    assert bootstrap_host.startswith(f"{cluster.pop()}-kafka-bootstrap.{namespaces.pop()}."), bootstrap_host


# --- network ------------------------------------------------------------------------------------------


def _allows(np: Resource, direction: str, peer_ok: Any, port: int | str) -> bool:
    peers_key = "from" if direction == "ingress" else "to"
    for rule in np["spec"].get(direction, []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if (not ports or port in ports) and any(peer_ok(peer) for peer in rule.get(peers_key, [])):
            return True
    return False


def test_network_is_denied_by_default_and_open_for_the_data_flow(rendered: list[Resource]) -> None:
    policies = of_kind(rendered, "NetworkPolicy")
    assert any(
        not p["spec"]["podSelector"]
        and {"Ingress", "Egress"} <= set(p["spec"]["policyTypes"])
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ), "no default-deny policy"
    worker_labels = pod_labels(one(rendered, "Deployment", WORKER))
    triton_labels = pod_labels(one(rendered, "Deployment", TRITON))
    of_worker = [
        p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], worker_labels)
    ]
    of_triton = [
        p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], triton_labels)
    ]

    def is_triton(peer: Resource) -> bool:
        return "podSelector" in peer and selects(peer["podSelector"], triton_labels)

    def is_worker(peer: Resource) -> bool:
        return "podSelector" in peer and selects(peer["podSelector"], worker_labels)

    settings = worker_settings(rendered)
    host, port = host_port(settings.kafka_bootstrap.split(",")[0])
    kafka_ns = host.split(".")[1]

    def is_kafka(peer: Resource) -> bool:
        return (
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            == kafka_ns
        )

    assert any(_allows(p, "egress", is_triton, "grpc") for p in of_worker), "worker cannot reach Triton gRPC"
    assert any(_allows(p, "ingress", is_worker, "grpc") for p in of_triton), (
        "Triton does not admit the worker"
    )
    assert any(_allows(p, "egress", is_kafka, port) for p in of_worker), f"worker cannot reach Kafka :{port}"


# --- Triton ---------------------------------------------------------------------------------------------


def test_triton_arguments_use_only_variables_it_is_given(rendered: list[Resource]) -> None:
    c = pod_spec(one(rendered, "Deployment", TRITON))["containers"][0]
    env = container_env(rendered, c)
    used = set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", " ".join(c.get("command", []) + c["args"])))
    assert used <= set(env), f"undefined $(VAR) in Triton's arguments: {sorted(used - set(env))}"
    assert set(env) <= used, f"Triton env set but never used: {sorted(set(env) - used)}"
    assert "--model-control-mode=poll" in c["args"], "new model versions must go live without a restart"


def test_triton_serves_the_variant_of_its_overlay(overlay: str, rendered: list[Resource]) -> None:
    deployment = one(rendered, "Deployment", TRITON)
    spec = pod_spec(deployment)
    c = spec["containers"][0]
    repository = container_env(rendered, c)["MODEL_REPOSITORY"]
    models = next(m for m in c["volumeMounts"] if m["name"] == "models")
    assert models.get("readOnly") is True
    assert repository.startswith(models["mountPath"].rstrip("/") + "/") or "://" in repository
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    assert c["image"] == TRITON_IMAGE, "both variants run the NGC image as it comes"
    if overlay == "gpu":
        assert gpus == "1" and repository.endswith("/gpu")
        assert any(t["key"] == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        assert spec.get("nodeSelector"), "GPU pods must land on GPU nodes"
    else:
        assert gpus is None and repository.endswith("/cpu")


def test_prometheus_scrapes_a_named_port_of_every_service(rendered: list[Resource]) -> None:
    monitors = of_kind(rendered, "ServiceMonitor")
    for svc in of_kind(rendered, "Service"):
        labels = svc["metadata"]["labels"]
        (mon,) = [m for m in monitors if selects(m["spec"]["selector"], labels)]
        names = {p["name"] for p in svc["spec"]["ports"]}
        for endpoint in mon["spec"]["endpoints"]:
            assert endpoint["port"] in names and endpoint["path"] == "/metrics", mon["metadata"]["name"]


# --- recommended labels -------------------------------------------------------------------------------------
RECOMMENDED = ("name", "instance", "version", "component", "part-of", "managed-by")


def test_every_resource_and_pod_carries_the_recommended_labels(rendered: list[Resource]) -> None:
    """app.kubernetes.io/* on every namespaced resource and pod template; the version is the package's."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for doc in rendered:
        if doc["kind"] == "Namespace":
            continue
        labels = doc["metadata"].get("labels", {})
        where = f"{doc['kind']} {doc['metadata']['name']}"
        expected = [k for k in RECOMMENDED if k != "component" or doc["kind"] not in ("NetworkPolicy",)]
        missing = [k for k in expected if f"app.kubernetes.io/{k}" not in labels]
        assert not missing, f"{where} lacks {missing}"
        assert (
            labels["app.kubernetes.io/name"] == "darkroom" and labels["app.kubernetes.io/version"] == version
        )
    for w in workloads(rendered):
        pod = pod_labels(w)
        assert {f"app.kubernetes.io/{k}" for k in RECOMMENDED} <= set(pod), w["metadata"]["name"]


def test_selectors_never_name_the_version(rendered: list[Resource]) -> None:
    """A selector with the version in it would orphan the old pods at every release."""
    selectors = [w["spec"]["selector"] for w in workloads(rendered)]
    selectors += [d["spec"]["selector"] for d in rendered if d["kind"] in ("Service", "PodDisruptionBudget")]
    for selector in selectors:
        assert "app.kubernetes.io/version" not in selector.get("matchLabels", selector)
        assert selector.get("matchLabels", selector).get("app.kubernetes.io/name") == "darkroom"
