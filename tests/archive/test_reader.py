"""Reading archived segments through the chunk cache: byte for byte from
any offset, a second pass from the cache, merged misses, a bounded cache,
read-ahead on scans, and damage refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logq.archive.errors import ArchiveDamagedError
from logq.archive.manifest import ArchivedSegment
from logq.archive.reader import ArchiveReader, ChunkCache
from logq.archive.segment_object import pack_segment
from logq.archive.store import ArchiveLocation, ArchiveStore, open_store
from tests.archive.test_segment_object import sealed_segment, values_of

CHUNK = 64 * 1024


async def archived(
    store: ArchiveStore, tmp_path: Path, key: str = "seg", batches: int = 300
) -> tuple[ArchivedSegment, list[bytes], bytes]:
    data, values = sealed_segment(tmp_path / key, batches=batches)
    packed, footer = pack_segment(data)
    await store.put_new(key, packed)
    segment = ArchivedSegment(
        key,
        footer.base_offset,
        footer.next_offset,
        len(packed),
        footer.first_timestamp,
        footer.max_timestamp,
    )
    return segment, values, packed


async def read_all(reader: ArchiveReader, segment: ArchivedSegment, offset: int) -> list[bytes]:
    found: list[bytes] = []
    while offset < segment.next_offset:
        data = await reader.read(segment, offset, 100_000)
        assert data
        got = values_of(data)
        first = int.from_bytes(data[:8], "little", signed=True)
        found.extend(got[offset - first :])
        offset = first + len(got)
    return found


def test_any_offset_reads_back_and_a_second_pass_comes_from_the_cache(
    store: ArchiveStore, tmp_path: Path
) -> None:
    async def main() -> None:
        segment, values, _ = await archived(store, tmp_path)
        reader = ArchiveReader(store, ChunkCache(tmp_path / "cache", 1 << 30), chunk_bytes=CHUNK)
        assert await read_all(reader, segment, 0) == values
        middle = len(values) // 3
        assert await read_all(reader, segment, middle) == values[middle:]
        requests = reader.stats.requests
        assert reader.stats.read_ahead > 0  # the scan read ahead
        assert await read_all(reader, segment, 0) == values
        assert reader.stats.requests == requests  # all from the cache
        assert reader.stats.hits > 0
        await reader.close()

    asyncio.run(main())


def test_concurrent_misses_of_a_chunk_make_one_request(tmp_path: Path) -> None:
    store = open_store(ArchiveLocation("memory://"))

    async def main() -> None:
        segment, _values, _ = await archived(store, tmp_path)
        reader = ArchiveReader(store, ChunkCache(tmp_path / "cache", 1 << 30), chunk_bytes=CHUNK)
        await reader.footer(segment)
        before = reader.stats.requests
        results = await asyncio.gather(*(reader.read(segment, 0, 1000) for _ in range(10)))
        assert len(set(results)) == 1
        assert reader.stats.requests == before + 1
        assert reader.stats.merged == 9
        await reader.close()

    asyncio.run(main())


def test_the_cache_stays_within_its_bound(tmp_path: Path) -> None:
    store = open_store(ArchiveLocation("memory://"))

    async def main() -> None:
        segment, values, _ = await archived(store, tmp_path)
        cache = ChunkCache(tmp_path / "cache", 3 * CHUNK)
        reader = ArchiveReader(store, cache, chunk_bytes=CHUNK)
        assert await read_all(reader, segment, 0) == values
        await reader.close()
        assert cache.bytes <= 3 * CHUNK
        assert reader.stats.evicted > 0
        on_disk = sum(p.stat().st_size for p in (tmp_path / "cache").iterdir())
        assert on_disk == cache.bytes

    asyncio.run(main())


def test_a_damaged_chunk_is_refused_and_not_kept(tmp_path: Path) -> None:
    store = open_store(ArchiveLocation("memory://"))

    async def main() -> None:
        data, _values = sealed_segment(tmp_path / "src", batches=200)
        packed, footer = pack_segment(data)
        damaged = bytearray(packed)
        damaged[CHUNK + 100] ^= 0x10  # inside the second chunk's data
        await store.put_new("bad", bytes(damaged))
        segment = ArchivedSegment(
            "bad",
            footer.base_offset,
            footer.next_offset,
            len(packed),
            footer.first_timestamp,
            footer.max_timestamp,
        )
        cache = ChunkCache(tmp_path / "cache", 1 << 30)
        reader = ArchiveReader(store, cache, chunk_bytes=CHUNK)
        with pytest.raises(ArchiveDamagedError):
            await read_all(reader, segment, 0)
        assert not cache.has(ChunkCache.name("bad", 1))
        await reader.close()

    asyncio.run(main())


def test_an_object_that_is_not_the_manifests_range_is_refused(tmp_path: Path) -> None:
    store = open_store(ArchiveLocation("memory://"))

    async def main() -> None:
        segment, _, _ = await archived(store, tmp_path)
        wrong = ArchivedSegment(
            segment.key, segment.base_offset + 5, segment.next_offset, segment.size, 0, 0
        )
        reader = ArchiveReader(store, ChunkCache(tmp_path / "cache", 1 << 30))
        with pytest.raises(ArchiveDamagedError, match="the manifest says"):
            await reader.footer(wrong)

    asyncio.run(main())
