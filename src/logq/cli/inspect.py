"""`logq groups list|describe`, `logq dlq list`, `logq stats`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
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
    print_message,
    server_option,
)
from logq.client import Client


@click.group()
def groups() -> None:
    """Consumer groups: list and describe."""


@groups.command("list")
@server_option
@json_option
def groups_list(server: str, as_json: bool) -> None:
    """All groups with their lag."""
    with connect(server) as client:
        found = client.list_groups()
    if as_json:
        print_json(found)
        return
    table = Table("topic", "group", "mode", "members", "lag", "in flight")
    for group in found:
        table.add_row(
            group["topic"],
            group["group"],
            str(group["settings"]["mode"]),
            str(len(group["members"])),
            str(group["lag"]),
            str(group["in_flight"]),
        )
    console.print(table)


@groups.command("configure")
@click.argument("topic")
@click.argument("group")
@click.option("--mode", type=click.Choice(["ordered", "shared"]))
@click.option("--visibility-timeout", help="Lease length of a received message (e.g. 30s).")
@click.option("--max-deliveries", type=int, help="Deliveries before a message goes to the DLQ.")
@click.option("--auto-ack/--no-auto-ack", default=None, help="At-most-once: settle as handed out.")
@click.option("--max-in-flight", type=int, help="Unsettled deliveries per partition.")
@click.option(
    "--starvation-share",
    type=float,
    help="Shared groups: a waiting lower lane gets one message per 1/share of higher ones.",
)
@click.option(
    "--starvation-timeout", help="Shared groups: or once a lower lane has waited this (e.g. 2s)."
)
@click.option("--assignor", help="Ordered groups: how partitions spread (sticky, range).")
@click.option("--revoke-timeout", help="Longest a moving partition waits for in-flight messages.")
@click.option("--session-timeout", help="A member not heard from this long leaves (e.g. 30s).")
@backoff_options
@server_option
@json_option
def groups_configure(topic: str, group: str, server: str, as_json: bool, **options: Any) -> None:
    """Create GROUP on TOPIC, or change its settings."""
    options["backoff"] = pop_backoff(options)
    with connect(server) as client:
        found = client.put_group(topic, group, **options)
    if as_json:
        print_json(found)
    else:
        settings = ", ".join(f"{key}={value}" for key, value in found["settings"].items())
        console.print(f"group {group} on {topic}: {settings}")


@groups.command("replay")
@click.argument("topic")
@click.argument("group")
@click.option("--from-time", help="Start of the window (RFC 3339 or epoch ms); default earliest.")
@click.option("--to-time", help="End of the window, exclusive; default: the end now.")
@click.option("--dlq", is_flag=True, help="Replay the topic's dead letters instead.")
@click.option("--mode", type=click.Choice(["ordered", "shared"]))
@server_option
@json_option
def groups_replay(
    topic: str,
    group: str,
    from_time: str | None,
    to_time: str | None,
    dlq: bool,
    mode: str | None,
    server: str,
    as_json: bool,
) -> None:
    """Create GROUP to replay a window of TOPIC (or its DLQ); consume it as any group."""
    with connect(server) as client:
        found = client.replay(
            topic, group, from_time=from_time, to_time=to_time, dlq=dlq, mode=mode
        )
    if as_json:
        print_json(found)
        return
    console.print(
        f"group {group} on {found['topic']} replays {found['lag']} messages "
        f"(partitions end at {[p['end_offset'] for p in found['partitions']]})"
    )


@groups.command("describe")
@click.argument("topic")
@click.argument("group")
@server_option
@json_option
def groups_describe(topic: str, group: str, server: str, as_json: bool) -> None:
    """Members, assignment, per-partition lag and counts of GROUP on TOPIC."""
    with connect(server) as client:
        found = client.describe_group(topic, group)
    if as_json:
        print_json(found)
        return
    settings = ", ".join(f"{key}={value}" for key, value in found["settings"].items())
    console.print(f"group {group} on {topic}: {settings}")
    counts = ", ".join(f"{key} {value}" for key, value in found["counts"].items())
    console.print(f"counts: {counts}")
    members = Table("member", "partitions", "giving up", "getting", "joined", "last seen")
    for member in found["members"]:
        members.add_row(
            member["name"],
            _partitions(member.get("partitions", [])),
            _partitions(member.get("revoking", [])),
            _partitions(member.get("incoming", [])),
            _time(member["joined_ms"]),
            _time(member["last_seen_ms"]),
        )
    console.print(members if found["members"] else "members: none")
    table = Table("partition", "owner", "committed", "log end", "lag", "in flight")
    for partition in found["partitions"]:
        table.add_row(
            str(partition["partition"]),
            partition.get("owner") or "-",
            *(str(partition[key]) for key in ("committed", "log_end", "lag", "in_flight")),
        )
    console.print(table)
    if found.get("rebalances"):
        history = Table("generation", "at", "reason", "moves", "took")
        for record in found["rebalances"]:
            moves = ", ".join(
                f"{m['partition']}: {m['from'] or '-'}→{m['to']}" for m in record["moves"]
            )
            took = "in progress" if record["duration_ms"] is None else f"{record['duration_ms']} ms"
            history.add_row(
                str(record["generation"]), _time(record["at_ms"]), record["reason"], moves, took
            )
        console.print(history)


def _partitions(found: list[int]) -> str:
    return ",".join(str(p) for p in found) or "-"


@click.group()
def dlq() -> None:
    """Dead letters of a topic: list, redrive, purge."""


@dlq.command("list")
@click.argument("topic")
@click.option("--limit", type=int, default=100, show_default=True)
@server_option
@json_option
def dlq_list(topic: str, limit: int, server: str, as_json: bool) -> None:
    """Dead letters of TOPIC, with origin id, group, attempts and reason."""
    with connect(server) as client:
        found = client.dlq(topic, limit=limit)
    if as_json:
        for message in found:
            print_message(message, True)
        return
    table = Table("id", "origin", "group", "attempts", "reason", "dead-lettered at", "value")
    for message in found:
        headers = message.headers
        table.add_row(
            message.id,
            headers.get("logq-origin-id", ""),
            headers.get("logq-group", ""),
            headers.get("logq-attempts", ""),
            headers.get("logq-reason", ""),
            _time(headers.get("logq-dead-lettered-at", "")),
            (message.value or b"")[:60].decode(errors="replace"),
        )
    console.print(table)


def _time(epoch_ms: str | int) -> str:
    text = str(epoch_ms)
    if not (text.isascii() and text.isdigit()):
        return text
    moment = datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dlq_move(
    name: str,
    summary: str,
    move: Callable[[Client, str, list[str] | None], int],
    done: str,
) -> click.Command:
    """`logq dlq redrive|requeue TOPIC [ID...] | --all`: one shape, two moves."""

    @dlq.command(name, help=summary)
    @click.argument("topic")
    @click.argument("ids", nargs=-1)
    @click.option("--all", "everything", is_flag=True, help=f"{name.title()} every dead letter.")
    @server_option
    @json_option
    def command(
        topic: str, ids: tuple[str, ...], everything: bool, server: str, as_json: bool
    ) -> None:
        if bool(ids) == everything:
            raise click.UsageError("give dead-letter ids (from `logq dlq list`), or --all")
        with connect(server) as client:
            count = move(client, topic, list(ids) or None)
        if as_json:
            print_json({done: count})
        else:
            console.print(f"{done} {count} message{'s' if count != 1 else ''} of {topic}")

    return command


dlq_redrive = _dlq_move(
    "redrive",
    "Hand dead letters back to the group that dead-lettered them (attempts reset).",
    lambda client, topic, ids: client.redrive(topic, ids),
    "redriven",
)
dlq_requeue = _dlq_move(
    "requeue",
    "Publish dead letters again to TOPIC as new messages (every group sees them).",
    lambda client, topic, ids: client.requeue_dlq(topic, ids),
    "requeued",
)


@dlq.command("purge")
@click.argument("topic")
@click.argument("ids", nargs=-1)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@server_option
@json_option
def dlq_purge(topic: str, ids: tuple[str, ...], yes: bool, server: str, as_json: bool) -> None:
    """Drop the given dead letters of TOPIC, or every one."""
    if not yes:
        what = f"{len(ids)} dead letter(s)" if ids else "every dead letter"
        click.confirm(f"drop {what} of {topic}?", abort=True)
    with connect(server) as client:
        count = client.purge_dlq(topic, list(ids) or None)
    if as_json:
        print_json({"purged": count})
    else:
        console.print(f"purged {count} dead letter{'s' if count != 1 else ''} of {topic}")


@click.command("stats")
@server_option
@json_option
def stats(server: str, as_json: bool) -> None:
    """Pending messages per partition and server counters."""
    with connect(server) as client:
        found = client.stats()
    if as_json:
        print_json(found)
        return
    table = Table("queue")
    table.add_column("pending", justify="right")
    for queue, pending in found["queues"].items():
        table.add_row(queue, str(pending))
    console.print(table)
    others = ", ".join(f"{key} {value}" for key, value in found.items() if key != "queues")
    console.print(others)
