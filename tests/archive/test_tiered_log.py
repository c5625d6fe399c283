"""A partition log that reaches into the archive: every read below the
local disk answered from there, byte for byte, through the log's own
interface, as the broker's storage threads call it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logq.archive.tiered_log import TieredLog
from logq.log import LogError, OffsetOutOfRangeError, PartitionLog, read_past_damage
from tests.archive.test_archiver import HOUR, Partition, archiver_for, horizons


def test_reads_and_time_lookups_reach_below_the_local_disk(tmp_path: Path) -> None:
    async def main() -> None:
        partition = Partition(tmp_path / "log")
        for hour in range(8):
            partition.fill(12, timestamp_ms=hour * HOUR)
        log = partition.log
        everything = b"".join(r.data for r in read_past_damage(log, 0, 1 << 20))
        archiver = archiver_for(partition, tmp_path, [9 * HOUR])
        part = archiver.get("t", 0)
        assert part is not None
        tiered: PartitionLog = TieredLog(log, part, asyncio.get_running_loop())
        await archiver.tick(part, horizons(local_retention_bytes=24 * 1024))
        assert log.first_offset > 0 and tiered.first_offset == 0
        assert tiered.next_offset == log.next_offset

        def read_all() -> bytes:  # as a storage thread reads
            return b"".join(r.data for r in read_past_damage(tiered, 0, 1 << 20))

        assert await asyncio.to_thread(read_all) == everything
        # a time lookup: at or before the first message that new
        first_of_hour_2 = await asyncio.to_thread(tiered.offset_for_time, 2 * HOUR)
        assert first_of_hour_2 is not None and first_of_hour_2 < log.first_offset
        assert first_of_hour_2 <= 24 * 5  # hour 2 starts at the 25th batch, 5 records each
        assert await asyncio.to_thread(tiered.offset_for_time, 7 * HOUR) is not None
        # the loop's own thread must not wait for itself
        with pytest.raises(LogError, match="event loop"):
            tiered.read(0, 1000)
        # below the topic's start: out of range, as for any log
        await archiver.tick(part, horizons(retention_bytes=log.size_bytes))
        start = tiered.first_offset
        assert start > 0
        with pytest.raises(OffsetOutOfRangeError):
            await asyncio.to_thread(tiered.read, start - 1, 1000)
        await archiver.close()
        log.close()

    asyncio.run(main())
