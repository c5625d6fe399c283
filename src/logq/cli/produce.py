"""`logq produce TOPIC [VALUE]`: one message, or one per line of stdin."""

from __future__ import annotations

import sys

import click
from rich.progress import Progress, SpinnerColumn, TextColumn

from logq.cli.common import connect, console, dumps, errors, failures, json_option, server_option


def _headers(pairs: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected name=value, got {pair!r}", param_hint="--header")
        headers[name] = value
    return headers


@click.command("produce")
@click.argument("topic")
@click.argument("value", required=False)
@click.option("--key", help="Message key (same key, same partition, in order).")
@click.option(
    "--priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True
)
@click.option(
    "--header",
    "header_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A header; repeat for more.",
)
@click.option("--partition", type=int, help="Put it in this partition.")
@click.option("--delay", help="Deliver after this long (e.g. 5m).")
@click.option("--at", "deliver_at", help="Deliver from this time (RFC 3339 or epoch ms).")
@click.option("--ttl", help="Never deliver after this long.")
@server_option
@json_option
def produce(
    topic: str,
    value: str | None,
    key: str | None,
    priority: str,
    header_pairs: tuple[str, ...],
    partition: int | None,
    delay: str | None,
    deliver_at: str | None,
    ttl: str | None,
    server: str,
    as_json: bool,
) -> None:
    """Publish VALUE to TOPIC; without VALUE, publish each line of stdin."""
    headers = _headers(header_pairs) or None
    if delay is not None and deliver_at is not None:
        raise click.UsageError("give --delay or --at, not both")
    with connect(server) as client:
        if value is not None:
            result = client.publish(
                topic,
                value,
                key=key,
                headers=headers,
                priority=priority,
                partition=partition,
                ttl=ttl,
                delay=delay,
                deliver_at=deliver_at,
            )
            if as_json:
                sys.stdout.write(
                    dumps({"id": result.id, "partition": result.partition, "offset": result.offset})
                    + "\n"
                )
            else:
                console.print(result.id)
            return
        count = 0
        with client.producer(linger_ms=5) as producer, failures(server):
            futures = []
            show = sys.stderr.isatty()
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), console=errors, disable=not show
            ) as progress:
                task = progress.add_task("publishing", total=None)
                for line in sys.stdin:
                    text = line.rstrip("\n")
                    if not text:
                        continue
                    futures.append(
                        producer.send(
                            topic,
                            text,
                            key=key,
                            headers=headers,
                            priority=priority,
                            partition=partition,
                            ttl=ttl,
                            delay=delay,
                            deliver_at=deliver_at,
                        )
                    )
                    count += 1
                    if count % 1000 == 0:
                        progress.update(task, description=f"published {count} messages")
                        futures = [f for f in futures if not f.done() or f.exception() is not None]
                producer.flush()
                for future in futures:
                    future.result()
    if as_json:
        sys.stdout.write(dumps({"published": count}) + "\n")
    else:
        console.print(f"published {count} message{'s' if count != 1 else ''} to {topic}")
