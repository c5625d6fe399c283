"""The object stores an archive runs on: memory, a local directory, and S3
(moto's server, started on a free loopback port for the session)."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from logq.archive.store import ArchiveLocation, ArchiveStore, open_store
from logq.bench.archive_bench import moto_server

STORES = ["memory", "file", "s3"]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, in memory, on loopback (the archive bench's own)."""
    with moto_server() as endpoint:
        yield endpoint


_buckets = iter(range(1_000_000))


def s3_store(
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    bucket: str | None = None,
    prefix: str = "archive",
) -> ArchiveStore:
    """A fresh bucket on the moto server (or `bucket`, made already), opened
    as logq opens one."""
    if bucket is None:
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
        ArchiveLocation(f"s3://{bucket}/{prefix}", endpoint=endpoint, region="us-east-1")
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
