"""Real servers for tests: in a thread of this process, or as a `logq serve` child.

Both listen on free ports (port 0) and are stopped by the context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from logq.broker import BrokerConfig
from logq.log import FsyncPolicy, LogConfig
from logq.server.app import BoundAddresses, serve
from logq.server.config import ServerConfig

# a bound, not a speed: a start takes about a second, but a machine running
# the suite beside other work has been seen to need tens of seconds
START_TIMEOUT_S = 90
READY = re.compile(rb"native (\S+):(\d+) http (https?)://(\S+):(\d+)")


@dataclass
class Running:
    native: str  # host:port
    http: str  # http://host:port
    process: subprocess.Popen[bytes] | None = None
    output: list[bytes] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.native.rsplit(":", 1)[1])


@contextlib.contextmanager
def server_thread(data_dir: Path | None = None, **broker: Any) -> Iterator[Running]:
    """A server on this process's side, on its own event loop thread."""
    log = LogConfig(fsync=FsyncPolicy.ALWAYS) if data_dir is not None else LogConfig()
    broker_config = replace(BrokerConfig(data_dir=data_dir, log=log), **broker)
    config = ServerConfig(
        host="127.0.0.1", native_port=0, http_port=0, broker=broker_config, shutdown_timeout_s=2
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    bound: list[BoundAddresses] = []
    failure: list[BaseException] = []
    stop_holder: list[asyncio.Event] = []

    def on_ready(addresses: BoundAddresses) -> None:
        bound.append(addresses)
        ready.set()

    async def main() -> None:
        stop = asyncio.Event()
        stop_holder.append(stop)
        await serve(config, on_ready=on_ready, stop=stop, handle_signals=False)

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:
            failure.append(error)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="logq-test-server", daemon=True)
    thread.start()
    if not ready.wait(20) or failure:
        raise RuntimeError(f"server did not start: {failure}")
    addresses = bound[0]
    try:
        yield Running(
            native=f"127.0.0.1:{addresses.native_port}",
            http=f"http://127.0.0.1:{addresses.http_port}",
        )
    finally:
        loop.call_soon_threadsafe(stop_holder[0].set)
        thread.join(20)


def start_process(
    data_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    open_files_max: int | None = None,
) -> Running:
    """`logq serve` as a child process on free ports; returns once it is ready.
    `open_files_max` lowers its descriptor limit (`ulimit -n`)."""
    command = [
        sys.executable,
        "-m",
        "logq",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        "--http-port",
        "0",
        *extra,
    ]
    if open_files_max is not None:  # util-linux's prlimit: the soft limit, the hard one kept
        command = ["prlimit", f"--nofile={open_files_max}:", *command]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    output: list[bytes] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.5)
        if not readable:
            if process.poll() is not None:
                break
            continue
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        match = READY.search(line)
        if match:
            _drain(process, output)
            return Running(
                native=f"127.0.0.1:{int(match.group(2))}",
                http=f"{match.group(3).decode()}://127.0.0.1:{int(match.group(5))}",
                process=process,
                output=output,
            )
    code = process.poll()
    process.kill()
    how = f"timed out after {START_TIMEOUT_S} s" if code is None else f"exited with {code}"
    raise RuntimeError(
        f"logq serve did not start ({how}):\n" + b"".join(output).decode(errors="replace")
    )


def _drain(process: subprocess.Popen[bytes], output: list[bytes]) -> None:
    """Keep reading the child's output so it never blocks on a full pipe."""

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=pump, daemon=True).start()


def stop_process(running: Running, *, kill: bool = False, timeout_s: float = 20) -> int:
    assert running.process is not None
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    return running.process.wait(timeout_s)


@contextlib.contextmanager
def server_process(data_dir: Path, *extra: str) -> Iterator[Running]:
    running = start_process(data_dir, *extra)
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            stop_process(running)
