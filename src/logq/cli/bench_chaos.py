"""`logq bench chaos`: SIGKILL and restart the broker at random, then check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from logq.bench.chaos import ChaosReport, ChaosSettings, run_chaos
from logq.cli.common import at_least_one


@click.command("chaos")
@click.option("--cycles", default=20, show_default=True, help="Kills and restarts.")
@click.option("--partitions", default=3, show_default=True)
@click.option("--producers", default=2, show_default=True, help="Idempotent producers.")
@click.option("--up-min", default=0.3, show_default=True, help="Least seconds up before a kill.")
@click.option("--up-max", default=1.2, show_default=True, help="Most seconds up before a kill.")
@click.option("--seed", type=int, help="Seed of the kill moments (random by default).")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the data directory and server log here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_chaos(
    cycles: int,
    partitions: int,
    producers: int,
    up_min: float,
    up_max: float,
    seed: int | None,
    keep: Path | None,
    as_json: bool,
) -> None:
    """Kill the broker (SIGKILL) at random moments while idempotent producers
    publish and a consumer acks and rejects, then prove that nothing
    acknowledged was lost, duplicated, reordered or redelivered. Exits 1 on
    any violation."""
    at_least_one(("--cycles", cycles), ("--partitions", partitions), ("--producers", producers))
    if not 0 < up_min <= up_max:
        raise click.BadParameter("need 0 < --up-min <= --up-max", param_hint="--up-min")
    settings = ChaosSettings(
        cycles=cycles,
        partitions=partitions,
        producers=producers,
        up_s=(up_min, up_max),
        seed=seed,
        data_dir=keep,
    )
    console = Console(stderr=True)
    report = run_chaos(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        Console().print(_table(report))
    if not report.ok:
        sys.exit(1)


def _table(report: ChaosReport) -> Table:
    verdict = "[green]no violation[/green]" if report.ok else "[red]VIOLATIONS[/red]"
    table = Table(title=f"logq bench chaos: {report.cycles} kills in {report.seconds} s, {verdict}")
    table.add_column("measure")
    table.add_column("count", justify="right")
    for name, value in report.as_dict().items():
        if name in ("examples", "ok", "seconds", "cycles"):
            continue
        style = "red" if name in ChaosReport.VIOLATIONS and value else ""
        table.add_row(
            name.replace("_", " "), f"[{style}]{value:,}[/{style}]" if style else f"{value:,}"
        )
    for example in report.examples:
        table.add_row("[red]example[/red]", example)
    return table
