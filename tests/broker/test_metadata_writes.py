"""The topics' and groups' settings are written after each change, and
changes made meanwhile share one write: a thousand topics made at once
cost a few writes of all the topics, not a thousand."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.storage import Storage
from tests.broker.fake import run

WAIT_S = 10.0


def test_changes_made_during_a_write_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrokerConfig(data_dir=tmp_path, storage_threads=4)
    writes: list[list[str]] = []

    async def scenario(broker: Broker, clock: FakeClock) -> None:
        started, release = threading.Event(), threading.Event()
        save = Storage.save_metadata

        def held_save(storage: Storage, metadata: dict[str, Any]) -> None:
            # the real write, held the first time while more topics are made
            writes.append(sorted(metadata["topics"]))
            if len(writes) == 1:
                started.set()
                release.wait(WAIT_S)
            save(storage, metadata)

        monkeypatch.setattr(Storage, "save_metadata", held_save)
        first = asyncio.create_task(broker.create_topic("t00", {"partitions": 1}))
        assert await asyncio.to_thread(started.wait, WAIT_S)
        others = [
            asyncio.create_task(broker.create_topic(f"t{i:02d}", {"partitions": 1}))
            for i in range(1, 40)
        ]
        deadline = time.monotonic() + WAIT_S
        while len(broker.topics) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the others open their logs on storage threads
        assert not any(task.done() for task in others)  # none is durable yet
        release.set()
        await asyncio.gather(first, *others)

    run(scenario, config)
    names = [f"t{i:02d}" for i in range(40)]
    assert writes == [["t00"], names]

    async def reopened(broker: Broker, clock: FakeClock) -> None:
        assert sorted(broker.topics) == names

    monkeypatch.undo()
    run(reopened, config)
