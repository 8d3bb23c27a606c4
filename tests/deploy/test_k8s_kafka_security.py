"""Kafka TLS and SASL reach the worker from Secrets: env vars from ``darkroom-kafka``, certificates mounted
from ``darkroom-kafka-tls``; both optional, so a plaintext cluster needs neither."""

from __future__ import annotations

from pathlib import Path

import yaml

from stream.settings import ENV_VARS, Settings
from tests.deploy.test_k8s_policy import WORKER, Resource, container_env, one, pod_spec, worker_container

DOC_EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def _documented_secret() -> Resource:
    """The ``darkroom-kafka`` Secret that docs/deploy.md tells users to create."""
    text = DOC_EXAMPLE.read_text()
    block = text.split("```yaml\n# darkroom-kafka\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def test_worker_reads_kafka_security_from_an_optional_secret(rendered: list[Resource]) -> None:
    refs = [s["secretRef"] for s in worker_container(rendered)["envFrom"] if "secretRef" in s]
    assert refs == [{"name": "darkroom-kafka", "optional": True}]


def test_the_documented_secret_sets_only_variables_the_worker_reads_and_they_parse(
    rendered: list[Resource], tmp_path: Path
) -> None:
    secret = _documented_secret()
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "darkroom-kafka"
    values = secret["stringData"]
    assert set(values) <= ENV_VARS, sorted(set(values) - ENV_VARS)
    spec = pod_spec(one(rendered, "Deployment", WORKER))
    tls_volume = next(
        v["name"] for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "darkroom-kafka-tls"
    )
    assert next(v for v in spec["volumes"] if v["name"] == tls_volume)["secret"]["optional"] is True
    mount = next(m for m in worker_container(rendered)["volumeMounts"] if m["name"] == tls_volume)
    cafile = values["DARKROOM_KAFKA_SSL_CAFILE"]
    assert cafile.startswith(mount["mountPath"].rstrip("/") + "/"), "the CA file is not in the mounted Secret"
    # the worker's own Settings accept the combination (the CA file stands in for the mounted one)
    (tmp_path / "ca.crt").write_text("")
    env = {**container_env(rendered, worker_container(rendered)), **values,
           "DARKROOM_KAFKA_SSL_CAFILE": str(tmp_path / "ca.crt")}  # fmt: skip
    settings = Settings.from_env(env)
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")


def test_network_policy_lets_the_worker_reach_the_tls_listener(rendered: list[Resource]) -> None:
    policies = [p for p in rendered if p["kind"] == "NetworkPolicy"]
    kafka_ports = {
        port["port"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        if any(t.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "kafka"
               for t in rule.get("to", []))
        for port in rule.get("ports", [])
    }  # fmt: skip
    assert 9093 in kafka_ports, kafka_ports
