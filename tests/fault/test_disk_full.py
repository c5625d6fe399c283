"""A full disk: publishes fail with DISKFULL, reads and acks go on, nothing
stored is lost, and publishing resumes by itself once space returns.

Two ways to fill it: a real 8 MiB tmpfs under the data directory (needs the
right to mount, which the test machine has; elsewhere the test says why it
skipped), and an injected ENOSPC/EIO on the broker's own writes and fsyncs,
which runs everywhere on a fake clock."""

from __future__ import annotations

import base64
import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.messages import OutgoingMessage
from logq.client import Client
from logq.errors import DiskFullError, StorageError
from logq.errors import TimeoutError as DeliveryTimeoutError
from logq.log import FsyncPolicy, LogConfig, durable
from tests.broker.fake import run
from tests.fault.mounts import tmpfs
from tests.harness import server_thread, start_process, stop_process

MIB = 1 << 20


# -- a real small disk --------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "size=8m") as mount:
        yield mount


# DISKFULL is retriable: the client tries again until the publish's delivery
# timeout, then raises TimeoutError naming the last answer. A short one here.
DELIVERY_TIMEOUT_S = 1.0


def _refused_for_a_full_disk(error: DeliveryTimeoutError) -> bool:
    return "DISKFULL" in error.message and "publishing resumes by itself" in error.message


def _fill(client: Client, topic: str, value: bytes) -> list[str]:
    """Publish until the broker says DISKFULL; the ids it acknowledged."""
    stored: list[str] = []
    for _ in range(10_000):
        try:
            stored.append(client.publish(topic, value).id)
        except DeliveryTimeoutError as error:
            assert _refused_for_a_full_disk(error), error.message
            return stored
    raise AssertionError("the disk never filled")


