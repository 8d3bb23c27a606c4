"""Train a multi-label tagger on noisy user tags, evaluate on clean labels, calibrate per-tag thresholds.

Read top to bottom: the loss → ``load_data`` → ``train_one_epoch`` / ``fit`` → ``evaluate`` → ``main``.
Photos go through the worker's own decode (``stream.fetch.decode``), so training sees exactly the pixels
that serving will.

**Loss.** User tags miss ~40% of what a photo shows, so most "negatives" of a concept are cheap but some
are really missing positives. The default ``asl`` is the asymmetric loss of Ridnik et al. (ICCV 2021):
positives keep plain log-loss, negatives are focused (``(p - m)^γ`` with γ=2) and shifted by a margin
``m`` = 0.05. Easy negatives then contribute nothing, and a confident "negative" (a likely missing tag) has
its gradient damped instead of growing the way BCE's does, so the model is not taught to un-see what
uploaders forgot to tag. ``bce`` is kept for comparison; ``softmax`` (cross-entropy over single labels) is
for the object-centric pretraining set.

**Optimizer.** AdamW with a one-cycle schedule (warm-up, then cosine decay): robust for small CNNs with
BatchNorm at a fixed epoch budget, no tuning per dataset size.

**Scale-out.** Under ``torchrun`` (``WORLD_SIZE`` > 1) the network is wrapped in DistributedDataParallel on
the gloo backend (CPU); each rank trains on its own slice of every epoch and rank 0 evaluates and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from contracts.helpformat import DefaultsHelpFormatter
from trainer.checkpoint import is_checkpoint, read_torch_file
from trainer.data.manifest import ManifestError, PhotoSet, load_photo_set
from trainer.finetune import (
    FeatureCache,
    HeadOnFeatures,
    PartlyFrozenTagger,
    freeze,
    pick_view,
    predict_features,
)
from trainer.metrics import calibrate, score_metrics
from trainer.models import create_model
from trainer.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Tagger
from trainer.models.weights import load_weights
from trainer.vocab.vocabulary import Vocabulary

LOSSES = ("asl", "bce", "softmax")
INIT_NAMES = ("auto", "scratch", "imagenet")
#: Registered models with published ImageNet weights (``efficientnet_lite.pretrained_weights``).
IMAGENET_MODELS = ("efficientnet_lite0",)
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


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
    loss: str = "asl"
    # where the backbone starts: "auto" (ImageNet weights for a family that has them, else scratch),
    # "scratch", "imagenet" or a checkpoint path; a pretrained start fine-tunes (see ``unfreeze``)
    init_from: str = "auto"
    # backbone blocks trained with the head from a pretrained start: 0 = head only, on cached features
    # (trainer.finetune); N = the last N blocks too; -1 = every layer
    unfreeze: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"unknown training option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Refuse values that would fail later or silently train nothing, naming the option."""
        if self.loss not in LOSSES:
            raise ValueError(f"option loss={self.loss!r}: choose one of {', '.join(LOSSES)}")
        for name in ("size", "epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"option {name}={getattr(self, name)!r} must be at least 1")
        if self.lr <= 0:
            raise ValueError(f"option lr={self.lr!r} must be positive")
        if not 0 < self.target_precision <= 1:
            raise ValueError(f"option target_precision={self.target_precision!r} must be in (0, 1]")
        if self.init_from not in INIT_NAMES and not Path(self.init_from).is_file():
            raise ValueError(
                f"option init_from={self.init_from!r}: no such checkpoint file "
                f"(or give one of {', '.join(INIT_NAMES)})"
            )
        if self.init_from == "imagenet" and self.model not in IMAGENET_MODELS:
            raise ValueError(
                f"option init_from='imagenet': {self.model} has no ImageNet weights "
                f"(those that do: {', '.join(IMAGENET_MODELS)}); use 'scratch' or a checkpoint"
            )
        if self.unfreeze < -1:
            raise ValueError(f"option unfreeze={self.unfreeze!r}: give -1 (all), 0 (head only) or N blocks")

    def start(self) -> str:
        """``init_from`` resolved: "scratch", "imagenet" or a checkpoint path."""
        if self.init_from == "auto":
            return "imagenet" if self.model in IMAGENET_MODELS else "scratch"
        return self.init_from


def asymmetric_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 2.0, margin: float = 0.05
) -> torch.Tensor:
    """Asymmetric loss (ASL): log-loss on positives; shifted, focused log-loss on negatives."""
    p = torch.sigmoid(logits)
    p_neg = (p - margin).clamp(min=0)
    positive = targets * torch.log(p.clamp(min=1e-8))
    negative = (1 - targets) * p_neg.pow(gamma_neg) * torch.log((1 - p_neg).clamp(min=1e-8))
    return -(positive + negative).mean()


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss named by ``TrainConfig.loss`` (see the module docstring for why ``asl``)."""
    if name == "asl":
        return asymmetric_loss
    if name == "bce":
        return nn.functional.binary_cross_entropy_with_logits
    return nn.functional.cross_entropy  # softmax: one-hot targets of single-label classes


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the gloo process group when launched by ``torchrun`` with >1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def load_data(
    manifest: Path, vocab: Vocabulary, size: int, split: str | None = None, cache_dir: Path | None = None
) -> PhotoSet:
    """Decode every photo of a JSONL manifest (cached per resolution); unreadable ones are skipped, listed."""
    return load_photo_set(manifest, vocab.encode, size, split=split, cache_dir=cache_dir)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches ``array_batches`` yields for ``n`` photos: a last batch under half size is dropped."""
    return max(1, n // batch_size + (1 if n % batch_size * 2 >= batch_size else 0))


def array_batches(
    images: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    gen: torch.Generator,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch of in-memory photos; under DDP every rank takes an equal slice of one order.

    A last batch under half the batch size is dropped (a few photos make BatchNorm statistics noise).
    """
    order = torch.randperm(len(images), generator=gen)
    per_rank = len(order) // world
    order = order[rank * per_rank : (rank + 1) * per_rank]
    images_t, targets_t = torch.from_numpy(images), torch.from_numpy(targets)
    for start in range(0, batches_per_epoch(len(order), batch_size) * batch_size, batch_size):
        idx = order[start : start + batch_size]
        yield images_t[idx], targets_t[idx]


def flip_images(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random half of a uint8 NHWC batch mirrored: horizontal flips keep every label true."""
    x = images.clone()
    flip = torch.rand(len(x), generator=gen) < 0.5
    x[flip] = x[flip].flip(2)
    return x


def train_one_epoch(
    model: Tagger,
    step_net: nn.Module,
    batches: Batches,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    on_step: Callable[[float], None] = lambda loss: None,
    augment: Augment = flip_images,
) -> float:
    """One pass over ``batches``, each augmented (horizontal flips by default); returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    for images, targets in batches:
        x = augment(images, gen)
        loss = loss_fn(step_net(model.normalize(x)), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(x)
        count += len(x)
        on_step(loss.item())
    return total / max(1, count)


def build_tagger(config: TrainConfig, num_classes: int, tags: list[str] | None = None) -> Tagger:
    """A fresh network, or one that starts from ``config.start()``: ImageNet weights with a new head, or the
    weights of a checkpoint (``trainer.models.weights``: Darkroom, timm or torchvision layout) with a new
    head, or with its own head when it predicts exactly ``tags`` (fine-tuning a noisy-tag model on clean
    labels of the same vocabulary keeps what the head learned; another label space gets a new head)."""
    start = config.start()
    torch.manual_seed(config.seed)  # the same head (and scratch network) whatever ran before in the process
    net = create_model(config.model, num_classes=num_classes)
    if start == "scratch":
        return Tagger(net, *preprocessing(net))
    try:
        if start == "imagenet":
            from trainer.models.efficientnet_lite import pretrained_weights

            same_tags, report = False, load_weights(net, pretrained_weights(), exclude=("head.",))
        else:
            source = read_torch_file(Path(start))
            if is_checkpoint(source) and source["model"] != config.model:  # type: ignore[index]
                raise ValueError(f"holds a {source['model']!r}, not a {config.model!r}")  # type: ignore[index]
            same_tags = is_checkpoint(source) and tags is not None and source["vocab"]["tags"] == list(tags)  # type: ignore[index]
            report = load_weights(net, Path(start), exclude=() if same_tags else ("head.",))
    except ValueError as exc:
        raise ValueError(f"option init_from={start!r}: {exc}") from None
    print(f"init: {report.describe()} ({'head kept' if same_tags else 'new head'})", file=sys.stderr)
    return Tagger(net, *preprocessing(net))


def preprocessing(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a network's weights expect: its ``default_config``'s where it has one."""
    config = getattr(net, "default_config", {})
    return tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))


