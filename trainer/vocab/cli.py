"""``darkroom vocab``: decide the model's vocabulary from a search-query log and a user-tag manifest.

    darkroom vocab --queries Q.tsv --manifest M.jsonl --out vocab.json [--report report.md|.html]
    darkroom vocab --synthetic DIR            # generate a synthetic world into DIR and run on it

Exit status: 0 done, 2 unusable input or arguments (one line naming the file, line and fix), 1 an
internal error (still one line; ``DARKROOM_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contracts.helpformat import DefaultsHelpFormatter
from trainer.vocab.inputs import BadLines, InputError
from trainer.vocab.normalize import DataFileError, TagNormalizer, fold
from trainer.vocab.report import report_format, write_vocab_report
from trainer.vocab.selection import Criteria, Outcome, StageProgress, build_vocabulary, evaluate

_DEFAULTS = Criteria()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog="darkroom vocab",
        description="Choose the tags the model predicts: searched by users, used by many owners, and visual.",
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--queries", type=Path, help="search-query log, TSV query<TAB>count")
    src.add_argument("--manifest", type=Path, help="user-tag manifest, JSONL {path, owner, user_tags}")
    src.add_argument("--synthetic", type=Path, metavar="DIR",
                     help="generate a synthetic world (photos, manifest, query log) into DIR and run on it")  # fmt: skip
    src.add_argument("--photos", type=int, default=1500, help="--synthetic: photos to render (default 1500)")
    src.add_argument(
        "--query-lines", type=int, default=20_000, help="--synthetic: query-log lines (default 20000)"
    )
    out = p.add_argument_group("outputs")
    out.add_argument("--out", type=Path, help="vocab.json to write (default DIR/vocab.json with --synthetic)")
    out.add_argument("--report", type=Path, help="also write a report, .md or .html")
    out.add_argument("--truth", action="store_true",
                     help="evaluate against the manifest's clean 'labels' (implied by --synthetic)")  # fmt: skip
    crit = p.add_argument_group("criteria")
    crit.add_argument(
        "--k", type=int, default=_DEFAULTS.k, help=f"vocabulary size at most (default {_DEFAULTS.k})"
    )
    crit.add_argument("--min-searches", type=int, default=_DEFAULTS.min_searches, help="search volume needed")
    crit.add_argument("--min-photos", type=int, default=_DEFAULTS.min_photos, help="distinct photos needed")
    crit.add_argument("--min-owners", type=int, default=_DEFAULTS.min_owners, help="distinct owners needed")
    crit.add_argument(
        "--min-gain", type=float, default=_DEFAULTS.min_gain, help="visualness: held-out AP gain over chance"
    )
    crit.add_argument(
        "--min-z", type=float, default=_DEFAULTS.min_z, help="visualness: held-out AUC z-score over chance"
    )
    crit.add_argument(
        "--probe-photos", type=int, default=_DEFAULTS.probe_photos, help="photos the probe samples"
    )
    crit.add_argument("--min-positives", type=int, default=_DEFAULTS.min_positives,
                      help="sampled photos with a tag needed to measure its visualness")  # fmt: skip
    crit.add_argument("--no-visual", dest="visual", action="store_false", help="skip the visualness probe")
    crit.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    data = p.add_argument_group("normalization data")
    data.add_argument("--synonyms", type=Path, help="synonym/translation TSV (default: the packaged one)")
    data.add_argument("--stop-tags", type=Path, help="stop-tag list (default: the packaged one)")
    data.add_argument("--query-words", type=Path, help="query function words (default: the packaged one)")
    p.add_argument("--strict", action="store_true", help="the first bad input line is an error")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.synthetic is None and (args.queries is None or args.manifest is None or args.out is None):
        p.error("give --queries, --manifest and --out, or --synthetic DIR")
    if args.synthetic is not None and (args.queries or args.manifest):
        p.error("--synthetic makes its own inputs: drop --queries/--manifest")
    for name in ("k", "probe_photos", "photos", "query_lines"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.report is not None:
        try:
            report_format(args.report)
        except ValueError as exc:
            p.error(str(exc))


@contextmanager
def _stages(console: Console) -> Iterator[StageProgress]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:

        def stage(name: str, total: int):  # type: ignore[no-untyped-def]
            task = bar.add_task(name, total=max(total, 1))
            return lambda done: bar.update(task, completed=done)

        yield stage


def _print_bad(console: Console, bad: BadLines) -> None:
    if not bad.total:
        return
    why = ", ".join(f"{n} {r}" for r, n in bad.reasons.most_common())
    console.print(f"[yellow]{bad.total} bad lines in {escape(bad.file)}[/] ({escape(why)}); skipped:")
    for line, reason in bad.examples[:5]:
        console.print(escape(f"  {bad.file}:{line}: {reason}"))
    if bad.total > 5:
        console.print(f"  ... and {bad.total - 5} more (all counted in vocab.json and the report)")


def _print_outcome(console: Console, o: Outcome, out: Path) -> None:
    table = Table(title=f"vocabulary {o.vocabulary.version}: {len(o.kept)} tags", title_justify="left")
    for col in ("tag", "score", "searches", "photos", "owners", "probe AP", "chance", "z"):
        table.add_column(col, justify="left" if col == "tag" else "right")
    for c in o.kept:
        v = c.visual
        vis = [f"{v.ap:.3f}", f"{v.chance_ap:.3f}", f"{v.z:.1f}"] if v else ["–"] * 3
        table.add_row(
            escape(c.tag), f"{c.score:.4f}", f"{c.searches:,}", f"{c.photos:,}", f"{c.owners:,}", *vis
        )
    console.print(table)
    dropped = Table(title="top dropped candidates", title_justify="left")
    for col in ("tag", "searches", "photos", "owners", "reason"):
        dropped.add_column(col, justify="left" if col in ("tag", "reason") else "right")
    for c in [c for c in o.candidates if not c.kept][:12]:
        dropped.add_row(escape(c.tag), f"{c.searches:,}", f"{c.photos:,}", f"{c.owners:,}", escape(c.reason))
    console.print(dropped)
    _print_bad(console, o.demand.bad)
    _print_bad(console, o.usage.bad)
    if o.probe is not None and o.probe.unreadable_total:
        first = o.probe.unreadable[0]
        console.print(
            f"[yellow]{o.probe.unreadable_total} sampled images could not be read[/] (the probe used "
            f"{o.probe.images}); first: {escape(first[0])}: {escape(first[1])}"
        )
    console.print(
        f"search-volume coverage: {100 * o.coverage['any']:.1f}% of {o.demand.volume:,} searches name a kept tag "
        f"({100 * o.coverage['all']:.1f}% only kept tags)"
    )
    if o.evaluation:
        ev = o.evaluation
        line = f"vs known truth: recall {ev['recall']:.3f}  precision {ev['precision']:.3f}"
        if "merged" in ev:
            line += f"  synonyms/translations merged {ev['merged']:.3f}"
        console.print(line)
        if ev["missed"] or ev["extra"]:
            console.print(escape(f"  missed: {ev['missed']}  not in truth: {ev['extra']}"))
    console.print(escape(f"wrote {out}"))


def _run(args: argparse.Namespace, console: Console) -> int:
    normalizer = TagNormalizer.from_files(args.synonyms, args.stop_tags, args.query_words)
    crit = Criteria(**{f.name: getattr(args, f.name) for f in fields(Criteria)})
    forms = truth = None
    if args.synthetic is not None:
        from trainer.data.querylog import make_synthetic_world
        from trainer.data.querylog import truth as synthetic_truth
        from trainer.data.synthetic import SYNONYMS

        console.print(escape(f"generating a synthetic world in {args.synthetic} ..."))
        args.queries, args.manifest = make_synthetic_world(
            args.synthetic, photos=args.photos, query_lines=args.query_lines, seed=args.seed
        )
        args.out = args.out or args.synthetic / "vocab.json"
        truth, forms = synthetic_truth(), {c: (c, *fs) for c, fs in SYNONYMS.items()}
    with _stages(console) as stages:
        outcome = build_vocabulary(args.queries, args.manifest, normalizer, crit, args.strict, stages)
    if args.truth and truth is None:
        truth = {t for label in outcome.usage.truth for t in normalizer.tags_in(fold(label))}
        if not truth:
            raise InputError(
                f"{args.manifest}: --truth needs clean 'labels' lists in the manifest; none found"
            )
    if not outcome.vocabulary.tags:
        raise InputError(
            f"no tag met the criteria in {args.queries} and {args.manifest} "
            f"({outcome.demand.volume:,} searches read): no vocabulary written; check the inputs or lower "
            "--min-searches / --min-photos / --min-owners (--no-visual skips the visualness probe)"
        )
    if truth is not None:
        outcome.evaluation = evaluate(outcome.vocabulary, truth, forms)
        outcome.vocabulary.extra["evaluation"] = outcome.evaluation
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    outcome.vocabulary.save(tmp)
    os.replace(tmp, args.out)
    if args.report is not None:
        write_vocab_report(outcome, args.report)
    _print_outcome(console, outcome, args.out)
    if args.report is not None:
        console.print(escape(f"wrote {args.report}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``darkroom vocab``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_args(parser, args)
    except SystemExit as exc:  # usage errors and --help: argparse has printed them
        return exc.code if isinstance(exc.code, int) else 2
    console = Console(stderr=False, highlight=False)
    errors = Console(stderr=True, highlight=False)
    try:
        return _run(args, console)
    except (InputError, DataFileError) as exc:
        errors.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        errors.print(f"[red]error:[/] {escape(where + str(exc.strerror or exc))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    except Exception as exc:  # the promise is one clear line, never a traceback
        if os.environ.get("DARKROOM_DEBUG"):
            raise
        detail = escape(f"{type(exc).__name__}: {exc}")
        errors.print(
            f"[red]internal error:[/] {detail} (DARKROOM_DEBUG=1 shows the traceback)", soft_wrap=True
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
