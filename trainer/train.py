"""Train a multi-label tagger on noisy user tags, evaluate on clean labels, calibrate per-tag thresholds.

Read top to bottom: ``load_data`` → ``train_one_epoch`` / ``evaluate`` → ``calibrate`` → ``main``.
Photos go through the worker's own decode (``stream.images.decode``), so training sees exactly the pixels
that serving will.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress, track
from torch import nn

from stream.images import decode
from trainer.metrics import average_precision, calibrate_thresholds
from trainer.models import create_model
from trainer.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Tagger
from trainer.vocab.vocabulary import Vocabulary


@dataclass
class TrainConfig:
    """Defaults in code; a JSON file and CLI flags override them; unknown keys are an error."""

    model: str = "mobilenet_lite_050"
    size: int = 96
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    target_precision: float = 0.9
    seed: int = 0
    threads: int = 2

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"unknown training option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)


@dataclass
class PhotoSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    user_targets: np.ndarray  # float32 [N, K] from noisy user tags
    clean_targets: np.ndarray | None  # float32 [N, K] from clean labels, where the manifest has them
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable entries


def load_data(manifest: Path, vocab: Vocabulary, size: int) -> PhotoSet:
    """Decode every photo of a JSONL manifest; unreadable entries are skipped and listed, not fatal."""
    images, user, clean, skipped = [], [], [], []
    has_clean = True
    lines = manifest.read_text().splitlines()
    for line in track(lines, description=f"decoding {manifest.parent.name}", transient=True):
        record = json.loads(line)
        path = manifest.parent / record["path"]
        try:
            images.append(decode(path.read_bytes(), (size, size), max_pixels=50_000_000))
        except Exception as exc:  # noqa: BLE001 - any unreadable photo is skipped and reported
            skipped.append((str(path), str(exc)))
            continue
        user.append(vocab.encode(record.get("user_tags", [])))
        if "labels" in record:
            clean.append(vocab.encode(record["labels"]))
        else:
            has_clean = False
    if not images:
        raise ValueError(f"{manifest}: no readable photos")
    return PhotoSet(np.stack(images), np.stack(user), np.stack(clean) if has_clean else None, skipped)


def train_one_epoch(
    model: Tagger, data: PhotoSet, opt: torch.optim.Optimizer, sched, batch_size: int, gen: torch.Generator
) -> float:  # type: ignore[no-untyped-def]
    model.train()
    order = torch.randperm(len(data.images), generator=gen)
    images, targets = torch.from_numpy(data.images), torch.from_numpy(data.user_targets)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = images[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flips keep every label true
        x[flip] = x[flip].flip(2)
        loss = nn.functional.binary_cross_entropy_with_logits(model.logits(x), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
    return total / len(order)


@torch.no_grad()
def predict(model: Tagger, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [
            model(torch.from_numpy(images[i : i + batch_size])).numpy()
            for i in range(0, len(images), batch_size)
        ]
    )


def evaluate(scores: np.ndarray, targets: np.ndarray, tags: list[str]) -> dict:
    """mAP and per-tag AP against ``targets`` (clean labels where available)."""
    per_tag = {t: average_precision(scores[:, i], targets[:, i]) for i, t in enumerate(tags)}
    valid = [ap for ap in per_tag.values() if not np.isnan(ap)]
    return {"mAP": float(np.mean(valid)) if valid else float("nan"), "per_tag_ap": per_tag}


def main(train_manifest: Path, val_manifest: Path, vocab: Vocabulary, out: Path, config: TrainConfig) -> dict:
    """Train, evaluate on the clean validation set, calibrate thresholds there; save a plain-dict checkpoint."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    train, val = load_data(train_manifest, vocab, config.size), load_data(val_manifest, vocab, config.size)
    if val.clean_targets is None:
        raise ValueError(f"{val_manifest}: validation photos need clean 'labels' to evaluate and calibrate")
    model = Tagger(create_model(config.model, num_classes=len(vocab.tags)))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(train.images) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(config.seed)
    started = time.time()
    with Progress(transient=True) as progress:
        task = progress.add_task(f"training {config.model}", total=config.epochs)
        for epoch in range(config.epochs):
            loss = train_one_epoch(model, train, opt, sched, config.batch_size, gen)
            progress.update(task, advance=1, description=f"epoch {epoch + 1}/{config.epochs} loss {loss:.4f}")
    scores = predict(model, val.images)
    metrics = evaluate(scores, val.clean_targets, vocab.tags)
    thresholds = calibrate_thresholds(scores, val.clean_targets, config.target_precision)
    checkpoint = {
        "model": config.model,
        "state_dict": model.net.state_dict(),
        "input_size": [config.size, config.size],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "vocab": vocab.to_dict(),
        "thresholds": thresholds,
        "config": dataclasses.asdict(config),
        "metrics": {
            "val_mAP": metrics["mAP"],
            "val_per_tag_ap": metrics["per_tag_ap"],
            "train_seconds": time.time() - started,
        },
        "skipped": train.skipped + val.skipped,
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out / "checkpoint.pt")
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    return checkpoint


def load_tagger(checkpoint: dict) -> Tagger:
    """Rebuild the serving network (preprocessing included) from a checkpoint dict."""
    net = create_model(checkpoint["model"], num_classes=len(checkpoint["vocab"]["tags"]))
    net.load_state_dict(checkpoint["state_dict"])
    return Tagger(net, tuple(checkpoint["mean"]), tuple(checkpoint["std"])).eval()


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="darkroom train", description=__doc__)
    parser.add_argument("--train", type=Path, required=True, help="training manifest (JSONL)")
    parser.add_argument("--val", type=Path, required=True, help="validation manifest with clean labels")
    parser.add_argument("--vocab", type=Path, help="vocab.json (default: the synthetic world's concepts)")
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and config.json")
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig values")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one option")
    args = parser.parse_args(argv)
    values = json.loads(args.config.read_text()) if args.config else {}
    defaults = dataclasses.asdict(TrainConfig())
    for item in args.set:
        key, _, raw = item.partition("=")
        if key not in defaults:
            parser.error(f"unknown option {key!r} in --set; known: {', '.join(sorted(defaults))}")
        values[key] = type(defaults[key])(raw)
    from trainer.vocab.vocabulary import synthetic_vocabulary

    vocab = Vocabulary.load(args.vocab) if args.vocab else synthetic_vocabulary()
    try:
        ckpt = main(args.train, args.val, vocab, args.out, TrainConfig.from_dict(values))
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"darkroom train: error: {exc}\n")
    print(
        f"val mAP {ckpt['metrics']['val_mAP']:.3f}; skipped {len(ckpt['skipped'])}; checkpoint {args.out / 'checkpoint.pt'}"
    )
    return 0
