"""The synthetic world's photo sets: rendered scenes, their clean labels and noisy user tags.

User tags are what real uploaders write, not what the photo shows: some true tags are missing, some are
wrong, many are not visual at all (years, cameras, feelings), and the same concept comes as synonyms and in
other languages. Per-owner habits (a camera brand on every photo, a spammer) are modelled too.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rich.progress import track

from trainer.data.scenes import CONCEPTS, render, sample_scene

#: Surface forms users write for each concept: synonyms, plurals and translations.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sky": ("skies", "ciel", "himmel", "cielo"),
    "sunset": ("sundown", "dusk", "coucher de soleil", "sonnenuntergang", "atardecer"),
    "night": ("nighttime", "nuit", "nacht", "noche"),
    "sea": ("ocean", "mer", "meer", "mar", "seaside"),
    "beach": ("beaches", "shore", "plage", "strand", "playa"),
    "snow": ("snowy", "neige", "schnee", "nieve"),
    "grass": ("lawn", "meadow", "herbe", "gras", "hierba"),
    "tree": ("trees", "arbre", "baum", "arbol"),
    "house": ("houses", "home", "maison", "haus", "casa"),
    "car": ("cars", "auto", "automobile", "voiture", "coche"),
    "boat": ("boats", "sailboat", "bateau", "boot", "barco"),
    "sun": ("sunshine", "soleil", "sonne", "sol"),
    "moon": ("luna", "lune", "mond"),
    "cloud": ("clouds", "cloudy", "nuage", "wolke", "nube"),
    "flower": ("flowers", "fleur", "blume", "flor"),
}

#: Tags that say nothing about what a photo shows.
NON_VISUAL: tuple[str, ...] = (
    "2016", "2017", "vacation", "iphone", "me", "love", "family", "friends", "summer", "travel",
    "nikon", "canon", "instagood", "photooftheday", "holiday", "trip", "fun", "happy",
)  # fmt: skip

SPAM: tuple[str, ...] = ("cheap", "sale", "followme", "free")


@dataclass(frozen=True)
class TagNoise:
    """Knobs of the user-tag noise model (probabilities per photo or per true tag)."""

    keep: float = 0.6  # a true concept is tagged at all
    synonym: float = 0.3  # ... and written as a synonym/translation instead of its name
    wrong: float = 0.05  # each absent concept is tagged anyway
    non_visual_mean: float = 1.5  # average count of non-visual tags
    spammer_share: float = 0.03  # owners who add spam tags to every photo


def noisy_user_tags(
    labels: list[str], owner_habit: list[str], rng: random.Random, noise: TagNoise
) -> list[str]:
    """User tags for a photo whose true content is ``labels``."""
    tags: list[str] = []
    for concept in labels:
        if rng.random() < noise.keep:
            form = rng.choice(SYNONYMS[concept]) if rng.random() < noise.synonym else concept
            tags.append(form.upper() if rng.random() < 0.05 else form)
    for concept in CONCEPTS:
        if concept not in labels and rng.random() < noise.wrong:
            tags.append(concept)
    n_non_visual = min(len(NON_VISUAL), int(rng.expovariate(1.0 / noise.non_visual_mean)))
    tags += rng.sample(NON_VISUAL, n_non_visual)
    tags += owner_habit
    rng.shuffle(tags)
    return list(dict.fromkeys(tags))


def owner_habits(n_owners: int, rng: random.Random, noise: TagNoise) -> list[list[str]]:
    """Per-owner tags added to every photo: a camera brand for some, spam for a few."""
    habits = []
    for _ in range(n_owners):
        habit: list[str] = []
        if rng.random() < 0.2:
            habit.append(rng.choice(["nikon", "canon", "iphone"]))
        if rng.random() < noise.spammer_share:
            habit += rng.sample(SPAM, 2)
        habits.append(habit)
    return habits


def make_photo_set(
    out_dir: Path,
    n: int,
    seed: int,
    size: tuple[int, int] = (320, 240),
    split: str = "train",
    noise: TagNoise | None = None,
    n_owners: int = 200,
    quality: int = 85,
) -> Path:
    """Render ``n`` JPEG photos into ``out_dir`` and write ``manifest.jsonl`` beside them.

    Each manifest line: ``{"path", "owner", "user_tags", "labels", "split"}`` with ``labels`` the clean
    ground truth. The same seed always gives the same photos and tags.
    """
    noise = noise or TagNoise()
    rng = random.Random(seed)
    habits = owner_habits(n_owners, rng, noise)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w") as fh:
        for i in track(range(n), description=f"rendering {split} photos", transient=True):
            scene = sample_scene(rng)
            owner = rng.randrange(n_owners)
            path = out_dir / f"{split}-{seed}-{i:06d}.jpg"
            render(scene, size, rng).save(path, quality=quality)
            record = {
                "path": path.name,
                "owner": f"user{owner:04d}",
                "user_tags": noisy_user_tags(scene.labels, habits[owner], rng, noise),
                "labels": scene.labels,
                "split": split,
            }
            fh.write(json.dumps(record) + "\n")
    return manifest
