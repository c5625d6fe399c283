"""Entry point of the `logq` command: a click group with one module per area."""

from __future__ import annotations

import importlib
from typing import ClassVar

import click

from logq import __version__
from logq.cli.archive import archive
from logq.cli.auth import auth
from logq.cli.consume import consume
from logq.cli.inspect import dlq, groups, stats
from logq.cli.produce import produce
from logq.cli.serve import serve_command
from logq.cli.topics import topics
from logq.cli.trace import trace


class _Commands(click.Group):
    """Imports `logq bench` (the benchmarks, their clients and tables) only
    when it is run: every other command, `logq serve` first, starts
    without it (a second less to start on a busy machine)."""

    LAZY: ClassVar[dict[str, tuple[str, str]]] = {"bench": ("logq.cli.bench", "bench")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module, attribute = self.LAZY[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
    auth,
):
    cli.add_command(command)


def main() -> None:
    cli()
