"""The storage contract: one suite, run against MemoryLog and FileLog alike.

Every test in the first part takes the `make_log` (or `log`) fixture, which
is parametrized over both storages with the same LogConfig, so the two can
never drift apart. The last part covers what only a log on disk can do:
close, reopen and carry on.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from logq.log import (
    BatchTooLargeError,
    CorruptBatchError,
    FileLog,
    InvalidBatchError,
    LogClosedError,
    LogConfig,
    MemoryLog,
    OffsetOutOfRangeError,
    PartitionLog,
    ReadResult,
    Record,
    compression,
    decode_batch,
    encode_batch,
    read_header,
)
from logq.log.batch import (
    ATTRIBUTES_AT,
    CRC_AT,
    HEADER,
    HEADER_SIZE,
    VERSION_AT,
    BatchHeader,
    compute_crc,
    iter_headers,
)
from logq.log.config import KIB, MIB

CONFIG = LogConfig(
    segment_bytes=4 * KIB,
    segment_ms=60_000,
    index_interval_bytes=64,  # dense sparse indexes, so lookups use them
    batch_bytes_max=8 * KIB,
    batch_records_max=100,
    retention_ms=None,
    retention_bytes=None,
)
BIG_READ = 64 * MIB  # more than any segment here: a read returns a whole segment

MakeLog = Callable[[LogConfig], PartitionLog]


@pytest.fixture(params=["memory", "file"])
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeLog]:
    """Build logs of the parametrized kind; every log built is closed at teardown."""
    opened: list[PartitionLog] = []

    def make(config: LogConfig) -> PartitionLog:
        log: PartitionLog
        if request.param == "memory":
            log = MemoryLog(config)
        else:
            log = FileLog(tmp_path / f"log-{len(opened)}", config)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


@pytest.fixture
def log(make_log: MakeLog) -> PartitionLog:
    return make_log(CONFIG)


# -- helpers ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rec:
    """One record offered to the log, before it has an offset."""

    value: bytes | None
    key: bytes | None = None
    headers: dict[str, str] | None = None
    timestamp: int = 0


def batch_of(records: Sequence[Rec], codec: int = compression.NONE) -> bytes:
    return encode_batch(
        [record.value for record in records],
        keys=[record.key for record in records],
        headers=[record.headers for record in records],
        timestamps=[record.timestamp for record in records],
        codec=codec,
    )


def simple_batch(
    count: int = 1, *, value_size: int = 10, timestamp: int = 0, codec: int = compression.NONE
) -> bytes:
    return encode_batch([b"v" * value_size] * count, timestamp_ms=timestamp, codec=codec)


def expected(records: Sequence[Rec], base_offset: int) -> list[Record]:
    return [
        Record(base_offset + index, r.timestamp, r.key, r.value, dict(r.headers or {}))
        for index, r in enumerate(records)
    ]


def headers_in(data: bytes) -> list[BatchHeader]:
    """Headers of the whole batches `data` is made of (it must hold nothing else)."""
    found: list[BatchHeader] = []
    position = 0
    while position < len(data):
        header = read_header(data, position)
        found.append(header)
        position += header.size
    assert position == len(data), "a read returned a partial batch"
    return found


def decode_all(data: bytes) -> list[Record]:
    records: list[Record] = []
    position = 0
    for header in headers_in(data):
        records.extend(decode_batch(data, position).records())
        position += header.size
    return records


def check_read_result(result: ReadResult) -> None:
    """The fields of a non-empty read agree with the batches it holds."""
    headers = headers_in(result.data)
    assert headers, "a non-empty read holds at least one batch"
    assert result.first_offset == headers[0].base_offset
    assert result.next_offset == headers[-1].next_offset
    assert result.batch_count == len(headers)
    assert result.record_count == sum(header.record_count for header in headers)
    for before, after in itertools.pairwise(headers):
        assert after.base_offset == before.next_offset


def read_all(
    log: PartitionLog, start: int | None = None, max_bytes: int = BIG_READ
) -> list[Record]:
    """Every record from `start` (default: the log start) to the readable
    end, by looping reads."""
    offset = log.first_offset if start is None else start
    records: list[Record] = []
    while offset < log.readable_offset:
        result = log.read(offset, max_bytes)
        check_read_result(result)
        assert result.first_offset <= offset < result.next_offset
        records.extend(r for r in decode_all(result.data) if r.offset >= offset)
        offset = result.next_offset
    assert log.read(offset, max_bytes).data == b""
    return records


def segments_of(log: PartitionLog) -> list[list[BatchHeader]]:
    """The batches of each non-empty segment: a large read stops at a segment's end."""
    segments: list[list[BatchHeader]] = []
    offset = log.first_offset
    while offset < log.next_offset:
        result = log.read(offset, BIG_READ)
        segments.append(headers_in(result.data))
        offset = result.next_offset
    return segments


