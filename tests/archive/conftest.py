"""The object stores an archive runs on: memory, a local directory, and S3
(moto's server, started on a free loopback port for the session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from logq.archive.store import ArchiveLocation, ArchiveStore, open_store

STORES = ["memory", "file", "s3"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, in memory, on loopback."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


_buckets = iter(range(1_000_000))


def s3_store(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> ArchiveStore:
    """A fresh bucket on the moto server, opened as logq opens one."""
    bucket = f"logq-test-{next(_buckets)}"
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    return open_store(
        ArchiveLocation(f"s3://{bucket}/archive", endpoint=endpoint, region="us-east-1")
    )


@pytest.fixture(params=STORES)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ArchiveStore:
    kind = request.param
    if kind == "memory":
        return open_store(ArchiveLocation("memory://"))
    if kind == "file":
        return open_store(ArchiveLocation(f"file://{tmp_path / 'archive'}"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return s3_store(endpoint, monkeypatch)
