"""The lane index of a partition: where its high and low batches lie.

Shared groups serve lanes in priority order, so they must know which of the
offsets they have not settled belong to a lane other than normal. Each
partition keeps (start, end, lane) of such batches, sorted, adjoining
batches of one lane as one run: appends add to it (topic.py), and it is
built by scanning the log the first time a shared group receives, and again
whenever a shared group may stand behind what it holds (a new group, a
seek, a group turned shared).

The index holds only what some shared group has not settled: when a shared
group settles offsets, the entries among them that every shared group of
the topic has settled go (one bisect per settled range, then one check per
entry in it), and so do those below every group's floor. Its memory follows
the unsettled lane batches, not what was ever published. A scan starts at
the lowest `next_offset` of the shared groups, not at their floor: a group
holding delayed messages back keeps its floor below them for days. It holds at most
LANE_BATCHES_MAX entries; past that, later lane batches are served in offset
order until it drains to half, and then it is scanned again from the lowest
floor.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from functools import partial

from logq.broker import topic as topic_module  # LANE_BATCHES_MAX read at call time
from logq.broker.topic import Partition, Runner
from logq.log import PartitionLog
from logq.log.batch import iter_headers
from logq.log.reading import read_past_damage
from logq.state.delivery import PartitionDelivery
from logq.state.ranges import Range

LaneEntry = tuple[int, int, int]  # start, end, lane


def _end(entry: LaneEntry) -> int:
    return entry[1]


def settled_by_all(states: Sequence[PartitionDelivery]) -> Callable[[int, int], bool]:
    """Whether every one of `states` has settled all of [start, end)."""

    def settled(start: int, end: int) -> bool:
        return all(state.all_settled(start, end) for state in states)

    return settled


def forget_settled(
    partition: Partition, ranges: Sequence[Range], states: Sequence[PartitionDelivery]
) -> None:
    """Drop the lane entries in `ranges` (just settled by a shared group) that
    every shared group (`states`) has settled, and those below every floor."""
    lanes = partition.lanes
    if not lanes or not states:
        return
    settled = settled_by_all(states)
    drop: list[int] = []
    for start, end in ranges:
        position = bisect.bisect_right(lanes, start, key=_end)  # first entry ending past start
        while position < len(lanes) and lanes[position][0] < end:
            entry_start, entry_end, _ = lanes[position]
            if settled(entry_start, entry_end):
                drop.append(position)
            position += 1
    for position in sorted(set(drop), reverse=True):
        del lanes[position]
    floor = min(state.floor for state in states)
    del lanes[: bisect.bisect_right(lanes, floor, key=_end)]
    if partition.lanes_overflowed and len(lanes) <= topic_module.LANE_BATCHES_MAX // 2:
        forget_loaded(partition)  # room again: find the lane batches it had to leave out


def forget_loaded(partition: Partition) -> None:
    """Have the next shared receive scan the log for lane batches again."""
    partition.lanes = []
    partition.lanes_loaded = False
    partition.lanes_overflowed = False
    partition.lanes_generation += 1


async def load_lanes(
    partition: Partition,
    shared_states: Callable[[], list[PartitionDelivery]],
    run: Runner,
) -> None:
    """Scan the log, off the loop, for the lane batches that some shared group
    (`shared_states`, asked afresh after each wait) has not settled."""
    generation = partition.lanes_generation
    states = shared_states()
    # lanes are planned from a group's next never-delivered offset on (what
    # lies below it goes out again as a redelivery or a held-back delay, by
    # offset or by time): the scan need not start lower, however far below
    # a delayed message due next week keeps the floor
    offset = min((state.next_offset for state in states), default=0)
    copies = [PartitionDelivery(s.floor, settled=s.settled.copy()) for s in states]
    settled = settled_by_all(copies)  # a snapshot: the scan runs off the loop
    room = topic_module.LANE_BATCHES_MAX + 1
    found: list[LaneEntry] = []
    while offset < partition.readable_end() and len(found) < room:
        # until it has caught up with appends made meanwhile (they note
        # their lane batches only once the index is loaded)
        more, reached = await run(
            partial(scan_lanes, partition.log, offset, settled, room - len(found))
        )
        found += more
        if reached <= offset:
            break
        offset = reached
    merge_scanned(partition, found, len(found) < room, generation, shared_states())


def merge_scanned(
    partition: Partition,
    found: list[LaneEntry],
    complete: bool,
    generation: int,
    states: Sequence[PartitionDelivery],
) -> None:
    """Merge what a scan found with what appends noted meanwhile."""
    settled = settled_by_all(states)
    entries = [
        entry for entry in coalesced([*found, *partition.lanes]) if not settled(entry[0], entry[1])
    ]
    partition.lanes_overflowed = not complete or len(entries) > topic_module.LANE_BATCHES_MAX
    partition.lanes = entries[: topic_module.LANE_BATCHES_MAX]
    if partition.lanes_generation == generation:
        partition.lanes_loaded = True


def coalesced(entries: list[LaneEntry]) -> list[LaneEntry]:
    """`entries` sorted, each run of adjoining or overlapping entries of one
    lane made one entry."""
    runs: list[LaneEntry] = []
    for start, end, lane in sorted(entries):
        if runs and runs[-1][2] == lane and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end), lane)
        else:
            runs.append((start, end, lane))
    return runs


def scan_lanes(
    log: PartitionLog, start: int, settled: Callable[[int, int], bool], room: int
) -> tuple[list[LaneEntry], int]:
    """(start, end, lane) of up to `room` batches outside the normal lane from
    `start` on that are not `settled`, and the offset the scan reached (blocking)."""
    found: list[LaneEntry] = []
    offset = max(start, log.first_offset)
    for result in read_past_damage(log, offset, 1 << 20):  # damage is passed over
        if len(found) >= room:
            break
        for _, header in iter_headers(result.data):
            if header.next_offset <= offset:
                continue
            offset = header.next_offset
            if not header.lane or settled(header.base_offset, header.next_offset):
                continue
            if found and found[-1][1] == header.base_offset and found[-1][2] == header.lane:
                found[-1] = (found[-1][0], header.next_offset, header.lane)
            else:
                found.append((header.base_offset, header.next_offset, header.lane))
        offset = max(offset, result.next_offset)
    return found, offset
