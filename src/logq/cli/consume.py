"""`logq consume TOPIC`: read with a group (and ack), or replay without one."""

from __future__ import annotations

import time

import click

from logq.cli.common import connect, json_option, print_message, server_option
from logq.client import Client
from logq.durations import parse_time_ms

IDLE_S = 1.0  # without --follow, stop once nothing came for this long
PAGE = 500


@click.command("consume")
@click.argument("topic")
@click.option("--group", help="Consume as this group (messages are leased and acked).")
@click.option("--from-offset", type=int, help="Without a group: start at this offset.")
@click.option("--from-time", help="Without a group: start at this time (RFC 3339 or epoch ms).")
@click.option(
    "--from-snapshot",
    help="Without a group: the same as --from-time (the point in time to replay from).",
)
@click.option("--to-time", help="Without a group: stop before this time.")
@click.option(
    "--include-deleted",
    is_flag=True,
    help="Without a group: reach past the topic's retention into what its archive keeps"
    " for audit (archive_retention).",
)
@click.option("--partition", type=int, help="Without a group: read only this partition.")
@click.option("--max", "max_messages", type=int, help="Stop after this many messages.")
@click.option("--follow", is_flag=True, help="Keep waiting for new messages.")
@click.option("--no-ack", is_flag=True, help="With a group: do not ack (they are delivered again).")
@server_option
@json_option
def consume(
    topic: str,
    group: str | None,
    from_offset: int | None,
    from_time: str | None,
    from_snapshot: str | None,
    to_time: str | None,
    include_deleted: bool,
    partition: int | None,
    max_messages: int | None,
    follow: bool,
    no_ack: bool,
    server: str,
    as_json: bool,
) -> None:
    """Print messages of TOPIC, one per line."""
    if from_snapshot is not None:
        if from_time is not None:
            raise click.UsageError("--from-snapshot and --from-time say the same: give one")
        from_time = from_snapshot
    if group is not None and (from_offset is not None or from_time or to_time or include_deleted):
        raise click.UsageError(
            "--from-offset, --from-time, --from-snapshot, --to-time and --include-deleted read"
            " without a group (changing no group's state); use seek for a group"
        )
    with connect(server) as client:
        if group is None:
            _replay(
                client,
                topic,
                partition,
                from_offset,
                from_time,
                to_time,
                max_messages,
                follow,
                as_json,
                include_deleted=include_deleted,
            )
        else:
            _consume(client, topic, group, max_messages, follow, no_ack, as_json)


def _consume(
    client: Client,
    topic: str,
    group: str,
    max_messages: int | None,
    follow: bool,
    no_ack: bool,
    as_json: bool,
) -> None:
    seen = 0
    with client.consume(topic, group, prefetch=1000, limit=max_messages) as consumer:
        while max_messages is None or seen < max_messages:
            message = consumer.next(None if follow else IDLE_S)
            if message is None:
                break
            print_message(message, as_json)
            if not no_ack:
                message.ack()
            seen += 1


def _replay(
    client: Client,
    topic: str,
    partition: int | None,
    offset: int | None,
    from_time: str | None,
    to_time: str | None,
    max_messages: int | None,
    follow: bool,
    as_json: bool,
    *,
    include_deleted: bool = False,
) -> None:
    partitions = (
        [partition]
        if partition is not None
        else list(range(len(client.describe_topic(topic)["partitions"])))
    )
    positions: dict[int, int | None] = dict.fromkeys(partitions, offset)
    seen = 0
    first = True
    while True:
        progressed = False
        for number in partitions:
            remaining = PAGE if max_messages is None else min(PAGE, max_messages - seen)
            if remaining <= 0:
                return
            position = positions[number]
            messages = client.peek(
                topic,
                partition=number,
                offset=position,
                from_time=from_time if position is None else None,
                to_time=to_time,
                limit=remaining,
                include_deleted=include_deleted,
            )
            for message in messages:
                print_message(message, as_json)
            if messages:
                positions[number] = messages[-1].offset + 1
                seen += len(messages)
                progressed = True
            elif position is None and first:
                positions[number] = None
        first = False
        if not progressed:
            window_over = to_time is not None and time.time() * 1000 >= parse_time_ms(
                to_time, name="--to-time"
            )
            if not follow or window_over:
                return  # caught up, and (with --to-time) nothing more can fall in the window
            time.sleep(0.2)
