"""The one Faust app: settings in, topics declared once, agents attached."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from stream.settings import Settings


@dataclass(frozen=True)
class Topics:
    uploads: faust.TopicT
    tags: faust.TopicT
    dlq: faust.TopicT


def create_app(settings: Settings) -> tuple[faust.App, Topics]:
    """Build the worker's app and its three topics from ``settings`` (no I/O happens here)."""
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",") if host.strip()],
        store="memory://",
        datadir=settings.data_dir,
        # Outputs are awaited per batch before the input offsets may move; commit often after that.
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are declared by `darkroom up` or by the cluster (Strimzi)
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_in_thread=False,
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    topics = Topics(
        uploads=app.topic(settings.uploads_topic, **raw),
        tags=app.topic(settings.tags_topic, **raw),
        dlq=app.topic(settings.dlq_topic, **raw),
    )
    from stream.agents import attach_agents  # agents need the app; the app does not need them

    attach_agents(app, topics, settings)
    return app, topics
