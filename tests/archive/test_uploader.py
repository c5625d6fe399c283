"""Uploading sealed segments: in order, only below the readable end, once
per range whatever fails between the put and the manifest record, backing
off while the store is unreachable, within a bandwidth bound."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from logq.archive.manifest import Copied, Manifest
from logq.archive.reader import ArchiveReader, ChunkCache
from logq.archive.reconcile import reconcile
from logq.archive.store import ArchiveLocation, ArchiveStore, open_store
from logq.archive.uploader import TokenBucket, Uploader
from logq.log import FileLog, LogConfig, PartitionLog, encode_batch


@dataclass
class Partition:
    """A partition as the broker gives it to the uploader: a real log, its
    manifest, and a record step that may fail (the state log's write)."""

    log: PartitionLog
    topic_name: str = "orders"
    index: int = 0
    manifest: Manifest = field(default_factory=Manifest)
    end: int | None = None
    records: list[Copied] = field(default_factory=list)
    fail_records: int = 0

    def readable_end(self) -> int:
        return self.log.next_offset if self.end is None else self.end

    async def record_archived(self, record: Copied) -> None:
        if self.fail_records:
            self.fail_records -= 1
            raise OSError("the state log could not be written")
        self.records.append(record)
        self.manifest.apply(record)


def filled_log(directory: Path, batches: int = 40) -> FileLog:
    log = FileLog(directory, LogConfig(segment_bytes=16 * 1024))
    for n in range(batches):
        log.append(encode_batch([f"m{n}-{i}".encode() * 50 for i in range(5)], timestamp_ms=n))
    return log


async def archived_bytes(store: ArchiveStore, partition: Partition, tmp_path: Path) -> bytes:
    reader = ArchiveReader(store, ChunkCache(tmp_path / "cache", 1 << 30))
    out = b""
    for segment in partition.manifest.segments:
        offset = segment.base_offset
        while offset < segment.next_offset:
            data = await reader.read(segment, offset, 1 << 20)
            out += data
            offset = segment.next_offset  # the reader returns the rest of the segment
    await reader.close()
    return out


def test_sealed_segments_are_archived_in_order_byte_for_byte(
    store: ArchiveStore, tmp_path: Path
) -> None:
    async def main() -> None:
        log = filled_log(tmp_path / "log")
        partition = Partition(log)
        uploader = Uploader(store)
        sealed = log.sealed_segments()
        assert await uploader.upload_due(partition) == len(sealed) >= 3
        assert [r.segment.base_offset for r in partition.records] == [s.base_offset for s in sealed]
        local = b"".join(log.read_sealed(s.base_offset) for s in sealed)
        assert await archived_bytes(store, partition, tmp_path) == local
        assert await uploader.upload_due(partition) == 0  # nothing new
        for n in range(30):
            log.append(encode_batch([b"later" * 100] * 5, timestamp_ms=1000 + n))
        more = len(log.sealed_segments()) - len(sealed)
        assert more > 0 and await uploader.upload_due(partition) == more
        assert partition.manifest.archived_end == log.sealed_segments()[-1].next_offset
        log.close()

    asyncio.run(main())


def test_nothing_at_or_above_the_readable_end_is_archived(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(ArchiveLocation("memory://"))
        log = filled_log(tmp_path / "log")
        sealed = log.sealed_segments()
        partition = Partition(log, end=sealed[1].next_offset)
        assert await Uploader(store).upload_due(partition) == 2
        assert partition.manifest.archived_end == sealed[1].next_offset
        log.close()

    asyncio.run(main())


def test_a_failed_record_leaves_an_orphan_and_the_range_is_archived_once(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(ArchiveLocation("memory://"))
        log = filled_log(tmp_path / "log")
        partition = Partition(log, fail_records=1)
        now = [0.0]
        uploader = Uploader(store, clock=lambda: now[0])
        assert await uploader.upload_due(partition) == 0
        assert uploader.status("orders", 0).last_error is not None
        assert await uploader.upload_due(partition) == 0  # backing off
        now[0] += 10
        sealed = log.sealed_segments()
        assert await uploader.upload_due(partition) == len(sealed)
        objects = [info async for info in store.list("topics")]
        assert len(objects) == len(sealed) + 1  # the first try's object, orphaned
        report = await reconcile(
            store, "topics", partition.manifest.holds, now_ms=10**15, min_age_ms=0
        )
        assert len(report.removed) == 1
        assert all([partition.manifest.holds(info.key) async for info in store.list("topics")])
        log.close()

    asyncio.run(main())


def test_an_unreachable_store_is_retried_with_backoff(tmp_path: Path) -> None:
    async def main() -> None:
        root = tmp_path / "archive"
        store = open_store(ArchiveLocation(f"file://{root}"))
        shutil.rmtree(root)
        root.write_bytes(b"not a directory")  # every put fails
        log = filled_log(tmp_path / "log")
        partition = Partition(log)
        now = [0.0]
        uploader = Uploader(store, clock=lambda: now[0])
        waits = []
        for _ in range(4):
            assert await uploader.upload_due(partition) == 0
            status = uploader.status("orders", 0)
            waits.append(status.retry_at - now[0])
            now[0] = status.retry_at
        assert waits == [1.0, 2.0, 4.0, 8.0]
        assert partition.records == [] and uploader.stats.failures == 4
        root.unlink()
        root.mkdir()
        assert await uploader.upload_due(partition) == len(log.sealed_segments())
        assert uploader.status("orders", 0).last_error is None
        log.close()

    asyncio.run(main())


def test_the_bandwidth_bound_spaces_puts() -> None:
    now = [0.0]
    bucket = TokenBucket(1000.0, clock=lambda: now[0])
    assert bucket.wait_for(600) == 0.0
    assert bucket.wait_for(600) == pytest.approx(0.2)
    now[0] += 1.0
    assert bucket.wait_for(500) == 0.0  # the burst refilled
    assert TokenBucket(0.0).wait_for(10**9) == 0.0  # no bound
