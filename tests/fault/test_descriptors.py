"""Running out of file descriptors: /metrics shows how many are open against
the limit and the log warns once when they pass 80% of it; when they run
out, the listeners say so (not once per connection), keep serving the
connections they have, let new ones wait in the backlog instead of
resetting them, and accept again once descriptors are free."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx

import logq
from logq.server.accept import LOG_INTERVAL_S
from logq.server.descriptors import WARN_SHARE
from tests.harness import Running, start_process, stop_process

OPEN_FILES_MAX = 160
WAIT_S = 20.0


def _metric(http: httpx.Client, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", http.get("/metrics").text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def _log(running: Running) -> str:
    return b"".join(running.output).decode(errors="replace")


def _wait_for_log(running: Running, text: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while text not in _log(running):
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{_log(running)[-3000:]}"
        time.sleep(0.05)


def _connect(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) for _ in range(count)]


def test_open_descriptors_and_the_limit_are_gauged_and_warned_of_once(tmp_path: Path) -> None:
    running = start_process(tmp_path, open_files_max=OPEN_FILES_MAX)
    port = int(running.native.rpartition(":")[2])
    held: list[socket.socket] = []
    try:
        with httpx.Client(base_url=running.http, timeout=10) as http:
            assert _metric(http, "logq_max_fds") == OPEN_FILES_MAX
            at_start = _metric(http, "logq_open_fds")
            assert 0 < at_start < OPEN_FILES_MAX * WARN_SHARE
            assert "descriptors open" not in _log(running)
            # past 80% of the limit, under the limit
            held = _connect(port, int(OPEN_FILES_MAX * 0.9 - at_start))
            deadline = time.monotonic() + WAIT_S
            while _metric(http, "logq_open_fds") < OPEN_FILES_MAX * WARN_SHARE:
                assert time.monotonic() < deadline, "the connections were never accepted"
                time.sleep(0.05)
            for _ in range(3):
                _metric(http, "logq_open_fds")
            assert _log(running).count("descriptors open, ") == 1
            assert f"of the limit {OPEN_FILES_MAX}" in _log(running)
    finally:
        for sock in held:
            sock.close()
        stop_process(running)


def test_out_of_descriptors_the_listener_pauses_and_resumes(tmp_path: Path) -> None:
    running = start_process(tmp_path, open_files_max=OPEN_FILES_MAX)
    port = int(running.native.rpartition(":")[2])
    held: list[socket.socket] = []
    try:
        with (
            httpx.Client(base_url=running.http, timeout=10) as http,
            logq.Client(running.native) as client,
        ):
            client.create_topic("t", partitions=1)
            # the partition's files open on its first write: before the wall
            assert client.publish("t", b"opened").offset == 0
            assert http.get("/health").status_code == 200
            # more connections than the broker has descriptors for
            started = time.monotonic()
            held = _connect(port, OPEN_FILES_MAX)
            _wait_for_log(running, "native listener cannot accept connections: Too many open")
            # the connections it has are served
            assert client.publish("t", b"still serving").offset == 1
            assert http.get("/health").status_code == 200
            time.sleep(1.5)  # a few retries of accepting (every 0.5 s), still out
            log = _log(running)
            elapsed_s = time.monotonic() - started
            assert log.count("listener cannot accept") <= 1 + elapsed_s / LOG_INTERVAL_S
            # the last connection waits in the backlog, not reset; once the
            # others are gone it is accepted and answered
            waiting = held.pop()
            for sock in held:
                sock.close()
            held = [waiting]
            waiting.sendall(b"*1\r\n$4\r\nPING\r\n")
            waiting.settimeout(WAIT_S)
            assert waiting.recv(64).startswith(b"+PONG")
            _wait_for_log(running, "native listener accepting again after")
            with logq.Client(running.native) as again:
                assert again.publish("t", b"new connection").offset == 2
            assert _metric(http, 'logq_accept_paused_total{listener="native"}') >= 2
    finally:
        for sock in held:
            sock.close()
        stop_process(running)
