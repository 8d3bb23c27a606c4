"""Schema checks of the rendered overlays.

Core resources are validated strictly (unknown fields are errors) against the Kubernetes 1.30 OpenAPI schema
that ``kubernetes-validate`` ships. Custom resources have no schema there; each is checked against the subset
of its CRD's schema these manifests use (KEDA 2.x ScaledObject, Strimzi v1beta2 KafkaTopic, Prometheus
Operator ServiceMonitor), closed so that a misspelt field fails.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate  # the dev extra: a missing validator is an error, never a skip
import pytest

Resource = dict[str, Any]

KUBERNETES_VERSION = "1.30.0"

_STR = {"type": "string", "minLength": 1}
_INT_STR = {"type": "string", "pattern": "^[0-9]+$"}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
    "required": ["matchLabels"],
    "additionalProperties": False,
}


def _cr(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "properties": {"name": _STR, "namespace": _STR, "labels": {"type": "object"}},
                "required": ["name", "namespace"],
            },
            "spec": spec,
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
    }


CUSTOM_RESOURCE_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": _cr(
        "keda.sh/v1alpha1",
        "ScaledObject",
        {
            "type": "object",
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR},
                    "required": ["name"],
                    "additionalProperties": False,
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {
                    "type": "object",
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {"behavior": {"type": "object"}},
                            "additionalProperties": False,
                        }
                    },
                    "additionalProperties": False,
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"const": "kafka"},
                            # KEDA's trigger metadata is map[string]string: numbers must be quoted.
                            "metadata": {
                                "type": "object",
                                "properties": {
                                    "bootstrapServers": _STR,
                                    "consumerGroup": _STR,
                                    "topic": _STR,
                                    "lagThreshold": _INT_STR,
                                    "activationLagThreshold": _INT_STR,
                                    "offsetResetPolicy": {"enum": ["earliest", "latest"]},
                                    "allowIdleConsumers": {"enum": ["true", "false"]},
                                },
                                "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"],
                                "additionalProperties": False,
                            },
                        },
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
        },
    ),
    "KafkaTopic": _cr(
        "kafka.strimzi.io/v1beta2",
        "KafkaTopic",
        {
            "type": "object",
            "properties": {
                "topicName": _STR,
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {
                    "type": "object",
                    "properties": {
                        # Kafka's range: -1 (kept forever: the edit log) or a positive time
                        "retention.ms": {"type": "integer", "anyOf": [{"const": -1}, {"minimum": 1}]},
                        "cleanup.policy": {"enum": ["delete", "compact", "compact,delete"]},
                        "min.insync.replicas": {"type": "integer", "minimum": 1},
                    },
                    "required": ["retention.ms"],
                    "additionalProperties": False,
                },
            },
            "required": ["topicName", "partitions", "replicas", "config"],
            "additionalProperties": False,
        },
    ),
    "ServiceMonitor": _cr(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "properties": {
                "selector": _SELECTOR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": _STR,
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                        "required": ["port"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
        },
    ),
}


def test_core_resources_validate_against_the_pinned_kubernetes_schema(rendered: list[Resource]) -> None:
    errors = []
    for doc in rendered:
        if doc["kind"] in CUSTOM_RESOURCE_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{doc['kind']} ({doc['apiVersion']}): no Kubernetes {KUBERNETES_VERSION} schema")
    assert not errors, "\n".join(errors)


def test_custom_resources_match_their_crd_schemas(rendered: list[Resource]) -> None:
    custom = [doc for doc in rendered if doc["kind"] in CUSTOM_RESOURCE_SCHEMAS]
    assert {doc["kind"] for doc in custom} == set(CUSTOM_RESOURCE_SCHEMAS)
    for doc in custom:
        jsonschema.validate(doc, CUSTOM_RESOURCE_SCHEMAS[doc["kind"]])


def test_schema_checks_reject_a_broken_manifest(rendered: list[Resource]) -> None:
    """The validators above really validate: a typo in a core or a custom resource fails."""
    deployment = next(doc for doc in rendered if doc["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    so = next(doc for doc in rendered if doc["kind"] == "ScaledObject")
    trigger = {
        **so["spec"]["triggers"][0],
        "metadata": {**so["spec"]["triggers"][0]["metadata"], "lagThreshold": 500},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**so, "spec": {**so["spec"], "triggers": [trigger]}}, CUSTOM_RESOURCE_SCHEMAS["ScaledObject"]
        )
