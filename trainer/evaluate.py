"""``darkroom evaluate``: a checkpoint against clean labels, as a report with plots.

Reports mAP, precision/recall@k, per-tag AP and, at the per-tag thresholds (calibrated for a target
precision on a calibration set, by default the checkpoint's own), the precision and recall each tag really
gets on the test set. Tags whose calibration could not reach the target (too few positives, or the model
cannot separate them) use the fallback of ``trainer.metrics.calibrate_thresholds`` and are marked.
Writes ``report.md``, ``report.json``, ``pr_curves.png`` and ``per_tag_ap.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from contracts.helpformat import DefaultsHelpFormatter
from trainer.metrics import MIN_SUPPORT, calibrate, score_metrics

TOP_K = (1, 3, 5)


def score_report(
    scores: np.ndarray, targets: np.ndarray, tags: list[str], thresholds: list[float], calibrated: list[bool]
) -> dict:
    """Every number of the report, from test-set scores and clean targets."""
    metrics = score_metrics(scores, targets, tags)
    per_tag = []
    for k, tag in enumerate(tags):
        predicted = scores[:, k] >= thresholds[k]
        tp = int((targets[predicted, k] > 0).sum())
        per_tag.append(
            {
                "tag": tag,
                "ap": metrics["per_tag_ap"][tag],
                "positives": int(targets[:, k].sum()),
                "threshold": thresholds[k],
                "calibrated": calibrated[k],
                "precision": tp / int(predicted.sum()) if predicted.any() else float("nan"),
                "recall": tp / max(1, int(targets[:, k].sum())),
            }
        )
    chosen = scores >= np.asarray(thresholds)[None, :]
    tp = int((chosen & (targets > 0)).sum())
    return {
        "photos": len(scores),
        "mAP": metrics["mAP"],
        **{key: metrics[key] for key in metrics if "@" in key},
        "micro_precision_at_thresholds": tp / max(1, int(chosen.sum())),
        "micro_recall_at_thresholds": tp / max(1, int((targets > 0).sum())),
        "per_tag": per_tag,
    }


def plot_pr_curves(
    scores: np.ndarray, targets: np.ndarray, tags: list[str], path: Path, title: str = "", target: float = 0.9
) -> None:
    """Precision-recall curve of every tag, the calibration target precision as a dotted line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    if len(tags) > 10:  # distinct colours for up to 20 tags, not tab10 twice
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    ax.axhline(target, ls=":", c="k", lw=0.8)
    for k, tag in enumerate(tags):
        if targets[:, k].sum() == 0:
            continue
        order = np.argsort(-scores[:, k], kind="stable")
        hits = targets[order, k] > 0
        tp = np.cumsum(hits)
        ax.plot(tp / hits.sum(), tp / np.arange(1, len(hits) + 1), label=tag, lw=1.2)
    ax.set(
        xlabel="recall", ylabel="precision", ylim=(0, 1.02), xlim=(0, 1), title=title or "PR curves per tag"
    )
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_tag_ap(per_tag: list[dict], path: Path, title: str = "") -> None:
    """Per-tag AP as horizontal bars, worst at the bottom."""
    plt = _pyplot()
    rows = sorted(per_tag, key=lambda r: -np.nan_to_num(r["ap"]))
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1.2))
    ax.barh([r["tag"] for r in rows][::-1], [np.nan_to_num(r["ap"]) for r in rows][::-1], color="#4a7ab5")
    ax.set(xlim=(0, 1), xlabel="average precision", title=title or "per-tag AP")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report_markdown(report: dict, title: str, target_precision: float) -> str:
    """The report as Markdown: headline numbers, then one row per tag."""
    lines = [
        f"# {title}",
        "",
        f"{report['photos']} clean-labelled photos. **mAP {report['mAP']:.3f}**; "
        + ", ".join(f"{k} {report[k]:.3f}" for k in report if "@" in k)
        + ".",
        "",
        f"At the per-tag thresholds (target precision {target_precision}): micro precision "
        f"{report['micro_precision_at_thresholds']:.3f}, micro recall {report['micro_recall_at_thresholds']:.3f}. "
        f"Tags marked *fallback* did not reach the target with {MIN_SUPPORT}+ true positives on the "
        "calibration set; their threshold is the best-F1 cut, never below 0.5.",
        "",
        "![PR curves](pr_curves.png) ![per-tag AP](per_tag_ap.png)",
        "",
        "| tag | AP | positives | threshold | precision | recall |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["per_tag"]:
        mark = "" if r["calibrated"] else " *fallback*"
        lines.append(
            f"| {r['tag']} | {r['ap']:.3f} | {r['positives']} | {r['threshold']:.3f}{mark} "
            f"| {r['precision']:.3f} | {r['recall']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_evaluation_report(
    out: Path,
    scores: np.ndarray,
    targets: np.ndarray,
    tags: list[str],
    thresholds: list[float],
    calibrated: list[bool],
    title: str,
    target_precision: float,
) -> dict:
    """Write report.md, report.json and the two plots into ``out``; return the report dict."""
    out.mkdir(parents=True, exist_ok=True)
    report = score_report(scores, targets, tags, thresholds, calibrated)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_pr_curves(scores, targets, tags, out / "pr_curves.png", f"{title}: PR curves", target_precision)
    plot_per_tag_ap(report["per_tag"], out / "per_tag_ap.png", f"{title}: per-tag AP")
    (out / "report.md").write_text(report_markdown(report, title, target_precision))
    return report


def main(argv: list[str] | None = None) -> int:
    """Evaluate ``--checkpoint`` on ``--test`` (clean labels) and write the report to ``--out``."""
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter, prog="darkroom evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt from darkroom train")
    parser.add_argument("--test", type=Path, required=True, help="manifest of clean-labelled test photos")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report and plots")
    parser.add_argument("--calibrate-on", type=Path, help="recalibrate thresholds on this clean manifest")
    parser.add_argument("--target-precision", type=float, default=0.9, help="per-tag precision goal (0.9)")
    parser.add_argument("--cache", type=Path, help="decode cache folder (default OUT/cache)")
    args = parser.parse_args(argv)
    if not 0 < args.target_precision <= 1:
        parser.error(f"--target-precision {args.target_precision}: must be in (0, 1]")
    if not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    from trainer.checkpoint import load_checkpoint, load_tagger
    from trainer.data.manifest import ManifestError
    from trainer.train import load_data, predict
    from trainer.vocab.vocabulary import Vocabulary

    try:
        checkpoint = load_checkpoint(args.checkpoint)
        vocab = Vocabulary(**{k: checkpoint["vocab"][k] for k in ("tags", "aliases", "version")})
    except (ValueError, KeyError, TypeError) as exc:
        parser.exit(2, f"darkroom evaluate: error: --checkpoint {args.checkpoint}: {exc}\n")
    tagger, size = load_tagger(checkpoint), checkpoint["input_size"][0]
    cache = args.cache or args.out / "cache"
    try:
        test = load_data(args.test, vocab, size, cache_dir=cache)
        if test.clean_targets is None:
            raise ValueError(f"--test {args.test}: every photo needs clean 'labels'")
        thresholds, calibrated_on = checkpoint["thresholds"], None
        if args.calibrate_on:
            calibrated_on = load_data(args.calibrate_on, vocab, size, cache_dir=cache)
            if calibrated_on.clean_targets is None:
                raise ValueError(f"--calibrate-on {args.calibrate_on}: every photo needs clean 'labels'")
    except (ValueError, ManifestError) as exc:
        parser.exit(2, f"darkroom evaluate: error: {exc}\n")
    if calibrated_on is not None:
        cal_scores = predict(tagger, calibrated_on.images)
        thresholds, calibrated = calibrate(cal_scores, calibrated_on.clean_targets, args.target_precision)
    else:  # the checkpoint says which of its thresholds reached the target on its validation set
        calibrated = list(checkpoint.get("metrics", {}).get("calibrated", [False] * len(thresholds)))
    report = write_evaluation_report(
        args.out,
        predict(tagger, test.images),
        test.clean_targets,
        vocab.tags,
        thresholds,
        calibrated,
        f"{checkpoint['model']} on {args.test.name}",
        args.target_precision,
    )
    print(
        f"mAP {report['mAP']:.3f} on {report['photos']} photos; skipped {len(test.skipped)}; report {args.out / 'report.md'}"
    )
    return 0
