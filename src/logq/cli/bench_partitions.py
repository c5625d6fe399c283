"""`logq bench partitions`: creation, memory, descriptors, restart and stop
times, /metrics and publish throughput as the partition count grows."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from logq.bench.partitions_bench import (
    PARTITIONS_PER_TOPIC,
    PartitionsBenchResult,
    PartitionsBenchSettings,
    run_partitions_bench,
)
from logq.cli.common import at_least_one


@click.command("partitions")
@click.option(
    "--topics", default=5_000, show_default=True, help="Topics at the end (x6 partitions)."
)
@click.option("--step", default=1_000, show_default=True, help="Topics added between measurements.")
@click.option(
    "--open-files",
    "open_files_max",
    default=20_000,
    show_default=True,
    help="The server's descriptor limit (ulimit -n, set with prlimit).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the data directory goes (default: the system's temporary folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_partitions(
    topics: int, step: int, open_files_max: int, directory: Path | None, as_json: bool
) -> None:
    """What tens of thousands of partitions cost one broker: a real `logq
    serve` under `prlimit --nofile`, measured after each step of topics."""
    at_least_one(("--topics", topics), ("--step", step), ("--open-files", open_files_max))
    settings = PartitionsBenchSettings(topics, step, open_files_max, directory)
    console = Console(stderr=as_json)
    result = run_partitions_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        console.print(_table(result))


def _table(result: PartitionsBenchResult) -> Table:
    table = Table(
        title=f"logq bench partitions: topics of {PARTITIONS_PER_TOPIC} partitions, "
        f"ulimit -n {result.settings['open_files_max']}"
    )
    columns = (
        ("partitions", "partitions", "{:,}"),
        ("create s/1k topics", "create_s_per_1000_topics", "{:.2f}"),
        ("RSS MB", "rss_mb", "{:.0f}"),
        ("fds", "open_fds", "{:,}"),
        ("/metrics KB (agg KB)", None, ""),
        ("scrape ms (agg ms)", None, ""),
        ("publish/s spread", "publish_spread_per_s", "{:,.0f}"),
        ("publish/s 1 part.", "publish_one_partition_per_s", "{:,.0f}"),
        ("stop s (CPU s)", "stop", ""),
        ("restart s (TERM) (CPU s)", "restart_after_sigterm", ""),
        ("restart s (kill -9) (CPU s)", "restart_after_kill", ""),
        ("RSS MB / fds after", None, ""),
    )
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    for step in result.steps:
        row = []
        for title, key, form in columns:
            if key is not None and not form:  # wall-clock seconds (CPU seconds)
                row.append(f"{getattr(step, key + '_s'):.2f} ({getattr(step, key + '_cpu_s'):.2f})")
            elif key is not None:
                row.append(form.format(getattr(step, key)))
            elif title.startswith("/metrics"):
                row.append(
                    f"{step.metrics_bytes / 1e3:,.0f} ({step.metrics_aggregated_bytes / 1e3:,.0f})"
                )
            elif title.startswith("scrape"):
                row.append(
                    f"{step.metrics_scrape_ms:,.0f} ({step.metrics_aggregated_scrape_ms:,.0f})"
                )
            else:
                row.append(f"{step.rss_mb_after_restart:.0f} / {step.open_fds_after_restart:,}")
        table.add_row(*row)
    return table
