"""A `logq serve` child for the chaos benches: fixed ports and a data
directory, killed, paused and restarted at will; a process that dies on its
own (fault injection: LOGQ_FAULT_CRASH, see logq.server.faults) is noticed
and started again."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

READY = re.compile(r"logq ready: native ")
START_ATTEMPTS_MAX = 20  # starts in a row that may die before ready (a fault at recovery)


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768 up), so that the
    servers and clients other programs start meanwhile cannot take it
    while the server is down between a kill and its restart."""
    for _ in range(1000):
        port = random.randint(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..32000")


class ServerProcess:
    """`logq serve` on fixed ports and a data directory, killed and restarted at will."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        environment: Mapping[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.environment = dict(environment or {})
        self.extra = extra  # more arguments of `logq serve`
        self.native_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.died_starting = 0  # starts whose process died before it was ready

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.native_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start it and wait until it is ready; a process that dies before
        (a fault injected into recovery) is started again."""
        for _ in range(START_ATTEMPTS_MAX):
            if self._start_once(timeout_s):
                return
            if not self.environment:
                break
            self.died_starting += 1
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"logq serve did not start; {self.log_path} ends with:\n{tail}")

    def _start_once(self, timeout_s: float) -> bool:
        with self.log_path.open("ab") as log:
            start = log.tell()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "logq",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.native_port),
                    "--http-port",
                    str(self.http_port),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(start)
                if READY.search(log.read().decode(errors="replace")):
                    return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def wait_exit(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the process to die on its own; whether it did."""
        assert self.process is not None
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def pause(self, seconds: float) -> None:
        """SIGSTOP for `seconds`, then SIGCONT: a broker that hangs, connections open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
