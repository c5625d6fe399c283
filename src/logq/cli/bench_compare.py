"""`logq bench compare`: logq against its peers, side by side, in one run."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from logq.bench.compare.report import SYSTEMS, Report, chart, machine_line, markdown, rows
from logq.bench.compare.runner import PeerAddresses, run_compare
from logq.bench.compare.systems.nats_system import DEFAULT_URL as NATS_URL
from logq.bench.compare.systems.postgresql_system import DEFAULT_DSN
from logq.bench.compare.systems.rabbitmq_system import DEFAULT_URL as RABBITMQ_URL
from logq.bench.compare.systems.redis_system import DEFAULT_URL as REDIS_URL
from logq.bench.compare.workloads import WORKLOADS, CompareSettings
from logq.cli.common import at_least_one


@click.command("compare")
@click.argument("workloads", nargs=-1, type=click.Choice(list(WORKLOADS)))
@click.option(
    "--systems",
    default=",".join(SYSTEMS),
    show_default=True,
    help="Comma-separated systems to measure.",
)
@click.option("--seconds", default=5.0, show_default=True, help="Length of each timed phase.")
@click.option(
    "--max-messages", default=1_000_000, show_default=True, help="Cap of a fill before consuming."
)
@click.option("--partitions", default=6, show_default=True)
@click.option("--publishers", default=8, show_default=True, help="Concurrent publishers.")
@click.option("--workers", default=4, show_default=True, help="Competing consumers (shared).")
@click.option("--many-partitions", default=1000, show_default=True)
@click.option("--idle-connections", default=1000, show_default=True)
@click.option("--busy-connections", default=10, show_default=True)
@click.option("--server", help="A running logq (host:port) instead of one started here.")
@click.option("--postgresql", "postgresql", default=DEFAULT_DSN, show_default=True)
@click.option("--redis", default=REDIS_URL, show_default=True)
@click.option("--nats", default=NATS_URL, show_default=True)
@click.option("--rabbitmq", default=RABBITMQ_URL, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Directory for compare.json, compare.md and compare.png.",
)
@click.option("--chart/--no-chart", default=True, show_default=True, help="Draw compare.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def bench_compare(
    workloads: tuple[str, ...],
    systems: str,
    seconds: float,
    max_messages: int,
    partitions: int,
    publishers: int,
    workers: int,
    many_partitions: int,
    idle_connections: int,
    busy_connections: int,
    server: str | None,
    postgresql: str,
    redis: str,
    nats: str,
    rabbitmq: str,
    out: Path,
    chart: bool,
    as_json: bool,
) -> None:
    """The same workloads against logq, PostgreSQL, Redis Streams, NATS
    JetStream and RabbitMQ (all of them, or the WORKLOADS named), with the
    ratio logq/peer for each. Start the peers first with `bench/peers.sh
    start`; a peer that is not reachable is skipped, with the reason."""
    names = [n.strip() for n in systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(SYSTEMS)}",
            param_hint="--systems",
        )
    if seconds <= 0:
        raise click.BadParameter(f"must be above 0, got {seconds}", param_hint="--seconds")
    at_least_one(
        ("--max-messages", max_messages),
        ("--partitions", partitions),
        ("--publishers", publishers),
        ("--workers", workers),
        ("--many-partitions", many_partitions),
        ("--busy-connections", busy_connections),
    )
    if idle_connections < 0:
        raise click.BadParameter("must not be negative", param_hint="--idle-connections")
    settings = CompareSettings(
        seconds=seconds,
        max_messages=max_messages,
        partitions=partitions,
        publishers=publishers,
        workers=workers,
        many_partitions=many_partitions,
        idle_connections=idle_connections,
        busy_connections=busy_connections,
    )
    console = Console(stderr=True)
    report = run_compare(
        names,
        list(workloads) or list(WORKLOADS),
        settings,
        server=server,
        addresses=PeerAddresses(postgresql, redis, nats, rabbitmq),
        progress=lambda text: console.print(f"[dim]… {text}[/dim]"),
    )
    out.mkdir(parents=True, exist_ok=True)
    document = json.dumps(report.as_dict(), indent=2)
    (out / "compare.json").write_text(document + "\n")
    (out / "compare.md").write_text(markdown(report))
    if chart:
        chart_path = out / "compare.png"
        _draw(report, chart_path)
    if as_json:
        click.echo(document)
        return
    _print(report)
    console.print(
        f"wrote {out / 'compare.json'}, {out / 'compare.md'}" + (", compare.png" if chart else "")
    )


def _draw(report: Report, path: Path) -> None:
    chart(report, path)


def _print(report: Report) -> None:
    table = Table(
        title="logq bench compare: msg/s and latency; (Nx): logq is N times ahead of that peer",
        caption=machine_line(report.machine),
    )
    table.add_column("workload")
    for system in report.systems():
        table.add_column(system, justify="right")
    for row in rows(report):
        table.add_row(*row)
    console = Console()
    console.print(table)
    for system, why in report.skipped.items():
        console.print(f"[yellow]skipped {system}[/yellow]: {why}")
