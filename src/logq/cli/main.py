"""Entry point of the `logq` command: a click group with one module per area."""

from __future__ import annotations

import click

from logq import __version__
from logq.cli.bench import bench


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logq")
def cli() -> None:
    """logq: a durable message broker with a replayable log and per-message acks."""


cli.add_command(bench)


def main() -> None:
    cli()