def fit(
    model: Tagger,
    epoch_batches: Callable[[int, torch.Generator], Batches],
    steps_per_epoch: int,
    config: TrainConfig,
    state_path: Path | None = None,
    resume: bool = False,
    until_epoch: int | None = None,
    label: str = "",
    augment: Augment = flip_images,
) -> list[float]:
    """Train ``model`` for ``config.epochs``; returns the loss per epoch.

    With ``state_path`` the full training state (weights, optimizer, schedule, random generators) is saved
    after every epoch; ``resume`` continues from it; ``until_epoch`` stops early (a budgeted run that a
    later ``resume`` finishes). Under DDP the gradients are averaged across ranks.
    """
    rank, world = distributed()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    step_net: nn.Module = model.net
    if world > 1:
        step_net = nn.parallel.DistributedDataParallel(model.net)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch), pct_start=0.15
    )
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    start_epoch = 0
    if resume:
        if state_path is None or not state_path.is_file():
            raise ValueError(f"--resume: no training state at {state_path}; train without --resume first")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["config"] != dataclasses.asdict(config):
            raise ValueError(f"--resume: {state_path} was trained with other options: {state['config']}")
        model.net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, losses = state["epoch"], state["losses"]
    last = config.epochs if until_epoch is None else min(config.epochs, until_epoch)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=rank != 0) as progress:
        task = progress.add_task(
            label or f"training {config.model}", total=(last - start_epoch) * steps_per_epoch
        )
        for epoch in range(start_epoch, last):

            def on_step(loss: float, epoch: int = epoch) -> None:
                progress.update(
                    task, advance=1, description=f"{label} epoch {epoch + 1}/{config.epochs} loss {loss:.4f}"
                )

            batches = epoch_batches(epoch, gen)
            losses.append(
                train_one_epoch(
                    model, step_net, batches, loss_function(config.loss), opt, sched, gen, on_step, augment
                )
            )
            if state_path is not None and rank == 0:
                state = {
                    "epoch": epoch + 1,
                    "losses": losses,
                    "net": model.net.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "gen": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "config": dataclasses.asdict(config),
                }
                torch.save(state, state_path.with_suffix(".tmp"))
                os.replace(state_path.with_suffix(".tmp"), state_path)
    return losses


