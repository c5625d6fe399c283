"""Random epoch histories against a model made of the stored batches alone.

A hypothesis state machine raises the leader epoch, appends, truncates,
truncates fully, reopens (file logs) and copies the log to a follower with
`append_replica`, on MemoryLog and FileLog. After every step the log must
answer OffsetsForLeaderEpoch exactly as a brute force over the model's
batches does, stamp the epochs the model says, and a follower built from
its raw batches must answer the same.
"""

from __future__ import annotations

import shutil
import tempfile
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

from logq.log import FileLog, LogConfig, MemoryLog, PartitionLog, encode_batch, read_header
from logq.log.config import KIB, MIB

CONFIG = LogConfig(
    segment_bytes=4 * KIB,
    index_interval_bytes=64,
    retention_ms=None,
    retention_bytes=None,
)
BIG_READ = 64 * MIB
SETTINGS = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True, slots=True)
class ModelBatch:
    base: int
    count: int
    epoch: int


def brute_end_offset(batches: list[ModelBatch], end: int, epoch: int) -> tuple[int, int]:
    at_or_below = [batch.epoch for batch in batches if batch.epoch <= epoch]
    if not at_or_below:
        return -1, -1
    found = max(at_or_below)
    later = [batch.base for batch in batches if batch.epoch > found]
    return found, min(later, default=end)


def stored(log: PartitionLog) -> bytes:
    parts: list[bytes] = []
    offset = log.first_offset
    while offset < log.next_offset:
        result = log.read(offset, BIG_READ)
        parts.append(result.data)
        offset = result.next_offset
    return b"".join(parts)


class EpochMachine(RuleBasedStateMachine):
    kind: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="logq-epochs-"))
        self.log = self._open()
        self.batches: list[ModelBatch] = []
        self.first = 0
        self.epoch = 0

    def _open(self) -> PartitionLog:
        if self.kind == "memory":
            return MemoryLog(CONFIG)
        return FileLog(self.directory, CONFIG)

    @property
    def end(self) -> int:
        return self.batches[-1].base + self.batches[-1].count if self.batches else self.first

    @initialize()
    def start(self) -> None:
        assert self.log.leader_epoch == 0

    @rule(raise_by=st.integers(0, 2))
    def set_epoch(self, raise_by: int) -> None:
        self.epoch += raise_by
        self.log.set_leader_epoch(self.epoch)

    @rule(count=st.integers(1, 4), value_size=st.sampled_from([5, 900]))
    def append(self, count: int, value_size: int) -> None:
        result = self.log.append(encode_batch([b"v" * value_size] * count))
        assert result.base_offset == self.end
        self.batches.append(ModelBatch(result.base_offset, count, self.epoch))

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.first, self.end + 2))
        end = self.log.truncate_to(offset)
        self.batches = [batch for batch in self.batches if batch.base + batch.count <= offset]
        assert end == self.end

    @rule(start=st.integers(0, 200))
    def truncate_fully(self, start: int) -> None:
        self.log.truncate_fully_and_start_at(start)
        self.batches, self.first = [], start

    @precondition(lambda self: self.kind == "file")
    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = self._open()

    @rule()
    def replicate(self) -> None:
        follower = MemoryLog(CONFIG)
        follower.truncate_fully_and_start_at(self.first)
        if self.batches:
            follower.append_replica(stored(self.log))
        probes = range(-1, self.epoch + 3)
        assert [follower.end_offset_for_epoch(e) for e in probes] == [
            self.log.end_offset_for_epoch(e) for e in probes
        ]
        assert stored(follower) == stored(self.log)

    @invariant()
    def matches_the_model(self) -> None:
        log = self.log
        assert (log.first_offset, log.next_offset, log.leader_epoch) == (
            self.first,
            self.end,
            self.epoch,
        )
        for epoch in range(-1, self.epoch + 3):
            assert log.end_offset_for_epoch(epoch) == brute_end_offset(
                self.batches, self.end, epoch
            ), epoch
        data = stored(log)
        position, found = 0, []
        while position < len(data):
            header = read_header(data, position)
            found.append((header.base_offset, header.leader_epoch))
            position += header.size
        assert found == [(batch.base, batch.epoch) for batch in self.batches]

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class MemoryEpochMachine(EpochMachine):
    kind = "memory"


class FileEpochMachine(EpochMachine):
    kind = "file"


@pytest.mark.parametrize("machine", [MemoryEpochMachine, FileEpochMachine])
def test_epochs_behave_like_the_model(machine: type[EpochMachine]) -> None:
    run_state_machine_as_test(machine, settings=SETTINGS)
