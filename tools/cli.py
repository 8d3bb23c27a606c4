"""``darkroom``: one command, one subcommand per job. Heavy imports happen inside each subcommand."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from stream import logs

console = Console(stderr=True)


def version() -> str:
    """The installed distribution's version (pyproject.toml's), or a marker when run from a bare checkout."""
    from stream.version import UNKNOWN, package_version

    found = package_version()
    return f"{found} (not installed: pip install -e .)" if found == UNKNOWN else found


def cmd_up(args: argparse.Namespace) -> int:
    """Start broker, Triton and worker; print endpoints and ``darkroom ready``; stop all on Ctrl-C/SIGTERM."""
    from tools.embedded import TOPIC_PARTITIONS, Ports, Stack, StackError, default_workers, ensure_model

    if args.workers is not None and not 1 <= args.workers <= TOPIC_PARTITIONS["uploads"]:
        console.print(
            f"[red]error:[/] --workers must be 1..{TOPIC_PARTITIONS['uploads']} (the uploads topic has "
            f"{TOPIC_PARTITIONS['uploads']} partitions; a worker beyond them would idle), got {args.workers}"
        )
        return 2

    ports = Ports(
        args.kafka_port,
        args.triton_http_port,
        args.triton_grpc_port,
        args.triton_metrics_port,
        args.worker_port,
        args.web_port,
    )
    stack = Stack(
        args.run_dir,
        args.model_repo,
        ports,
        file_roots=args.file_root or [Path.cwd()],
        with_worker=not args.no_worker,
        with_indexer=not args.no_indexer,
        workers=args.workers or default_workers(),
    )
    if not args.model_repo.is_dir():  # a typo, most likely: an existing, empty folder gets the general tagger
        console.print(
            f"[red]error:[/] no model repository at {args.model_repo} (not a folder); give --model-repo an "
            "existing folder (an empty one gets the general tagger)"
        )
        return 2
    try:
        built = ensure_model(args.model_repo)
    except (ImportError, ValueError, OSError) as exc:
        console.print(
            f"[red]error:[/] no model in {args.model_repo}/tagger and the general tagger could not be built "
            f"({exc}); install the trainer extra (pip install 'darkroom[train]') or run `darkroom model`"
        )
        return 2
    if built:
        console.print(f"no model in {args.model_repo}/tagger: added the general tagger as {built}")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with console.status("starting broker, Triton, worker and indexer"):
            stack.start()
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    print(f"kafka      {stack.bootstrap}")
    print(
        f"triton     http://{stack.triton_http}  grpc {stack.triton_grpc}  metrics http://127.0.0.1:{ports.triton_metrics}/metrics"
    )
    for name, port in stack.worker_ports.items():
        print(f"{name:<10} http://127.0.0.1:{port}/metrics  (logs {args.run_dir}/{name}.log)")
    if stack.with_indexer:
        print(f"search     {stack.web_url}  (index {stack.index_db})")
    print(f"logs       {args.run_dir}")
    print("darkroom ready", flush=True)
    code = 0
    while not stopping:
        dead = stack.failed_child()
        if dead is not None:
            console.print(
                f"[red]error:[/] {dead.name} exited with code {dead.proc.returncode}; see {dead.log}"
            )
            code = 1
            break
        time.sleep(0.3)
    with console.status("stopping"):
        stack.stop()
    print("darkroom stopped", flush=True)
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the Faust worker with settings from DARKROOM_* variables and flags."""
    import faust

    from stream.agents import attach_agents
    from stream.app import create_app
    from stream.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(
            kafka_bootstrap=args.bootstrap,
            triton_grpc=args.triton,
            group_id=args.group_id,
            batch_size=args.batch_size,
        )
        # the app loads the TLS files, the agents DARKROOM_S3_*: a bad one is a SettingsError too
        app, topics = create_app(settings)
        attach_agents(app, topics, settings)
    except SettingsError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    worker = faust.Worker(
        app, loglevel=args.loglevel, logging_config=logs.worker_logging_config(args.loglevel)
    )
    worker.execute_from_commandline()  # handles SIGTERM/SIGINT: stops agents, commits, exits
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish one upload event per photo: image files, folders (walked), ``s3://`` prefixes, http(s) URLs."""
    from confluent_kafka import KafkaException
    from rich.progress import Progress

    from stream.clients import UploadPublisher, photo_paths, upload_event, url_upload_event
    from stream.objectstore import ListingError, S3Options, list_s3_photos
    from stream.settings import Settings

    local = [Path(p) for p in args.paths if "://" not in p]
    missing = [str(p) for p in local if not p.exists()]
    if missing:
        console.print(f"[red]error:[/] no such file or folder: {', '.join(missing[:5])}; nothing published")
        return 2
    for url in (p for p in args.paths if "://" in p):
        if not url.startswith(("s3://", "http://", "https://")):
            console.print(
                f"[red]error:[/] {url!r}: publish takes files, folders, s3:// prefixes or http(s) URLs"
            )
            return 2

    def events() -> Iterator[tuple[str, bytes]]:
        for given in args.paths:
            if given.startswith("s3://"):
                for url in list_s3_photos(given, S3Options.from_env()):
                    yield url_upload_event(url, args.owner)
            elif "://" in given:
                yield url_upload_event(given, args.owner)
            else:
                yield from (upload_event(path, owner=args.owner) for path in photo_paths([Path(given)]))

    # bootstrap, topic and Kafka TLS/SASL from DARKROOM_* unless given (a bad value: main() names it, exit 2)
    settings = Settings.from_env()
    topic = args.topic or settings.uploads_topic
    publisher = UploadPublisher(args.bootstrap or settings.kafka_bootstrap, topic, settings)
    count = 0
    try:
        publisher.reachable()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("publishing", total=None)
            for key, value in events():
                publisher.send(key, value)
                count += 1
                progress.update(task, completed=count, description=f"published {count}")
        publisher.flush()
    except (ListingError, KafkaException) as exc:
        sent = f" ({count} upload event(s) sent before it)" if count else "; nothing published"
        console.print(f"[red]error:[/] {escape(str(exc))}{sent}", soft_wrap=True)
        return 2
    print(f"published {count} upload event(s) to {topic}")
    return 0 if count else 1


