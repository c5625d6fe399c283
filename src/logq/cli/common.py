"""What every client-side command shares: the server option, output, errors."""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from rich.console import Console

from logq.client import Client, ConnectionLostError, MessageData
from logq.errors import LogqError

F = TypeVar("F", bound=Callable[..., Any])

# Piped output (tools, files) is not wrapped to 80 columns: tables stay one row a line.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)
errors = Console(stderr=True, highlight=False)


def at_least_one(*options: tuple[str, float]) -> None:
    """Refuse any (option name, value) below 1 with a usage error."""
    for name, value in options:
        if value < 1:
            raise click.BadParameter(f"must be at least 1, got {value}", param_hint=name)


def server_option(function: F) -> F:
    return click.option(
        "--server",
        envvar="LOGQ_SERVER",
        default="127.0.0.1:7070",
        show_default=True,
        help="The broker, host:port [LOGQ_SERVER].",
    )(function)


def backoff_options(function: F) -> F:
    """--backoff-initial/-multiplier/-max/-jitter: the wait before a redelivery."""
    for name, kind, text in (
        ("--backoff-jitter", float, "Take up to this fraction off each wait, at random."),
        ("--backoff-max", str, "Longest wait before a redelivery."),
        ("--backoff-multiplier", float, "Each wait is this many times the one before."),
        ("--backoff-initial", str, "Wait before the first redelivery (e.g. 1s)."),
    ):
        function = click.option(name, type=kind, help=text)(function)
    return function


def pop_backoff(options: dict[str, Any]) -> dict[str, str | float] | None:
    """The backoff mapping the client takes, from the --backoff-* options."""
    backoff = {
        key: value
        for key in ("initial", "multiplier", "max", "jitter")
        if (value := options.pop(f"backoff_{key}", None)) is not None
    }
    return backoff or None


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for tools.")(function)


CALL_TIMEOUT_S = 5.0  # a command line call waits this long for an unreachable or hung server


@contextlib.contextmanager
def connect(server: str) -> Iterator[Client]:
    """A connected client; errors become one clear line and a non-zero exit."""
    try:
        client = Client(server, request_timeout_s=CALL_TIMEOUT_S)
    except LogqError as error:
        raise click.ClickException(error.message) from None
    try:
        with failures(server):
            client.ping()
            yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


@contextlib.contextmanager
def failures(server: str) -> Iterator[None]:
    try:
        yield
    except (ConnectionLostError, OSError) as error:
        raise click.ClickException(f"cannot reach logq at {server}: {error}") from None
    except LogqError as error:
        raise click.ClickException(f"{error.code} {error.message}") from None


def _default(value: object) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: object, *, indent: int | None = None) -> str:
    return json.dumps(value, default=_default, indent=indent, ensure_ascii=False)


def print_json(value: object) -> None:
    sys.stdout.write(dumps(value, indent=2) + "\n")


def text_of(value: bytes | None) -> str:
    if value is None:
        return ""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def message_json(message: MessageData) -> dict[str, Any]:
    return {
        "id": message.id,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key,
        "value": message.value,
        "headers": message.headers,
        "priority": message.priority,
        "timestamp": message.timestamp_ms,
        "attempt": message.attempt,
    }


def print_message(message: MessageData, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(dumps(message_json(message)) + "\n")
    else:
        key = f" key={text_of(message.key)}" if message.key is not None else ""
        attempt = f" attempt={message.attempt}" if message.attempt > 1 else ""
        sys.stdout.write(f"{message.id}{key}{attempt}  {text_of(message.value)}\n")
    sys.stdout.flush()