def fit_head(model: Tagger, features: np.ndarray, targets: np.ndarray, config: TrainConfig) -> list[float]:
    """Train ``model``'s head alone on its backbone's [N, 2, D] features (``FeatureCache``); the rest of
    the network is frozen. Returns the loss per epoch."""
    freeze(model, 0)
    return fit(
        HeadOnFeatures(model),  # type: ignore[arg-type]
        lambda epoch, gen: array_batches(features, targets, config.batch_size, gen),
        batches_per_epoch(len(features), config.batch_size),
        config,
        label=f"head of {config.model}",
        augment=pick_view,
    )


@torch.no_grad()
def predict(model: Tagger, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Per-tag probabilities of uint8 NHWC ``images``."""
    model.eval()
    return np.concatenate(
        [
            model(torch.from_numpy(images[i : i + batch_size])).numpy()
            for i in range(0, len(images), batch_size)
        ]
    )


def make_checkpoint(
    model: Tagger,
    config: TrainConfig,
    vocab: Vocabulary,
    thresholds: list[float],
    metrics: dict,
    skipped: list,
) -> dict:
    """The plain-dict checkpoint export and serving read: weights, input size, normalization, vocabulary."""
    mean, std = preprocessing(model.net)
    return {
        "model": config.model,
        "state_dict": model.net.state_dict(),
        "input_size": [config.size, config.size],
        "mean": list(mean),
        "std": list(std),
        "vocab": vocab.to_dict(),
        "thresholds": thresholds,
        "config": dataclasses.asdict(config),
        "metrics": metrics,
        "skipped": skipped,
    }


def main(
    train_manifest: Path,
    val_manifest: Path,
    vocab: Vocabulary,
    out: Path,
    config: TrainConfig,
    resume: bool = False,
    until_epoch: int | None = None,
    cache_dir: Path | None = None,
    target: str = "user_tags",
    feature_cache: Path | None = None,
) -> dict:
    """Train, evaluate on the clean validation set, calibrate thresholds there; save a plain-dict checkpoint.

    ``train_manifest`` is a JSONL manifest or a folder of tar shards (``trainer.data.shards``); ``target``
    says which tags train: ``user_tags`` (noisy) or ``labels`` (clean, for fine-tuning). From a pretrained
    start with ``unfreeze`` = 0 only the head trains, on backbone features cached in ``feature_cache``
    (default ``cache_dir/features``).
    """
    config.check()
    rank, world = distributed()
    head_only = config.start() != "scratch" and config.unfreeze == 0
    if head_only and (train_manifest.is_dir() or world > 1 or resume):
        raise ValueError(
            "a head on cached features trains from one manifest in one process and in seconds (no shards, "
            "torchrun or --resume); set unfreeze=-1 to fine-tune every layer instead"
        )
    features = FeatureCache(feature_cache or (cache_dir or out / "cache") / "features") if head_only else None
    torch.set_num_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)
    val = load_data(val_manifest, vocab, config.size, cache_dir=cache_dir)
    if val.clean_targets is None:
        raise ValueError(f"{val_manifest}: validation photos need clean 'labels' to evaluate and calibrate")
    model = build_tagger(config, len(vocab.tags), vocab.tags)
    skipped: list = list(val.skipped)
    if train_manifest.is_dir():
        from trainer.data.shards import ShardStream, shard_index

        total = sum(count for _, count in shard_index(train_manifest))
        stream = ShardStream(train_manifest, vocab.encode, config.size, target, config.seed, rank, world)
        steps = max(1, total // world // config.batch_size)
        loader = torch.utils.data.DataLoader(stream, batch_size=config.batch_size)

        def epoch_batches(epoch: int, gen: torch.Generator) -> Batches:
            stream.set_epoch(epoch)  # a rank that runs out first starts over, so all ranks step together
            return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), steps)
    else:
        if rank == 0 or cache_dir is None:
            train = load_data(train_manifest, vocab, config.size, cache_dir=cache_dir)
        if world > 1:
            dist.barrier()  # rank 0 filled the decode cache; the others read it
        if rank != 0 and cache_dir is not None:
            train = load_data(train_manifest, vocab, config.size, cache_dir=cache_dir)
        targets = train.user_targets if target == "user_tags" else train.clean_targets
        if targets is None:
            raise ValueError(f"{train_manifest}: every photo needs {target!r} to train on them")
        skipped = train.skipped + skipped
        steps = batches_per_epoch(len(train.images) // world, config.batch_size)

        def epoch_batches(epoch: int, gen: torch.Generator) -> Batches:
            return array_batches(train.images, targets, config.batch_size, gen, rank, world)

    started = time.time()
    if features is not None:
        losses = fit_head(model, features.features(model, train.images, config.model), targets, config)
        scores = predict_features(model, features.features(model, val.images, config.model))
    else:
        if config.start() != "scratch":
            model = PartlyFrozenTagger(model, freeze(model, config.unfreeze))
        losses = fit(model, epoch_batches, steps, config, out / "train_state.pt", resume, until_epoch)
        if rank != 0:
            dist.barrier()
            return {}
        scores = predict(model, val.images)
    metrics = score_metrics(scores, val.clean_targets, vocab.tags)
    thresholds, calibrated = calibrate(scores, val.clean_targets, config.target_precision)
    checkpoint = make_checkpoint(
        model,
        config,
        vocab,
        thresholds,
        {
            "val_mAP": metrics["mAP"],
            "val_per_tag_ap": metrics["per_tag_ap"],
            "calibrated": calibrated,  # per tag: reached target_precision, or uses the fallback
            "train_seconds": time.time() - started,
            "losses": losses,
            "world_size": world,
        },
        skipped,
    )
    torch.save(checkpoint, out / "checkpoint.pt")
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    (out / "skipped.json").write_text(
        json.dumps([{"source": s, "reason": r} for s, r in skipped], indent=1) + "\n"
    )
    if world > 1:
        dist.barrier()
    return checkpoint


def parse_overrides(items: list[str], parser: argparse.ArgumentParser) -> dict:
    """``KEY=VALUE`` strings → typed TrainConfig values; an unknown key or bad value names the option."""
    defaults = dataclasses.asdict(TrainConfig())
    values: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        if key not in defaults:
            parser.error(f"unknown option {key!r} in --set; known: {', '.join(sorted(defaults))}")
        try:
            values[key] = type(defaults[key])(raw)
        except ValueError:
            parser.error(f"option {key}={raw!r}: expected a {type(defaults[key]).__name__}")
    return values


def cli(argv: list[str] | None = None) -> int:
    """``darkroom train``: train from manifests (or shards), print the validation mAP and skipped photos."""
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter, prog="darkroom train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--train", type=Path, required=True, help="training manifest (JSONL) or shard folder")
    parser.add_argument("--val", type=Path, required=True, help="validation manifest with clean labels")
    parser.add_argument("--vocab", type=Path, help="vocab.json (default: the synthetic world's concepts)")
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and config.json")
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig values")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one option")
    parser.add_argument(
        "--target", choices=("user_tags", "labels"), default="user_tags", help="tags to train on"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    parser.add_argument("--until-epoch", type=int, help="stop after this epoch (resume later)")
    parser.add_argument("--cache", type=Path, help="decode cache folder (default OUT/cache)")
    parser.add_argument(
        "--init", metavar="FROM",
        help="auto (default), scratch, imagenet, or a Darkroom checkpoint or timm/torchvision-style state dict "
        "(init_from)",
    )  # fmt: skip
    parser.add_argument("--unfreeze", type=int, help="backbone blocks trained with the head: sets unfreeze")
    parser.add_argument(
        "--feature-cache", type=Path, help="cached backbone features (default CACHE/features)"
    )
    args = parser.parse_args(argv)
    try:
        values = json.loads(args.config.read_bytes()) if args.config else {}
    except (OSError, ValueError) as exc:
        parser.error(f"--config {args.config}: {exc}")
    if not isinstance(values, dict):
        parser.error(f"--config {args.config}: expected a JSON object of TrainConfig values")
    values.update(parse_overrides(args.set, parser))
    values.update({k: v for k, v in (("init_from", args.init), ("unfreeze", args.unfreeze)) if v is not None})
    from trainer.vocab.vocabulary import synthetic_vocabulary

    try:
        vocab = Vocabulary.load(args.vocab) if args.vocab else synthetic_vocabulary()
        config = TrainConfig.from_dict(values)
        ckpt = main(
            args.train, args.val, vocab, args.out, config, args.resume, args.until_epoch,
            args.cache or args.out / "cache", args.target, args.feature_cache,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, ManifestError) as exc:
        parser.exit(2, f"darkroom train: error: {exc}\n")
    if ckpt:
        for source, reason in ckpt["skipped"][:20]:
            print(f"skipped {source}: {reason}", file=sys.stderr)
        print(
            f"val mAP {ckpt['metrics']['val_mAP']:.3f}; skipped {len(ckpt['skipped'])} "
            f"(listed in {args.out / 'skipped.json'}); checkpoint {args.out / 'checkpoint.pt'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
