"""Entry point of the `logq` command: a click group with one module per area.

Each command's module is imported when that command runs (or help lists
it), not at every start: `logq serve` does not load the client, the
benchmarks and their dependencies, which would add about a second to
every restart of a broker.
"""

from __future__ import annotations

import importlib

import click

from logq import __version__

# command name -> (module, attribute), in the order help lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("logq.cli.serve", "serve_command"),
    "topics": ("logq.cli.topics", "topics"),
    "produce": ("logq.cli.produce", "produce"),
    "consume": ("logq.cli.consume", "consume"),
    "groups": ("logq.cli.inspect", "groups"),
    "dlq": ("logq.cli.inspect", "dlq"),
    "trace": ("logq.cli.trace", "trace"),
    "stats": ("logq.cli.inspect", "stats"),
    "archive": ("logq.cli.archive", "archive"),
    "bench": ("logq.cli.bench", "bench"),
    "auth": ("logq.cli.auth", "auth"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        command = getattr(importlib.import_module(where[0]), where[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logq")
def cli() -> None:
    """logq: a durable message broker with a replayable log and per-message acks."""


def main() -> None:
    cli()
