"""``darkroom feedback``: learn from owners' tag edits.

``darkroom feedback train``  the edit log (the search index) + the collection's user tags (its manifest) →
                             a head fine-tuned on cached backbone features; written as the next version of
                             the Triton model only when it beats the served one on held-out edits (Triton's
                             poller then rolls it out with nothing lost, as any new version).
``darkroom feedback curve``  the synthetic collection: the served model's mAP (clean test labels) after 0,
                             100, 300, 1,000 simulated careful owners' edits, as JSON, a plot and a table.

The labels, the vote among owners and the held-out decision are :mod:`trainer.feedback`'s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


@dataclass
class Collection:
    """A manifest's photos as training reads them: ids, rows of decoded photos, user-tag targets."""

    photo_ids: list[str]
    images: np.ndarray
    base: np.ndarray  # user tags over the checkpoint's vocabulary
    labels: np.ndarray | None  # clean labels, where the manifest has them (the synthetic world)
    owners: list[str | None]


def load_collection(manifest: Path, vocab, size: int, cache_dir: Path | None) -> Collection:
    """Decode a manifest's photos at ``size`` (cached) with the ids ``publish``/``backfill`` give them."""
    from search.backfill import manifest_photos
    from trainer.data.manifest import cached_decode, encode_targets, read_manifest

    records = read_manifest(manifest)
    ids = [photo.photo_id for photo in manifest_photos(manifest)]
    images, kept, skipped = cached_decode(records, size, cache_dir, f"decoding {manifest.name}")
    for source, why in skipped[:5]:
        console.print(f"[yellow]skipped[/] {source}: {why}")
    rows = [records[i] for i in kept]
    return Collection(
        [ids[i] for i in kept],
        images,
        np.stack([vocab.encode(list(r.user_tags or ())) for r in rows]).astype(np.float32),
        encode_targets((r.labels for r in rows), vocab.encode),
        [r.owner for r in rows],
    )


def edited_rows(labels: list, photo_ids: list[str]) -> tuple[list, int]:
    """The index's edited photos as ``trainer.feedback.EditedPhoto`` rows of the collection; and how many
    edited photos the collection does not hold (they cannot be trained on)."""
    from trainer.feedback import EditedPhoto

    row_of = {pid: i for i, pid in enumerate(photo_ids)}
    edited = [
        EditedPhoto(row_of[p.photo_id], p.photo_id, p.owner, p.added, p.removed, p.kept)
        for p in labels
        if p.photo_id in row_of
    ]
    return edited, len(labels) - len(edited)


def feedback_round(
    checkpoint: dict,
    features: np.ndarray,
    collection: Collection,
    index_db: Path,
    votes: int,
    config,
    heldout_share: float,
):
    """One round: the index's edit log → voted corrections → candidate head vs served on held-out edits."""
    from search.edits import global_corrections
    from search.store import SearchIndex
    from trainer.feedback import train_on_feedback

    index = SearchIndex(index_db, readonly=True)
    try:
        labels = index.edited_photos()
    finally:
        index.close()
    edited, outside = edited_rows(labels, collection.photo_ids)
    if outside:
        console.print(f"[yellow]{outside} edited photo(s) are not in the manifest: left out[/]")
    corrections = global_corrections(labels, votes)
    return train_on_feedback(
        checkpoint, features, collection.base, edited, corrections, config, heldout_share
    ), len(edited)


def head_config(checkpoint: dict, seed: int = 0, lr: float = 1e-3, epochs: int = 8):
    """Fine-tuning the served head (not a new one): a gentler schedule than `darkroom train`'s."""
    from trainer.train import TrainConfig

    return TrainConfig(model=checkpoint["model"], epochs=epochs, lr=lr, seed=seed, init_from="scratch")


def read_embeddings(
    bootstrap: str,
    topic: str,
    model_version: str,
    settings=None,
    idle_timeout_s: float = 3.0,
    max_records: int = 10_000_000,
):
    """Version ``model_version``'s vectors in the embeddings ``topic`` (a ``trainer.embeddings.EmbeddingsRead``),
    read from the beginning until nothing arrives for ``idle_timeout_s`` or ``max_records`` were read;
    ValueError naming the topic if it cannot be read."""
    from confluent_kafka import KafkaException

    from stream.clients import follow
    from trainer.embeddings import collect

    def values() -> Iterable[bytes | None]:
        records = follow(bootstrap, [topic], idle_timeout_s=idle_timeout_s, settings=settings)
        for n, (_, _, value) in enumerate(records, 1):
            yield value
            if n >= max_records:
                records.close()  # the consumer closes now, not when the generator is collected
                return

    try:
        return collect(values(), model_version)
    except KafkaException as exc:
        raise ValueError(f"embeddings topic {topic!r} on {bootstrap} cannot be read: {exc}") from None


