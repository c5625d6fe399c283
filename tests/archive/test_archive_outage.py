"""The store unreachable for a while under load (a file:// store whose
directory is replaced by a file, then put back): publishes and reads of
local data go on, the upload lag grows and nothing un-archived leaves the
disk; once the store is back, uploads resume and every message reads back,
and the objects of a topic deleted during the outage are removed by the
reconciler, manifest copies included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from logq.client import Client
from logq.errors import UnavailableError
from tests.archive.served import (
    LOCAL_BYTES,
    publish,
    read_all,
    start,
    value,
    wait_archived,
    write_config,
)
from tests.harness import stop_process

OUTAGE_S = 4.0


def test_an_unreachable_store_holds_up_nothing_and_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "archive"
    away = tmp_path / "archive-away"
    config = write_config(tmp_path / "logq.yaml", store, orphanAge="1s", reconcileIntervalMs=300)
    running = start(tmp_path / "data", config)
    try:
        with Client(running.native) as client:
            client.create_topic(
                "orders", partitions=1, archive=True, local_retention_bytes=LOCAL_BYTES
            )
            client.create_topic(
                "gone", partitions=1, archive=True, local_retention_bytes=LOCAL_BYTES
            )
            publish(client, "gone", 0, 600)
            wait_archived(client, "gone")
            published = publish(client, "orders", 0, 600)
            before = wait_archived(client, "orders")
            store.rename(away)
            store.write_bytes(b"not a directory")  # every request to the store fails
            down_until = time.monotonic() + OUTAGE_S
            while time.monotonic() < down_until:  # publishes and local reads go on
                published += publish(client, "orders", published, 100)
                part = client.archive_status("orders")["partitions"][0]
                # from the archive's end, since an archived segment may leave the disk
                # by local retention at any moment and then reads need the store
                first = part["archived_to"]  # where the archive ends: local only
                assert part["local_from"] <= first, part
                local = client.peek("orders", partition=0, offset=first, limit=500)
                assert local, part
                assert [m.value for m in local] == [
                    value(n) for n in range(first, first + len(local))
                ]
            client.delete_topic("gone")  # its objects cannot go now
            part = client.archive_status("orders")["partitions"][0]
            assert part["upload_lag_bytes"] > 4 * LOCAL_BYTES, part
            assert part["last_error"], part
            # nothing un-archived left the disk: it still starts where the archive ends
            assert part["local_from"] <= part["archived_to"] + 1, part
            with (  # archived data: an error that says try again, never other bytes
                Client(running.native, request_timeout_s=2) as impatient,
                pytest.raises(UnavailableError),
            ):
                impatient.peek("orders", partition=0, offset=0, limit=10)
            store.unlink()
            away.rename(store)
            after = wait_archived(client, "orders", timeout_s=90)
            assert after["local_from"] > before["local_from"]
            assert read_all(client, "orders") == [value(n) for n in range(published)]
            deadline = time.monotonic() + 30
            while left := [p for p in (store / "topics" / "gone").rglob("*") if p.is_file()]:
                assert time.monotonic() < deadline, left
                time.sleep(0.2)
    finally:
        stop_process(running)
