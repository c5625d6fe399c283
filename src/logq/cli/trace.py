"""`logq trace ID`: one message's lifecycle as a readable timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from logq.cli.common import connect, console, json_option, print_json, server_option

# what else an event says, in the order a reader wants it
_FIELDS = ("group", "consumer", "attempt", "producer", "reason", "detail")


@click.command("trace")
@click.argument("message_id")
@server_option
@json_option
def trace(message_id: str, server: str, as_json: bool) -> None:
    """What happened to MESSAGE_ID: published, delivered, acked, redelivered..."""
    with connect(server) as client:
        found = client.trace(message_id)
    if as_json:
        print_json(found)
        return
    for line in render(found):
        console.print(line, highlight=False, markup=False)


def render(found: dict[str, Any]) -> list[str]:
    lines = [
        f"Message: {found['id']}",
        f"Topic: {found['topic']}",
        f"Partition: {found['partition']}",
        f"Offset: {found['offset']}",
        "",
        "Timeline:",
    ]
    events = found["events"]
    for index, event in enumerate(events):
        branch = "└─" if index == len(events) - 1 else "├─"
        words = [f"{key}={event[key]}" for key in _FIELDS if key in event]
        if "until_ms" in event:
            words.append(f"until={_time(event['until_ms'])}")
        if "expires_at_ms" in event:
            words.append(f"expires={_time(event['expires_at_ms'])}")
        lines.append(f"{branch} {_time(event['at_ms'])}  {event['event']:<20} {' '.join(words)}")
    if not events:
        lines.append("└─ nothing recorded")
    lines.append("")
    if not found["retained"]:
        lines.append("The message itself is gone (deleted by retention).")
    if not found["traced"]:
        lines.append("Tracing is off for this topic.")
    lines.append(f"Delivery Attempts: {found['delivery_attempts']}")
    latency = found["total_latency_ms"]
    if latency is not None:
        lines.append(f"Total Latency: {latency / 1000:.3f}s (publish to final settle)")
    if found["truncated"]:
        lines.append("(the trace is longer than one query reads: later events are not shown)")
    return lines


def _time(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
