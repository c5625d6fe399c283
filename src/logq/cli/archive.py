"""`logq archive status [TOPIC]`: what the broker's archive holds, per partition."""

from __future__ import annotations

import click
from rich.table import Table

from logq.cli.common import connect, console, json_option, print_json, server_option


@click.group("archive")
def archive() -> None:
    """Tiered storage: closed segments in an object store (serve --archive URL)."""


@archive.command("status")
@click.argument("topic", required=False)
@server_option
@json_option
def status(topic: str | None, server: str, as_json: bool) -> None:
    """Per archived partition: archived and local offsets, upload lag, last error."""
    with connect(server) as client:
        found = client.archive_status(topic)
    if as_json:
        print_json(found)
        return
    if found.get("archive") is None:
        console.print("This broker has no archive (start it with --archive URL).")
        return
    console.print(f"Archive: {found['archive']}", highlight=False, markup=False)
    table = Table(
        "topic", "partition", "archived", "local", "start", "objects", "bytes", "lag", "error"
    )
    for row in found["partitions"]:
        archived = (
            f"{row['archived_from']}-{row['archived_to']}"
            if row["archived_from"] is not None
            else "-"
        )
        table.add_row(
            str(row["topic"]),
            str(row["partition"]),
            archived,
            f"{row['local_from']}-{row['local_to']}",
            str(row["start_offset"]),
            str(row["archived_segments"]),
            f"{row['archived_bytes']:,}",
            f"{row['upload_lag_bytes']:,}",
            str(row["last_error"] or ""),
        )
    console.print(table)


@archive.command("list")
@server_option
@json_option
def list_archived(server: str, as_json: bool) -> None:
    """The topics the archive holds (what `restore` can bring back)."""
    with connect(server) as client:
        found = client.archived_topics()
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("The archive holds no topic.")
    for topic, partitions in found.items():
        console.print(f"{topic}  partitions {len(partitions)}", highlight=False, markup=False)


@archive.command("restore")
@click.argument("topic")
@server_option
@json_option
def restore(topic: str, server: str, as_json: bool) -> None:
    """Make TOPIC again from the archive: its data up to the last archived
    segment, its groups at their committed positions."""
    with connect(server) as client:
        found = client.restore_topic(topic)
    if as_json:
        print_json(found)
        return
    for part in found["partitions"]:
        console.print(
            f"{topic}:{part['partition']} restored, offsets"
            f" {part['archived_from']}-{part['archived_to']}",
            highlight=False,
            markup=False,
        )
