"""``darkroom experiment paper --out DIR``: the paper's comparison of training regimes, end to end, offline.

1. Data: renders the synthetic world (realistic 640–1600 px JPEGs): a large set with noisy user tags, a
   small clean-labelled fine-tuning pool, clean validation (calibration) and test sets. Each set is decoded
   once per resolution into a uint8 cache.
2. Regimes (all scored on the clean test set): ``noisy_only`` (the lightweight model from scratch on the
   user tags of the large set), ``clean_pretrain_finetune`` (the clean pretraining is real: EfficientNet-
   Lite0's ImageNet backbone, frozen, with a new head fine-tuned on the small clean set),
   ``noisy_pretrain_finetune`` (the noisy-only model, fine-tuned on the same clean set), ``clean_only`` (the
   small clean set from scratch, the floor) and ``imagenet_noisy_finetune`` (the ImageNet backbone with a
   head fine-tuned on the noisy user tags: ``darkroom train``'s default for a collection). ImageNet heads
   train on cached backbone features (``trainer.finetune``).
3. A sweep of clean fine-tune sizes for the three starting points (scratch, ImageNet, noisy-pretrained).
4. Accuracy against cost: every model of the comparison trained noisy-only on the same data, with its
   params, FLOPs and CPU latency; the best lightweight model's mAP as a fraction of the reference's.

Writes ``DIR/results.json`` (``regimes.<name>.mAP``, ``finetune_sweep``, ``models``, ``cost``,
``findings``), ``DIR/results.md`` and plots; ``--quick`` is a small version for tests (well under 5 min).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contracts.helpformat import DefaultsHelpFormatter
from trainer.data.manifest import PhotoSet, load_photo_set
from trainer.data.synthetic import make_photo_set
from trainer.evaluate import write_evaluation_report
from trainer.finetune import FeatureCache, predict_features
from trainer.metrics import calibrate, score_metrics
from trainer.models.catalog import model_cost
from trainer.train import (
    Tagger,
    TrainConfig,
    array_batches,
    batches_per_epoch,
    build_tagger,
    fit,
    fit_head,
    make_checkpoint,
    predict,
)
from trainer.vocab.vocabulary import Vocabulary, synthetic_vocabulary

REGIMES = (
    "noisy_only", "clean_pretrain_finetune", "noisy_pretrain_finetune", "clean_only", "imagenet_noisy_finetune"
)  # fmt: skip
STARTS = ("scratch", "clean_pretrain", "noisy_pretrain")


@dataclass(frozen=True)
class PaperRecipe:
    """Sizes and budgets of one run of the experiment."""

    n_noisy: int  # user-tagged photos (rendered in two halves, one per CPU)
    n_clean_pool: int  # clean-labelled fine-tuning pool; the sweep takes its first k
    n_val: int  # clean: calibration of thresholds
    n_test: int  # clean: every number in the results
    long_side: tuple[int, int]  # photo sizes of the scene sets
    size: int  # model input resolution
    model: str  # the lightweight model of the regimes
    models: tuple[str, ...]  # the cost comparison (``reference`` included)
    reference: str
    noisy_epochs: int
    imagenet_size: int  # input resolution of the ImageNet backbone (its own is 224)
    head_epochs: int  # epochs of a head on cached ImageNet features
    finetune_steps: int  # optimizer steps of a fine-tune (at least ``finetune_min_epochs`` epochs)
    finetune_min_epochs: int
    finetune_size: int  # the "small clean set" of the regimes table
    sweep: tuple[int, ...]  # clean fine-tune sizes
    loss_ablation: bool = False  # also train noisy-only with plain BCE, to check the choice of ASL


FULL = PaperRecipe(
    n_noisy=2400, n_clean_pool=600, n_val=300, n_test=600, long_side=(640, 1600),
    size=96, model="mobilenet_lite_050", models=("mobilenet_lite_050", "mobilenet_lite_100", "resnet_ref"),
    reference="resnet_ref", noisy_epochs=8, imagenet_size=224, head_epochs=30, finetune_steps=60,
    finetune_min_epochs=6, finetune_size=300, sweep=(100, 300, 600), loss_ablation=True,
)  # fmt: skip
# FULL's design at about half the photos, without the larger models, ImageNet features at 160 px:
# 10–15 minutes on 2 shared cores
REDUCED = dataclasses.replace(
    FULL, n_noisy=1200, n_clean_pool=300, n_val=200, n_test=400, models=("mobilenet_lite_050", "resnet_ref"),
    imagenet_size=160, finetune_size=150, sweep=(50, 150, 300), loss_ablation=False,
)  # fmt: skip
QUICK = PaperRecipe(
    n_noisy=600, n_clean_pool=160, n_val=150, n_test=200, long_side=(320, 640),
    size=64, model="mobilenet_lite_050", models=("mobilenet_lite_050", "resnet_ref"), reference="resnet_ref",
    noisy_epochs=6, imagenet_size=64, head_epochs=20, finetune_steps=16, finetune_min_epochs=3,
    finetune_size=160, sweep=(50, 160),
)  # fmt: skip
RECIPES = {"full": FULL, "reduced": REDUCED, "quick": QUICK}
IMAGENET_MODEL = "efficientnet_lite0"


def _render(out: Path, n: int, seed: int, long_side: tuple[int, int], split: str) -> Path:
    """One photo set (runs in a worker process)."""
    return make_photo_set(out, n, seed, split=split, long_side=long_side)


def make_data(root: Path, recipe: PaperRecipe, seed: int, workers: int = 2) -> dict[str, list[Path]]:
    """Render every set (skipping those already complete) on ``workers`` processes; manifests per set."""
    half = recipe.n_noisy // 2
    jobs = {
        "noisy": [(root / "noisy-a", half, seed + 10, "noisy"),
                  (root / "noisy-b", recipe.n_noisy - half, seed + 11, "noisy")],
        "clean": [(root / "clean", recipe.n_clean_pool, seed + 20, "clean")],
        "val": [(root / "val", recipe.n_val, seed + 30, "val")],
        "test": [(root / "test", recipe.n_test, seed + 40, "test")],
    }  # fmt: skip
    manifests: dict[str, list[Path]] = {}
    with ProcessPoolExecutor(workers) as pool:
        futures = {}
        for name, parts in jobs.items():
            for out, n, part_seed, split in parts:
                done = out / "manifest.jsonl"
                if done.exists() and len(done.read_text().splitlines()) == n:
                    manifests.setdefault(name, []).append(done)
                else:
                    futures[pool.submit(_render, out, n, part_seed, recipe.long_side, split)] = name
        for future, name in futures.items():
            manifests.setdefault(name, []).append(future.result())
    return {name: sorted(paths) for name, paths in manifests.items()}


def load_sets(manifests: dict[str, list[Path]], size: int, cache: Path) -> tuple[dict[str, PhotoSet], int]:
    """Decode every set at ``size`` (cached); returns the sets and how many photos were skipped."""
    encode = synthetic_vocabulary().encode
    sets, skipped = {}, 0
    for name, paths in manifests.items():
        parts = [load_photo_set(p, encode, size, cache_dir=cache) for p in paths]
        skipped += sum(len(p.skipped) for p in parts)
        sets[name] = PhotoSet(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.user_targets for p in parts]),  # type: ignore[misc]
            np.concatenate([p.clean_targets for p in parts]),  # type: ignore[misc]
        )
    return sets, skipped


def train_on(
    images: np.ndarray, targets: np.ndarray, config: TrainConfig, tags: list[str], label: str
) -> tuple[Tagger, float]:
    """Train one network for ``tags`` on in-memory photos; returns it and its training seconds."""
    num_classes = len(tags)
    model = build_tagger(config, num_classes, tags)
    steps = batches_per_epoch(len(images), config.batch_size)
    started = time.time()
    fit(
        model,
        lambda epoch, gen: array_batches(images, targets, config.batch_size, gen),
        steps,
        config,
        label=label,
    )
    return model, time.time() - started


def finetune_config(recipe: PaperRecipe, n: int, init_from: str, seed: int) -> TrainConfig:
    """Fine-tuning budget for ``n`` clean photos: ``finetune_steps`` steps, never under the minimum epochs.

    From a pretrained backbone the learning rate is a third of from-scratch training's, so fine-tuning
    adapts the features rather than overwriting them.
    """
    steps_per_epoch = batches_per_epoch(n, 64)
    epochs = max(recipe.finetune_min_epochs, math.ceil(recipe.finetune_steps / steps_per_epoch))
    return TrainConfig(
        model=recipe.model, size=recipe.size, epochs=epochs, seed=seed, init_from=init_from,
        lr=3e-3 if init_from == "scratch" else 1e-3, unfreeze=-1,
    )  # fmt: skip


def score(model: Tagger, data: PhotoSet) -> tuple[np.ndarray, dict]:
    """Test-set scores and metrics against the clean labels."""
    scores = predict(model, data.images)
    return scores, score_metrics(scores, data.clean_targets, synthetic_vocabulary().tags)  # type: ignore[arg-type]


def save_checkpoint(
    model: Tagger, config: TrainConfig, vocab: Vocabulary, val: PhotoSet | None, path: Path
) -> None:
    """A plain-dict checkpoint (thresholds calibrated on ``val`` when given) for fine-tuning and export."""
    thresholds = [0.5] * len(vocab.tags)
    metrics: dict = {}
    if val is not None:
        val_scores = predict(model, val.images)
        thresholds, metrics["calibrated"] = calibrate(val_scores, val.clean_targets, config.target_precision)  # type: ignore[arg-type]
        metrics["val_mAP"] = score_metrics(val_scores, val.clean_targets, vocab.tags)["mAP"]  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make_checkpoint(model, config, vocab, thresholds, metrics, []), path)


def run_paper(out: Path, recipe: PaperRecipe, seed: int = 0, threads: int = 2) -> dict:
    """Every regime, the fine-tune sweep and the cost comparison; writes results, Markdown and plots."""
    started = time.time()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    torch.set_num_threads(threads)
    vocab = synthetic_vocabulary()
    k = len(vocab.tags)
    timings: dict[str, float] = {}
    manifests = make_data(out / "data", recipe, seed)
    timings["render_s"] = time.time() - started
    sets, skipped = load_sets(manifests, recipe.size, out / "data" / "cache")
    timings["decode_s"] = time.time() - started - timings["render_s"]
    noisy, clean, val, test = (sets[n] for n in ("noisy", "clean", "val", "test"))
    ckpt_dir = out / "checkpoints"
    results: dict = {"recipe": dataclasses.asdict(recipe), "seed": seed, "regimes": {}, "models": {}}
    base = TrainConfig(model=recipe.model, size=recipe.size, seed=seed, threads=threads)

    # noisy-only, for every model of the cost comparison (the regimes' model among them)
    for name in recipe.models:
        config = dataclasses.replace(base, model=name, epochs=recipe.noisy_epochs)
        model, seconds = train_on(noisy.images, noisy.user_targets, config, vocab.tags, f"noisy-only {name}")  # type: ignore[arg-type]
        scores, metrics = score(model, test)
        cost = model_cost(name, recipe.size, k, repeats=5)
        results["models"][name] = {
            "mAP": metrics["mAP"], "params": cost.params, "mflops": cost.mflops, "latency_ms": cost.latency_ms,
            "train_seconds": seconds,
        }  # fmt: skip
        if name == recipe.model:
            save_checkpoint(model, config, vocab, val, ckpt_dir / "noisy_only.pt")
            results["regimes"]["noisy_only"] = _regime(metrics, seconds, len(noisy.images), "user tags")
            _report(
                out / "reports" / "noisy_only", scores, predict(model, val.images), test, val, "noisy-only"
            )

    if recipe.loss_ablation:
        config = dataclasses.replace(base, epochs=recipe.noisy_epochs, loss="bce")
        model, _ = train_on(noisy.images, noisy.user_targets, config, vocab.tags, "noisy-only, BCE loss")  # type: ignore[arg-type]
        results["loss_ablation"] = {
            "asl": results["regimes"]["noisy_only"]["mAP"],
            "bce": score(model, test)[1]["mAP"],
        }

    # the real clean pretraining: ImageNet features of every set, computed once, then heads on them
    features_started = time.time()
    imagenet = dataclasses.replace(
        base, model=IMAGENET_MODEL, size=recipe.imagenet_size, init_from="imagenet", epochs=recipe.head_epochs,
        lr=1e-2,  # a linear head on fixed features: a larger step than a whole network takes
    )  # fmt: skip
    lite_sets, _ = load_sets(manifests, recipe.imagenet_size, out / "data" / "cache")
    cache, backbone = FeatureCache(out / "data" / "features"), build_tagger(imagenet, k)
    features = {name: cache.features(backbone, s.images, IMAGENET_MODEL) for name, s in lite_sets.items()}
    timings["imagenet_features_s"] = time.time() - features_started

    def imagenet_head(train: np.ndarray, targets: np.ndarray, label: str) -> tuple[np.ndarray, dict, float]:
        """A new head on ImageNet features: test scores, test metrics and training seconds."""
        started = time.time()
        tagger = build_tagger(imagenet, k)
        fit_head(tagger, train, targets, imagenet)
        seconds = time.time() - started
        scores = predict_features(tagger, features["test"])
        _report(out / "reports" / label, scores, predict_features(tagger, features["val"]), test, val, label)
        return scores, score_metrics(scores, test.clean_targets, vocab.tags), seconds  # type: ignore[arg-type]

    _, metrics, seconds = imagenet_head(features["noisy"], noisy.user_targets, "imagenet_noisy_finetune")  # type: ignore[arg-type]
    results["regimes"]["imagenet_noisy_finetune"] = _regime(
        metrics, seconds, len(noisy.images), "user tags (ImageNet backbone)"
    )
    lite_cost = model_cost(IMAGENET_MODEL, recipe.imagenet_size, k, repeats=3)
    results["imagenet"] = {
        "model": IMAGENET_MODEL, "size": recipe.imagenet_size, "params": lite_cost.params,
        "mflops": lite_cost.mflops, "latency_ms": lite_cost.latency_ms, "noisy_head_mAP": metrics["mAP"],
        "features_seconds": timings["imagenet_features_s"],
    }  # fmt: skip

    inits = {"scratch": "scratch", "noisy_pretrain": str(ckpt_dir / "noisy_only.pt")}
    sweep: dict[str, list[float]] = {start: [] for start in STARTS}
    for n in recipe.sweep:
        for start in STARTS:
            if start == "clean_pretrain":
                targets = clean.clean_targets[:n]  # type: ignore[index]
                scores, metrics, seconds = imagenet_head(
                    features["clean"][:n], targets, f"imagenet_clean_{n}"
                )
            else:
                config = dataclasses.replace(finetune_config(recipe, n, inits[start], seed), threads=threads)
                model, seconds = train_on(
                    clean.images[:n], clean.clean_targets[:n], config, vocab.tags, f"{start} → {n} clean"
                )  # type: ignore[index]
                scores, metrics = score(model, test)
            sweep[start].append(metrics["mAP"])
            if n == recipe.finetune_size:
                regime = {"scratch": "clean_only", "clean_pretrain": "clean_pretrain_finetune",
                          "noisy_pretrain": "noisy_pretrain_finetune"}[start]  # fmt: skip
                trained_on = (
                    "clean labels (ImageNet backbone)" if start == "clean_pretrain" else "clean labels"
                )
                results["regimes"][regime] = _regime(metrics, seconds, n, trained_on)
                if start == "noisy_pretrain":
                    _report(out / "reports" / regime, scores, predict(model, val.images), test, val, regime)
    results["regimes"] = {name: results["regimes"][name] for name in REGIMES}
    results["finetune_sweep"] = {"sizes": list(recipe.sweep), **sweep}
    results["cost"] = cost_summary(results["models"], recipe.reference)
    results["findings"] = findings(results)
    timings["total_s"] = time.time() - started
    results["run"] = {
        **timings, "skipped_photos": skipped, "threads": threads, "cpus": os.cpu_count(), "load_avg_at_start": load_start,
        "photos": {name: len(s.images) for name, s in sets.items()},
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_results(results, out)
    (out / "results.md").write_text(results_markdown(results))
    return results


def _regime(metrics: dict, seconds: float, photos: int, trained_on: str) -> dict:
    return {
        "mAP": metrics["mAP"], "P@1": metrics["P@1"], "P@3": metrics["P@3"], "R@3": metrics["R@3"],
        "per_tag_ap": metrics["per_tag_ap"], "train_seconds": seconds, "train_photos": photos, "trained_on": trained_on,
    }  # fmt: skip


def _report(
    out: Path, scores: np.ndarray, val_scores: np.ndarray, test: PhotoSet, val: PhotoSet, title: str
) -> None:
    """The ``darkroom evaluate`` report of one regime: thresholds calibrated on val, scored on test."""
    thresholds, calibrated = calibrate(val_scores, val.clean_targets, 0.9)  # type: ignore[arg-type]
    write_evaluation_report(
        out, scores, test.clean_targets, synthetic_vocabulary().tags, thresholds, calibrated,
        title.replace("_", " "), 0.9,
    )  # type: ignore[arg-type]  # fmt: skip


def cost_summary(models: dict, reference: str) -> dict:
    """Best lightweight model (at most 1/5 of the reference's FLOPs) as fractions of the reference."""
    ref = models[reference]
    light = {n: m for n, m in models.items() if n != reference and m["mflops"] <= ref["mflops"] / 5}
    if not light:
        return {"reference": reference, "best_lightweight": None, "goal_met": False}
    best = max(light, key=lambda n: light[n]["mAP"])
    map_fraction = light[best]["mAP"] / ref["mAP"]
    flops_fraction = light[best]["mflops"] / ref["mflops"]
    return {
        "reference": reference, "best_lightweight": best, "map_fraction": map_fraction,
        "flops_fraction": flops_fraction, "latency_fraction": light[best]["latency_ms"] / ref["latency_ms"],
        "goal": "mAP >= 0.95 of the reference at <= 1/5 of its FLOPs",
        "goal_met": bool(map_fraction >= 0.95 and flops_fraction <= 0.2),
    }  # fmt: skip


def findings(results: dict) -> dict:
    """The paper's two findings, checked against this run's numbers (tolerance: 0.01 mAP)."""
    r, sweep = results["regimes"], results["finetune_sweep"]
    wins = [
        noisy > clean for noisy, clean in zip(sweep["noisy_pretrain"], sweep["clean_pretrain"], strict=True)
    ]
    return {
        "noisy_as_good_as_clean_pretrain_finetune": {
            "noisy_only": r["noisy_only"]["mAP"], "clean_pretrain_finetune": r["clean_pretrain_finetune"]["mAP"],
            "held": bool(r["noisy_only"]["mAP"] >= r["clean_pretrain_finetune"]["mAP"] - 0.01),
        },
        "noisy_pretrain_better_start_for_finetuning": {
            "noisy_pretrain_finetune": r["noisy_pretrain_finetune"]["mAP"],
            "clean_pretrain_finetune": r["clean_pretrain_finetune"]["mAP"],
            "sweep_sizes_won": f"{sum(wins)}/{len(wins)}",
            "held": bool(r["noisy_pretrain_finetune"]["mAP"] > r["clean_pretrain_finetune"]["mAP"] and all(wins)),
        },
    }  # fmt: skip


def plot_results(results: dict, out: Path) -> None:
    """regimes.png (mAP per regime), finetune_sweep.png (mAP vs clean set size), cost.png (mAP vs FLOPs)."""
    from trainer.evaluate import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(results["regimes"])
    values = [results["regimes"][n]["mAP"] for n in names]
    ax.barh([n.replace("_", " ") for n in names][::-1], values[::-1], color="#4a7ab5")
    for y, v in enumerate(values[::-1]):
        ax.text(v + 0.005, y, f"{v:.3f}", va="center", fontsize=8)
    ax.set(xlim=(0, 1), xlabel="mAP on the clean test set", title="training regimes")
    fig.tight_layout()
    fig.savefig(out / "regimes.png", dpi=110)
    plt.close(fig)

    sweep = results["finetune_sweep"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for start in STARTS:
        label = "ImageNet backbone" if start == "clean_pretrain" else start.replace("_", " ")
        ax.plot(sweep["sizes"], sweep[start], marker="o", label=label)
    ax.axhline(results["regimes"]["noisy_only"]["mAP"], ls="--", c="grey", label="noisy only (no clean data)")
    ax.set(
        xscale="log",
        xlabel="clean fine-tuning photos",
        ylabel="test mAP",
        title="fine-tuning on a little clean data",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "finetune_sweep.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in results["models"].items():
        ax.scatter(m["mflops"], m["mAP"], s=30)
        ax.annotate(name, (m["mflops"], m["mAP"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(
        xscale="log",
        xlabel="MFLOPs (multiply-adds) per image",
        ylabel="test mAP (noisy only)",
        title="accuracy against cost",
    )
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=110)
    plt.close(fig)


def results_markdown(results: dict) -> str:
    """The comparison tables as Markdown (numbers only; the reading is written by a person)."""
    recipe, run = results["recipe"], results["run"]
    lines = [
        "# Paper comparison: results",
        "",
        f"Model `{recipe['model']}` at {recipe['size']} px; seed {results['seed']}; {run['total_s'] / 60:.1f} min "
        f"wall ({run['threads']} threads, {run['cpus']} CPUs, load average {run['load_avg_at_start']:.1f} at start). "
        f"Photos: "
        + ", ".join(f"{k} {v}" for k, v in run["photos"].items())
        + f"; skipped {run['skipped_photos']}.",
        "",
        "| regime | trained on | photos | mAP | P@1 | P@3 | R@3 | train s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results["regimes"].items():
        lines.append(
            f"| {name} | {r['trained_on']} | {r['train_photos']} | {r['mAP']:.3f} | {r['P@1']:.3f} | {r['P@3']:.3f} "
            f"| {r['R@3']:.3f} | {r['train_seconds']:.0f} |"
        )
    sweep = results["finetune_sweep"]
    lines += ["", "Fine-tune sweep (test mAP):", "", "| start | " + " | ".join(str(n) for n in sweep["sizes"]) + " |",
              "| --- |" + " ---: |" * len(sweep["sizes"])]  # fmt: skip
    for start in STARTS:
        lines.append(f"| {start} | " + " | ".join(f"{v:.3f}" for v in sweep[start]) + " |")
    lines += [
        "",
        "| model | params | MFLOPs | latency ms (b=1) | mAP (noisy only) | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in results["models"].items():
        lines.append(
            f"| {name} | {m['params']:,} | {m['mflops']:.1f} | {m['latency_ms']:.1f} | {m['mAP']:.3f} | {m['train_seconds']:.0f} |"
        )
    if "loss_ablation" in results:
        ablation = results["loss_ablation"]
        lines += [
            "",
            f"Loss (noisy only, `{recipe['model']}`): ASL {ablation['asl']:.3f}, plain BCE {ablation['bce']:.3f}.",
        ]
    lite = results["imagenet"]
    lines += [
        "",
        f"ImageNet backbone `{lite['model']}` at {lite['size']} px: {lite['params']:,} params, {lite['mflops']:.0f} MFLOPs, "
        f"{lite['latency_ms']:.1f} ms (b=1, PyTorch); features of every set computed once in {lite['features_seconds']:.0f} s; "
        f"head on the noisy user tags: mAP {lite['noisy_head_mAP']:.3f}.",
    ]
    cost = results["cost"]
    if cost.get("best_lightweight"):
        lines += ["", f"Best lightweight `{cost['best_lightweight']}`: {cost['map_fraction']:.3f} of `{cost['reference']}`'s mAP "
                  f"at {cost['flops_fraction']:.3f} of its FLOPs (goal met: {cost['goal_met']})."]  # fmt: skip
    lines.append("")
    for name, f in results["findings"].items():
        lines.append(
            f"- {name.replace('_', ' ')}: held = **{f['held']}** ({', '.join(f'{k} {v:.3f}' if isinstance(v, float) else f'{k} {v}' for k, v in f.items() if k != 'held')})"
        )
    lines += ["", "![regimes](regimes.png) ![sweep](finetune_sweep.png) ![cost](cost.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``darkroom experiment paper --out DIR [--quick] [--seed N]``."""
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog="darkroom experiment",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("name", choices=("paper",), help="the experiment to run")
    parser.add_argument("--out", type=Path, required=True, help="folder for data, checkpoints and results")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="full",
        help="sizes: full (~25 min), reduced, quick (tests)",
    )
    parser.add_argument("--quick", action="store_true", help="the same as --recipe quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    results = run_paper(args.out, RECIPES["quick" if args.quick else args.recipe], args.seed, args.threads)
    print((args.out / "results.md").read_text())
    return 0 if results else 1
