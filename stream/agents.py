"""The tagging agent: micro-batches of uploads → fetch + decode → Triton → tag events or dead letters.

Delivery (docs/reliability.md). The agent reads its stream with manual acks and hands events to an
``InOrderPipeline``: micro-batches of up to ``batch_size`` events, two in flight so that decoding the next
overlaps inference and I/O of the current; a batch starts when a slot is free, with what queued meanwhile.
For each batch the tagger:

* awaits the broker's acknowledgement (acks=all) of every output it produced: an input offset is acked
  (and later committed) only after its tag event or dead letter is durable, and batches are acked strictly
  in arrival order, never one before an earlier one (so faust-streaming #606, which commits past an
  in-flight event when acks arrive out of order, cannot happen; agent concurrency stays 1 for the same
  reason);
* turns what retrying cannot fix into a dead letter, retries what it can (Triton without end, a photo's
  source and an input the model fails on a bounded number of times), and stops the process (``os._exit``, no commit) on anything else;
* on cancellation (SIGTERM, worker stop) the pipeline finishes what it holds before letting the
  cancellation through, within ``drain_timeout_s``; past that it exits without committing (redelivered);
* on a rebalance it finishes what it can within ``rebalance_grace_s`` and gives the rest back unacked
  (read again by the partition's next owner), so a Triton outage never holds the group's rebalance.

Outputs are idempotent: the same (photo_id, model_version) always gives the same tags, so a redelivered
batch repeats identical events.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import faust

from stream import metrics
from stream.app import AppTopics
from stream.health import attach_health
from stream.pipeline import InOrderPipeline
from stream.settings import Settings
from stream.tagging import BatchTagger

log = logging.getLogger(__name__)


def attach_agents(app: faust.App, topics: AppTopics, settings: Settings) -> None:
    """Register the tagging agent, the Triton/Kafka watchers and the health and metrics pages on ``app``."""
    tagger = BatchTagger(settings, topics)

    @app.agent(topics.uploads, name="tag-uploads", concurrency=1)
    async def tag_uploads(stream: faust.StreamT) -> None:
        manual = stream.noack()  # acked by the pipeline, in order, once outputs are durable
        pipeline = InOrderPipeline(tagger, manual, settings)
        app.release_held = functools.partial(pipeline.release, settings.rebalance_grace_s)  # type: ignore[attr-defined]
        try:
            async for event in manual.events():
                await pipeline.queue.put(event)
        finally:
            await asyncio.shield(pipeline.drain(settings.drain_timeout_s))

    @app.on_partitions_assigned.connect
    async def count_assignment(sender: faust.App, assigned: set, **kwargs: object) -> None:
        """Count completed rebalances: a worker evicted again and again shows as a rising count."""
        metrics.ASSIGNMENTS.inc()

    @app.task
    async def connect_triton() -> None:
        model_input = await tagger.client.wait_ready()
        await tagger.shadow.refresh()  # the live version is known before the first request
        tagger.model_input = model_input
        log.info("model %s ready, input %s", settings.model_name, tagger.model_input)
        await asyncio.gather(tagger.shadow.watch(), tagger.shadow.run(lambda: app.producer))

    attach_health(app, tagger)
