"""A damaged archive object on a served broker: a read of the damaged range
answers CORRUPT (never other bytes), the rest of the object and the other
objects still read, and the damage is reported (a log line, a counter)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from logq.client import Client
from logq.errors import LogqError
from tests.archive.served import (
    LOCAL_BYTES,
    publish,
    segment_objects,
    start,
    value,
    wait_archived,
    write_config,
)
from tests.harness import stop_process


def _metric(http: str, name: str) -> float:
    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_flipped_byte_answers_corrupt_for_its_range_only(tmp_path: Path) -> None:
    store = tmp_path / "archive"
    config = write_config(tmp_path / "logq.yaml", store)
    running = start(tmp_path / "data", config)
    try:
        with Client(running.native) as client:
            client.create_topic(
                "orders", partitions=1, archive=True, local_retention_bytes=LOCAL_BYTES
            )
            publish(client, "orders", 0, 1500)
            wait_archived(client, "orders")
            first, second = segment_objects(store, "orders")[:2]
            damaged = bytearray(first.read_bytes())
            damaged[200] ^= 0x40  # inside the first batch's records
            first.write_bytes(bytes(damaged))
            with pytest.raises(LogqError) as refused:
                client.peek("orders", partition=0, offset=0, limit=10)
            assert refused.value.code == "CORRUPT"
            # later batches of the same object, and the next object, still read
            later = client.peek("orders", partition=0, offset=40, limit=10)
            assert [m.value for m in later] == [value(n) for n in range(40, 50)]
            base = int(second.name.split("-")[0])
            after = client.peek("orders", partition=0, offset=base, limit=10)
            assert [m.value for m in after] == [value(n) for n in range(base, base + 10)]
            with pytest.raises(LogqError) as again:  # still refused: nothing was cached
                client.peek("orders", partition=0, offset=0, limit=10)
            assert again.value.code == "CORRUPT"
            assert _metric(running.http, "logq_archive_damaged_reads_total") == 2
    finally:
        stop_process(running)
    log = b"".join(running.output).decode(errors="replace")
    assert "a damaged object" in log and "orders:0 offset 0" in log