def _until(check: Callable[[], Any], seconds: float = 15.0) -> Any:
    """Poll a real server until `check` returns a truthy value."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def _publish_or_none(client: Client, topic: str, value: bytes) -> str | None:
    try:
        return client.publish(topic, value).id
    except DeliveryTimeoutError as error:
        assert _refused_for_a_full_disk(error), error.message
        return None


def test_a_full_disk_refuses_publishes_keeps_acks_and_resumes(small_disk: Path) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (2 * MIB))  # freed later: the space that "returns"
    data = small_disk / "data"
    # large enough that the commit journal keeps no copy (log/writer.py): the
    # copies of small writes take room until the next flush gives it back,
    # which would make space "return" on its own here
    value = b"v" * 70_000
    with (
        server_thread(data, disk_free_min_bytes=1 * MIB, disk_check_ms=50) as server,
        Client(server.native, delivery_timeout_s=DELIVERY_TIMEOUT_S) as client,
    ):
        client.create_topic("fill", partitions=2)
        stored = _fill(client, "fill", value)
        assert len(stored) > 10
        # Full: publishing is refused, reads and acks go on.
        with pytest.raises(DeliveryTimeoutError, match="DISKFULL"):
            client.publish("fill", value)
        received = client.receive("fill", "workers", max=len(stored), wait="1s")
        assert received
        for message in received:
            message.ack().result(5)
        assert len(client.peek("fill", partition=0, limit=10_000)) + len(
            client.peek("fill", partition=1, limit=10_000)
        ) == len(stored)
        # Space returns: publishing resumes by itself.
        ballast.unlink()
        resumed = _until(lambda: _publish_or_none(client, "fill", value))
        assert resumed, "publishing did not resume once space returned"
        stored.append(resumed)
        # Nothing acknowledged was lost; nothing was stored twice.
        ids = [m.id for p in (0, 1) for m in client.peek("fill", partition=p, limit=10_000)]
        assert sorted(ids) == sorted(stored)
        # The acks made while full hold: those messages are not handed out again.
        again = client.receive("fill", "workers", max=len(stored), wait="200ms")
        assert {m.id for m in again}.isdisjoint({m.id for m in received})


def test_writes_that_meet_enospc_are_cut_and_survive_a_restart(small_disk: Path) -> None:
    """With no free-space minimum, writes run into ENOSPC itself: the torn
    tail is cut, the broker restarts on the full disk, and everything it
    acknowledged is there."""
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * MIB)
    data = small_disk / "data"
    value = b"w" * 100_000
    with (
        server_thread(data, disk_free_min_bytes=0, disk_check_ms=50) as server,
        Client(server.native, delivery_timeout_s=DELIVERY_TIMEOUT_S) as client,
    ):
        client.create_topic("edge", partitions=1)
        stored = _fill(client, "edge", value)
    with (
        server_thread(data, disk_free_min_bytes=0, disk_check_ms=50) as server,
        Client(server.native, delivery_timeout_s=DELIVERY_TIMEOUT_S) as client,
    ):
        assert [m.id for m in client.peek("edge", limit=10_000)] == stored
        ballast.unlink()
        resumed = _until(lambda: _publish_or_none(client, "edge", value))
        assert resumed
        assert [m.id for m in client.peek("edge", limit=10_000)] == [*stored, resumed]


def test_a_publish_refused_part_way_names_what_it_stored(small_disk: Path) -> None:
    """A publish whose batches meet a full disk part way (its first lane's
    batch stored, its second refused) answers 507 DISKFULL with the
    messages it stored all the same, exactly those peek finds."""
    data = small_disk / "data"
    big = b"b" * 300_000  # more than the room left: its batch meets ENOSPC
    with (
        server_thread(data, disk_free_min_bytes=0, disk_check_ms=50) as server,
        httpx.Client(base_url=server.http, timeout=10) as http,
        Client(server.native) as client,
    ):
        client.create_topic("part", partitions=1)
        free = os.statvfs(small_disk)
        room = free.f_bavail * free.f_frsize
        (small_disk / "ballast").write_bytes(b"\0" * (room - 150_000))
        messages = [  # one batch per lane, stored in this order
            {"value_b64": base64.b64encode(b"small").decode(), "priority": "high"},
            {"value_b64": base64.b64encode(big).decode(), "priority": "low"},
        ]
        response = http.post("/v1/topics/part/messages", json={"messages": messages})
        assert response.status_code == 507
        error = response.json()["error"]
        assert error["code"] == "DISKFULL"
        stored = [(s["index"], s["id"]) for s in error.get("stored", [])]
        assert stored == [(0, "part:0:0")]
        assert [(m.id, m.value) for m in client.peek("part", limit=10)] == [("part:0:0", b"small")]


# -- injected faults, on a fake clock -----------------------------------------------------


def _config(data_dir: Path) -> BrokerConfig:
    return BrokerConfig(
        data_dir=data_dir,
        log=LogConfig(fsync=FsyncPolicy.ALWAYS),
        disk_free_min_bytes=MIB,
        disk_check_ms=1000,
    )


def _message(value: bytes) -> list[OutgoingMessage]:
    return [OutgoingMessage(value=value, partition=0)]


async def _stored(broker: Broker) -> list[bytes | None]:
    return [m.value for m in await broker.read_messages("t", 0, offset=0, limit=10)]


def test_injected_enospc_refuses_publishes_and_they_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev
    full = [False]

    def pwritev(fd: int, buffers: Any, offset: int) -> int:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwritev(fd, buffers, offset)

    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g", {"visibility_timeout": "30s"})
        first = await broker.publish("t", _message(b"one"))
        monkeypatch.setattr(os, "pwritev", pwritev)
        full[0] = True
        with pytest.raises(DiskFullError):
            await broker.publish("t", _message(b"lost"))
        full[0] = False  # space is back, but the guard waits for its next measure
        with pytest.raises(DiskFullError, match="publishing resumes by itself"):
            await broker.publish("t", _message(b"too early"))
        # reads and acks go on while publishes are refused
        (message,) = await broker.receive("t", "g", "c1", max_messages=10)
        assert message.id == first[0].id
        assert await broker.ack("t", "g", [message.id]) == 1
        clock.advance(1)
        await broker.tick()  # measures the disk (which has room) at once while full
        second = await broker.publish("t", _message(b"two"))
        assert second[0].offset == first[0].offset + 1  # no gap, no torn bytes
        assert await _stored(broker) == [b"one", b"two"]

    run(scenario, _config(tmp_path / "data"))
    monkeypatch.undo()

    async def after_restart(broker: Broker, clock: FakeClock) -> None:
        assert await _stored(broker) == [b"one", b"two"]
        assert await broker.receive("t", "g", "c1", max_messages=10) != []  # "two" only
        assert await broker.receive("t", "g", "c1", max_messages=10) == []

    run(after_restart, _config(tmp_path / "data"))


def test_a_failed_fsync_cuts_the_unacknowledged_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fsync the kernel may have dropped the pages: the batch
    is refused and cut from the log, so later batches never follow bytes that
    may not be on disk."""
    real_sync = durable.sync_data
    failing = [False]

    def sync_data(fd: int) -> None:
        if failing[0]:
            failing[0] = False
            raise OSError(errno.EIO, "Input/output error")
        real_sync(fd)

    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.publish("t", _message(b"one"))
        monkeypatch.setattr(durable, "sync_data", sync_data)
        failing[0] = True
        with pytest.raises(StorageError):
            await broker.publish("t", _message(b"not acknowledged"))
        again = await broker.publish("t", _message(b"two"))
        assert again[0].offset == 1
        assert await _stored(broker) == [b"one", b"two"]

    run(scenario, _config(tmp_path / "data"))
    monkeypatch.undo()

    async def after_restart(broker: Broker, clock: FakeClock) -> None:
        assert await _stored(broker) == [b"one", b"two"]

    run(after_restart, _config(tmp_path / "data"))


def _fill_to_the_brim(directory: Path) -> None:
    """Another program takes every free byte of the disk."""
    fd = os.open(directory / "hog", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (64 << 10, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    assert shutil.disk_usage(directory).free == 0


def test_a_disk_filled_by_another_program_stops_neither_a_stop_nor_a_start(
    small_disk: Path,
) -> None:
    """SIGTERM on a 100%-full disk closes every partition and exits 0; the
    broker then starts on that full disk and serves reads and what was stored."""
    data = small_disk / "data"
    config = small_disk.parent / "config.yaml"
    config.write_text("limits: {diskFreeMinBytes: 0}\n")
    running = start_process(data, "--config", str(config))
    try:
        with Client(running.native) as client:
            client.create_topic("t", partitions=3)
            ids = [client.publish("t", f"m{n}".encode()).id for n in range(30)]
        _fill_to_the_brim(small_disk)
    finally:
        code = stop_process(running)
    output = b"".join(running.output).decode(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output
    restarted = start_process(data, "--config", str(config))
    try:
        with Client(restarted.native) as client:
            peeked = [m.id for p in range(3) for m in client.peek("t", partition=p, limit=100)]
            assert sorted(peeked) == sorted(ids)
    finally:
        stop_process(restarted)
