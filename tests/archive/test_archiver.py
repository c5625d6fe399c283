"""The archive of a broker's partitions: uploads recorded in the state log
and recovered from it, local disk trimmed to what is archived, reads that
reach below it, the audit horizon, deletion after the grace, a deleted
topic's objects removed, and the manifest's copy for a lost disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from logq.archive.archiver import Archiver, restored_state
from logq.archive.retention import Horizons
from logq.archive.settings import ArchiverSettings
from logq.archive.store import ArchiveLocation, open_store
from logq.log import FileLog, LogConfig, encode_batch, read_past_damage

HOUR = 3_600_000


class Partition:
    """A real log and its state log's archive records (as the broker keeps them)."""

    def __init__(self, directory: Path) -> None:
        self.log = FileLog(directory, LogConfig(segment_bytes=16 * 1024))
        self.records: list[bytes] = []

    def fill(self, batches: int, timestamp_ms: int) -> None:
        for n in range(batches):
            values = [f"{timestamp_ms}-{n}-{i}".encode() * 40 for i in range(5)]
            self.log.append(encode_batch(values, timestamp_ms=timestamp_ms))


def horizons(**given: int | None) -> Horizons:
    values: dict[str, int | None] = dict.fromkeys(
        (
            "retention_ms",
            "retention_bytes",
            "local_retention_ms",
            "local_retention_bytes",
            "archive_retention_ms",
        )
    )
    values.update(given)
    return Horizons(**values)


def archiver_for(partition: Partition, tmp_path: Path, now: list[int]) -> Archiver:
    store = open_store(ArchiveLocation(f"file://{tmp_path / 'store'}"))

    def write_record(topic: str, index: int, record: bytes) -> asyncio.Future[None]:
        partition.records.append(record)  # handed over now, as the broker's writer takes it
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    archiver = Archiver(
        store,
        tmp_path / "cache",
        ArchiverSettings(purge_grace_ms=HOUR),
        write_record=write_record,
        describe=lambda topic, index: {"groups": {"audit": {"committed": 7}}},
        now_ms=lambda: now[0],
    )
    archiver.attach("t", 0, partition.log, lambda: partition.log.next_offset, None, [])
    return archiver


def local_bytes(log: FileLog, start: int, end: int) -> bytes:
    return b"".join(r.data for r in read_past_damage(log, start, 1 << 20) if r.first_offset < end)


def test_uploads_are_recorded_and_recovered_from_the_state_log(tmp_path: Path) -> None:
    async def main() -> None:
        partition = Partition(tmp_path / "log")
        partition.fill(60, timestamp_ms=0)
        now = [10 * HOUR]
        archiver = archiver_for(partition, tmp_path, now)
        part = archiver.get("t", 0)
        assert part is not None
        await archiver.tick(part, horizons())
        sealed = partition.log.sealed_segments()
        assert part.manifest.archived_end == sealed[-1].next_offset
        assert len(partition.records) == len(sealed)
        # a restart: the manifest from the snapshot, or from the records alone
        snapshot = archiver.snapshot("t", 0)
        again = archiver_for(partition, tmp_path / "again", now)
        restored = again.attach("t", 0, partition.log, lambda: 0, None, partition.records)
        assert restored.manifest.state() == part.manifest.state()
        from_snapshot = again.attach("t", 0, partition.log, lambda: 0, snapshot, [])
        assert from_snapshot.manifest.state() == part.manifest.state()
        # the store's copy of the newest version, for a broker that lost its disk
        versions = await archiver.archived_topics()
        assert versions == {"t": {0: part.manifest.version}}
        document = await archiver.manifest_copy("t", 0, part.manifest.version)
        assert document["groups"] == {"audit": {"committed": 7}}
        assert restored_state(document).segments == part.manifest.segments
        await archiver.close()
        await again.close()
        partition.log.close()

    asyncio.run(main())


