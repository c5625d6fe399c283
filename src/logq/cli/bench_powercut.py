"""`logq bench powercut`: simulated power cuts at random points of a recorded run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from logq.bench.powercut import PowercutReport, PowercutSettings, run_powercut
from logq.cli.common import at_least_one, console


@click.command("powercut")
@click.option("--cuts", default=500, show_default=True, help="Power cuts to try.")
@click.option("--seed", default=1, show_default=True, help="Seed of the first run and its cuts.")
@click.option(
    "--runs",
    default=1,
    show_default=True,
    help="Workload runs to record (seeds seed, seed+1, ...).",
)
@click.option("--rounds", default=160, show_default=True, help="Workload steps per run.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch space (default: the system's temporary folder; /dev/shm is fastest).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_powercut(
    cuts: int, seed: int, runs: int, rounds: int, directory: Path | None, as_json: bool
) -> None:
    """Record every file operation of a broker run under `fsync: always`,
    then, at random cut points, rebuild what a power cut would leave on disk,
    open a broker on it and check every acknowledgement given before the cut.
    Exits 1 if anything acknowledged was lost, served twice or served early."""
    at_least_one(("--cuts", cuts), ("--runs", runs), ("--rounds", rounds))
    notes = Console(stderr=True, highlight=False, soft_wrap=True)
    settings = PowercutSettings(cuts=cuts, seed=seed, runs=runs, rounds=rounds, directory=directory)
    report = run_powercut(settings, lambda text: notes.print(f"[dim]… {escape(text)}[/dim]"))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        console.print(_table(report))
        for failure in report.failures:
            notes.print(f"[red]{escape(failure)}[/red]")
    if report.failed:
        sys.exit(1)


def _table(report: PowercutReport) -> Table:
    verdict = (
        "[red]FAILURES[/red]" if report.failed else "[green]nothing acknowledged was lost[/green]"
    )
    table = Table(title=f"logq bench powercut: {verdict}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = (
        ("runs recorded", report.runs),
        ("operations recorded", report.ops_recorded),
        ("acknowledgements", report.acknowledged),
        ("cuts tried", report.cuts),
        ("recoveries that failed to open", report.failed_open),
        ("acknowledged publishes lost", report.lost_publishes),
        ("acked messages delivered again", report.lost_acks),
        ("dead-letter moves lost or doubled", report.lost_dead_letters),
        ("messages served twice", report.served_twice),
        ("messages served early", report.served_early),
        ("torn or stale reads", report.torn_reads),
        ("read errors after recovery", report.read_errors),
    )
    for name, value in rows:
        table.add_row(name, f"{value:,}")
    table.add_row("slowest recovery (ms)", f"{report.recovery_ms_max:,.0f}")
    table.add_row("seconds", f"{report.seconds:,.1f}")
    return table
