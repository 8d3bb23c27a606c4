"""The naive baseline: what a user would hand-write, one message at a time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from contracts import topics
from contracts.records import upload_value


def bench_naive(paths: list[Path], checkpoint: dict, stack: Any) -> dict:
    """A hand-written kafka-python loop: full decode, PyTorch at batch 1, a produce per message, on the
    broker of ``stack`` before its workers start (Triton idles unused)."""
    import torch
    from kafka import KafkaConsumer, KafkaProducer
    from PIL import Image

    from trainer.checkpoint import load_tagger

    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    for i, path in enumerate(paths):
        producer.send(
            topics.UPLOADS,
            key=f"naive-{i}".encode(),
            value=upload_value(f"naive-{i}", path.resolve().as_uri(), user_tags=[]),
        )
    producer.flush()
    model = load_tagger(checkpoint)
    h, w = checkpoint["input_size"]
    tags = checkpoint["vocab"]["tags"]
    # The same short fetch wait as the worker's: the embedded broker's long fetch holds are not the
    # baseline's fault, and the comparison is about the processing, not about that quirk.
    consumer = KafkaConsumer(
        topics.UPLOADS,
        bootstrap_servers=stack.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    done, started = 0, None
    for msg in consumer:
        started = started or time.perf_counter()
        event = json.loads(msg.value)
        img = Image.open(event["url"][len("file://") :]).convert("RGB").resize((w, h))
        with torch.no_grad():
            scores = model(torch.from_numpy(np.array(img)).unsqueeze(0))[0].numpy()
        result = {
            "photo_id": event["photo_id"],
            "tags": [t for t, s in zip(tags, scores, strict=True) if s > 0.5],
        }
        producer.send(topics.TAGS, key=msg.key, value=json.dumps(result).encode())
        done += 1
        if done == len(paths):
            break
    producer.flush()
    consumer.close()
    # PyTorch's default threads (OpenMP, spin-waiting): a user's loop as written. On a busy machine batch-1
    # inference with 2 threads spins against the neighbours (measured 25 ms vs 1.3 ms per photo with 1 thread
    # under a test suite's load): a naive figure far below its parts means a busy machine, not this loop.
    return {"img_s": round(done / (time.perf_counter() - started), 1), "photos": done,
            "torch_threads": torch.get_num_threads()}  # fmt: skip
