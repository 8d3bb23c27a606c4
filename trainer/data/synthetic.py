"""The synthetic world's photo sets: rendered scenes, their clean labels and noisy user tags.

User tags are what real uploaders write, not what the photo shows: some true tags are missing, some are
wrong, many are not visual at all (years, cameras, feelings), and the same concept comes as synonyms and in
other languages. Per-owner habits are modelled too: a camera brand on every photo, a spammer, and how
thoroughly (``TagNoise.keep`` ± ``keep_spread``) and in which words (``synonym`` ± ``synonym_spread``)
each owner tags.

Three kinds of set come out of the synthetic world, each a folder of JPEGs with a ``manifest.jsonl``:
noisy user-tagged photos (``make_photo_set``), the same photos' clean labels (every manifest line has
both), and the object-centric clean pretraining set with its own label space (``make_pretrain_set``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rich.progress import track

from trainer.data.scenes import CONCEPTS, PRETRAIN_CLASSES, render, render_closeup, sample_scene

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
    keep_spread: float = 0.25  # per-owner keep rate: uniform in keep ± keep_spread (lazy vs thorough)
    synonym_spread: float = 0.2  # per-owner synonym/translation rate: uniform in synonym ± synonym_spread

    def __post_init__(self) -> None:
        for name in ("keep", "synonym", "wrong", "spammer_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TagNoise.{name}={getattr(self, name)!r} must be a probability in [0, 1]")
        if self.non_visual_mean < 0 or self.keep_spread < 0 or self.synonym_spread < 0:
            raise ValueError("TagNoise.non_visual_mean, keep_spread and synonym_spread must be >= 0")


@dataclass(frozen=True)
class OwnerStyle:
    """How one owner tags: their fixed habit tags and their own keep and synonym rates."""

    habit: list[str]
    keep: float
    synonym: float


def owner_styles(n_owners: int, rng: random.Random, noise: TagNoise) -> list[OwnerStyle]:
    """Per-owner habits and tagging rates, drawn once per photo set."""
    styles = []
    for habit in owner_habits(n_owners, rng, noise):
        keep = min(1.0, max(0.0, rng.uniform(noise.keep - noise.keep_spread, noise.keep + noise.keep_spread)))
        synonym = min(
            1.0,
            max(0.0, rng.uniform(noise.synonym - noise.synonym_spread, noise.synonym + noise.synonym_spread)),
        )
        styles.append(OwnerStyle(habit, keep, synonym))
    return styles


def noisy_user_tags(
    labels: list[str],
    owner_habit: list[str],
    rng: random.Random,
    noise: TagNoise,
    style: OwnerStyle | None = None,
) -> list[str]:
    """User tags for a photo whose true content is ``labels`` (with the owner's own rates, if given)."""
    keep, synonym = (style.keep, style.synonym) if style else (noise.keep, noise.synonym)
    tags: list[str] = []
    for concept in labels:
        if rng.random() < keep:
            form = rng.choice(SYNONYMS[concept]) if rng.random() < synonym else concept
            tags.append(form.upper() if rng.random() < 0.05 else form)
    for concept in CONCEPTS:
        if concept not in labels and rng.random() < noise.wrong:
            tags.append(concept)
    n_non_visual = (
        min(len(NON_VISUAL), int(rng.expovariate(1.0 / noise.non_visual_mean)))
        if noise.non_visual_mean
        else 0
    )
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
    long_side: tuple[int, int] | None = None,
) -> Path:
    """Render ``n`` JPEG photos into ``out_dir`` and write ``manifest.jsonl`` beside them.

    Each manifest line: ``{"path", "owner", "user_tags", "labels", "split"}`` with ``labels`` the clean
    ground truth. ``long_side=(lo, hi)`` draws realistic sizes instead of the fixed ``size``: the long side
    uniform in [lo, hi], landscape or portrait at 4:3 or 3:2, JPEG quality 75–95. The same seed always
    gives the same photos and tags.
    """
    noise = noise or TagNoise()
    rng = random.Random(seed)
    styles = owner_styles(n_owners, rng, noise)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w") as fh:
        for i in track(range(n), description=f"rendering {split} photos", transient=True):
            scene = sample_scene(rng)
            owner = rng.randrange(n_owners)
            path = out_dir / f"{split}-{seed}-{i:06d}.jpg"
            photo_size, photo_quality = (size, quality) if long_side is None else _realistic(rng, long_side)
            render(scene, photo_size, rng).save(path, quality=photo_quality)
            style = styles[owner]
            record = {
                "path": path.name,
                "owner": f"user{owner:04d}",
                "user_tags": noisy_user_tags(scene.labels, style.habit, rng, noise, style),
                "labels": scene.labels,
                "split": split,
            }
            fh.write(json.dumps(record) + "\n")
    return manifest


def _realistic(rng: random.Random, long_side: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """A camera-like (size, JPEG quality): long side in range, 4:3 or 3:2, landscape more often."""
    long = rng.randint(*long_side)
    short = round(long / rng.choice([4 / 3, 3 / 2]))
    size = (long, short) if rng.random() < 0.75 else (short, long)
    return size, rng.randint(75, 95)


def make_pretrain_set(
    out_dir: Path, n: int, seed: int, long_side: tuple[int, int] = (320, 640), split: str = "pretrain"
) -> Path:
    """The ImageNet stand-in: ``n`` object-centric close-ups, one clean class of ``PRETRAIN_CLASSES`` each.

    Manifest lines carry ``labels`` = [the class] and no user tags: clean, single-label, and a label space
    that shares no name with ``CONCEPTS``. Sizes are ImageNet-like (long side 320–640 by default).
    """
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w") as fh:
        for i in track(range(n), description=f"rendering {split} close-ups", transient=True):
            label = PRETRAIN_CLASSES[i % len(PRETRAIN_CLASSES)]
            path = out_dir / f"{split}-{seed}-{i:06d}.jpg"
            photo_size, quality = _realistic(rng, long_side)
            render_closeup(label, photo_size, rng).save(path, quality=quality)
            fh.write(json.dumps({"path": path.name, "labels": [label], "split": split}) + "\n")
    return manifest
