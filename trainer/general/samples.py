"""The general tagger on the sample photographs that scientific-Python packages install (no download).

``python -m trainer.general.samples`` prints the Markdown table in docs/models.md: per photo, the ImageNet
top-5 and the tags, computed exactly as served (decoded like an upload, the exported model's preprocessing).
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
import torch
from PIL import Image

from contracts.photos import decode
from trainer.serving.tagger_backend import select_tags

MAX_PIXELS = 50_000_000


def sample_photos() -> dict[str, bytes]:
    """name → PNG bytes of scikit-image's, scikit-learn's and matplotlib's sample photographs."""
    import matplotlib.cbook
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}
    arrays["motorcycle"] = data.stereo_motorcycle()[0]
    sklearn = load_sample_images()
    for path, image in zip(sklearn.filenames, sklearn.images, strict=True):
        arrays[path.rsplit("/", 1)[-1].removesuffix(".jpg")] = image
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        arrays["grace_hopper"] = np.asarray(Image.open(fh).convert("RGB"))
    photos = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        photos[name] = buffer.getvalue()
    return photos


def calibration_photos(checkpoint: dict, crops_per_photo: int = 3, seed: int = 0) -> np.ndarray:
    """Photos to calibrate INT8 on, none of them a sample photo as served: scikit-image's other colour
    pictures, and random crops (half to four fifths of each side; every other one mirrored) of the sample
    photos. Decoded like uploads for ``checkpoint`` (uint8 NHWC)."""
    from skimage import data

    arrays = [
        getattr(data, n)() for n in ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")
    ]
    rng = np.random.default_rng(seed)
    for photo in sample_photos().values():
        array = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
        height, width = array.shape[:2]
        for k in range(crops_per_photo):
            scale = rng.uniform(0.5, 0.8)
            h, w = int(height * scale), int(width * scale)
            y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            crop = array[y : y + h, x : x + w]
            arrays.append(np.ascontiguousarray(crop[:, ::-1] if k % 2 else crop))
    encoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        encoded.append(decode_for(checkpoint, buffer.getvalue()))
    return np.stack(encoded)


def decode_for(checkpoint: dict, photo: bytes) -> np.ndarray:
    """Decode ``photo`` exactly as the worker does for this checkpoint's input size (uint8 HWC)."""
    height, width = checkpoint["input_size"]
    return decode(photo, (width, height), MAX_PIXELS)


def classify(tagger: torch.nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ImageNet class probabilities, tag scores) of uint8 NHWC ``images`` through a general tagger."""
    with torch.no_grad():
        x = tagger.normalize(torch.tensor(images))
        net = tagger.net
        logits = net.head[1](
            net.forward_features(x)
        )  # the ImageNet classifier, before the class → tag matrix
        return torch.softmax(logits, 1).numpy(), torch.sigmoid(net.head[2](logits)).numpy()


def main(argv: list[str] | None = None) -> int:
    """Print the sample photos' top-5 classes and tags as a Markdown table."""
    from trainer.checkpoint import load_tagger
    from trainer.general.model import general_checkpoint
    from trainer.general.vocabulary import load

    parser = argparse.ArgumentParser(prog="python -m trainer.general.samples", description=main.__doc__)
    parser.parse_args(argv)
    checkpoint = general_checkpoint()
    tagger = load_tagger(checkpoint)
    classes = [name for _, name in load().classes]
    thresholds = np.asarray(checkpoint["thresholds"], dtype=np.float32)
    print("| photo | ImageNet top-5 (probability) | tags (score) |\n| --- | --- | --- |")
    for name, photo in sample_photos().items():
        probs, scores = classify(tagger, decode_for(checkpoint, photo)[None])
        top5 = ", ".join(f"{classes[k]} {probs[0, k]:.2f}" for k in np.argsort(-probs[0])[:5])
        [tags] = select_tags(scores, checkpoint["vocab"]["tags"], thresholds)
        print(f"| {name} | {top5} | {', '.join(f'{t} {s:.2f}' for t, s in tags) or '(none)'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
