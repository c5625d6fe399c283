"""`logq topics create|list|describe|delete`."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from logq.cli.common import (
    backoff_options,
    connect,
    console,
    json_option,
    pop_backoff,
    print_json,
    server_option,
)


@click.group()
def topics() -> None:
    """Create, list, describe and delete topics."""


@topics.command("create")
@click.argument("name")
@click.option("--partitions", type=int, help="Partition count [6].")
@click.option("--retention", help="Keep messages this long (e.g. 7d).")
@click.option("--retention-bytes", type=int, help="Keep at most this many bytes per partition.")
@click.option("--max-deliveries", type=int, help="Deliveries before a message goes to the DLQ.")
@click.option("--visibility-timeout", help="Lease length of a received message (e.g. 30s).")
@click.option("--dlq", help="Dead-letter topic [<name>.dlq].")
@click.option("--ttl", help="Messages expire this long after their time (e.g. 1h).")
@click.option(
    "--ttl-dead-letter", is_flag=True, default=None, help="Expired messages go to the DLQ."
)
@click.option("--max-delay", help="Delayed messages may be due at most this far ahead [7d].")
@click.option("--dedup-window", help="A dedup id seen within this is not stored again [5m].")
@click.option(
    "--archive",
    is_flag=True,
    default=None,
    help="Copy closed segments to the broker's archive (serve --archive URL).",
)
@click.option("--local-retention", help="Archived: keep this long on the broker's disk (e.g. 1h).")
@click.option("--local-retention-bytes", type=int, help="Archived: at most this much on disk.")
@click.option(
    "--archive-retention", help="Archived: keep what passed --retention for audit reads this long."
)
@backoff_options
@server_option
@json_option
def create(name: str, server: str, as_json: bool, **options: Any) -> None:
    """Create topic NAME."""
    options["backoff"] = pop_backoff(options)
    with connect(server) as client:
        topic = client.create_topic(name, **options)
    if as_json:
        print_json(topic)
    else:
        console.print(f"created topic {name} with {len(topic['partitions'])} partitions")


@topics.command("list")
@server_option
@json_option
def list_(server: str, as_json: bool) -> None:
    """List topics with their counts."""
    with connect(server) as client:
        found = client.list_topics()
    if as_json:
        print_json(found)
        return
    table = Table(
        "topic", "partitions", "messages", "bytes", "pending", "in flight", "dead-lettered"
    )
    for topic in found:
        table.add_row(
            topic["name"],
            str(len(topic["partitions"])),
            str(topic["messages"]),
            str(topic["bytes"]),
            str(topic["pending"]),
            str(topic["in_flight"]),
            str(topic["dead_lettered"]),
        )
    console.print(table)


@topics.command("describe")
@click.argument("name")
@server_option
@json_option
def describe(name: str, server: str, as_json: bool) -> None:
    """Show a topic's config and per-partition stats."""
    with connect(server) as client:
        topic = client.describe_topic(name)
    if as_json:
        print_json(topic)
        return
    config = ", ".join(f"{key}={value}" for key, value in topic["config"].items())
    console.print(f"topic {topic['name']}: {config}")
    table = Table("partition", "first", "last", "messages", "bytes", "pending", "in flight")
    for partition in topic["partitions"]:
        table.add_row(
            *(
                str(partition[key])
                for key in (
                    "partition",
                    "first_offset",
                    "last_offset",
                    "messages",
                    "bytes",
                    "pending",
                    "in_flight",
                )
            )
        )
    console.print(table)


@topics.command("delete")
@click.argument("name")
@server_option
def delete(name: str, server: str) -> None:
    """Delete topic NAME and all its messages."""
    with connect(server) as client:
        client.delete_topic(name)
    console.print(f"deleted topic {name}")
