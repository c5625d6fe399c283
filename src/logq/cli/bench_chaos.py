"""`logq bench chaos`: SIGKILL and restart the broker at random, then check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from logq.bench.chaos import ChaosReport, ChaosSettings, run_chaos
from logq.bench.chaos_client import ClientChaosReport, ClientChaosSettings, run_client_chaos
from logq.cli.common import at_least_one


@click.command("chaos")
@click.option(
    "--client",
    "client_mode",
    is_flag=True,
    help="Test the client library instead: sync and async producers and a consume loop "
    "through kills with outages of --down-min..--down-max s and --stops SIGSTOPs.",
)
@click.option(
    "--redrive",
    is_flag=True,
    help="Redrive rejected messages' letters during the run, and let the broker kill itself "
    "between the steps of some redrives (LOGQ_FAULT_CRASH), on top of the kills.",
)
@click.option(
    "--dedup",
    is_flag=True,
    help="Every message carries a dedup id; what a kill failed, and every few batches a whole "
    "acknowledged batch, is sent again by a fresh producer.",
)
@click.option(
    "--delays",
    is_flag=True,
    help="A share of the messages is due at times of its own a few seconds ahead, a share "
    "carries a TTL of its own (expired ones are dead-lettered).",
)
@click.option(
    "--crash-chance",
    default=0.1,
    show_default=True,
    help="--redrive: chance of the broker killing itself at each step of a redrive.",
)
@click.option("--cycles", type=int, help="Kills and restarts [20; with --client 10].")
@click.option("--partitions", default=3, show_default=True)
@click.option("--producers", default=2, show_default=True, help="Idempotent producers.")
@click.option("--up-min", default=0.3, show_default=True, help="Least seconds up before a kill.")
@click.option("--up-max", default=1.2, show_default=True, help="Most seconds up before a kill.")
@click.option("--down-min", default=1.0, show_default=True, help="--client: shortest outage, s.")
@click.option("--down-max", default=10.0, show_default=True, help="--client: longest outage, s.")
@click.option("--stops", default=2, show_default=True, help="--client: SIGSTOPs of the broker.")
@click.option("--stop-s", default=3.0, show_default=True, help="--client: seconds of each SIGSTOP.")
@click.option(
    "--archive",
    "archive",
    is_flag=False,
    flag_value="file",
    default=None,
    metavar="[URL]",
    help="Archive the topic (a file:// store in the run's directory, or URL) with 16 KiB "
    "segments and 32 KiB kept on disk, so kills land inside uploads and reads go through it.",
)
@click.option("--archive-endpoint", help="--archive s3://...: an S3-compatible server's address.")
@click.option("--seed", type=int, help="Seed of the kill moments (random by default).")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the data directory and server log here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_chaos(
    client_mode: bool,
    redrive: bool,
    dedup: bool,
    delays: bool,
    crash_chance: float,
    cycles: int | None,
    partitions: int,
    producers: int,
    up_min: float,
    up_max: float,
    down_min: float,
    down_max: float,
    stops: int,
    stop_s: float,
    archive: str | None,
    archive_endpoint: str | None,
    seed: int | None,
    keep: Path | None,
    as_json: bool,
) -> None:
    """Kill the broker (SIGKILL) at random moments while idempotent producers
    publish and a consumer acks and rejects, then prove that nothing
    acknowledged was lost, duplicated, reordered or redelivered. --redrive,
    --dedup and --delays add redrives (and kills inside them), dedup ids
    sent again, and due times and TTLs of their own, with their checks. With
    --client, prove that the client library rides the outages out: no
    future failed, nothing stored twice or out of order per key, the consume
    loop alive throughout. With --archive, the broker archives the topic and
    keeps little on disk: the kills land in uploads and trims, the reads go
    through the archive. Exits 1 on any violation."""
    if client_mode:
        _client_chaos(
            ClientChaosSettings(
                kills=10 if cycles is None else cycles,
                down_s=(down_min, down_max),
                stops=stops,
                stop_s=stop_s,
                partitions=partitions,
                seed=seed,
                data_dir=keep,
            ),
            as_json,
        )
        return
    cycles = 20 if cycles is None else cycles
    at_least_one(("--cycles", cycles), ("--partitions", partitions), ("--producers", producers))
    if not 0 < up_min <= up_max:
        raise click.BadParameter("need 0 < --up-min <= --up-max", param_hint="--up-min")
    if not 0 <= crash_chance <= 1:
        raise click.BadParameter("need 0 <= --crash-chance <= 1", param_hint="--crash-chance")
    settings = ChaosSettings(
        cycles=cycles,
        partitions=partitions,
        producers=producers,
        up_s=(up_min, up_max),
        seed=seed,
        data_dir=keep,
        redrive=redrive,
        crash_chance=crash_chance,
        dedup=dedup,
        delays=delays,
        archive=archive,
        archive_endpoint=archive_endpoint,
    )
    console = Console(stderr=True)
    report = run_chaos(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        Console().print(_table(report))
    if not report.ok:
        sys.exit(1)


def _client_chaos(settings: ClientChaosSettings, as_json: bool) -> None:
    if not 0 < settings.down_s[0] <= settings.down_s[1]:
        raise click.BadParameter("need 0 < --down-min <= --down-max", param_hint="--down-min")
    if settings.kills < 0 or settings.stops < 0 or settings.stop_s <= 0:
        raise click.BadParameter("need --cycles >= 0, --stops >= 0 and --stop-s > 0")
    console = Console(stderr=True)
    report = run_client_chaos(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        title = f"{report.kills} kills and {report.stops} stops in {report.seconds} s"
        Console().print(_rows(report.as_dict(), ClientChaosReport.VIOLATIONS, title, report.ok))
    if not report.ok:
        sys.exit(1)


def _rows(found: dict[str, object], violations: tuple[str, ...], title: str, ok: bool) -> Table:
    verdict = "[green]no violation[/green]" if ok else "[red]VIOLATIONS[/red]"
    table = Table(title=f"logq bench chaos --client: {title}, {verdict}")
    table.add_column("measure")
    table.add_column("count", justify="right")
    for name, value in found.items():
        if name in ("examples", "ok", "seconds", "kills", "stops"):
            continue
        style = "red" if name in violations and value else ""
        text = f"{value:,}" if isinstance(value, int) else str(value)
        table.add_row(name.replace("_", " "), f"[{style}]{text}[/{style}]" if style else text)
    examples = found.get("examples")
    for example in examples if isinstance(examples, list) else []:
        table.add_row("[red]example[/red]", str(example))
    return table


def _table(report: ChaosReport) -> Table:
    verdict = "[green]no violation[/green]" if report.ok else "[red]VIOLATIONS[/red]"
    table = Table(title=f"logq bench chaos ({report.mode}): {verdict}")
    table.add_column("measure", min_width=24)
    table.add_column("count", justify="right", min_width=16)
    for name, value in report.as_dict().items():
        if name in ("examples", "ok", "mode"):
            continue
        style = "red" if name in ChaosReport.VIOLATIONS and value else ""
        text = f"{value:,}" if isinstance(value, int) else str(value)
        table.add_row(name.replace("_", " "), f"[{style}]{text}[/{style}]" if style else text)
    for example in report.examples:
        table.add_row("[red]example[/red]", example)
    return table
