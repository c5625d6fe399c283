"""`logq serve`: run the broker with its native and HTTP listeners."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from logq.errors import BadArgumentError, StorageError
from logq.log import DirectoryLockedError, FsyncPolicy, InvalidConfigError
from logq.server.app import BoundAddresses, serve
from logq.server.config import ServerConfig, build_config
from logq.server.config_parsing import ConfigError
from logq.server.context import RequestIdFilter


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None)
        if current:
            payload["request_id"] = current
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        current = getattr(record, "request_id", None)
        return f"{line} [{current}]" if current else line


def _setup_logging(as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


@click.command("serve")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where data lives [./data; LOGQ_DATA_DIR].",
)
@click.option("--memory", is_flag=True, help="Keep everything in memory (nothing survives a stop).")
@click.option("--host", help="Address to listen on [127.0.0.1; LOGQ_HOST].")
@click.option("--port", type=int, help="Native protocol port, 0 picks one [7070; LOGQ_PORT].")
@click.option("--http-port", type=int, help="HTTP port, 0 picks one [8080; LOGQ_HTTP_PORT].")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="YAML config file.",
)
@click.option(
    "--fsync",
    type=click.Choice([p.value for p in FsyncPolicy]),
    help="Durability of appends [always].",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TLS certificate (PEM) for both listeners; with --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TLS private key (PEM).",
)
@click.option(
    "--allow-unauthenticated-remote",
    is_flag=True,
    help="Listen beyond loopback although authentication is off (prints a warning) "
    "[LOGQ_ALLOW_UNAUTHENTICATED_REMOTE=true].",
)
@click.option(
    "--archive",
    metavar="URL",
    help="Archive closed segments of topics with archive: true here: s3://bucket/prefix"
    " or file:///directory [LOGQ_ARCHIVE].",
)
def serve_command(
    data_dir: Path | None,
    memory: bool,
    host: str | None,
    port: int | None,
    http_port: int | None,
    config_file: Path | None,
    fsync: str | None,
    log_json: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    allow_unauthenticated_remote: bool,
    archive: str | None,
) -> None:
    """Run the broker: native protocol and HTTP API (REST, metrics)."""
    try:
        config = build_config(
            config_file=config_file,
            environ=os.environ,
            host=host,
            port=port,
            http_port=http_port,
            data_dir=data_dir,
            memory=memory,
            fsync=fsync,
            allow_unauthenticated_remote=allow_unauthenticated_remote,
            tls_cert=tls_cert,
            tls_key=tls_key,
            archive=archive,
        )
    except (ConfigError, BadArgumentError, InvalidConfigError) as error:
        raise click.ClickException(f"bad configuration: {error}") from None
    _setup_logging(log_json or config.log_json)

    def announce(bound: BoundAddresses) -> None:
        click.echo(_ready_line(config, bound), nl=True)
        sys.stdout.flush()

    tune_collector()
    try:
        run_event_loop(serve(config, on_ready=announce))
    except (DirectoryLockedError, StorageError) as error:
        raise click.ClickException(f"cannot start: {error}") from None
    except OSError as error:
        raise click.ClickException(f"cannot start: {describe_os_error(error)}") from None
    exit_without_teardown()


def exit_without_teardown() -> None:
    """End the process after a clean stop. The broker's close made every
    acknowledged write durable and closed its files; what the interpreter
    would still do is free, one by one, the objects of every partition
    (seconds with tens of thousands of them). Logging and output are
    flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def describe_os_error(error: OSError) -> str:
    """The reason and the path it concerns ('Read-only file system: /data/topics')."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    return f"{reason}: {error.filename}"


def tune_collector() -> None:
    """The broker makes many short-lived objects per request (a REST publish
    of 1000 messages makes thousands); with the default threshold of 700 the
    collector then runs every few hundred microseconds. Collect the youngest
    generation every 50,000 allocations instead, and keep what start-up made
    (modules, classes) out of every collection. Measured: REST publish went
    from 105,000 to 145,000 msg/s."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop (libuv: faster sockets and timers) where it exists."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _ready_line(config: ServerConfig, bound: BoundAddresses) -> str:
    data = config.broker.data_dir
    where = f"data {data}" if data is not None else "in memory"
    tls = config.security.tls is not None
    notes = [f"fsync {config.broker.log.fsync.value}"]
    notes += ["tls"] if tls else []
    notes += ["auth"] if config.security.auth.enabled else []
    return (
        f"logq ready: native {bound.native_host}:{bound.native_port} "
        f"http {'https' if tls else 'http'}://{bound.http_host}:{bound.http_port} "
        f"{where} ({', '.join(notes)})"
    )
