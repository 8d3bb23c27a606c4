"""The two models the bench runs on the same photos: the small decode-bound one and the general tagger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools.bench.workload import Plan

#: p99 upload → tag latency bound of the server scenario, per model (ms).
BOUNDS_MS = {"small": 150.0, "general": 300.0}

FULL_PLANS = {
    "small": Plan(photos=2000, naive_photos=300, decode_sample=200, repeats=3),
    # Lite0 at 256 px runs at tens of images/s on 2 cores: fewer photos, longer trials for a p99.
    "general": Plan(
        photos=600,
        naive_photos=60,
        decode_sample=60,
        repeats=2,
        trial_s=10.0,
        trial_min_photos=150,
        offline_sample=48,
        batches=(8, 16),
    ),  # fmt: skip
}
QUICK_PLANS = {
    "small": Plan(
        photos=200,
        naive_photos=40,
        decode_sample=40,
        trial_s=1.5,
        trial_min_photos=40,
        search_steps=1,
        confirm=False,
        fresh_after=100_000,
        warm_photos=16,
        latency_on_burst_stack=True,
        offline_sample=40,
        batches=(8, 16),
    ),  # fmt: skip
    "general": Plan(
        photos=40,
        naive_photos=8,
        decode_sample=10,
        trial_s=1.5,
        trial_min_photos=16,
        search_steps=0,
        confirm=False,
        fresh_after=100_000,
        warm_photos=16,
        latency_on_burst_stack=True,
        offline_sample=16,
        batches=(8,),
    ),  # fmt: skip
}
MODELS = tuple(BOUNDS_MS)


@dataclass
class BenchModel:
    name: str
    checkpoint: dict
    plan: Plan
    bound_ms: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) the worker decodes to."""
        h, w = self.checkpoint["input_size"]
        return w, h

    @property
    def description(self) -> str:
        w, h = self.size
        return f"{self.checkpoint['model']} ({w}x{h} input, {len(self.checkpoint['vocab']['tags'])} tags)"


def load_model(name: str, small_checkpoint: Path, workdir: Path, quick: bool) -> BenchModel:
    """``small``: the checkpoint at ``small_checkpoint`` (trained first if missing); ``general``: the general
    tagger (pretrained EfficientNet-Lite0, no training)."""
    from rich.console import Console

    from trainer.checkpoint import load_checkpoint

    plan = (QUICK_PLANS if quick else FULL_PLANS)[name]
    if name == "general":
        from trainer.general.model import general_checkpoint

        return BenchModel(name, general_checkpoint(), plan, BOUNDS_MS[name])
    if not small_checkpoint.exists():
        from trainer.synthetic_model import build_synthetic_model

        Console(stderr=True).rule("no checkpoint: training the synthetic demo model first")
        build_synthetic_model(workdir / "repo", workdir)
        small_checkpoint = workdir / "checkpoint" / "checkpoint.pt"
    return BenchModel(name, load_checkpoint(small_checkpoint), plan, BOUNDS_MS[name])


def export(model: BenchModel, repo: Path, intra_op_threads: int, max_queue_delay_us: int) -> Path:
    """Version 1 of ``tagger`` in a fresh ``repo`` with the bench's serving settings; its ONNX file."""
    from trainer.export import ServingConfig, versions, write_version

    serving = ServingConfig(intra_op_threads=intra_op_threads, max_queue_delay_us=max_queue_delay_us)
    write_version(repo, model.checkpoint, serving=serving)
    assert versions(repo / "tagger") == [1]
    return repo / "tagger" / "1" / "model.onnx"
