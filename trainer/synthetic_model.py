"""The synthetic demo model: synthetic photos → trained tagger → version N+1 in the Triton repository, in one call.

`darkroom model` (without --general), the end-to-end tests and the benchmark use it to get a real model without any download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from trainer.data.synthetic import make_photo_set
from trainer.export import write_version
from trainer.train import TrainConfig
from trainer.train import main as train_main
from trainer.vocab.vocabulary import synthetic_vocabulary


@dataclass(frozen=True)
class SyntheticRecipe:
    n_train: int
    n_val: int
    epochs: int


FULL = SyntheticRecipe(n_train=3000, n_val=800, epochs=12)  # ~2 minutes on 2 cores
QUICK = SyntheticRecipe(n_train=1200, n_val=400, epochs=8)  # for tests: well under a minute


def build_synthetic_model(repo: Path, workdir: Path, recipe: SyntheticRecipe = FULL, seed: int = 0) -> Path:
    """Generate train/val photo sets under ``workdir``, train, and export a new version into ``repo``."""
    console = Console(stderr=True)
    train = make_photo_set(workdir / "train", recipe.n_train, seed=seed, split="train")
    val = make_photo_set(workdir / "val", recipe.n_val, seed=seed + 1, split="val")
    vocab = synthetic_vocabulary()
    checkpoint = train_main(
        train, val, vocab, workdir / "checkpoint", TrainConfig(epochs=recipe.epochs, seed=seed)
    )
    version_dir = write_version(repo, checkpoint)
    console.print(
        f"trained {checkpoint['model']}: val mAP {checkpoint['metrics']['val_mAP']:.3f} "
        f"in {checkpoint['metrics']['train_seconds']:.0f}s → {version_dir}"
    )
    return version_dir