def topic_features(version: str, settings, checkpoint: dict, collection: Collection) -> np.ndarray:
    """The collection's features from version ``version``'s records in the embeddings topic (the backbone
    runs only for photos it lacks, and on a few it has, to check they are this checkpoint's backbone's)."""
    from trainer.checkpoint import load_tagger
    from trainer.embeddings import features_from_embeddings

    if not version.isdigit() or version.startswith("0"):
        raise ValueError(f"--embeddings-from-topic {version!r}: give a model version number, like 3")
    read = read_embeddings(settings.kafka_bootstrap, settings.embeddings_topic, version, settings)
    features, found = features_from_embeddings(
        load_tagger(checkpoint), collection.images, collection.photo_ids, read.vectors
    )
    skipped = sum(read.skipped.values())
    console.print(
        f"embeddings: {found} of {len(collection.photo_ids)} photo(s) from {settings.embeddings_topic} "
        f"(version {version}; {read.records} record(s), {skipped} invalid skipped"
        + (f": {dict(read.skipped)}" if skipped else "")
        + "); the backbone ran for the rest"
    )
    return features


def cmd_train(args: argparse.Namespace) -> int:
    from stream.settings import Settings
    from trainer.checkpoint import load_checkpoint, load_tagger
    from trainer.data.manifest import ManifestError
    from trainer.export import write_version
    from trainer.finetune import FeatureCache
    from trainer.vocab.vocabulary import Vocabulary

    try:
        settings = Settings.from_env()
        votes = args.votes or settings.edit_votes
        if not args.index.is_file():
            raise ValueError(
                f"no search index at {args.index}; give the index of `darkroom index` with --index"
            )
        checkpoint = load_checkpoint(args.checkpoint)
        vocab = Vocabulary(checkpoint["vocab"]["tags"], checkpoint["vocab"].get("aliases", {}))
        cache = args.cache or args.out / "cache"
        collection = load_collection(args.manifest, vocab, checkpoint["input_size"][0], cache / "decoded")
        if args.embeddings_from_topic:
            features = topic_features(args.embeddings_from_topic, settings, checkpoint, collection)
        else:
            features = FeatureCache(cache / "features").features(
                load_tagger(checkpoint), collection.images, checkpoint["model"]
            )
        result, edited = feedback_round(
            checkpoint,
            features,
            collection,
            args.index,
            votes,
            head_config(checkpoint, 0, args.lr, args.epochs),
            args.heldout,
        )
    except (ValueError, ManifestError, OSError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    _per_tag_table(result)
    summary = {**result.summary(), "edited_photos": edited, "votes": votes, "written": None}
    if result.better(args.min_gain):
        import torch

        version = write_version(args.repo, result.checkpoint, name=args.name)
        torch.save(result.checkpoint, args.out / "checkpoint.pt")
        summary["written"] = str(version)
        console.print(
            f"held-out edits: mAP {result.before_map:.3f} → {result.after_map:.3f}: added {version} "
            f"(checkpoint {args.out / 'checkpoint.pt'}); Triton rolls it out"
        )
    elif not result.before:
        console.print(
            f"no held-out edited photo shows a tag to judge a version on ({result.heldout} held out of "
            f"{edited} edited): no version written; it takes two edited photos or more"
        )
    else:
        console.print(
            f"held-out edits: mAP {result.before_map:.3f} → {result.after_map:.3f} on {result.heldout} "
            "photo(s): not better, no version written"
        )
    (args.out / "feedback.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot_per_tag(result, args.out / "per_tag_ap.png")
    print(json.dumps({k: summary[k] for k in ("heldout_mAP_before", "heldout_mAP_after", "written")}))
    return 0


def _per_tag_table(result) -> None:
    table = Table(title=f"per-tag AP on {result.heldout} held-out edited photo(s)", title_justify="left")
    for col in ("tag", "served", "candidate"):
        table.add_column(col)
    for tag in result.before:
        table.add_row(tag, f"{result.before[tag]:.3f}", f"{result.after[tag]:.3f}")
    console.print(table)


def _plot_per_tag(result, path: Path) -> None:
    if not result.before:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = list(result.before)
    x = np.arange(len(tags))
    fig, ax = plt.subplots(figsize=(max(6, len(tags) * 0.5), 3.5))
    ax.bar(x - 0.2, [result.before[t] for t in tags], 0.4, label="served")
    ax.bar(x + 0.2, [result.after[t] for t in tags], 0.4, label="candidate")
    ax.set_xticks(x, tags, rotation=60, ha="right")
    ax.set_ylabel("AP on held-out edits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the curve on the synthetic collection --------------------------------------------------------------------
def simulate_edits(
    index_db: Path,
    collection: Collection,
    served_tags: list[list[tuple[str, float]]],
    chosen: list[int],
    tags: list[str],
) -> int:
    """Feed a fresh index what the stack would: each photo's upload (owner) and tag event (the served tags),
    then a careful owner's edit of each chosen photo (added = true content − shown, removed = shown − true),
    through the indexer's own code. Returns the edits the index applied."""
    from contracts.edits import edit_value
    from contracts.records import Upload, tag_event, upload_value
    from search.store import Record, SearchIndex, TopicNames

    topics, records = TopicNames(), []
    for i, pid in enumerate(collection.photo_ids):
        records.append(
            Record(topics.uploads, 0, i, upload_value(pid, f"file:///{pid}.jpg", collection.owners[i]))
        )
        upload = Upload(photo_id=pid, url=f"file:///{pid}.jpg", uploaded_at="2026-01-01T00:00:00Z")
        records.append(
            Record(
                topics.tags, 0, i, tag_event(upload, served_tags[i], "tagger", "1", "2026-01-01T00:00:01Z")
            )
        )
    for n, row in enumerate(chosen):
        truth = {tags[k] for k in np.flatnonzero(collection.labels[row])}
        shown = {t for t, _ in served_tags[row]}
        value = edit_value(
            collection.photo_ids[row], collection.owners[row], sorted(truth - shown), sorted(shown - truth), 1
        )
        records.append(Record(topics.edits, 0, n, value, 1.7e9 + n))
    index = SearchIndex(index_db)
    try:
        return index.apply(records, topics).edits
    finally:
        index.close()


def cmd_curve(args: argparse.Namespace) -> int:
    from trainer.checkpoint import load_tagger
    from trainer.data.synthetic import make_photo_set
    from trainer.finetune import FeatureCache, predict_features
    from trainer.metrics import score_metrics
    from trainer.train import TrainConfig
    from trainer.train import main as train_main
    from trainer.vocab.vocabulary import synthetic_vocabulary

    work: Path = args.workdir
    n_collection, n_val, n_test = (300, 150, 150) if args.quick else (1500, 300, 500)
    collection_manifest = make_photo_set(work / "collection", n_collection, seed=20, split="collection")
    val = make_photo_set(work / "val", n_val, seed=21, split="val")
    test = make_photo_set(work / "test", n_test, seed=22, split="test")
    vocab = synthetic_vocabulary()
    config = TrainConfig(model="efficientnet_lite0", size=args.size, init_from="imagenet", unfreeze=0)
    checkpoint = train_main(
        collection_manifest, val, vocab, work / "v1", config, cache_dir=work / "decoded",
        feature_cache=work / "features",
    )  # fmt: skip
    tagger = load_tagger(checkpoint)
    cache = FeatureCache(work / "features")
    collection = load_collection(collection_manifest, vocab, args.size, work / "decoded")
    features = cache.features(tagger, collection.images, checkpoint["model"])
    test_set = load_collection(test, vocab, args.size, work / "decoded")
    test_features = cache.features(tagger, test_set.images, checkpoint["model"])
    thresholds = np.array(checkpoint["thresholds"])
    scores = predict_features(tagger, features)
    served_tags = [
        [(vocab.tags[k], float(s[k])) for k in np.argsort(-s) if s[k] >= thresholds[k]] for s in scores
    ]
    served_tags = [sorted(t, key=lambda x: -x[1]) for t in served_tags]
    wrong = [
        i for i, tags in enumerate(served_tags)
        if {t for t, _ in tags} != {vocab.tags[k] for k in np.flatnonzero(collection.labels[i])}
    ]  # fmt: skip
    random.Random(args.seed).shuffle(wrong)
    base_map = score_metrics(predict_features(tagger, test_features), test_set.labels, vocab.tags)["mAP"]
    points = []
    for n_edits in args.edits:
        chosen = wrong[:n_edits]
        if n_edits == 0:
            points.append({"edits": 0, "served_mAP": round(base_map, 4), "written": False})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            applied = simulate_edits(Path(tmp) / "index.sqlite", collection, served_tags, chosen, vocab.tags)
            result, edited = feedback_round(
                checkpoint, features, collection, Path(tmp) / "index.sqlite", args.votes,
                head_config(checkpoint, args.seed, args.lr, args.epochs), args.heldout,
            )  # fmt: skip
        written = result.better(0.0)
        served = load_tagger(result.checkpoint) if written else tagger
        test_map = score_metrics(predict_features(served, test_features), test_set.labels, vocab.tags)["mAP"]
        candidate = load_tagger(result.checkpoint)
        cand_map = score_metrics(predict_features(candidate, test_features), test_set.labels, vocab.tags)[
            "mAP"
        ]
        points.append(
            {
                "edits": n_edits,
                "applied": applied,
                "corrections_voted": len(result.corrections),
                "heldout_edits": result.heldout,
                "heldout_mAP_before": round(result.before_map, 4),
                "heldout_mAP_after": round(result.after_map, 4),
                "written": written,
                "candidate_mAP": round(cand_map, 4),
                "served_mAP": round(test_map, 4),
            }
        )
        console.print(points[-1])
    report = {
        "collection": len(collection.photo_ids),
        "photos_served_wrong": len(wrong),
        "test_photos": len(test_set.photo_ids),
        "votes": args.votes,
        "size": args.size,
        "points": points,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curve.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot_curve(points, args.out / "curve.png")
    print(json.dumps(report))
    return 0


def _plot_curve(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    xs = [p.get("applied", p["edits"]) for p in points]  # a careful owner edits only wrongly tagged photos
    ax.plot(xs, [p["served_mAP"] for p in points], "o-", label="served version (test, clean labels)")
    ax.plot(xs, [p.get("candidate_mAP", p["served_mAP"]) for p in points], "x:", label="candidate (test)")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("owners' edits applied")
    ax.set_ylabel("mAP")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers (``5,10,20``)."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="darkroom feedback", description="Learn from owners' tag edits.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="a new model version from the edit log, if better on held-out edits")
    train.add_argument("--index", type=Path, required=True, help="the search index (its edit log)")
    train.add_argument(
        "--manifest", type=Path, required=True, help="the collection: photos + user tags (JSONL)"
    )
    train.add_argument("--checkpoint", type=Path, required=True, help="the served version's checkpoint")
    train.add_argument("--repo", type=Path, default=Path("triton_models"), help="Triton model repository")
    train.add_argument("--name", default="tagger", help="model name (default tagger)")
    train.add_argument(
        "--votes", type=int, help="distinct owners per correction (default DARKROOM_EDIT_VOTES)"
    )
    train.add_argument("--heldout", type=float, default=0.25, help="share of edited photos held out")
    train.add_argument("--min-gain", type=float, default=0.0, help="held-out mAP gain a version needs")
    train.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    train.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (default 8)")
    train.add_argument("--cache", type=Path, help="decoded photos and features (default OUT/cache)")
    train.add_argument(
        "--embeddings-from-topic", metavar="VERSION",
        help="read features from the embeddings topic (DARKROOM_EMBEDDINGS_TOPIC), as model version VERSION "
        "(the one --checkpoint serves) published them, instead of running the backbone",
    )  # fmt: skip
    train.add_argument("--out", type=Path, default=Path("run/feedback"), help="report and checkpoint folder")
    train.set_defaults(func=cmd_train)
    curve = sub.add_parser("curve", help="served mAP after simulated edits on the synthetic collection")
    curve.add_argument("--workdir", type=Path, default=Path("data/feedback"))
    curve.add_argument("--out", type=Path, default=Path("docs/feedback"))
    curve.add_argument("--edits", type=int_list, default=[0, 100, 300, 1000])
    curve.add_argument("--votes", type=int, default=3)
    curve.add_argument("--heldout", type=float, default=0.25)
    curve.add_argument("--size", type=int, default=160, help="input size of the backbone")
    curve.add_argument("--seed", type=int, default=0)
    curve.add_argument("--lr", type=float, default=1e-3)
    curve.add_argument("--epochs", type=int, default=8)
    curve.add_argument("--quick", action="store_true", help="a small collection (tests)")
    curve.set_defaults(func=cmd_curve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if getattr(args, "heldout", 0.25) and not 0 < args.heldout < 1:
        console.print(f"[red]error:[/] --heldout must be between 0 and 1, got {args.heldout}")
        return 2
    if getattr(args, "votes", None) is not None and args.votes < 1:
        console.print(f"[red]error:[/] --votes must be >= 1, got {args.votes}")
        return 2
    return args.func(args)
