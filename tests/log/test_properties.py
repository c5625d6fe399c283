"""Random operation sequences against a simple model of a partition log.

A hypothesis state machine appends, reads, rolls, truncates, applies
retention and reopens, against MemoryLog and FileLog, and after every step
compares the log with a model: the list of records it should hold and its
first offset. Segment boundaries are the log's own business, so after
retention the model learns the new first offset from the log, then checks
that it is a batch boundary that only moved forward and that the deletion
followed the time and size rules.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from logq.log import (
    CorruptBatchError,
    FileLog,
    FsyncPolicy,
    LogConfig,
    MemoryLog,
    OffsetOutOfRangeError,
    PartitionLog,
    Record,
    compression,
    decode_batch,
    encode_batch,
    read_header,
)
from logq.log.batch import BatchHeader
from logq.log.config import KIB, MIB

BIG_READ = 64 * MIB
SETTINGS = settings(
    max_examples=75,
    stateful_step_count=30,
    deadline=None,  # file logs fsync: step times vary, results do not
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True, slots=True)
class ModelBatch:
    base: int
    count: int
    size: int

    @property
    def next(self) -> int:
        return self.base + self.count


@dataclass(frozen=True, slots=True)
class Draft:
    """A record to append: everything but its offset."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, str] | None
    time_delta: int  # from the machine's clock; may go backwards


# -- strategies ----------------------------------------------------------------------

values = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(max_size=24),
    st.builds(
        lambda unit, count: unit * count, st.binary(min_size=1, max_size=4), st.integers(50, 400)
    ),
)
keys = st.one_of(st.none(), st.just(b""), st.binary(max_size=8))
header_dicts = st.one_of(
    st.none(),
    st.dictionaries(
        st.text(st.characters(codec="utf-8"), max_size=6),
        st.text(st.characters(codec="utf-8"), max_size=10),
        max_size=3,
    ),
)
drafts = st.builds(Draft, keys, values, header_dicts, st.integers(-400, 400))
codecs = st.sampled_from([compression.NONE, compression.NONE, compression.ZSTD, compression.LZ4])
batches = st.lists(drafts, min_size=1, max_size=8)
advances = st.integers(0, 600)  # the clock only moves forward; record times scatter around it


# -- reading helpers ----------------------------------------------------------------------


def headers_in(data: bytes) -> list[BatchHeader]:
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


def brute_offset_for_time(records: Sequence[Record], timestamp: int) -> int | None:
    return next((r.offset for r in records if r.timestamp >= timestamp), None)


