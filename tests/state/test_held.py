"""Held-back delayed messages: the compact offset set and due index against
simple models, and a group's state holding tens of thousands of them."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logq.state.delivery import PartitionDelivery, Planned
from logq.state.events import Held, Leased, Released, Settled
from logq.state.held import (
    ARRAY_MAX,
    INBOX_MAX,
    DueIndex,
    HeldBack,
    HeldSnapshot,
    OffsetSet,
    pack_offsets,
)
from logq.state.ranges import ranges_of
from logq.state.snapshots import restore_partition, snapshot_partition
from tests.state.work import lines_run

operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove"]),
        st.integers(0, 300_000),
        st.integers(1, 3000),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None)
@given(operations)
def test_the_offset_set_agrees_with_a_set(steps: list[tuple[str, int, int]]) -> None:
    found, model = OffsetSet(), set[int]()
    rng = random.Random(len(steps))
    for kind, start, size in steps:
        if kind == "add":  # dense runs (bitmaps) and sparse ones (arrays)
            stride = rng.choice([1, 3, 97])
            values = list(range(start, start + size * stride, stride))
            rng.shuffle(values)
            assert found.add(values) == len(set(values) - model)
            model |= set(values)
        else:
            assert found.remove(start, start + size) == len(
                [v for v in model if start <= v < start + size]
            )
            model -= set(range(start, start + size))
        assert len(found) == len(model)
    for probe in [0, 1, 65_535, 65_536, 150_000, *list(model)[:50]]:
        assert (probe in found) == (probe in model)
        later = [v for v in model if v >= probe]
        assert found.first_at_or_after(probe) == (min(later) if later else None)
    assert found.ranges_within(1000, 250_000) == ranges_of(v for v in model if 1000 <= v < 250_000)
    copy = OffsetSet.from_chunks(found.chunks())
    assert len(copy) == len(model) and copy.ranges_within(0, 10**7) == ranges_of(model)


def test_a_dense_chunk_becomes_a_bitmap_of_a_bit_an_offset() -> None:
    found = OffsetSet()
    found.add(range(100_000))
    assert found.memory_bytes() <= 100_000 // 8 + 8192  # a bit each, at most a chunk more
    found.remove(10, 99_990)
    assert found.ranges_within(0, 200_000) == [(0, 10), (99_990, 100_000)]
    sparse = OffsetSet()
    sparse.add(range(0, 10_000_000, 1000))
    assert sparse.memory_bytes() == 2 * 10_000  # 2 bytes each when sparse
    assert all(len(chunk) <= ARRAY_MAX for _, bitmap, chunk in sparse.chunks() if not bitmap)


def test_the_due_index_hands_out_the_earliest_first_and_drops_what_is_gone() -> None:
    rng = random.Random(7)
    index, held = DueIndex(), set()
    pairs: list[tuple[int, int]] = []
    for batch in range(60):
        offsets = list(range(batch * 1000, batch * 1000 + 1000))
        dues = [rng.randrange(1, 10**9) for _ in offsets]
        index.add(dues, offsets)
        held |= set(offsets)
        pairs += zip(dues, offsets, strict=True)
    assert index.run_count() <= 60_000 // INBOX_MAX  # sorted runs of the inbox's size
    gone = set(rng.sample(sorted(held), 5000))
    held -= gone
    expected = sorted(p for p in pairs if p[1] in held)
    assert index.next_due_ms(held.__contains__) == expected[0][0]
    assert index.due(expected[99][0], 100, held.__contains__) == [o for _, o in expected[:100]]
    # nothing taken: the same again, until the offsets are no longer held
    assert index.due(expected[99][0], 100, held.__contains__) == [o for _, o in expected[:100]]
    held -= {o for _, o in expected[:100]}
    assert index.next_due_ms(held.__contains__) == expected[100][0]
    copy = DueIndex.restore(index.packed_runs())
    assert copy.due(10**9, 10**6, held.__contains__) == [o for _, o in expected[100:]]


def _holding(count: int, spacing: int = 1) -> PartitionDelivery:
    """A group's state of a partition whose first `count` offsets (every
    `spacing`-th, the others settled) are delayed, each its own due time."""
    state = PartitionDelivery()
    end = count * spacing
    state.apply(Leased("g", 0, [(0, end)], "c", 30_000, 1, 0, 1))
    offsets = list(range(0, end, spacing))
    dues = [1_000 + (offset * 7_919) % (count * 10) for offset in offsets]
    state.apply(Held("g", 0, pack_offsets(offsets), pack_offsets(dues)))
    if spacing > 1:
        state.apply(Settled("g", 0, [(o + 1, o + spacing) for o in offsets]))
    return state


def _receive_and_ack(state: PartitionDelivery, start: int, now_ms: int) -> None:
    planned = state.plan(now_ms, 100, start + 100)
    assert planned == [Planned(start, start + 100, 1)]
    state.apply(Leased("g", 0, [(start, start + 100)], "c", now_ms + 30_000, 1, now_ms, 99))
    assert state.stale_parts([(start, start + 100)], 99) == []
    state.apply(Settled("g", 0, [(start, start + 100)]))


def test_a_receive_and_an_ack_cost_the_same_with_thousands_of_delays_pending() -> None:
    quiet = PartitionDelivery()
    quiet.apply(Settled("g", 0, [(0, 40_000)]))
    busy = _holding(20_000, spacing=2)  # held ones with plain ones settled between them
    assert busy.pending_count == 20_000 and busy.next_offset == 40_000
    assert busy.pending == []  # no Python object per delay
    work_quiet = lines_run(lambda: _receive_and_ack(quiet, 40_000, 500))
    work_busy = lines_run(lambda: _receive_and_ack(busy, 40_000, 500))
    assert work_busy <= 2 * work_quiet + 200, (work_quiet, work_busy)
    assert busy.pending_count == 20_000


def test_the_next_due_is_found_without_a_scan() -> None:
    state = _holding(50_000)
    first = min(1_000 + (offset * 7_919) % 500_000 for offset in range(50_000))
    assert lines_run(state.next_due_ms) < 200
    assert state.next_due_ms() == first
    held = state.held
    # 8 bytes a pair (distances from each run's bases), a bit an offset, the inbox's room
    assert held.index.memory_bytes() <= 8 * 50_000 + 16 * INBOX_MAX
    assert held.offsets.memory_bytes() <= 50_000 // 8 + 8192


def test_due_ones_go_out_earliest_first_and_once() -> None:
    state = _holding(30_000)
    dues = {offset: 1_000 + (offset * 7_919) % 300_000 for offset in range(30_000)}
    now = 1_000 + 5_000
    expected = sorted((due, offset) for offset, due in dues.items() if due <= now)
    planned = state.plan(now, 10_000, 30_000)
    assert [(p.start, p.end) for p in planned] == ranges_of(o for _, o in expected)
    assert all(p.attempt == 1 for p in planned)
    for item in planned:
        state.apply(Leased("g", 0, [(item.start, item.end)], "c", now + 30_000, 1, now, 5))
    assert state.plan(now, 10_000, 30_000) == []
    assert state.pending_count == 30_000 - len(expected)
    assert lines_run(lambda: state.plan(now, 100, 30_000)) < 300  # nothing due: no scan


def test_held_offsets_survive_a_snapshot_without_an_object_each() -> None:
    state = _holding(20_000, spacing=3)
    restored = restore_partition(snapshot_partition(state))
    assert restored.pending == [] and restored.pending_count == 20_000
    assert restored.next_due_ms() == state.next_due_ms()
    assert restored.plan(10**9, 10**5, 60_000) == state.plan(10**9, 10**5, 60_000)
    held = restored.held
    assert isinstance(held, HeldBack) and held.index.run_count() <= 20_000 // INBOX_MAX + 1


def test_a_hold_journaled_by_an_earlier_release_still_replays() -> None:
    """State logs of earlier releases hold delayed messages back with
    `Released` (attempt 0): they still do."""
    state = PartitionDelivery()
    state.apply(Leased("g", 0, [(0, 3)], "c", 30_000, 1, 0, 1))
    state.apply(Released("g", 0, [(1, 2)], 0, 5_000))
    assert state.pending_count == 1 and state.next_due_ms() == 5_000
    state.apply(Settled("g", 0, [(0, 1), (2, 3)]))
    assert state.plan(5_000, 10, 3) == [Planned(1, 2, 1)]


def test_a_lease_token_never_names_a_held_message() -> None:
    state = _holding(10)
    assert state.stale_parts([(0, 10)], 1) == [(0, 10)]


def test_a_snapshot_of_an_earlier_release_with_int64_runs_still_restores() -> None:
    """Snapshots written before runs were packed hold them as int64 arrays."""
    offsets = list(range(1000, 3000))
    dues = [5_000 + (offset * 7_919) % 100_000 for offset in offsets]
    ordered = sorted(zip(dues, offsets, strict=True))
    found = OffsetSet()
    found.add(offsets)
    chunks = [(key, bitmap, bytes(data)) for key, bitmap, data in found.chunks()]
    runs = [(pack_offsets(d for d, _ in ordered), pack_offsets(o for _, o in ordered))]
    # as written then: `[chunks, runs]`, no packed runs
    earlier = msgspec.msgpack.decode(msgspec.msgpack.encode([chunks, runs]), type=HeldSnapshot)
    assert earlier.packed_runs == []
    restored = HeldBack.restore(earlier)
    assert len(restored) == 2000 and restored.next_due_ms() == ordered[0][0]
    assert restored.due(10**9, 10**6) == [o for _, o in ordered]


def test_pairs_too_far_apart_for_four_bytes_keep_eight() -> None:
    index, held = DueIndex(), set()
    far = [(2**40 + i * 2**33, 2**50 - i * 2**34) for i in range(300)]  # spans past 2^32
    near = [(10_000 + i, 5 + 3 * i) for i in range(300)]
    for dues, offsets in (zip(*far, strict=True), zip(*near, strict=True)):
        index.add(list(dues), list(offsets))
    held = {o for _, o in far + near}
    copy = DueIndex.restore(index.packed_runs())
    expected = [o for _, o in sorted(far + near)]
    assert copy.due(2**62, 10**6, held.__contains__) == expected
    assert index.due(2**62, 10**6, held.__contains__) == expected


def test_a_negative_due_time_or_offset_is_refused_and_changes_nothing() -> None:
    index = DueIndex()
    index.add([10, 20], [1, 2])
    for dues, offsets in (([5, -1], [3, 4]), ([5, 6], [3, -4])):
        with pytest.raises(ValueError):
            index.add(dues, offsets)
    assert len(index) == 2 and index.due(100, 10, {1, 2}.__contains__) == [1, 2]
    with pytest.raises(ValueError):
        OffsetSet().add([5, -3])