def cmd_tail(args: argparse.Namespace) -> int:
    """Print tag events and dead letters as they arrive, each with the trace it belongs to."""
    from confluent_kafka import KafkaException

    from stream.clients import check_broker, follow_messages
    from stream.settings import Settings

    settings = Settings.from_env()  # bootstrap, topics and Kafka TLS/SASL unless given, as for publish
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    dlq_topic = args.dlq_topic or settings.dlq_topic
    topics = [args.tags_topic or settings.tags_topic, dlq_topic]
    try:
        check_broker(bootstrap, topics, settings)
    except KafkaException as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    seen = 0
    try:
        for msg in follow_messages(
            bootstrap, topics, args.from_beginning, args.idle_timeout, settings=settings
        ):
            print(tail_line(msg.topic(), msg.value(), msg.headers(), dlq_topic))
            seen += 1
            if args.max and seen >= args.max:
                break
    except KeyboardInterrupt:
        pass
    return 0


def tail_line(topic: str, value: bytes | None, headers: list | None, dlq_topic: str) -> str:
    """One record as `darkroom tail` prints it: ``TAGS`` or ``DLQ``, the photo, what it got, and the trace-id
    of its ``traceparent`` header when it has a valid one (anything else in the record is printed as data)."""
    import orjson

    from contracts.tracecontext import TRACEPARENT, parse_traceparent

    traces = [parse_traceparent(v) for k, v in headers or [] if k == TRACEPARENT]
    trace = next((f"  trace {t.trace_id}" for t in traces if t is not None), "")
    try:
        event = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return f"{topic}: (not JSON) {value!r}{trace}"
    if not isinstance(event, dict):
        return f"{topic}: (not an event) {value!r}{trace}"
    if topic == dlq_topic:
        return f"DLQ  {event.get('photo_id')}  {event.get('error')}: {event.get('detail')}{trace}"
    tags = event.get("tags")
    shown = ", ".join(
        f"{t.get('tag')} {t['score']:.2f}" if isinstance(t.get("score"), int | float) else str(t.get("tag"))
        for t in (tags if isinstance(tags, list) else [])
        if isinstance(t, dict)
    )
    return f"TAGS {event.get('photo_id')}  v{event.get('model_version')}  {shown}{trace}"