class LogMachine(RuleBasedStateMachine):
    """The model: `records` (every record from `first` on), `batches`, `first`, `end`."""

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.directory: Path | None = None
        self._log: PartitionLog | None = None
        self.config = LogConfig()
        self.records: list[Record] = []
        self.batches: list[ModelBatch] = []
        self.first = 0
        self.end = 0
        self.clock = 1_000_000

    @property
    def log(self) -> PartitionLog:
        assert self._log is not None
        return self._log

    def _open(self) -> PartitionLog:
        if self.kind == "memory":
            return MemoryLog(self.config)
        assert self.directory is not None
        return FileLog(self.directory, self.config)

    @initialize(
        retention=st.sampled_from(["time", "bytes", "both"]),
        retention_ms=st.integers(0, 4_000),
        retention_bytes=st.integers(0, 12 * KIB),
        segment_ms=st.sampled_from([1_000, 3_000, 10**9]),
        index_interval_bytes=st.sampled_from([64, 700, 4 * KIB]),
        fsync=st.sampled_from([FsyncPolicy.ALWAYS, FsyncPolicy.NEVER]),
    )
    def open_log(
        self,
        retention: str,
        retention_ms: int,
        retention_bytes: int,
        segment_ms: int,
        index_interval_bytes: int,
        fsync: FsyncPolicy,
    ) -> None:
        self.config = LogConfig(
            segment_bytes=4 * KIB,  # small, so that several segments exist
            segment_ms=segment_ms,
            index_interval_bytes=index_interval_bytes,
            batch_bytes_max=16 * KIB,
            batch_records_max=16,
            fsync=fsync,
            retention_ms=retention_ms if retention in {"time", "both"} else None,
            retention_bytes=retention_bytes if retention in {"bytes", "both"} else None,
        )
        if self.kind == "file":
            self.directory = Path(tempfile.mkdtemp(prefix="logq-properties-"))
        self._log = self._open()

    def teardown(self) -> None:
        if self._log is not None:
            self._log.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- model helpers ---------------------------------------------------------------

    def _state(self) -> tuple[int, int, int, int]:
        log = self.log
        return log.first_offset, log.next_offset, log.size_bytes, log.segment_count

    def _batch_holding(self, offset: int) -> int:
        for index, batch in enumerate(self.batches):
            if batch.base <= offset < batch.next:
                return index
        raise AssertionError(f"no model batch holds {offset}")

    def _read_all(self, max_bytes: int) -> list[Record]:
        offset = self.log.first_offset
        records: list[Record] = []
        while offset < self.log.next_offset:
            result = self.log.read(offset, max_bytes)
            assert result.data, f"empty read at {offset} below the end {self.log.next_offset}"
            assert result.first_offset <= offset < result.next_offset
            records.extend(r for r in decode_all(result.data) if r.offset >= offset)
            offset = result.next_offset
        return records

    def _segment_sizes(self) -> list[tuple[int, int, int]]:
        """(base, size, max record time) of each non-empty segment, from whole-segment reads."""
        found: list[tuple[int, int, int]] = []
        offset = self.log.first_offset
        while offset < self.log.next_offset:
            result = self.log.read(offset, BIG_READ)
            headers = headers_in(result.data)
            found.append(
                (offset, len(result.data), max(header.max_timestamp for header in headers))
            )
            offset = result.next_offset
        return found

    # -- rules --------------------------------------------------------------------------

    def _append_one(self, batch: list[Draft], codec: int, advance: int) -> None:
        self.clock += advance
        timestamps = [max(0, self.clock + draft.time_delta) for draft in batch]
        data = encode_batch(
            [draft.value for draft in batch],
            keys=[draft.key for draft in batch],
            headers=[draft.headers for draft in batch],
            timestamps=timestamps,
            codec=codec,
        )
        result = self.log.append(data)
        assert (result.base_offset, result.last_offset) == (self.end, self.end + len(batch) - 1)
        self.records.extend(
            Record(self.end + index, stamp, draft.key, draft.value, dict(draft.headers or {}))
            for index, (draft, stamp) in enumerate(zip(batch, timestamps, strict=True))
        )
        self.batches.append(ModelBatch(self.end, len(batch), len(data)))
        self.end += len(batch)

    @rule(appends=st.lists(st.tuples(batches, codecs, advances), min_size=1, max_size=4))
    def append(self, appends: list[tuple[list[Draft], int, int]]) -> None:
        for batch, codec, advance in appends:
            self._append_one(batch, codec, advance)

    @rule(position=st.integers(0, 10_000), flip=st.integers(1, 255))
    def append_corrupt(self, position: int, flip: int) -> None:
        data = bytearray(encode_batch([b"x" * 30, None], timestamp_ms=self.clock))
        data[21 + position % (len(data) - 21)] ^= flip  # anywhere the CRC covers
        before = self._state()
        with pytest.raises(CorruptBatchError):
            self.log.append(bytes(data))
        assert self._state() == before

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.first, self.end), label="offset")
        max_bytes = data.draw(st.one_of(st.integers(1, 12_000), st.just(BIG_READ)), label="max")
        result = self.log.read(offset, max_bytes)
        assert result.log_end_offset == self.end
        if offset == self.end:
            assert (result.data, result.batch_count, result.record_count) == (b"", 0, 0)
            return
        headers = headers_in(result.data)
        index = self._batch_holding(offset)
        expected_batches = self.batches[index : index + len(headers)]
        assert [(h.base_offset, h.record_count, h.size) for h in headers] == [
            (b.base, b.count, b.size) for b in expected_batches
        ]
        assert result.first_offset == self.batches[index].base
        assert result.next_offset == expected_batches[-1].next
        assert result.batch_count == len(headers)
        assert result.record_count == sum(h.record_count for h in headers)
        assert len(result.data) <= max(max_bytes, headers[0].size)  # at least one batch
        start = self.batches[index].base - self.first
        assert decode_all(result.data) == self.records[start : start + result.record_count]

    @rule(below=st.integers(1, 3), above=st.integers(1, 3))
    def read_out_of_range(self, below: int, above: int) -> None:
        with pytest.raises(OffsetOutOfRangeError):
            self.log.read(self.first - below, BIG_READ)
        with pytest.raises(OffsetOutOfRangeError):
            self.log.read(self.end + above, BIG_READ)

    @rule()
    def roll(self) -> None:
        count = self.log.segment_count
        non_empty = len(self._segment_sizes())
        assert count - non_empty in {0, 1}, "only the active segment may be empty"
        self.log.roll()
        assert self.log.segment_count == non_empty + 1  # a non-empty active one was sealed

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def truncate_to(self, data: st.DataObject) -> None:
        choices = st.integers(self.first - 2, self.end + 2)
        if self.batches:
            choices = st.one_of(choices, st.sampled_from([b.base for b in self.batches]))
        offset = data.draw(choices, label="offset")
        before = self._state()
        if offset < self.first:
            with pytest.raises(OffsetOutOfRangeError):
                self.log.truncate_to(offset)
            assert self._state() == before
            return
        if offset >= self.end:
            assert self.log.truncate_to(offset) == self.end
            assert self._state() == before
            return
        index = self._batch_holding(offset)
        new_end = self.batches[index].base
        assert self.log.truncate_to(offset) == new_end
        del self.batches[index:]
        del self.records[new_end - self.first :]
        self.end = new_end

    @precondition(lambda self: self.batches)
    @rule(ahead=st.integers(-1_000, 6_000))
    def apply_retention(self, ahead: int) -> None:
        now = self.clock + ahead
        size_before = self.log.size_bytes
        segments_before = self._segment_sizes()
        result = self.log.apply_retention(now)
        new_first = result.first_offset
        assert new_first == self.log.first_offset
        assert new_first >= self.first, "the log start moved back"
        assert new_first in {b.base for b in self.batches} | {self.end}, "not a batch boundary"
        assert (result.deleted_segments > 0) == (new_first > self.first)
        deleted = [b for b in self.batches if b.base < new_first]
        deleted_records = self.records[: new_first - self.first]
        assert (
            result.deleted_bytes
            == sum(b.size for b in deleted)
            == size_before - self.log.size_bytes
        )
        config = self.config
        threshold = None if config.retention_ms is None else now - config.retention_ms
        if deleted_records:
            all_expired = threshold is not None and all(
                r.timestamp < threshold for r in deleted_records
            )
            if config.retention_bytes is None:
                assert all_expired, "time retention deleted a record that was not old enough"
            else:
                # A deleted segment that time did not expire went for size: the
                # log from the next segment on still held retention_bytes.
                for index, (base, _, max_time) in enumerate(segments_before):
                    if base >= new_first or (threshold is not None and max_time < threshold):
                        continue
                    rest = sum(size for _, size, _ in segments_before[index + 1 :])
                    assert rest >= config.retention_bytes, "size retention deleted too much"
        # ...and it deleted all it should have: the first segment left is kept for a reason.
        segments = self._segment_sizes()
        if segments and threshold is not None and config.retention_bytes is None:
            assert segments[0][2] >= threshold, "an expired oldest segment was kept"
        if config.retention_bytes is not None and self.log.segment_count > 1 and segments:
            assert self.log.size_bytes - segments[0][1] < config.retention_bytes
        assert self.log.apply_retention(now).deleted_segments == 0  # idempotent
        # The model forgets what the log deleted.
        self.batches = [b for b in self.batches if b.base >= new_first]
        self.records = self.records[new_first - self.first :]
        self.first = new_first
        if new_first > 0:
            with pytest.raises(OffsetOutOfRangeError):
                self.log.read(new_first - 1, BIG_READ)

    @rule(data=st.data())
    def offset_for_time(self, data: st.DataObject) -> None:
        stamps = [r.timestamp for r in self.records] or [self.clock]
        timestamp = data.draw(st.integers(min(stamps) - 5, max(stamps) + 5), label="time")
        assert self.log.offset_for_time(timestamp) == brute_offset_for_time(self.records, timestamp)

    @precondition(lambda self: self.kind == "file" and self.batches)
    @rule()
    def reopen(self) -> None:
        before = self._state()
        self.log.close()
        self._log = self._open()
        assert self.log.recovery.cut_bytes == 0
        assert self.log.recovery.cut_reason is None
        assert self._state() == before

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def ends_and_sizes_match(self) -> None:
        if self._log is None:
            return
        log = self.log
        assert log.first_offset == self.first
        assert log.next_offset == self.end
        assert log.size_bytes == sum(b.size for b in self.batches)
        assert log.segment_count >= 1
        assert log.durable_offset <= log.next_offset
        if self.kind == "memory" or self.config.fsync is FsyncPolicy.ALWAYS:
            assert log.durable_offset == log.next_offset

    @invariant()
    def everything_reads_back(self) -> None:
        if self._log is None:
            return
        assert self._read_all(BIG_READ) == self.records
        assert self.log.read(self.end, BIG_READ).data == b""

    @invariant()
    def offset_for_time_agrees(self) -> None:
        if self._log is None:
            return
        stamps = sorted({r.timestamp for r in self.records})
        probes = {-1, self.clock + 10_000}
        for index in range(0, len(stamps), max(1, len(stamps) // 6)):
            probes.update((stamps[index] - 1, stamps[index], stamps[index] + 1))
        if stamps:
            probes.update((stamps[-1], stamps[-1] + 1))
        for timestamp in sorted(probes):
            assert self.log.offset_for_time(timestamp) == brute_offset_for_time(
                self.records, timestamp
            ), timestamp


class MemoryLogMachine(LogMachine):
    kind = "memory"


class FileLogMachine(LogMachine):
    kind = "file"


@pytest.mark.parametrize("machine", [MemoryLogMachine, FileLogMachine], ids=["memory", "file"])
def test_log_behaves_like_the_model(machine: type[LogMachine]) -> None:
    run_state_machine_as_test(machine, settings=SETTINGS)
