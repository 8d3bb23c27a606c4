"""Photos with an object the vocabulary lacks: a kite in the synthetic world's scenes.

The renderer draws kites (a diamond with its spars and a tail of bows, any colour, in the sky or high
above the ground); the synthetic vocabulary has no ``kite``. A custom tag must be taught from a few
examples (``darkroom tag new kite``), and this set says how well that works on photos it never saw.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter
from rich.progress import track

from trainer.data.scenes import render, sample_scene

NOVEL_TAG = "kite"


def draw_kite(img: Image.Image, rng: random.Random) -> Image.Image:
    """``img`` with a kite drawn on it: 15-30 % of the short side, in the upper part of the frame."""
    img = img.copy()
    w, h = img.size
    d = ImageDraw.Draw(img)
    s = min(w, h) * rng.uniform(0.15, 0.3)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.45) * h
    tilt = rng.uniform(-0.5, 0.5)

    def at(dx: float, dy: float) -> tuple[float, float]:
        return cx + dx * math.cos(tilt) - dy * math.sin(tilt), cy + dx * math.sin(tilt) + dy * math.cos(tilt)

    colors = [(230, 40, 40), (250, 200, 30), (40, 90, 230), (240, 120, 20), (200, 40, 180), (30, 170, 90)]
    left, right = rng.sample(colors, 2)
    top, bottom, lx, rx = (
        at(0, -s * 0.6),
        at(0, s),
        at(-s * 0.45, -s * 0.1),
        at(s * 0.45, -s * 0.1),
    )
    d.polygon([top, lx, bottom], fill=left)
    d.polygon([top, rx, bottom], fill=right)
    spar = (50, 35, 20)
    d.line([top, bottom], fill=spar, width=max(1, int(s * 0.04)))
    d.line([lx, rx], fill=spar, width=max(1, int(s * 0.04)))
    x, y = bottom
    for k in range(rng.randint(3, 6)):  # the tail: a wavy line with bows
        nx, ny = x + s * 0.25 * math.sin(k * 1.3 + tilt), y + s * 0.3
        d.line([(x, y), (nx, ny)], fill=(60, 60, 60), width=1)
        b = s * 0.07
        d.polygon([(nx - b, ny - b), (nx + b, ny + b), (nx + b, ny - b), (nx - b, ny + b)], fill=left)
        x, y = nx, ny
    return img.filter(ImageFilter.GaussianBlur(0.6))


def make_novel_set(
    out_dir: Path, n: int, seed: int, share: float, size: tuple[int, int] = (320, 240), split: str = "novel"
) -> Path:
    """``n`` scene photos, a ``share`` of them with a kite; ``manifest.jsonl`` lines carry ``labels`` (the
    scene's concepts, plus ``kite`` where one is drawn) and empty ``user_tags``."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w") as fh:
        for i in track(range(n), description=f"rendering {split} photos", transient=True):
            scene = sample_scene(rng)
            img = render(scene, size, rng)
            labels = list(scene.labels)
            if rng.random() < share:
                img = draw_kite(img, rng)
                labels.append(NOVEL_TAG)
            path = out_dir / f"{split}-{seed}-{i:06d}.jpg"
            img.save(path, quality=88)
            fh.write(
                json.dumps({"path": path.name, "user_tags": [], "labels": labels, "split": split}) + "\n"
            )
    return manifest
