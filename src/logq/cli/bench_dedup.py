"""`logq bench dedup-restart`: from a restart (kill -9 and SIGTERM) to the
first acknowledged dedup publish, with many dedup ids inside the window."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from logq.bench.dedup_restart_bench import DedupRestartSettings, run_dedup_restart_bench
from logq.cli.common import at_least_one


@click.command("dedup-restart")
@click.option(
    "--messages",
    default=1_000_000,
    show_default=True,
    help="Messages published before the restarts, each with its own dedup id.",
)
@click.option(
    "--tail",
    default=20_000,
    show_default=True,
    help="Of them, published to the server just before the kill -9.",
)
@click.option("--partitions", default=6, show_default=True)
@click.option("--window", default="1h", show_default=True, help="The topic's dedup window.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the data directory goes (default: the system's temporary folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_dedup_restart(
    messages: int, tail: int, partitions: int, window: str, directory: Path | None, as_json: bool
) -> None:
    """Seconds from a restart to the first acknowledged dedup publish, beside
    the log's own recovery (a plain publish) and a checked resend."""
    at_least_one(("--messages", messages), ("--partitions", partitions))
    settings = DedupRestartSettings(messages, partitions, window, directory, tail)
    console = Console(stderr=as_json)
    result = run_dedup_restart_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    table = Table(
        title=f"logq bench dedup-restart: {messages:,} dedup ids in the window, "
        f"{partitions} partitions (published in {result.publish_s:.1f} s); "
        "seconds from the process's start"
    )
    for title in ("restart", "stop s", "/health", "plain publish", "dedup publish", "resend"):
        table.add_column(title, justify="right")
    for r in result.restarts:
        table.add_row(
            r.mode,
            f"{r.stop_s:.2f}",
            f"{r.ready_s:.2f}",
            f"{r.plain_publish_s:.2f}",
            f"{r.dedup_publish_s:.2f}",
            f"{r.resend_s:.2f}",
        )
    console.print(table)
