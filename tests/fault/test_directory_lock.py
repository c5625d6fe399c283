"""One broker per data directory: a second one, in this process or another,
refuses to start and names the directory and the holder; the lock goes with
the process (kill -9 included), so a restart never finds it stale."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import logq
from logq.broker import Broker, BrokerConfig
from logq.log import DirectoryLockedError
from tests.fault.mounts import tmpfs
from tests.harness import start_process

FREE_PORTS = ("--port", "0", "--http-port", "0")


def serve_second(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logq", "serve", "--data-dir", str(data_dir), *FREE_PORTS],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_second_broker_in_this_process_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        first = await Broker.open(BrokerConfig(data_dir=tmp_path))
        with pytest.raises(DirectoryLockedError) as refused:
            await Broker.open(BrokerConfig(data_dir=tmp_path))
        assert str(tmp_path) in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
        await first.close()
        again = await Broker.open(BrokerConfig(data_dir=tmp_path))  # given back on close
        await again.close()

    asyncio.run(main())


def test_a_second_embedded_broker_is_refused(tmp_path: Path) -> None:
    with logq.Broker(tmp_path) as first:
        first.client().create_topic("t", partitions=1)
        with pytest.raises(DirectoryLockedError):
            logq.Broker(tmp_path).start()
    with logq.Broker(tmp_path) as reopened:
        assert [t["name"] for t in reopened.client().list_topics()] == ["t"]


def test_a_second_serve_refuses_and_the_first_keeps_its_messages(tmp_path: Path) -> None:
    running = start_process(tmp_path)
    assert running.process is not None
    try:
        with logq.Client(running.native) as client:
            client.create_topic("t", partitions=1)
            ids = [client.publish("t", f"m{n}".encode()).id for n in range(50)]
        second = serve_second(tmp_path)
        assert second.returncode != 0
        assert f"data directory {tmp_path} is in use by another logq broker" in second.stderr
        assert f"pid {running.process.pid}" in second.stderr
        with logq.Client(running.native) as client:  # the first serves on
            assert client.publish("t", b"m50").id == "t:0:50"
    finally:
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(10)
    # the lock died with the process: a new broker starts and has all 51
    restarted = start_process(tmp_path)
    assert restarted.process is not None
    try:
        with logq.Client(restarted.native) as client:
            values = [m.value for m in client.peek("t", partition=0, offset=0, limit=100)]
        assert values == [f"m{n}".encode() for n in range(51)]
        assert ids[0] == "t:0:0"
        assert httpx.get(f"{restarted.http}/health").status_code == 200
    finally:
        restarted.process.send_signal(signal.SIGTERM)
        restarted.process.wait(10)


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs: root ignores permission bits, not a read-only mount."""
    with tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
        yield mount


def test_start_up_errors_name_the_path(read_only_directory: Path) -> None:
    data_dir = read_only_directory / "data"
    refused = serve_second(data_dir)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert f"cannot start: Read-only file system: {data_dir}" in refused.stderr