def cmd_model(args: argparse.Namespace) -> int:
    """Add a new model version to the repository: the general tagger (``--general``, no training) or the
    synthetic demo model (trained)."""
    if args.general:
        from trainer.general.model import build_general_model

        try:
            version = build_general_model(args.repo, target=args.target, backend=args.backend)
        except ValueError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 2
        console.print(f"general tagger (EfficientNet-Lite0, ImageNet weights) → {version}")
        return 0
    from trainer.synthetic_model import FULL, QUICK, build_synthetic_model

    build_synthetic_model(args.repo, args.workdir, QUICK if args.quick else FULL, seed=args.seed)
    return 0


#: Subcommands whose own argparse parser takes the rest of the command line.
PASSTHROUGH = {
    "vocab": ("trainer.vocab.cli", "main", "choose the vocabulary from search demand and user tags"),
    "train": ("trainer.train", "cli", "train a tagger from manifests"),
    "models": ("trainer.models.catalog", "main", "params, FLOPs and CPU latency of every model"),
    "evaluate": ("trainer.evaluate", "main", "evaluate a checkpoint on clean labels, with a report"),
    "experiment": ("trainer.experiment", "main", "reproduce the paper's comparison of training regimes"),
    "export": ("trainer.export", "main", "export a checkpoint as a new Triton model version"),
    "index": ("search.cli", "main", "index tag events into a searchable SQLite index"),
    "search": ("search.cli", "search_main", "search the index"),
    "backfill": ("search.backfill", "main", "re-publish uploads of an existing archive"),
    "edit": ("search.edit_cli", "main", "correct a photo's tags as its owner (publishes a tag edit)"),
    "feedback": ("tools.feedback", "main", "learn from owners' tag edits: a new model version if better"),
    "tag": ("tools.custom_tag", "main", "teach a new tag from a few example photos"),
    "bench": ("tools.bench.cli", "main", "measure offline, streaming and naive throughput and latency"),
    "shadow": ("tools.rollout", "shadow_main", "let a candidate model version shadow the live one"),
    "compare": ("tools.rollout", "compare_main", "compare the shadow version's tags with the live one's"),
    "promote": ("tools.rollout", "promote_main", "make the shadow version live if it passes the gates"),
    "rollback": ("tools.rollout", "rollback_main", "make the previous model version live again"),
    "drift": ("tools.drift", "main", "flag tags whose rate left their trailing band"),
}