def brute_offset_for_time(records: Sequence[Record], timestamp: int) -> int | None:
    return next((r.offset for r in records if r.timestamp >= timestamp), None)


def with_crc(batch: bytes | bytearray) -> bytes:
    """`batch` with its CRC32C recomputed, so only the deliberate damage remains."""
    data = bytearray(batch)
    struct.pack_into("<I", data, CRC_AT, compute_crc(data, 0, len(data)))
    return bytes(data)


def patched(batch: bytes, **fields: int) -> bytes:
    """`batch` with header fields replaced and a CRC that matches again."""
    header = read_header(batch)._replace(**fields)
    return with_crc(HEADER.pack(*header) + batch[HEADER_SIZE:])


def fill(log: PartitionLog, batches: Sequence[bytes]) -> list[int]:
    """Append `batches`; return their base offsets, checking offsets are dense."""
    bases: list[int] = []
    for batch in batches:
        header = read_header(batch)
        expected_base = log.next_offset
        result = log.append(batch)
        assert result.base_offset == expected_base
        assert result.last_offset == expected_base + header.record_count - 1
        assert log.next_offset == result.next_offset
        bases.append(result.base_offset)
    return bases


# -- append and read -----------------------------------------------------------


MIXED = [
    Rec(b"hello", key=b"k1", headers={"trace": "abc", "name": "caf\u00e9"}, timestamp=1_000),
    Rec(None, key=None, timestamp=999),  # a tombstone, older than the record before
    Rec(b"", key=b"", headers={}, timestamp=1_005),
    Rec(b"\x00\xff" * 50, key=b"k1", headers={"": ""}, timestamp=1_001),
]


def test_append_read_round_trip(log: PartitionLog) -> None:
    batches = [MIXED, MIXED[1:3], [Rec(b"solo", key=b"s", timestamp=7)], MIXED[::-1]]
    want: list[Record] = []
    for records in batches:
        base = log.next_offset
        result = log.append(batch_of(records))
        assert result.base_offset == base
        want.extend(expected(records, base))
    assert log.first_offset == 0
    assert log.next_offset == len(want)
    assert log.durable_offset == log.next_offset
    assert read_all(log) == want
    assert read_all(log, max_bytes=1) == want  # one batch per read


def test_append_many_stores_each_batch_in_order_and_refuses_only_the_bad(
    log: PartitionLog,
) -> None:
    good = [MIXED, MIXED[1:3], MIXED[::-1]]
    bad = simple_batch()[:-3]  # cut short: refused, the others are stored
    results = log.append_many([batch_of(good[0]), bad, batch_of(good[1]), batch_of(good[2])])
    assert isinstance(results[1], InvalidBatchError)
    want: list[Record] = []
    base = 0
    for result, records in zip([results[0], *results[2:]], good, strict=True):
        assert not isinstance(result, Exception)
        assert result.base_offset == base
        want.extend(expected(records, base))
        base = result.next_offset
    assert log.durable_offset == log.next_offset == len(want)
    assert read_all(log) == want
    assert log.append_many([]) == []


def test_batches_are_stored_and_served_as_they_came(log: PartitionLog) -> None:
    first, second = batch_of(MIXED), batch_of(MIXED[:2])
    fill(log, [first, second])
    data = log.read(0, BIG_READ).data
    assert data == first + struct.pack("<q", 4) + second[8:]  # only the base offset is set
    assert log.size_bytes == len(first) + len(second)


def test_offsets_are_dense_across_many_batches(log: PartitionLog) -> None:
    counts = [1 + index % 7 for index in range(150)]
    bases = fill(log, [simple_batch(count, value_size=40) for count in counts])
    assert bases == [sum(counts[:index]) for index in range(len(counts))]
    end = sum(counts)
    assert log.next_offset == end
    assert log.segment_count > 5
    for offset in range(end):
        result = log.read(offset, 1)
        check_read_result(result)
        assert result.batch_count == 1
        assert result.first_offset <= offset < result.next_offset
        assert result.log_end_offset == end
    assert [record.offset for record in read_all(log)] == list(range(end))


def test_read_from_the_middle_of_a_batch(log: PartitionLog) -> None:
    first = [Rec(f"a{index}".encode(), timestamp=index) for index in range(5)]
    second = [Rec(f"b{index}".encode(), timestamp=10 + index) for index in range(5)]
    fill(log, [batch_of(first), batch_of(second)])
    result = log.read(7, BIG_READ)
    check_read_result(result)
    assert (result.first_offset, result.next_offset) == (5, 10)
    assert decode_all(result.data) == expected(second, 5)
    assert read_all(log, start=7) == expected(second, 5)[2:]
    result = log.read(3, BIG_READ)  # the first batch and everything after it
    assert (result.first_offset, result.next_offset, result.batch_count) == (0, 10, 2)


