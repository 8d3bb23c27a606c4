"""``darkroom tag``: custom tags from a few examples.

``darkroom tag new NAME --examples PHOTO... --collection MANIFEST --checkpoint CKPT``
    learns NAME from 5-20 example photos (files, or photo ids the search index knows as ``file://``
    uploads) against negatives sampled from the collection, reports the cross-validated precision and
    recall at the calibrated threshold, and writes the model with NAME as its next version (``--no-export``:
    the checkpoint only). Triton's poller rolls the version out as any other.
``darkroom tag measure``
    the synthetic world's kite (the renderer draws it, the vocabulary lacks it): precision and recall on
    held-out photos after 5, 10 and 20 examples, as JSON, a plot and a table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tools.feedback import int_list

console = Console(stderr=True)


def resolve_examples(examples: list[str], index_db: Path | None) -> list[str]:
    """Each example as a photo source: an existing file, or a photo id whose upload is a ``file://`` URL
    in the search index. ValueError naming the first one that is neither."""
    sources, index = [], None
    try:
        for example in examples:
            if Path(example).is_file():
                sources.append(str(Path(example).resolve()))
                continue
            if index is None:
                if index_db is None or not index_db.is_file():
                    raise ValueError(
                        f"{example!r} is not a file, and no search index (--index) to look it up in"
                    )
                from search.store import SearchIndex

                index = SearchIndex(index_db, readonly=True)
            url = index.url_of(example)
            if url is None or not url.startswith("file://"):
                raise ValueError(
                    f"{example!r} is neither a file nor a photo id with a local file in {index_db}"
                )
            sources.append(url)
    finally:
        if index is not None:
            index.close()
    return sources


def collection_sources(manifest: Path) -> list[str]:
    from trainer.data.manifest import read_manifest

    return [r.source for r in read_manifest(manifest)]


def features_of(checkpoint: dict, sources: list[str], cache: Path, what: str) -> np.ndarray:
    """[N, 2, D] backbone features of photos (decoded as the worker decodes them); unreadable ones are
    named and left out."""
    from trainer.checkpoint import load_tagger
    from trainer.data.manifest import decode_photos
    from trainer.finetune import FeatureCache

    images, _, skipped = decode_photos(sources, checkpoint["input_size"][0], f"decoding {what}")
    for source, why in skipped[:5]:
        console.print(f"[yellow]skipped[/] {source}: {why}")
    if not len(images):
        raise ValueError(f"none of the {len(sources)} {what} photos could be read")
    return FeatureCache(cache).features(load_tagger(checkpoint), images, checkpoint["model"])


def cmd_new(args: argparse.Namespace) -> int:
    from trainer.checkpoint import load_checkpoint
    from trainer.custom_tag import add_tag, learn_tag
    from trainer.data.manifest import ManifestError
    from trainer.export import write_version

    name = " ".join(args.name.split()).lower()
    try:
        if not name:
            raise ValueError("the tag's name is blank")
        if not 5 <= len(args.examples) <= 20:
            raise ValueError(f"give 5 to 20 example photos, got {len(args.examples)}")
        checkpoint = load_checkpoint(args.checkpoint)
        examples = resolve_examples(args.examples, args.index)
        pool = [s for s in collection_sources(args.collection) if s not in set(examples)]
        negatives = random.Random(args.seed).sample(pool, min(args.negatives, len(pool)))
        cache = args.out / "features"
        tag = learn_tag(
            name,
            features_of(checkpoint, examples, cache, "example"),
            features_of(checkpoint, negatives, cache, "negative"),
            args.target_precision,
            seed=args.seed,
        )
        extended = add_tag(checkpoint, tag)
    except (ValueError, ManifestError, OSError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(extended, args.out / "checkpoint.pt")
    estimate = tag.estimate
    console.print(
        f"{name!r}: cross-validated precision {estimate['precision']:.2f}, recall {estimate['recall']:.2f} "
        f"at threshold {tag.threshold:.3f} ({estimate['positives']} examples, {estimate['negatives']} negatives)"
        + ("" if estimate["reached"] else f"; the target precision {args.target_precision} was NOT reached")
    )
    written = None
    if not args.no_export:
        written = str(write_version(args.repo, extended, name=args.name_model))
        console.print(f"added {written} with {name!r}; Triton rolls it out")
    print(json.dumps({"tag": name, "threshold": round(tag.threshold, 4), **estimate, "written": written}))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from trainer.checkpoint import load_tagger
    from trainer.custom_tag import add_tag, learn_tag
    from trainer.data.manifest import read_manifest
    from trainer.data.novel import NOVEL_TAG, make_novel_set
    from trainer.finetune import predict_features
    from trainer.train import TrainConfig, build_tagger, make_checkpoint
    from trainer.vocab.vocabulary import synthetic_vocabulary

    work: Path = args.workdir
    n_pool, n_test = (300, 300) if args.quick else (args.pool, args.test)
    pool_manifest = make_novel_set(work / "pool", n_pool, seed=30, share=args.share, split="pool")
    test_manifest = make_novel_set(work / "test", n_test, seed=31, share=args.share, split="test")
    vocab = synthetic_vocabulary()
    config = TrainConfig(model="efficientnet_lite0", size=args.size, init_from="imagenet")
    checkpoint = make_checkpoint(build_tagger(config, len(vocab.tags), vocab.tags), config, vocab,
                                 [0.5] * len(vocab.tags), {}, [])  # fmt: skip
    pool = read_manifest(pool_manifest)
    test = read_manifest(test_manifest)
    cache = work / "features"
    pool_features = features_of(checkpoint, [r.source for r in pool], cache, "pool")
    test_features = features_of(checkpoint, [r.source for r in test], cache, "test")
    pool_has = np.array([NOVEL_TAG in (r.labels or ()) for r in pool])
    test_has = np.array([NOVEL_TAG in (r.labels or ()) for r in test])
    points = []
    for n_examples in args.examples:
        for draw in range(args.draws):
            rng = np.random.default_rng(1000 * draw + n_examples)
            chosen = rng.choice(np.flatnonzero(pool_has), n_examples, replace=False)
            rest = np.setdiff1d(np.arange(len(pool)), chosen)
            negatives = rng.choice(rest, min(args.negatives, len(rest)), replace=False)  # some show a kite
            tag = learn_tag(NOVEL_TAG, pool_features[chosen], pool_features[negatives], args.target_precision,
                            seed=draw)  # fmt: skip
            served = load_tagger(add_tag(checkpoint, tag))  # as the next version serves it
            scores = predict_features(served, test_features)[:, -1]
            predicted = scores >= tag.threshold
            tp = int((predicted & test_has).sum())
            points.append(
                {
                    "examples": n_examples,
                    "draw": draw,
                    "estimated_precision": tag.estimate["precision"],
                    "estimated_recall": tag.estimate["recall"],
                    "reached": tag.estimate["reached"],
                    "heldout_precision": round(tp / max(1, int(predicted.sum())), 4),
                    "heldout_recall": round(tp / max(1, int(test_has.sum())), 4),
                    "negatives_with_kite": int(pool_has[negatives].sum()),
                }
            )
            console.print(points[-1])
    summary, spread = {}, {}
    for n_examples in args.examples:
        mine = [p for p in points if p["examples"] == n_examples]
        summary[str(n_examples)] = {
            key: round(float(np.mean([p[key] for p in mine])), 4)
            for key in ("estimated_precision", "estimated_recall", "heldout_precision", "heldout_recall")
        }
        spread[str(n_examples)] = {  # the standard deviation over draws
            key: round(float(np.std([p[key] for p in mine])), 4)
            for key in ("heldout_precision", "heldout_recall")
        }
    report = {
        "tag": NOVEL_TAG,
        "pool": len(pool),
        "test": len(test),
        "test_with_kite": int(test_has.sum()),
        "share": args.share,
        "target_precision": args.target_precision,
        "size": args.size,
        "draws": args.draws,
        "mean_over_draws": summary,
        "sd_over_draws": spread,
        "points": points,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "custom_tag.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot(summary, args.out / "custom_tag.png")
    table = Table(title=f"custom tag {NOVEL_TAG!r}, mean over {args.draws} draws", title_justify="left")
    for col in ("examples", "est. precision", "est. recall", "held-out precision", "held-out recall"):
        table.add_column(col)
    for n, row in summary.items():
        table.add_row(n, *(f"{row[k]:.2f}" for k in ("estimated_precision", "estimated_recall")),
                      *(f"{row[k]:.2f} ± {spread[n][k]:.2f}" for k in ("heldout_precision", "heldout_recall")))  # fmt: skip
    console.print(table)
    print(json.dumps(report))
    return 0


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [int(n) for n in summary]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key, style in (("heldout_precision", "o-"), ("heldout_recall", "s-"),
                       ("estimated_precision", "o:"), ("estimated_recall", "s:")):  # fmt: skip
        ax.plot(xs, [summary[str(x)][key] for x in xs], style, label=key.replace("_", " "))
    ax.axhline(0.9, color="grey", lw=0.6)
    ax.set_xticks(xs)
    ax.set_xlabel("example photos")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="darkroom tag", description="Custom tags from a few examples.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    new = sub.add_parser("new", help="learn a tag from 5-20 example photos; add it to the next version")
    new.add_argument("name", help="the tag, e.g. 'our cat'")
    new.add_argument("--examples", nargs="+", required=True, metavar="PHOTO",
                     help="5-20 photos that show it: files, or photo ids (looked up in --index)")  # fmt: skip
    new.add_argument("--collection", type=Path, required=True,
                     help="manifest of the collection, where negatives are sampled")  # fmt: skip
    new.add_argument("--checkpoint", type=Path, required=True, help="the served version's checkpoint")
    new.add_argument("--index", type=Path, help="search index, to find photo ids' files")
    new.add_argument("--negatives", type=int, default=400, help="negatives sampled (default 400)")
    new.add_argument("--target-precision", type=float, default=0.9)
    new.add_argument("--repo", type=Path, default=Path("triton_models"))
    new.add_argument("--name-model", default="tagger", help="the Triton model (default tagger)")
    new.add_argument("--no-export", action="store_true", help="write the checkpoint only")
    new.add_argument("--out", type=Path, default=Path("run/custom-tag"))
    new.add_argument("--seed", type=int, default=0)
    new.set_defaults(func=cmd_new)
    measure = sub.add_parser(
        "measure", help="precision/recall of a synthetic custom tag after 5/10/20 examples"
    )
    measure.add_argument("--workdir", type=Path, default=Path("data/custom-tag"))
    measure.add_argument("--out", type=Path, default=Path("docs/feedback"))
    measure.add_argument("--examples", type=int_list, default=[5, 10, 20])
    measure.add_argument("--draws", type=int, default=5, help="example draws per count")
    measure.add_argument("--negatives", type=int, default=400)
    measure.add_argument("--share", type=float, default=0.04, help="share of photos showing a kite")
    measure.add_argument("--target-precision", type=float, default=0.9)
    measure.add_argument("--size", type=int, default=160)
    measure.add_argument("--pool", type=int, default=800, help="collection photos (examples, negatives)")
    measure.add_argument("--test", type=int, default=1500, help="held-out photos")
    measure.add_argument("--quick", action="store_true")
    measure.set_defaults(func=cmd_measure)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not 0 < args.target_precision <= 1:
        console.print(f"[red]error:[/] --target-precision must be in (0, 1], got {args.target_precision}")
        return 2
    return args.func(args)
