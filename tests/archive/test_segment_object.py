"""One archived segment as one object: packed from a real log's sealed
segment, read back by ranged requests through each store, and refused
whole where a byte is wrong."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from logq.archive.errors import ArchiveDamagedError
from logq.archive.segment_object import (
    TAIL_READ_BYTES,
    Footer,
    decode_footer,
    footer_span,
    pack_segment,
    whole_batches,
)
from logq.archive.store import ArchiveStore
from logq.log import FileLog, LogConfig, decode_batch, encode_batch
from logq.log.batch import iter_headers


def sealed_segment(tmp_path: Path, batches: int = 300, seed: int = 7) -> tuple[bytes, list[bytes]]:
    """The bytes of a real sealed segment, and the values it holds in order."""
    rng = random.Random(seed)
    log = FileLog(tmp_path / "log", LogConfig(segment_bytes=1 << 30))
    values: list[bytes] = []
    for n in range(batches):
        count = rng.randint(1, 20)
        batch_values = [rng.randbytes(rng.randint(1, 3000)) for _ in range(count)]
        log.append(encode_batch(batch_values, timestamp_ms=1_000_000 + n * 10))
        values.extend(batch_values)
    log.roll()
    data = log._segments[0].log_path.read_bytes()
    log.close()
    return data, values


def values_of(data: bytes) -> list[bytes]:
    found: list[bytes] = []
    for position, _ in iter_headers(data):
        found.extend(v or b"" for v in decode_batch(data, position).values)
    return found


async def read_footer(store: ArchiveStore, key: str) -> Footer:
    size = (await store.head(key)).size
    tail = await store.get_range(key, max(0, size - TAIL_READ_BYTES), size)
    start, _ = footer_span(size, tail)
    if start < size - len(tail):  # indexes larger than the first read
        tail = await store.get_range(key, start, size)
    footer = decode_footer(size, tail)
    if footer.data_length < size - len(tail):
        tail = await store.get_range(key, footer.data_length, size)
        footer = decode_footer(size, tail)
    return footer


async def read_from(
    store: ArchiveStore, key: str, footer: Footer, offset: int, chunk: int
) -> bytes:
    """Every batch from the one holding `offset` on, read in ranged chunks."""
    position = footer.position_of(offset)
    out = bytearray()
    pending = b""
    while position < footer.data_length:
        start = position
        data = pending + await store.get_range(
            key, position + len(pending), min(footer.data_length, position + len(pending) + chunk)
        )
        got, position = whole_batches(data, start, offset, footer)
        pending = data[position - start :]
        out += got
    return bytes(out)


def test_a_segment_packs_and_reads_back_byte_for_byte(store: ArchiveStore, tmp_path: Path) -> None:
    data, values = sealed_segment(tmp_path)
    packed, footer = pack_segment(data)
    assert footer.base_offset == 0 and footer.next_offset == len(values)
    assert footer.data_length == len(data)
    assert len(footer.offset_index) > 8  # sparse: one entry per 64 KiB

    async def main() -> None:
        await store.put_new("seg", packed)
        read = await read_footer(store, "seg")
        assert read == footer
        assert values_of(await read_from(store, "seg", read, 0, 50_000)) == values
        # from the middle: the batch holding the offset, then the rest
        middle = len(values) // 2
        tail = values_of(await read_from(store, "seg", read, middle, 7_000))
        assert tail[-(len(values) - middle) :] == values[middle:]
        assert len(tail) - (len(values) - middle) < 20  # starts at that offset's batch

    asyncio.run(main())


def test_times_find_an_offset_at_or_before_the_first_batch_that_late(tmp_path: Path) -> None:
    data, _ = sealed_segment(tmp_path)
    _, footer = pack_segment(data)
    headers = [header for _, header in iter_headers(data)]
    for timestamp in [0, 1_000_000, 1_000_555, 1_001_234, footer.max_timestamp]:
        first = next(h.base_offset for h in headers if h.max_timestamp >= timestamp)
        found = footer.offset_for_time(timestamp)
        assert found is not None and found <= first
    assert footer.offset_for_time(footer.max_timestamp + 1) is None


@pytest.mark.parametrize("where", ["data", "index", "footer", "trailer"])
def test_a_damaged_object_is_refused_not_served(tmp_path: Path, where: str) -> None:
    data, _ = sealed_segment(tmp_path, batches=60)
    packed, footer = pack_segment(data)
    damaged = bytearray(packed)
    index_end = footer.data_length + len(footer.offset_index) + len(footer.time_index)
    spot = {
        "data": footer.data_length // 2,
        "index": footer.data_length + 3,
        "footer": index_end + 9,
        "trailer": len(packed) - 2,
    }[where]
    damaged[spot] ^= 0x40
    with pytest.raises(ArchiveDamagedError):
        decoded = decode_footer(len(damaged), bytes(damaged))
        got, _ = whole_batches(bytes(damaged[: decoded.data_length]), 0, 0, decoded)
        assert values_of(got) == []  # never reached: the data does not verify


def test_a_damaged_segment_is_never_packed(tmp_path: Path) -> None:
    data, _ = sealed_segment(tmp_path, batches=40)
    damaged = bytearray(data)
    damaged[len(data) // 3] ^= 1
    with pytest.raises(ArchiveDamagedError, match=r"does not verify|offset|length"):
        pack_segment(bytes(damaged))
    with pytest.raises(ArchiveDamagedError):
        pack_segment(data[:-5])  # a torn last batch
    with pytest.raises(ArchiveDamagedError):
        pack_segment(b"")