def test_max_bytes_bounds_a_read_but_always_returns_one_batch(log: PartitionLog) -> None:
    batches = [simple_batch(2, value_size=100) for _ in range(10)]
    size = len(batches[0])
    assert all(len(batch) == size for batch in batches)
    assert 10 * size <= CONFIG.segment_bytes  # all in the first segment
    fill(log, batches)
    for max_bytes, batch_count in [
        (-5, 1),
        (0, 1),
        (1, 1),
        (size - 1, 1),
        (size, 1),
        (2 * size - 1, 1),
        (2 * size, 2),
        (3 * size + size // 2, 3),
        (10 * size, 10),
        (BIG_READ, 10),
    ]:
        result = log.read(0, max_bytes)
        check_read_result(result)
        assert result.batch_count == batch_count, max_bytes
        assert len(result.data) == batch_count * size
        assert result.record_count == 2 * batch_count
    result = log.read(5, 2 * size)  # counted from the batch holding the offset
    assert (result.first_offset, result.batch_count) == (4, 2)


def test_a_batch_larger_than_max_bytes_is_read_whole(log: PartitionLog) -> None:
    large = simple_batch(3, value_size=1_000)
    fill(log, [large, simple_batch()])
    result = log.read(1, 100)
    assert result.data == large
    assert result.batch_count == 1
    assert result.next_offset == 3


def test_a_read_never_crosses_into_the_next_segment(log: PartitionLog) -> None:
    fill(log, [simple_batch(2), simple_batch(2)])
    log.roll()
    fill(log, [simple_batch(2), simple_batch(2)])
    assert log.segment_count == 2
    first = log.read(1, BIG_READ)
    assert (first.first_offset, first.next_offset, first.batch_count) == (0, 4, 2)
    second = log.read(first.next_offset, BIG_READ)
    assert (second.first_offset, second.next_offset, second.batch_count) == (4, 8, 2)


def test_reading_at_the_end_returns_empty_data(log: PartitionLog) -> None:
    result = log.read(0, BIG_READ)
    assert (result.data, result.batch_count, result.record_count) == (b"", 0, 0)
    assert result.log_end_offset == 0
    fill(log, [simple_batch(3)])
    result = log.read(3, BIG_READ)
    assert (result.data, result.batch_count, result.record_count) == (b"", 0, 0)
    assert result.next_offset == 3
    assert result.log_end_offset == 3
    log.roll()  # the end is now the base of an empty active segment
    result = log.read(3, BIG_READ)
    assert (result.data, result.log_end_offset) == (b"", 3)


def test_reads_stop_at_the_readable_end(log: PartitionLog) -> None:
    """A batch written but not yet made durable by a commit (where the log
    needs one) lies past the readable end: reads stop before it until the
    commit marks it durable; a log that needs no commit reads it at once."""
    log.append(batch_of(MIXED))
    assert log.readable_offset == log.durable_offset == log.next_offset == len(MIXED)
    log.write(batch_of(MIXED[:2]))
    assert log.next_offset == len(MIXED) + 2
    if log.needs_commit:
        assert log.readable_offset == len(MIXED)
        result = log.read(len(MIXED), BIG_READ)
        assert (result.data, result.log_end_offset) == (b"", len(MIXED))
        assert read_all(log) == expected(MIXED, 0)
        log.mark_durable(log.write_point())
    assert log.readable_offset == log.next_offset
    assert read_all(log) == expected(MIXED, 0) + expected(MIXED[:2], len(MIXED))


def test_reads_outside_the_log_raise(log: PartitionLog) -> None:
    for offset in (-1, 1, 100):
        with pytest.raises(OffsetOutOfRangeError):
            log.read(offset, BIG_READ)
    fill(log, [simple_batch(3), simple_batch(2)])
    for offset in (-1, 6, 7, 2**40):
        with pytest.raises(OffsetOutOfRangeError):
            log.read(offset, BIG_READ)


# -- rolling ----------------------------------------------------------------------


def test_segments_roll_by_size(make_log: MakeLog) -> None:
    log = make_log(CONFIG)
    batches = [simple_batch(count, value_size=200) for count in (1, 4, 2, 3, 1, 4, 2, 4, 3, 1)]
    batches += [simple_batch(2, value_size=300) for _ in range(12)]
    fill(log, batches)
    segments = segments_of(log)
    assert len(segments) == log.segment_count > 3
    for index, segment in enumerate(segments):
        total = sum(header.size for header in segment)
        assert total <= CONFIG.segment_bytes
        if index + 1 < len(segments):  # it rolled because the next batch did not fit
            assert total + segments[index + 1][0].size > CONFIG.segment_bytes
    assert log.size_bytes == sum(len(batch) for batch in batches)


def test_sealed_segments_are_listed_and_read_back_as_stored(make_log: MakeLog) -> None:
    log = make_log(CONFIG)
    batches = [simple_batch(2, value_size=300) for _ in range(14)]
    fill(log, batches)
    sealed = log.sealed_segments()
    assert len(sealed) == log.segment_count - 1 >= 2
    assert sealed[0].base_offset == log.first_offset
    for before, after in itertools.pairwise(sealed):
        assert before.next_offset == after.base_offset
    offset = log.first_offset
    for segment in sealed:
        data = log.read_sealed(segment.base_offset)
        assert len(data) == segment.size_bytes
        headers = [header for _, header in iter_headers(data)]
        assert headers[0].base_offset == offset
        assert headers[-1].next_offset == segment.next_offset
        assert segment.max_timestamp == max(header.max_timestamp for header in headers)
        offset = segment.next_offset
    with pytest.raises(OffsetOutOfRangeError):
        log.read_sealed(log.next_offset - 1)  # the active segment is not sealed
    with pytest.raises(OffsetOutOfRangeError):
        log.read_sealed(sealed[0].base_offset + 1)


def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(make_log: MakeLog) -> None:
    log = make_log(CONFIG)
    huge = simple_batch(2, value_size=3_000)
    assert CONFIG.segment_bytes < len(huge) <= CONFIG.batch_bytes_max
    fill(log, [simple_batch(), huge, simple_batch(), huge, huge])
    assert [[h.base_offset for h in segment] for segment in segments_of(log)] == [
        [0],
        [1],
        [3],
        [4],
        [6],
    ]
    assert log.segment_count == 5


def test_segments_roll_by_record_age(make_log: MakeLog) -> None:
    log = make_log(dataclasses.replace(CONFIG, segment_ms=1_000))
    steps = [
        ([0], 1),
        ([999], 1),  # 999 ms past the segment's first record: same segment
        ([1_000], 2),  # segment_ms past it: a new segment
        ([500], 2),  # older records never roll
        ([1_999], 2),
        ([1_500, 2_000], 3),  # the batch's newest record decides
        ([2_100], 3),
        ([2_999, 3_500], 4),
    ]
    for timestamps, segment_count in steps:
        log.append(encode_batch([b"x"] * len(timestamps), timestamps=timestamps))
        assert log.segment_count == segment_count, timestamps
    assert [[h.base_offset for h in segment] for segment in segments_of(log)] == [
        [0, 1],
        [2, 3, 4],
        [5, 7],
        [8],
    ]


def test_roll_seals_a_non_empty_active_segment(log: PartitionLog) -> None:
    log.roll()
    assert log.segment_count == 1
    fill(log, [simple_batch(2)])
    log.roll()
    assert log.segment_count == 2
    log.roll()  # the active segment is empty: nothing to seal
    assert log.segment_count == 2
    assert fill(log, [simple_batch(3)]) == [2]
    assert [[h.base_offset for h in segment] for segment in segments_of(log)] == [[0], [2]]


# -- offset for time ------------------------------------------------------------------


def test_offset_for_time_with_timestamps_out_of_order(log: PartitionLog) -> None:
    assert log.offset_for_time(0) is None
    layout = [[100, 50, 200], [150, 120], None, [300, 90], [250]]  # None: roll
    want: list[Record] = []
    for timestamps in layout:
        if timestamps is None:
            log.roll()
            continue
        records = [Rec(b"x", timestamp=t) for t in timestamps]
        want.extend(expected(records, log.next_offset))
        log.append(batch_of(records))
    for timestamp, offset in [
        (-10, 0),
        (0, 0),
        (100, 0),
        (101, 2),
        (200, 2),
        (201, 5),
        (121, 2),
        (250, 5),
        (300, 5),
        (301, None),
    ]:
        assert log.offset_for_time(timestamp) == offset, timestamp
    for timestamp in range(-5, 310):
        assert log.offset_for_time(timestamp) == brute_offset_for_time(want, timestamp)


def test_offset_for_time_over_many_segments(log: PartitionLog) -> None:
    rng = random.Random(20240611)
    want: list[Record] = []
    clock = 10_000
    for _ in range(120):
        clock += rng.randrange(0, 50)
        records = [
            Rec(b"y" * rng.randrange(0, 90), timestamp=max(0, clock + rng.randrange(-300, 300)))
            for _ in range(rng.randrange(1, 6))
        ]
        want.extend(expected(records, log.next_offset))
        log.append(batch_of(records))
    assert log.segment_count > 3
    probes = {r.timestamp + delta for r in want for delta in (-1, 0, 1)}
    for timestamp in sorted(probes):
        assert log.offset_for_time(timestamp) == brute_offset_for_time(want, timestamp)


# -- truncation ----------------------------------------------------------------------


def test_truncate_in_the_middle_of_a_batch_removes_the_whole_batch(log: PartitionLog) -> None:
    batches = [
        [Rec(f"{b}-{i}".encode(), timestamp=100 * b + i) for i in range(5)] for b in range(4)
    ]
    for records in batches:
        log.append(batch_of(records))
    size = log.size_bytes
    assert log.truncate_to(7) == 5
    assert log.next_offset == 5
    assert log.size_bytes == size // 4
    assert read_all(log) == expected(batches[0], 0)
    assert log.offset_for_time(100) is None  # the removed records are not found
    with pytest.raises(OffsetOutOfRangeError):
        log.read(6, BIG_READ)
    assert fill(log, [batch_of(batches[3])]) == [5]
    assert read_all(log) == expected(batches[0], 0) + expected(batches[3], 5)
    assert log.offset_for_time(100) == 5


def test_truncate_at_a_segment_boundary(log: PartitionLog) -> None:
    fill(log, [simple_batch(3), simple_batch(3)])
    log.roll()
    fill(log, [simple_batch(3), simple_batch(3)])
    log.roll()
    fill(log, [simple_batch(3)])
    assert log.segment_count == 3
    one_batch = len(simple_batch(3))
    assert log.truncate_to(6) == 6
    assert log.next_offset == 6
    assert log.size_bytes == 2 * one_batch
    assert log.read(6, BIG_READ).data == b""
    assert [[h.base_offset for h in segment] for segment in segments_of(log)] == [[0, 3]]
    assert fill(log, [simple_batch(2), simple_batch(2)]) == [6, 8]
    assert [r.offset for r in read_all(log)] == list(range(10))
    assert log.truncate_to(4) == 3  # back into the first segment, mid batch
    assert log.segment_count == 1
    assert fill(log, [simple_batch(1)]) == [3]
    assert log.truncate_to(0) == 0  # everything
    assert (log.first_offset, log.next_offset, log.size_bytes) == (0, 0, 0)
    assert fill(log, [simple_batch(1)]) == [0]


def test_truncate_at_or_past_the_end_changes_nothing(log: PartitionLog) -> None:
    assert log.truncate_to(0) == 0
    fill(log, [simple_batch(3), simple_batch(2)])
    size = log.size_bytes
    for offset in (5, 6, 1_000):
        assert log.truncate_to(offset) == 5
        assert (log.next_offset, log.size_bytes) == (5, size)
    assert [r.offset for r in read_all(log)] == list(range(5))


def test_truncate_below_the_log_start_raises(make_log: MakeLog) -> None:
    log = make_log(dataclasses.replace(CONFIG, retention_bytes=0))
    with pytest.raises(OffsetOutOfRangeError):
        log.truncate_to(-1)
    fill(log, [simple_batch(3)])
    log.roll()
    fill(log, [simple_batch(3)])
    assert log.apply_retention(0).first_offset == 3
    size = log.size_bytes
    for offset in (2, 0, -1):
        with pytest.raises(OffsetOutOfRangeError):
            log.truncate_to(offset)
        assert (log.first_offset, log.next_offset, log.size_bytes) == (3, 6, size)
    assert log.truncate_to(3) == 3  # at the start: empties the log, keeps the start
    assert (log.first_offset, log.next_offset) == (3, 3)


# -- retention --------------------------------------------------------------------------


def _segments_with_times(log: PartitionLog, layout: Sequence[Sequence[int]]) -> list[int]:
    """One segment per entry (timestamps of its one-record batches); return their bases."""
    bases: list[int] = []
    for timestamps in layout:
        bases.append(log.next_offset)
        for timestamp in timestamps:
            log.append(simple_batch(timestamp=timestamp))
        log.roll()
    return bases


def test_retention_by_time_deletes_whole_oldest_segments(make_log: MakeLog) -> None:
    log = make_log(dataclasses.replace(CONFIG, retention_ms=1_000))
    bases = _segments_with_times(log, [[100, 50], [80, 500, 20], [900]])
    log.append(simple_batch(timestamp=2_000))  # the active segment
    batch_size = len(simple_batch())
    assert log.segment_count == 4
    assert log.apply_retention(1_100).deleted_segments == 0  # 100 is not older than 1_100 - 1_000
    result = log.apply_retention(1_101)
    assert (result.deleted_segments, result.deleted_bytes) == (1, 2 * batch_size)
    assert result.first_offset == log.first_offset == bases[1]
    for offset in (0, bases[1] - 1):
        with pytest.raises(OffsetOutOfRangeError):
            log.read(offset, BIG_READ)
    assert log.offset_for_time(0) == bases[1]
    result = log.apply_retention(1_950)  # both sealed segments, not the active one
    assert (result.deleted_segments, result.first_offset) == (2, bases[2] + 1)
    assert [r.offset for r in read_all(log)] == [bases[2] + 1]
    result = log.apply_retention(3_001)  # the active segment expired too
    assert (result.deleted_segments, result.deleted_bytes) == (1, batch_size)
    end = bases[2] + 2
    assert (result.first_offset, log.first_offset, log.next_offset) == (end, end, end)
    assert (log.size_bytes, log.segment_count) == (0, 1)
    assert log.read(end, BIG_READ).data == b""
    with pytest.raises(OffsetOutOfRangeError):
        log.read(end - 1, BIG_READ)
    assert log.offset_for_time(0) is None
    assert fill(log, [simple_batch(timestamp=5_000)]) == [end]
    assert log.apply_retention(3_001).deleted_segments == 0


def test_retention_by_time_stops_at_the_first_segment_to_keep(make_log: MakeLog) -> None:
    log = make_log(dataclasses.replace(CONFIG, retention_ms=1_000))
    _segments_with_times(log, [[1_000], [100], [200]])
    result = log.apply_retention(1_600)  # the later segments are older, but come after
    assert (result.deleted_segments, result.first_offset) == (0, 0)
    result = log.apply_retention(2_001)
    assert (result.deleted_segments, result.first_offset) == (3, 3)


@pytest.mark.parametrize(
    ("retention_in_batches", "deleted"),
    [(10, 0), (7, 1), (8, 0), (4, 2), (5, 1), (1, 3), (0, 3)],
)
def test_retention_by_bytes_follows_kafka(
    make_log: MakeLog, retention_in_batches: int, deleted: int
) -> None:
    batch_size = len(simple_batch(2, value_size=50))
    log = make_log(dataclasses.replace(CONFIG, retention_bytes=retention_in_batches * batch_size))
    for _ in range(3):  # three sealed segments of three batches, then one in the active
        fill(log, [simple_batch(2, value_size=50) for _ in range(3)])
        log.roll()
    fill(log, [simple_batch(2, value_size=50)])
    assert (log.segment_count, log.size_bytes) == (4, 10 * batch_size)
    result = log.apply_retention(0)
    assert result.deleted_segments == deleted
    assert result.deleted_bytes == deleted * 3 * batch_size
    assert result.first_offset == log.first_offset == deleted * 6
    assert log.size_bytes == (10 - 3 * deleted) * batch_size
    assert log.size_bytes >= retention_in_batches * batch_size or log.segment_count == 1
    assert [r.offset for r in read_all(log)] == list(range(deleted * 6, 20))
    if deleted:
        with pytest.raises(OffsetOutOfRangeError):
            log.read(deleted * 6 - 1, BIG_READ)
    assert log.apply_retention(0).deleted_segments == 0  # nothing more to do


def test_retention_by_bytes_never_deletes_the_active_segment(make_log: MakeLog) -> None:
    log = make_log(dataclasses.replace(CONFIG, retention_bytes=0))
    fill(log, [simple_batch(4)])
    assert log.apply_retention(0).deleted_segments == 0
    assert (log.first_offset, log.next_offset, log.segment_count) == (0, 4, 1)


# -- compression ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [compression.ZSTD, compression.LZ4])
def test_compressed_batches_round_trip(log: PartitionLog, codec: int) -> None:
    records = [
        Rec(b"compress me " * 20, key=f"key-{i}".encode(), headers={"i": str(i)}, timestamp=50 - i)
        for i in range(20)
    ]
    records[3] = Rec(None, key=b"gone", timestamp=7)
    compressed = batch_of(records, codec)
    assert len(compressed) < len(batch_of(records))
    fill(log, [simple_batch(2), compressed, batch_of(MIXED, codec)])
    result = log.read(2, BIG_READ)
    assert [h.codec for h in headers_in(result.data)] == [codec, codec]
    assert result.data[8 : len(compressed)] == compressed[8:]  # stored as it came
    assert read_all(log, start=2) == expected(records, 2) + expected(MIXED, 22)
    assert log.offset_for_time(8) == 2
    assert log.offset_for_time(46) == 2
    assert log.offset_for_time(51) == 22


def test_codecs_mix_in_one_log(log: PartitionLog) -> None:
    want: list[Record] = []
    for index in range(12):
        records = [Rec(f"{index}:{i}".encode() * 10, timestamp=index) for i in range(3)]
        codec = [compression.NONE, compression.ZSTD, compression.LZ4][index % 3]
        want.extend(expected(records, log.next_offset))
        log.append(batch_of(records, codec))
    assert read_all(log) == want
    assert read_all(log, max_bytes=1) == want


# -- bad input is refused, and nothing is written -------------------------------------


def _good(count: int = 5) -> bytes:
    return batch_of([Rec(f"r{i}".encode(), key=b"k", timestamp=100 + i) for i in range(count)])


def _flip_body_byte() -> bytes:
    data = bytearray(_good())
    data[-1] ^= 0x01
    return bytes(data)


def _flip_header_byte() -> bytes:
    data = bytearray(_good())
    data[ATTRIBUTES_AT + 10] ^= 0x01  # inside first_timestamp, covered by the CRC
    return bytes(data)


def _count(delta: int) -> bytes:
    """Record count and last offset delta agree with each other, not with the body."""
    header = read_header(_good())
    return patched(
        _good(),
        record_count=header.record_count + delta,
        last_offset_delta=header.last_offset_delta + delta,
    )


def _count_field_only() -> bytes:
    return patched(_good(), record_count=6)


def _body_patch(at: int, value: int) -> bytes:
    data = bytearray(_good())
    struct.pack_into("<I", data, HEADER_SIZE + at, value)
    return with_crc(data)


def _version(version: int) -> bytes:
    data = bytearray(_good())
    data[VERSION_AT] = version
    return with_crc(data)


def _plausible_garbage() -> bytes:
    """A header that parses (length, version) in front of random bytes."""
    body = random.Random(3).randbytes(200)
    header = HEADER.pack(0, HEADER_SIZE - 12 + len(body), 0, 1, 0, 0, 4, 0, 0, -1, 0, -1, 5)
    return header + body


BAD_BATCHES: list[tuple[str, Callable[[], bytes], type[InvalidBatchError]]] = [
    ("crc-body", _flip_body_byte, CorruptBatchError),
    ("crc-header", _flip_header_byte, CorruptBatchError),
    ("crc-garbage", _plausible_garbage, CorruptBatchError),
    ("count-plus-one", lambda: _count(1), InvalidBatchError),
    ("count-minus-one", lambda: _count(-1), InvalidBatchError),
    ("count-minus-four", lambda: _count(-4), InvalidBatchError),
    ("count-field-only", _count_field_only, InvalidBatchError),
    (
        "count-zero",
        lambda: patched(_good(), record_count=0, last_offset_delta=-1),
        InvalidBatchError,
    ),
    ("offset-deltas", lambda: _body_patch(4, 7), InvalidBatchError),
    ("value-column-end", lambda: _body_patch(4 * 5 * 3 - 4, 9_999), InvalidBatchError),
    ("too-many-bytes", lambda: simple_batch(value_size=CONFIG.batch_bytes_max), BatchTooLargeError),
    ("too-many-records", lambda: simple_batch(CONFIG.batch_records_max + 1), BatchTooLargeError),
    ("truncated-body", lambda: _good()[:-1], InvalidBatchError),
    ("truncated-header", lambda: _good()[:40], InvalidBatchError),
    ("empty", lambda: b"", InvalidBatchError),
    ("trailing-bytes", lambda: _good() + b"\x00", InvalidBatchError),
    ("version-2", lambda: _version(2), InvalidBatchError),
    ("version-0", lambda: _version(0), InvalidBatchError),
    ("unknown-codec", lambda: patched(_good(), attributes=5), InvalidBatchError),
    ("unknown-attribute", lambda: patched(_good(), attributes=0x200), InvalidBatchError),
    ("not-really-zstd", lambda: patched(_good(), attributes=compression.ZSTD), InvalidBatchError),
    ("not-really-lz4", lambda: patched(_good(), attributes=compression.LZ4), InvalidBatchError),
    ("max-before-first", lambda: patched(_good(), max_timestamp=50), InvalidBatchError),
    ("garbage", lambda: random.Random(1).randbytes(300), InvalidBatchError),
    ("zeros", lambda: bytes(200), InvalidBatchError),
]


@pytest.mark.parametrize(
    ("build", "error"),
    [pytest.param(build, error, id=name) for name, build, error in BAD_BATCHES],
)
def test_bad_batches_are_refused_and_nothing_is_written(
    log: PartitionLog, build: Callable[[], bytes], error: type[InvalidBatchError]
) -> None:
    fill(log, [_good(), _good(2)])
    log.roll()
    fill(log, [_good(3)])
    before = (log.first_offset, log.next_offset, log.size_bytes, log.segment_count)
    records = read_all(log)
    with pytest.raises(InvalidBatchError) as caught:
        log.append(build())
    assert type(caught.value) is error, caught.value
    assert (log.first_offset, log.next_offset, log.size_bytes, log.segment_count) == before
    assert log.durable_offset == log.next_offset
    assert read_all(log) == records
    assert log.offset_for_time(0) == 0
    assert fill(log, [_good()]) == [10]  # the log carries on where it was
    assert read_all(log)[:10] == records


def test_a_decompression_bomb_is_refused(log: PartitionLog) -> None:
    bomb = encode_batch([bytes(CONFIG.batch_bytes_max)], codec=compression.ZSTD)
    assert len(bomb) < CONFIG.batch_bytes_max
    with pytest.raises(InvalidBatchError):
        log.append(bomb)
    assert (log.next_offset, log.size_bytes) == (0, 0)


def test_a_closed_log_refuses_work(log: PartitionLog) -> None:
    fill(log, [simple_batch(2)])
    log.close()
    with pytest.raises(LogClosedError):
        log.append(simple_batch())
    with pytest.raises(LogClosedError):
        log.read(0, BIG_READ)
    with pytest.raises(LogClosedError):
        log.offset_for_time(0)
    with pytest.raises(LogClosedError):
        log.truncate_to(0)
    with pytest.raises(LogClosedError):
        log.roll()
    with pytest.raises(LogClosedError):
        log.apply_retention(0)


# -- FileLog only: close, reopen, carry on ------------------------------------------------


def _snapshot(log: PartitionLog) -> tuple[object, ...]:
    records = read_all(log)
    probes = sorted({r.timestamp + d for r in records for d in (-1, 0, 1)} | {-1, 10**9})
    return (
        log.first_offset,
        log.next_offset,
        log.size_bytes,
        log.segment_count,
        records,
        [[h.base_offset for h in segment] for segment in segments_of(log)],
        [log.offset_for_time(t) for t in probes],
    )


def _busy_log(directory: Path, config: LogConfig) -> FileLog:
    """A log with sealed segments, out-of-order times, codecs, a truncation and retention."""
    log = FileLog(directory, config)
    rng = random.Random(99)
    for index in range(60):
        records = [
            Rec(
                rng.randbytes(rng.randrange(0, 120)) if rng.random() < 0.9 else None,
                key=rng.choice([None, b"", b"key"]),
                headers={"n": str(index)} if index % 4 == 0 else None,
                timestamp=3_000 + 1_000 * index + rng.randrange(-3_000, 3_000),
            )
            for _ in range(rng.randrange(1, 6))
        ]
        log.append(
            batch_of(records, [compression.NONE, compression.ZSTD, compression.LZ4][index % 3])
        )
        if index % 17 == 16:
            log.roll()
    log.truncate_to(log.next_offset - 7)
    log.apply_retention(30_000)
    return log


def test_file_log_reopen_preserves_everything(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, retention_ms=5_000)
    log = _busy_log(tmp_path, config)
    assert log.first_offset > 0
    assert log.segment_count > 3
    before = _snapshot(log)
    log.close()
    reopened = FileLog(tmp_path, config)
    try:
        assert reopened.recovery.cut_bytes == 0
        assert _snapshot(reopened) == before
        end = reopened.next_offset
        records = [Rec(b"after", timestamp=70_000), Rec(b"reopen", timestamp=69_000)]
        assert fill(reopened, [batch_of(records)]) == [end]
        assert read_all(reopened, start=end) == expected(records, end)
        assert reopened.offset_for_time(69_500) == end
    finally:
        reopened.close()


def test_file_log_reopen_keeps_retention_and_rolling_state(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, retention_ms=1_000, segment_ms=1_000)
    log = FileLog(tmp_path, config)
    log.append(encode_batch([b"a", b"b"], timestamps=[900, 100]))  # newest record first
    log.append(simple_batch(timestamp=200))
    log.roll()
    log.append(simple_batch(timestamp=3_000))
    log.close()
    log = FileLog(tmp_path, config)
    try:
        assert log.apply_retention(1_900).deleted_segments == 0  # 900 is still young enough
        assert log.apply_retention(1_901).first_offset == 3
        log.append(simple_batch(timestamp=3_999))  # 999 ms past the active segment's start
        assert log.segment_count == 1
        log.close()
        log = FileLog(tmp_path, config)
        log.append(simple_batch(timestamp=4_000))  # segment_ms past it: rolls
        assert log.segment_count == 2
        assert fill(log, [simple_batch()]) == [6]
    finally:
        log.close()


def test_file_log_reopen_after_truncating_into_a_sealed_segment(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    fill(log, [simple_batch(3, value_size=300) for _ in range(12)])
    assert log.segment_count > 2
    cut = read_header(log.read(7, 1).data).base_offset
    assert log.truncate_to(7) == cut
    before = _snapshot(log)
    log.close()
    log = FileLog(tmp_path, CONFIG)
    try:
        assert _snapshot(log) == before
        assert fill(log, [simple_batch(2)]) == [cut]
        assert [r.offset for r in read_all(log)] == list(range(cut + 2))
    finally:
        log.close()


def test_file_log_reopen_after_everything_expired(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, retention_ms=10)
    log = FileLog(tmp_path, config)
    fill(log, [simple_batch(2, timestamp=5), simple_batch(2, timestamp=6)])
    log.roll()
    fill(log, [simple_batch(2, timestamp=7)])
    assert log.apply_retention(1_000).first_offset == 6
    log.close()
    log = FileLog(tmp_path, config)
    try:
        assert (log.first_offset, log.next_offset, log.size_bytes) == (6, 6, 0)
        with pytest.raises(OffsetOutOfRangeError):
            log.read(5, BIG_READ)
        assert fill(log, [simple_batch(1)]) == [6]
    finally:
        log.close()


def test_file_log_reopen_of_an_empty_log(tmp_path: Path) -> None:
    FileLog(tmp_path, CONFIG).close()
    log = FileLog(tmp_path, CONFIG)
    try:
        assert (log.first_offset, log.next_offset, log.segment_count) == (0, 0, 1)
        assert fill(log, [simple_batch(2)]) == [0]
    finally:
        log.close()