def cmd_demo(args: argparse.Namespace) -> int:
    from tools.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    from contracts.helpformat import DefaultsHelpFormatter

    parser = argparse.ArgumentParser(prog="darkroom", description="Streaming, real-time photo tagger.")
    parser.add_argument("--version", action="version", version=f"darkroom {version()}")
    subcommand = functools.partial(argparse.ArgumentParser, formatter_class=DefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=subcommand)

    up = sub.add_parser("up", help="start broker, Triton and worker on this machine")
    up.add_argument("--kafka-port", type=int, default=9092)
    up.add_argument("--triton-http-port", type=int, default=8000)
    up.add_argument("--triton-grpc-port", type=int, default=8001)
    up.add_argument("--triton-metrics-port", type=int, default=8002)
    up.add_argument("--worker-port", type=int, default=6066, help="worker metrics/health port")
    up.add_argument("--run-dir", type=Path, default=Path("run"), help="logs and state (default ./run)")
    up.add_argument("--model-repo", type=Path, default=Path("triton_models"))
    up.add_argument(
        "--file-root",
        type=Path,
        action="append",
        help="folder file:// uploads may read (repeatable; default: cwd)",
    )
    up.add_argument("--web-port", type=int, default=8080, help="search page port (the indexer's)")
    up.add_argument("--workers", type=int, help="worker processes (default: one per core, at most 4, "
                    "the uploads topic's partitions); worker N listens on --worker-port + N - 1")  # fmt: skip
    up.add_argument("--no-worker", action="store_true", help="start only broker and Triton")
    up.add_argument("--no-indexer", action="store_true", help="start no search indexer and page")
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="run the tagging worker (settings from DARKROOM_* env vars)")
    worker.add_argument("--bootstrap", help="Kafka bootstrap servers (default: DARKROOM_KAFKA_BOOTSTRAP)")
    worker.add_argument("--triton", help="Triton gRPC host:port (default: DARKROOM_TRITON_GRPC)")
    worker.add_argument("--group-id", help="consumer group (default: DARKROOM_GROUP_ID)")
    worker.add_argument(
        "--batch-size", type=int, help="events per micro-batch (default: DARKROOM_BATCH_SIZE)"
    )
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=cmd_worker)

    publish = sub.add_parser("publish", help="publish upload events for image files or folders")
    publish.add_argument(
        "paths",
        nargs="+",
        metavar="PHOTOS",
        help="image files, folders (walked), s3://bucket/prefix/, http(s) URLs",
    )
    publish.add_argument("--bootstrap", help="Kafka bootstrap servers (default: DARKROOM_KAFKA_BOOTSTRAP)")
    publish.add_argument("--topic", help="uploads topic (default: DARKROOM_UPLOADS_TOPIC)")
    publish.add_argument("--owner")
    publish.set_defaults(func=cmd_publish)

    tail = sub.add_parser("tail", help="print tag events and dead letters as they arrive")
    tail.add_argument("--bootstrap", help="Kafka bootstrap servers (default: DARKROOM_KAFKA_BOOTSTRAP)")
    tail.add_argument("--tags-topic", help="tag events topic (default: DARKROOM_TAGS_TOPIC)")
    tail.add_argument("--dlq-topic", help="dead-letter topic (default: DARKROOM_DLQ_TOPIC)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, help="stop after this many events")
    tail.add_argument("--idle-timeout", type=float, help="stop after this many seconds without an event")
    tail.set_defaults(func=cmd_tail)

    model = sub.add_parser("model", help="add the general tagger (--general) or the trained demo model")
    model.add_argument("--repo", type=Path, default=Path("triton_models"))
    model.add_argument("--general", action="store_true",
                       help="the general tagger: pretrained EfficientNet-Lite0 + trainer/general's vocabulary")  # fmt: skip
    model.add_argument(
        "--target", choices=("cpu", "gpu"), default="cpu", help="with --general: gpu adds a TensorRT plan"
    )
    model.add_argument("--backend", choices=("python", "onnxruntime"), default="python",
                       help="with --general --target cpu: python (the embedded server) or onnxruntime "
                       "(NGC Triton's ONNX Runtime backend, the Kubernetes cpu overlay)")  # fmt: skip
    model.add_argument("--workdir", type=Path, default=Path("data/synthetic"))
    model.add_argument("--quick", action="store_true", help="smaller data and fewer epochs (tests)")
    model.add_argument("--seed", type=int, default=0)
    model.set_defaults(func=cmd_model)

    for name, (_, _, description) in PASSTHROUGH.items():  # parsed by their own modules (`darkroom NAME -h`)
        sub.add_parser(name, help=description, add_help=False)

    demo = sub.add_parser(
        "demo", help="the whole loop on this machine: up, tag held-out photos, report, down"
    )
    demo.add_argument("--photos", type=int, default=240)
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.add_argument("--model-repo", type=Path, default=Path("data/demo/triton_models"),
                      help="the demo's own model repository, rebuilt each run")  # fmt: skip
    demo.add_argument("--workdir", type=Path, default=Path("data/demo"))
    demo.add_argument("--run-dir", type=Path, default=Path("run/demo"))
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the last outcome")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        logs.configure(logging.INFO)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if argv[:1] and argv[0] in PASSTHROUGH:
        import importlib

        module, func, _ = PASSTHROUGH[argv[0]]
        try:
            entry = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            console.print(f"[red]error:[/] darkroom {argv[0]} is not available in this install: {exc}")
            return 2
        return entry(argv[1:])
    args = build_parser().parse_args(argv)
    from stream.settings import SettingsError

    try:
        return args.func(args)
    except SettingsError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
