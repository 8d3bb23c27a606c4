"""The one Faust app: settings in, topics declared once. Agents are attached by whoever runs it (`darkroom worker`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from stream import metrics
from stream.gaps import OffsetGaps
from stream.kafka_security import faust_credentials
from stream.settings import Settings
from stream.tolerant_records import install as install_tolerant_records


@dataclass(frozen=True)
class AppTopics:
    uploads: faust.TopicT
    tags: faust.TopicT
    dlq: faust.TopicT


class IdempotentProducer(aiokafka_driver.Producer):
    """Faust's aiokafka producer with ``enable_idempotence``: a retried send is written once, in order.
    Faust turns it on only inside transactions (exactly-once), so it is switched on here."""

    def _settings_extra(self) -> dict[str, object]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


#: Faust hard-codes aiokafka's fetch_max_wait_ms=1500. With several partitions the embedded broker holds a
#: fetch for that long even when records are waiting (measured: 0.7–1.5 s per upload), so it is cut here.
FETCH_MAX_WAIT_MS = 20


class PromptConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """aiokafka in Faust's consumer thread, with a short fetch wait and fetches checked for skipped offsets."""

    gaps: OffsetGaps | None = None

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the fetcher starts, at consumer.start()
        return consumer

    async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):  # type: ignore[no-untyped-def]
        """Faust's, except that a partition's records that start past a skipped offset are left unread and
        the partition is fetched again from that offset (stream/gaps.py): the embedded broker can serve a
        later upload before an earlier one, and the earlier one would never be tagged."""
        if self.gaps is None:
            self.gaps = OffsetGaps(getattr(self.consumer.app, "gap_retries", 0))
        before = fetch_positions(consumer)
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        return heal_fetched(consumer, self.gaps, unchanged_positions(consumer, before), records)


def _states(consumer) -> dict:  # type: ignore[no-untyped-def]
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return {}
    return {tp: assignment.state_value(tp) for tp in assignment.tps}


def fetch_positions(consumer) -> dict:  # type: ignore[no-untyped-def]
    """Each assigned partition's state and position (the offset its next record should have), where aiokafka
    has one."""
    return {
        tp: (state, state.position)
        for tp, state in _states(consumer).items()
        if state is not None and state.has_valid_position
    }


def unchanged_positions(consumer, before: dict) -> dict:  # type: ignore[no-untyped-def]
    """The positions of ``before`` whose partition is still assigned as it was: after a rebalance (aiokafka
    makes each assignment's partition states anew) a partition starts where its group committed, which says
    nothing about an offset skipped."""
    now = _states(consumer)
    return {tp: position for tp, (state, position) in before.items() if now.get(tp) is state}


def heal_fetched(consumer, gaps: OffsetGaps, before: dict, records: dict) -> dict:  # type: ignore[no-untyped-def]
    """``records`` (partition → fetched records) up to each partition's first skipped offset; a partition cut
    short is sought back to that offset, so its next fetch starts there."""
    healed, read_past = gaps.healed, gaps.accepted
    out = {}
    for tp, batch in records.items():
        kept = gaps.check(tp, before.get(tp), [record.offset for record in batch])
        if kept < len(batch):
            consumer.seek(tp, gaps.pending(tp))
            batch = batch[:kept]
        if batch:
            out[tp] = batch
    metrics.FETCH_GAPS.labels("healed").inc(gaps.healed - healed)
    metrics.FETCH_GAPS.labels("read_past").inc(gaps.accepted - read_past)
    return out


class PromptConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer with a short fetch wait: an upload is processed when it arrives."""

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TaggerApp(faust.App):
    """The worker's app: Faust's, with a prompt consumer, the idempotent producer when
    ``producer_idempotence`` is set, and a rebalance that does not wait for Triton."""

    idempotent_producer: bool = False
    #: DARKROOM_KAFKA_GAP_RETRIES: fetches of a skipped upload offset before it is read past (stream/gaps.py)
    gap_retries: int = 0
    #: set by the agent: gives back (unacked) the events it cannot finish soon, and returns them
    release_held: Callable[[], Awaitable[list[faust.EventT]]] | None = None
    _revoking: bool = False

    async def _on_partitions_revoked(self, revoked: set[faust.types.TP]) -> None:
        self._revoking = True
        try:
            await super()._on_partitions_revoked(revoked)
        finally:
            self._revoking = False

    async def _consumer_wait_empty(self, consumer: faust.types.ConsumerT, logger: object) -> None:
        """During a rebalance Faust waits here until every event taken is acked: during a Triton outage
        that would be never, and the group would evict the worker. The agent gives back what it cannot
        finish within its grace period instead; those events are no longer waited for (nor committed).
        At shutdown nothing is given back: the agent drains (DARKROOM_DRAIN_TIMEOUT_S)."""
        if self._revoking and self.release_held is not None:
            for event in await self.release_held():
                consumer.unacked.discard(event.message)
        await super()._consumer_wait_empty(consumer, logger)

    def _new_producer(self) -> faust.types.ProducerT:
        if self.idempotent_producer:
            return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)
        return super()._new_producer()

    def _new_consumer(self) -> faust.types.ConsumerT:
        return PromptConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.transport.loop,
        )


def create_app(settings: Settings) -> tuple[faust.App, AppTopics]:
    """Build the worker's app and its three topics from ``settings`` (no I/O happens here)."""
    install_tolerant_records()  # a header name that is not UTF-8 must not stop the fetch (raises if it can't)
    app = TaggerApp(
        settings.group_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",") if host.strip()],
        broker_credentials=faust_credentials(settings),  # TLS / SASL; None: plaintext
        store="memory://",
        datadir=settings.data_dir,
        # Outputs are awaited per batch before the input offsets may move; commit often after that.
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        # A member must rejoin within this during a rebalance; the agent gives back what it holds after
        # rebalance_grace_s (< this, validated), so a rebalance completes even while Triton is down.
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,  # acks=all: an output is acknowledged once every in-sync replica has it
        # While a batch waits for Triton, aiokafka keeps heartbeating and Faust keeps fetching into the
        # stream buffer; only when that buffer is full does polling stop, and the group evicts the worker
        # after this long (Faust's default, stated here because Triton outages must stay below it).
        broker_max_poll_interval=1000.0,
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are declared by `darkroom up` or by the cluster (Strimzi)
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_in_thread=False,
    )
    app.idempotent_producer = settings.producer_idempotence
    app.gap_retries = settings.kafka_gap_retries
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    topics = AppTopics(
        uploads=app.topic(settings.uploads_topic, **raw),
        tags=app.topic(settings.tags_topic, **raw),
        dlq=app.topic(settings.dlq_topic, **raw),
    )
    return app, topics
