"""`logq bench corrupt`: one random damage per trial to a stopped broker's files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from logq.bench.corrupt import CorruptReport, CorruptSettings, run_corrupt
from logq.cli.common import at_least_one, console


@click.command("corrupt")
@click.option("--trials", default=1000, show_default=True, help="Damaged starts to try.")
@click.option("--seed", default=1, show_default=True, help="Seed of the runs and the damage.")
@click.option(
    "--prepared",
    default=4,
    show_default=True,
    help="Directories prepared by real runs (seeds seed, seed+1, ...), shared out to trials.",
)
@click.option("--jobs", default=1, show_default=True, help="Trials run at once.")
@click.option("--trial", "only_trial", type=int, default=None, help="Run this trial alone.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch space (default: the system's temporary folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_corrupt(
    trials: int,
    seed: int,
    prepared: int,
    jobs: int,
    only_trial: int | None,
    directory: Path | None,
    as_json: bool,
) -> None:
    """Run a broker with traffic, stop it (kill -9 or graceful), damage one
    file of its data directory (a flipped byte, a cut, a stale copy, a
    removed index), start it again and check that it starts, serves no
    damaged byte, reports the damage and loses nothing acknowledged outside
    the damaged range. Exits 1 on any violation, naming seed and trial."""
    at_least_one(("--trials", trials), ("--prepared", prepared), ("--jobs", jobs))
    notes = Console(stderr=True, highlight=False, soft_wrap=True)
    settings = CorruptSettings(
        trials=trials,
        seed=seed,
        prepared=prepared,
        jobs=jobs,
        directory=directory,
        only_trial=only_trial,
    )
    report = run_corrupt(settings, lambda text: notes.print(f"[dim]… {escape(text)}[/dim]"))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for table in _tables(report):
            console.print(table)
        for failure in report.failures:
            notes.print(f"[red]{escape(failure)}[/red]")
    if report.failed:
        sys.exit(1)


def _tables(report: CorruptReport) -> list[Table]:
    verdict = "[red]VIOLATIONS[/red]" if report.failed else "[green]no violation[/green]"
    summary = Table(title=f"logq bench corrupt: {verdict}")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("trials", f"{report.trials:,}")
    summary.add_row("damage reported (logged and counted)", f"{report.reported:,}")
    for kind, count in sorted(report.violations.items()):
        summary.add_row(f"violations: {kind}", f"{count:,}")
    summary.add_row("seconds", f"{report.seconds:,.1f}")
    tables = [summary]
    for title, counts in (
        ("trials by damage", report.by_damage),
        ("trials by file", report.by_file),
        ("failed trials by damage and file", report.by_violation_file),
    ):
        if counts:
            table = Table(title=title)
            table.add_column("kind")
            table.add_column("trials", justify="right")
            for kind, count in sorted(counts.items()):
                table.add_row(kind, f"{count:,}")
            tables.append(table)
    return tables