def test_local_disk_keeps_the_tail_and_reads_below_it_come_from_the_archive(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        partition = Partition(tmp_path / "log")
        partition.fill(80, timestamp_ms=0)
        original = local_bytes(partition.log, 0, partition.log.next_offset)
        now = [HOUR]
        archiver = archiver_for(partition, tmp_path, now)
        part = archiver.get("t", 0)
        assert part is not None
        await archiver.tick(part, horizons(local_retention_bytes=20 * 1024))
        log = partition.log
        assert log.first_offset > 0  # archived segments left the disk
        assert log.size_bytes <= 20 * 1024 + 16 * 1024
        assert archiver.start_offset("t", 0, log.first_offset) == 0
        read = b""
        offset = 0
        while offset < log.first_offset:
            data = await archiver.read("t", 0, offset, 1 << 20)
            assert data
            read += data
            segment = part.manifest.segment_for(offset)
            assert segment is not None
            offset = segment.next_offset
        assert read + local_bytes(log, log.first_offset, log.next_offset) == original
        status = archiver.status("t")[0]
        assert status.archived_from == 0 and status.local_from == log.first_offset
        assert status.upload_lag_bytes == 0
        await archiver.close()
        log.close()

    asyncio.run(main())


def test_past_retention_only_audit_reads_see_it_then_it_is_deleted(tmp_path: Path) -> None:
    async def main() -> None:
        partition = Partition(tmp_path / "log")
        partition.fill(30, timestamp_ms=0)  # old
        partition.fill(30, timestamp_ms=50 * HOUR)  # middle-aged
        partition.fill(30, timestamp_ms=99 * HOUR)  # recent
        now = [100 * HOUR]
        archiver = archiver_for(partition, tmp_path, now)
        part = archiver.get("t", 0)
        assert part is not None
        settings = horizons(retention_ms=10 * HOUR, archive_retention_ms=80 * HOUR)
        await archiver.tick(part, settings)
        manifest = part.manifest
        start = manifest.start_offset
        assert start > 0
        assert await archiver.read("t", 0, start - 1, 1000) is None  # gone for readers
        assert manifest.first_offset is not None and manifest.first_offset < start
        audit = await archiver.read("t", 0, start - 1, 1000, include_deleted=True)
        assert audit  # kept for audit
        retiring = sorted(manifest.retiring)
        assert retiring  # the oldest, past the audit horizon
        store_keys = [info.key async for info in archiver.store.list("topics/t/0")]
        assert all(key in store_keys for key in retiring)  # deleted only after the grace
        now[0] += 2 * HOUR
        await archiver.tick(part, settings)
        assert manifest.retiring == {}
        left = [info.key async for info in archiver.store.list("topics/t/0")]
        assert not any(key in left for key in retiring)
        await archiver.close()
        partition.log.close()

    asyncio.run(main())


def test_a_deleted_topic_leaves_no_object(tmp_path: Path) -> None:
    async def main() -> None:
        partition = Partition(tmp_path / "log")
        partition.fill(40, timestamp_ms=0)
        archiver = archiver_for(partition, tmp_path, [HOUR])
        part = archiver.get("t", 0)
        assert part is not None
        await archiver.tick(part, horizons())
        assert [info async for info in archiver.store.list("topics/t")]
        removed = await archiver.delete_topic("t")
        assert removed > 0
        assert [info async for info in archiver.store.list("topics/t")] == []
        assert archiver.get("t", 0) is None
        await archiver.close()
        partition.log.close()

    asyncio.run(main())


def test_a_quiet_partition_has_its_last_data_archived_too(tmp_path: Path) -> None:
    async def main() -> None:
        partition = Partition(tmp_path / "log")
        partition.fill(45, timestamp_ms=0)  # a few sealed segments and a part-filled one
        now = [10 * 60_000]
        archiver = archiver_for(partition, tmp_path, now)
        part = archiver.get("t", 0)
        assert part is not None
        await archiver.tick(part, horizons())
        assert part.manifest.archived_end is not None
        assert part.manifest.archived_end < partition.log.next_offset  # not old enough yet
        now[0] = 2 * HOUR
        await archiver.tick(part, horizons())
        assert part.manifest.archived_end == partition.log.next_offset
        await archiver.close()
        partition.log.close()

    asyncio.run(main())
