"""Synthetic photo-like scenes of known content, so that everything runs offline with ground truth.

A scene is a sky (day, sunset or night; sometimes none for close-ups), a ground (sea, beach, snow, grass)
and objects placed where they make sense (a boat on the sea, a moon at night, a flower on grass). The
renderer draws with Pillow, blurs and adds sensor noise, so the model has to learn shapes and colours,
not pixel-exact templates.

Realistic photo sizes (640–1600 px) are drawn on a canvas of at most ``CANVAS`` px and scaled up, and the
sensor noise is cut from one cached noise tile: the content a 96–160 px model sees is the same, and a
1600 px photo renders in ~0.05 s instead of ~0.3 s.

``render_closeup`` draws the *other* world: one object or shape filling the frame on a plain background,
with a single class label from ``PRETRAIN_CLASSES`` — the clean, object-centric pretraining set that stands
in for ImageNet (a different label space from ``CONCEPTS``: no sky, sea, sunset or night there).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFilter

#: Longest side scenes are drawn at; bigger photos are scaled up from it.
CANVAS = 640

#: Every concept the renderer can draw; the clean label space of the synthetic world.
CONCEPTS: tuple[str, ...] = (
    "sky", "sunset", "night", "sea", "beach", "snow", "grass",
    "tree", "house", "car", "boat", "sun", "moon", "cloud", "flower",
)  # fmt: skip


@dataclass
class Scene:
    """What a rendered photo shows: the ground truth the noisy user tags are drawn from."""

    sky: str | None  # "day", "sunset", "night" or None (close-up, no sky)
    ground: str  # "sea", "beach", "snow", "grass"
    objects: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        tags = set(self.objects) | {self.ground}
        if self.ground == "beach":
            tags.add("sea")  # a beach scene shows the water line
        if self.sky is not None:
            tags.add("sky")
            if self.sky in ("sunset", "night"):
                tags.add(self.sky)
        return sorted(tags, key=CONCEPTS.index)


def sample_scene(rng: random.Random) -> Scene:
    """Draw a plausible scene: objects only where they belong, 0–3 of them."""
    sky = rng.choices(["day", "sunset", "night", None], weights=[5, 2, 2, 1])[0]
    ground = rng.choice(["sea", "beach", "snow", "grass"])
    candidates = [] if ground == "sea" else ["tree", "house"]
    if ground in ("sea", "beach"):
        candidates.append("boat")
    if ground in ("grass", "snow", "beach"):
        candidates.append("car")
    if ground == "grass":
        candidates.append("flower")
    if sky in ("day", "sunset"):
        candidates += ["sun", "cloud"]
    if sky == "night":
        candidates.append("moon")
    k = rng.choices([0, 1, 2, 3], weights=[1, 3, 3, 2])[0]
    return Scene(sky=sky, ground=ground, objects=rng.sample(candidates, min(k, len(candidates))))


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _gradient(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], top: tuple, bottom: tuple) -> None:
    x0, y0, x1, y1 = box
    span = max(1, y1 - y0)
    for y in range(y0, y1):
        t = (y - y0) / span
        draw.line(
            [(x0, y), (x1, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )


def render(scene: Scene, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` = (width, height)."""
    scale = min(1.0, CANVAS / max(size))
    w, h = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.45, 0.65)) if scene.sky else int(h * rng.uniform(0.0, 0.1))
    if scene.sky == "day":
        _gradient(d, (0, 0, w, horizon), _jitter(rng, (70, 130, 220)), _jitter(rng, (170, 210, 245)))
    elif scene.sky == "sunset":
        _gradient(d, (0, 0, w, horizon), _jitter(rng, (120, 60, 140)), _jitter(rng, (250, 150, 60)))
    elif scene.sky == "night":
        _gradient(d, (0, 0, w, horizon), _jitter(rng, (8, 10, 35), 8), _jitter(rng, (25, 30, 70), 10))
        for _ in range(rng.randint(10, 40)):
            x, y = rng.randrange(w), rng.randrange(max(1, horizon))
            d.point((x, y), fill=(230, 230, 200))
    dark = 0.45 if scene.sky == "night" else (0.8 if scene.sky == "sunset" else 1.0)

    def shade(rgb: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
        return tuple(int(c * dark) for c in _jitter(rng, rgb, amount))  # type: ignore[return-value]

    ground_box = (0, horizon, w, h)
    if scene.ground == "sea":
        _gradient(d, ground_box, shade((30, 80, 150)), shade((10, 40, 90)))
        for _ in range(rng.randint(8, 20)):
            x, y = rng.randrange(w), rng.randint(horizon, h - 1)
            d.line([(x, y), (x + rng.randint(10, w // 8), y)], fill=shade((200, 220, 240), 10), width=1)
    elif scene.ground == "beach":
        shore = horizon + int((h - horizon) * rng.uniform(0.3, 0.5))
        _gradient(d, (0, horizon, w, shore), shade((30, 90, 160)), shade((40, 120, 170)))
        _gradient(d, (0, shore, w, h), shade((225, 200, 140)), shade((200, 170, 110)))
    elif scene.ground == "snow":
        _gradient(d, ground_box, shade((245, 245, 250), 8), shade((215, 225, 240), 8))
    else:  # grass
        _gradient(d, ground_box, shade((70, 150, 50)), shade((40, 110, 30)))
        for _ in range(rng.randint(30, 80)):
            x, y = rng.randrange(w), rng.randint(horizon, h - 1)
            d.line([(x, y), (x + rng.randint(-2, 2), y - rng.randint(3, 8))], fill=shade((30, 90, 20)))

    unit = min(w, h)
    for obj in scene.objects:
        s = unit * rng.uniform(0.12, 0.22)
        if obj in ("sun", "moon", "cloud"):
            cx, cy = rng.uniform(s, w - s), rng.uniform(s * 0.6, max(s * 0.7, horizon - s * 0.6))
        else:
            cx, cy = (
                rng.uniform(s, w - s),
                rng.uniform(horizon + s * 0.3, max(horizon + s * 0.4, h - s * 0.3)),
            )
        _draw_object(d, obj, cx, cy, s, rng, shade)

    return _finish(img, size, rng)


def _finish(img: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Lens blur, scale to the photo's size, then sensor noise at full resolution."""
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return Image.blend(img, _noise(size, rng), rng.uniform(0.03, 0.09))


_NOISE_TILE: list[Image.Image] = []


def _noise(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A random crop of one cached grey noise tile (Pillow's effect_noise is slow at photo sizes)."""
    if not _NOISE_TILE:
        _NOISE_TILE.append(Image.effect_noise((1664, 1664), 40).convert("RGB"))
    tile = _NOISE_TILE[0]
    if size[0] > tile.width or size[1] > tile.height:
        tile = tile.resize((max(size[0], tile.width), max(size[1], tile.height)))
    x, y = rng.randint(0, tile.width - size[0]), rng.randint(0, tile.height - size[1])
    return tile.crop((x, y, x + size[0], y + size[1]))


#: Class labels of the object-centric pretraining world (single-label, a different label space).
PRETRAIN_CLASSES: tuple[str, ...] = (
    "automobile", "sailboat", "cottage", "shrub", "blossom", "sun disk", "crescent", "cumulus",
    "circle", "square", "triangle", "star", "ring", "cross", "stripes", "checkerboard",
)  # fmt: skip
_CLOSEUP_OBJECTS = dict(
    zip(PRETRAIN_CLASSES[:8], ("car", "boat", "house", "tree", "flower", "sun", "moon", "cloud"), strict=True)
)


def render_closeup(label: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """One object or shape of class ``label`` filling a ``size`` frame on a plain or graded background."""
    scale = min(1.0, CANVAS / max(size))
    w, h = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    img = Image.new(
        "RGB", (w, h), _jitter(rng, (rng.randrange(256), rng.randrange(256), rng.randrange(256)), 0)
    )
    d = ImageDraw.Draw(img)
    if rng.random() < 0.5:
        _gradient(d, (0, 0, w, h), _jitter(rng, (128, 128, 128), 127), _jitter(rng, (128, 128, 128), 127))

    def shade(rgb: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
        return _jitter(rng, rgb, amount)

    unit = min(w, h)
    s = unit * rng.uniform(0.45, 0.75)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.1, 0.2) * h
    color = _jitter(rng, (rng.randrange(256), rng.randrange(256), rng.randrange(256)), 0)
    r = s * 0.5
    if label in _CLOSEUP_OBJECTS:
        _draw_object(d, _CLOSEUP_OBJECTS[label], cx, cy, s, rng, shade)
    elif label == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif label == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif label == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    elif label == "star":
        points = [(cx + math.cos(k * math.pi / 5 - math.pi / 2) * (r if k % 2 == 0 else r * 0.4),
                   cy + math.sin(k * math.pi / 5 - math.pi / 2) * (r if k % 2 == 0 else r * 0.4)) for k in range(10)]  # fmt: skip
        d.polygon(points, fill=color)
    elif label == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color, width=max(2, int(r * 0.25)))
    elif label == "cross":
        d.rectangle([cx - r, cy - r * 0.2, cx + r, cy + r * 0.2], fill=color)
        d.rectangle([cx - r * 0.2, cy - r, cx + r * 0.2, cy + r], fill=color)
    elif label == "stripes":
        step = max(4, int(unit * rng.uniform(0.05, 0.12)))
        for x in range(-h, w, step * 2):
            d.polygon([(x, 0), (x + step, 0), (x + step + h, h), (x + h, h)], fill=color)
    elif label == "checkerboard":
        step = max(4, int(unit * rng.uniform(0.08, 0.16)))
        for y in range(0, h, step):
            for x in range((y // step) % 2 * step, w, step * 2):
                d.rectangle([x, y, x + step - 1, y + step - 1], fill=color)
    else:
        raise ValueError(f"unknown pretraining class {label!r}; choose one of: {', '.join(PRETRAIN_CLASSES)}")
    return _finish(img, size, rng)


def _draw_object(
    d: ImageDraw.ImageDraw, obj: str, cx: float, cy: float, s: float, rng: random.Random, shade
) -> None:  # type: ignore[no-untyped-def]
    if obj == "sun":
        r = s * 0.45
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, (255, 220, 60), 10))
        for k in range(8):
            a = k * math.pi / 4
            d.line([(cx + math.cos(a) * r * 1.2, cy + math.sin(a) * r * 1.2),
                    (cx + math.cos(a) * r * 1.6, cy + math.sin(a) * r * 1.6)], fill=(255, 230, 90), width=2)  # fmt: skip
    elif obj == "moon":
        r = s * 0.4
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, (235, 235, 210), 8))
        off = r * rng.uniform(0.4, 0.8)
        d.ellipse([cx - r + off, cy - r - off * 0.3, cx + r + off, cy + r - off * 0.3], fill=(15, 18, 45))
    elif obj == "cloud":
        color = _jitter(rng, (245, 245, 250), 10)
        for _ in range(rng.randint(3, 5)):
            rx, ry = s * rng.uniform(0.25, 0.45), s * rng.uniform(0.18, 0.3)
            ox, oy = rng.uniform(-s * 0.5, s * 0.5), rng.uniform(-s * 0.12, s * 0.12)
            d.ellipse([cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry], fill=color)
    elif obj == "tree":
        trunk = shade((100, 65, 30))
        d.rectangle([cx - s * 0.08, cy - s * 0.3, cx + s * 0.08, cy + s * 0.5], fill=trunk)
        leaves = shade((30, 120, 40))
        if rng.random() < 0.5:
            d.ellipse([cx - s * 0.45, cy - s * 1.0, cx + s * 0.45, cy - s * 0.1], fill=leaves)
        else:
            d.polygon(
                [(cx, cy - s * 1.1), (cx - s * 0.45, cy - s * 0.1), (cx + s * 0.45, cy - s * 0.1)],
                fill=leaves,
            )
    elif obj == "house":
        wall = shade(rng.choice([(200, 180, 150), (180, 80, 60), (230, 230, 220)]))
        d.rectangle([cx - s * 0.5, cy - s * 0.4, cx + s * 0.5, cy + s * 0.4], fill=wall)
        d.polygon([(cx - s * 0.6, cy - s * 0.4), (cx + s * 0.6, cy - s * 0.4), (cx, cy - s * 0.9)],
                  fill=shade((120, 40, 30)))  # fmt: skip
        d.rectangle([cx - s * 0.1, cy, cx + s * 0.1, cy + s * 0.4], fill=shade((80, 50, 30)))
        window = (250, 230, 120) if shade((1, 1, 1), 0)[0] == 0 else shade((150, 200, 230))
        d.rectangle([cx - s * 0.38, cy - s * 0.25, cx - s * 0.2, cy - s * 0.08], fill=window)
        d.rectangle([cx + s * 0.2, cy - s * 0.25, cx + s * 0.38, cy - s * 0.08], fill=window)
    elif obj == "car":
        body = shade(rng.choice([(200, 30, 30), (30, 60, 200), (240, 240, 240), (30, 30, 30), (240, 200, 0)]))
        d.rectangle([cx - s * 0.6, cy - s * 0.15, cx + s * 0.6, cy + s * 0.15], fill=body)
        d.polygon([(cx - s * 0.35, cy - s * 0.15), (cx - s * 0.2, cy - s * 0.4), (cx + s * 0.25, cy - s * 0.4),
                   (cx + s * 0.4, cy - s * 0.15)], fill=body)  # fmt: skip
        for wx in (cx - s * 0.35, cx + s * 0.35):
            d.ellipse([wx - s * 0.14, cy + s * 0.05, wx + s * 0.14, cy + s * 0.33], fill=(20, 20, 20))
    elif obj == "boat":
        d.polygon([(cx - s * 0.6, cy), (cx + s * 0.6, cy), (cx + s * 0.4, cy + s * 0.25), (cx - s * 0.4, cy + s * 0.25)],
                  fill=shade((120, 70, 40)))  # fmt: skip
        d.line([(cx, cy), (cx, cy - s * 0.9)], fill=shade((60, 40, 20)), width=max(1, int(s * 0.04)))
        d.polygon([(cx + s * 0.03, cy - s * 0.85), (cx + s * 0.03, cy - s * 0.08), (cx + s * 0.5, cy - s * 0.08)],
                  fill=shade((245, 245, 240), 8))  # fmt: skip
    elif obj == "flower":
        petal = _jitter(rng, rng.choice([(230, 50, 90), (250, 220, 40), (180, 80, 220), (250, 250, 250)]), 15)
        d.line([(cx, cy), (cx, cy + s * 0.6)], fill=(40, 120, 30), width=max(1, int(s * 0.05)))
        r = s * 0.18
        for k in range(6):
            a = k * math.pi / 3
            px, py = cx + math.cos(a) * r, cy + math.sin(a) * r
            d.ellipse([px - r * 0.7, py - r * 0.7, px + r * 0.7, py + r * 0.7], fill=petal)
        d.ellipse([cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5], fill=(250, 200, 30))
