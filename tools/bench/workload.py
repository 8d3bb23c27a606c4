"""The benchmark's workload: photo-like JPEGs of upload sizes, the run plan, and upload values."""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import track

console = Console(stderr=True)

#: Mostly 1024x768, some 2–4 MP, as uploads from phones and cameras after a site's own resize.
SIZES = [((1024, 768), 0.8), ((1600, 1200), 0.08), ((2048, 1536), 0.08), ((2304, 1728), 0.04)]


@dataclass(frozen=True)
class Plan:
    """How much of the workload one model's measurements use (the general model is ~10x slower on CPU)."""

    photos: int  # offline runs and each streaming burst
    naive_photos: int
    decode_sample: int
    repeats: int = 1  # offline and streaming runs each; the median is reported (this host is noisy)
    trial_s: float = 8.0  # each server-scenario trial offers its rate for this long ...
    trial_min_photos: int = 300  # ... and at least this many uploads (p99 needs a few hundred)
    search_steps: int = 3  # bisection trials after the latency curve's four
    confirm: bool = True  # the rate found is offered once more, and must pass again
    fresh_after: int = 3000  # uploads one server-scenario stack takes before a fresh one replaces it
    warm_photos: int = 256  # an unreported burst on each new stack before anything is measured
    latency_on_burst_stack: bool = False  # --quick: the curve and search reuse the bursts' stack (no new one)
    offline_sample: int = 120  # photos per configuration of the offline sweep
    batches: tuple[int, ...] = (8, 16, 32)  # batch sizes the offline sweep tries

    def limited(self, photos: int) -> Plan:
        """This plan on at most ``photos`` photos."""
        return dataclasses.replace(
            self,
            photos=min(self.photos, photos),
            naive_photos=min(self.naive_photos, photos),
            decode_sample=min(self.decode_sample, photos),
            offline_sample=min(self.offline_sample, photos),
        )


def build_workload(folder: Path, n: int, seed: int = 4242) -> list[Path]:
    """``n`` JPEG q85 photos at realistic sizes, rendered once and reused by later runs."""
    from trainer.data.scenes import render, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes, weights = zip(*SIZES, strict=True)
    plan = [(folder / f"bench-{i:05d}.jpg", rng.choices(sizes, weights)[0]) for i in range(n)]
    todo = [(p, s) for p, s in plan if not p.exists()]
    for path, size in track(
        todo, description="rendering benchmark photos", console=console, disable=not todo
    ):
        tmp = path.with_suffix(".tmp")
        render(sample_scene(rng), size, rng).save(tmp, "JPEG", quality=85)
        os.replace(tmp, path)
    return [p for p, _ in plan]


def megapixels(paths: list[Path]) -> float:
    from PIL import Image

    total = 0
    for p in paths:
        with Image.open(p) as img:
            total += img.width * img.height
    return total / 1e6
