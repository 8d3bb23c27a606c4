"""``darkroom edit PHOTO_ID --add TAG --remove TAG --owner OWNER``: an owner's tag edit, from the shell.

The same record the search page publishes (``contracts.edits.edit_value``), checked before it is sent: a
malformed edit never reaches the topic (exit 2, one line naming the problem). The indexer then applies it
to the owner's photo, or dead-letters it (``photo-tag-edits-dlq``) if the photo is someone else's or the
owner is over the rate limit.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape

from contracts.edits import EditRejected, edit_value
from stream.settings import Settings

console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkroom edit",
        description="Correct a photo's tags as its owner: publish one edit to the edits topic "
        "(DARKROOM_EDITS_TOPIC); the indexer applies it to that owner's photo.",
    )
    parser.add_argument("photo_id", help="the photo (its id in the index, e.g. from `darkroom search`)")
    parser.add_argument("--owner", required=True, help="who edits: the photo's owner")
    parser.add_argument("--add", action="append", default=[], metavar="TAG", help="a tag the photo shows")
    parser.add_argument(
        "--remove", action="append", default=[], metavar="TAG", help="a tag the photo does not show"
    )
    parser.add_argument("--model-version", help="the model version whose tags you saw (optional)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default DARKROOM_KAFKA_BOOTSTRAP)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Publish the edit; exit 0 once the broker has it, 2 when it is malformed or the broker unreachable."""
    from confluent_kafka import KafkaException

    from stream.clients import UploadPublisher

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        value = edit_value(args.photo_id, args.owner, args.add, args.remove, args.model_version)
    except EditRejected as exc:
        console.print(f"[red]error:[/] {escape(exc.detail)}")
        return 2
    settings = Settings.from_env(kafka_bootstrap=args.bootstrap)
    publisher = UploadPublisher(settings.kafka_bootstrap, settings.edits_topic, settings)
    try:
        publisher.reachable()
        publisher.send(args.photo_id, value)
        publisher.flush()
    except KafkaException as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}; the edit was not published")
        return 2
    print(f"published edit of {args.photo_id} to {settings.edits_topic}: {value.decode()}")
    return 0
