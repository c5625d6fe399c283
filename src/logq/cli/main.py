"""Entry point of the `logq` command: a click group with one module per area."""

from __future__ import annotations

import click

from logq import __version__
from logq.cli.archive import archive
from logq.cli.auth import auth
from logq.cli.bench import bench
from logq.cli.consume import consume
from logq.cli.inspect import dlq, groups, stats
from logq.cli.produce import produce
from logq.cli.serve import serve_command
from logq.cli.topics import topics
from logq.cli.trace import trace


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logq")
def cli() -> None:
    """logq: a durable message broker with a replayable log and per-message acks."""


for command in (
    serve_command,
    topics,
    produce,
    consume,
    groups,
    dlq,
    trace,
    stats,
    archive,
    bench,
    auth,
):
    cli.add_command(command)


def main() -> None:
    cli()
