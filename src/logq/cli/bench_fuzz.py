"""`logq bench fuzz`: coverage-guided fuzzing of the RESP codec, the batch
codec and the native commands, with atheris."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from logq.bench.fuzz import TARGETS, FuzzReport, FuzzSettings, atheris_available, replay, run_fuzz
from logq.cli.common import at_least_one, console


@click.command("fuzz")
@click.option(
    "--target",
    type=click.Choice([*TARGETS, "all"]),
    default="all",
    show_default=True,
    help="What to fuzz: the RESP parser and encoder, the batch codec, or the commands.",
)
@click.option("--runs", type=int, help="Inputs per target [default: 20000 without --seconds].")
@click.option(
    "--seconds", type=float, help="Seconds per target (with --runs: whichever ends first)."
)
@click.option(
    "--corpus",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the corpus here (a folder per target) and start from it next time.",
)
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/fuzz"),
    show_default=True,
    help="Where a failing input is saved.",
)
@click.option(
    "--timeout", "timeout_s", default=20, show_default=True, help="Seconds one input may take."
)
@click.option("--rss-limit-mb", default=2048, show_default=True, help="Memory a target may use.")
@click.option(
    "--replay",
    "replay_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Run one saved input through --target (no fuzzing, no atheris) and show the outcome.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_fuzz(
    target: str,
    runs: int | None,
    seconds: float | None,
    corpus: Path | None,
    artifacts: Path,
    timeout_s: int,
    rss_limit_mb: int,
    replay_file: Path | None,
    as_json: bool,
) -> None:
    """Feed generated inputs to the RESP parser, the batch codec and the native
    commands, guided by coverage, and check that garbage only ever gets the
    documented error (ProtocolError, LogError, LogqError) within bounded time
    and memory. Exits 1, with the input saved and printed as hex, on any other
    exception."""
    if replay_file is not None:
        _replay(target, replay_file)
        return
    if runs is None and seconds is None:
        runs = 20_000
    at_least_one(("--timeout", timeout_s), ("--rss-limit-mb", rss_limit_mb))
    if runs is not None:
        at_least_one(("--runs", runs))
    if seconds is not None and seconds <= 0:
        raise click.BadParameter("must be positive", param_hint="--seconds")
    if not atheris_available():
        raise click.ClickException("atheris is not installed: pip install 'logq[bench]'")
    settings = FuzzSettings(
        targets=TARGETS if target == "all" else (target,),
        runs=runs,
        seconds=seconds,
        artifacts=artifacts,
        corpus=corpus,
        timeout_s=timeout_s,
        rss_limit_mb=rss_limit_mb,
    )
    notes = Console(stderr=True, highlight=False, soft_wrap=True)
    report = run_fuzz(settings, lambda text: notes.print(f"[dim]… {escape(text)}[/dim]"))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        console.print(_table(report))
    for result in report.results:
        failure = result.failure
        if failure is None:
            continue
        notes.print(f"[red]{result.target}: {failure.kind}: {escape(failure.error)}[/red]")
        if failure.traceback:
            notes.print(escape(failure.traceback))
        notes.print(f"input saved to {failure.file}")
        notes.print(f"input (hex): {failure.hex}")
        notes.print(f"replay: logq bench fuzz --target {result.target} --replay {failure.file}")
    if report.failed:
        sys.exit(1)


def _replay(target: str, path: Path) -> None:
    if target == "all":
        raise click.BadParameter("name the target the input is for", param_hint="--target")
    try:
        refused = replay(target, path.read_bytes())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
    click.echo(f"{target}: {'refused with the documented error' if refused else 'accepted'}")


def _table(report: FuzzReport) -> Table:
    failed = report.failed
    verdict = "[red]FAILURES[/red]" if failed else "[green]no unexpected error[/green]"
    table = Table(title=f"logq bench fuzz: {verdict}")
    for column in ("target", "inputs", "documented error", "accepted"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for column in ("coverage", "features", "corpus", "inputs/s", "seconds", "result"):
        table.add_column(column, justify="right")

    def number(value: int | None) -> str:
        return "n/a" if value is None else f"{value:,}"

    for result in report.results:
        table.add_row(
            result.target,
            f"{result.inputs:,}",
            f"{result.rejected:,} ({result.expected})",
            f"{result.accepted:,}",
            number(result.coverage),
            number(result.features),
            number(result.corpus),
            number(result.exec_per_s),
            f"{result.seconds:,.1f}",
            "ok" if result.failure is None else f"[red]{result.failure.kind}[/red]",
        )
    return table
