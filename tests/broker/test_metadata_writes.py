"""Each topic and group has a metadata record of its own: a create writes
its record and nothing else (the same bytes at 10 or 1,000 topics), and
concurrent creates do not wait for each other's writes."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.log import FileBackend
from tests.broker.fake import run

WAIT_S = 10.0
SHM = Path("/dev/shm")


def _meta_files(directory: Path) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for path in (directory / "meta").rglob("*"):
        if path.is_file():
            status = path.stat()
            found[str(path.relative_to(directory))] = (status.st_mtime_ns, status.st_size)
    return found


def test_a_create_writes_only_its_own_record_whatever_the_number_of_topics(
    tmp_path: Path,
) -> None:
    base = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else tmp_path
    directory = Path(os.path.realpath(base)) / f"logq-meta-{os.getpid()}-{time.monotonic_ns()}"
    config = BrokerConfig(data_dir=directory)
    count = 1000

    async def scenario(broker: Broker, clock: FakeClock) -> None:
        costs: list[tuple[int, int, set[str]]] = []  # (puts, bytes, files changed) per create
        durations: list[float] = []
        for n in range(count):
            before_stats = broker.backend.metadata_statistics()
            before_files = _meta_files(directory) if n in (10, count - 1) else {}
            started = time.perf_counter()
            await broker.create_topic(f"t{n:05d}", {"partitions": 1})
            durations.append(time.perf_counter() - started)
            after_stats = broker.backend.metadata_statistics()
            changed: set[str] = set()
            if n in (10, count - 1):
                after_files = _meta_files(directory)
                changed = {p for p, s in after_files.items() if before_files.get(p) != s}
            costs.append(
                (
                    after_stats["puts"] - before_stats["puts"],
                    after_stats["bytes_written"] - before_stats["bytes_written"],
                    changed,
                )
            )
        first, last = sum(durations[:100]), sum(durations[-100:])
        print(f"\n{count} creates: first 100 {first * 1000:.0f} ms, last 100 {last * 1000:.0f} ms")
        assert all(puts == 1 for puts, _, _ in costs)
        assert costs[10][1] == costs[-1][1] < 1024  # one small record, the same at 10 and 1,000
        assert costs[10][2] == {"meta/topic/t00010.a"}
        assert costs[-1][2] == {f"meta/topic/t{count - 1:05d}.a"}
        await broker.update_topic("t00000", {"max_deliveries": 7})
        await broker.put_group("t00000", "g", {"mode": "ordered"})

    try:
        run(scenario, config)

        async def reopened(broker: Broker, clock: FakeClock) -> None:
            assert len(broker.topics) == count
            assert broker.topics["t00000"].settings.max_deliveries == 7
            assert broker.group("t00000", "g").settings.mode.value == "ordered"
            assert not (directory / "metadata.json").exists()

        run(reopened, config)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_concurrent_creates_do_not_wait_for_one_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrokerConfig(data_dir=tmp_path, storage_threads=4)
    started, release = threading.Event(), threading.Event()
    put = FileBackend.put

    def held_put(backend: FileBackend, key: str, value: bytes, expected: int | None) -> int:
        # the real write, held for the first topic while the others are made
        if key == "topic/t00":
            started.set()
            release.wait(WAIT_S)
        return put(backend, key, value, expected)

    async def scenario(broker: Broker, clock: FakeClock) -> None:
        monkeypatch.setattr(FileBackend, "put", held_put)
        first = asyncio.create_task(broker.create_topic("t00", {"partitions": 1}))
        assert await asyncio.to_thread(started.wait, WAIT_S)
        others = [broker.create_topic(f"t{i:02d}", {"partitions": 1}) for i in range(1, 40)]
        await asyncio.wait_for(asyncio.gather(*others), WAIT_S)  # while t00's write is held
        assert not first.done()  # not durable yet: not answered
        release.set()
        await first

    run(scenario, config)
    monkeypatch.undo()

    async def reopened(broker: Broker, clock: FakeClock) -> None:
        assert sorted(broker.topics) == [f"t{i:02d}" for i in range(40)]

    run(reopened, config)
