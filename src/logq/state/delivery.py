"""One group's delivery state in one partition.

Offsets below `floor` are settled; above it, `settled` holds the ranges
acked out of order, `leases` the ranges in flight (consumer, deadline,
attempt), `pending` the ranges waiting for redelivery (attempts made, not
before when), `held` the delayed messages held back before their first
delivery (state/held.py: no object per message, found by due time), and
`next_offset` is where never-delivered messages start. Memory follows
in-flight work and gaps, not the number of messages; held-back delays take
about 8 to 10 bytes each.

Each delivery is named by a lease token, unique within the partition's
state for ever: settlements that carry one act only while the offsets'
current delivery is the one named (`stale_parts`). A range handed back
keeps the token of the delivery it came from, so the last holder's late
ack still counts while nobody has received the message again. Attempt
numbers cannot serve: a seek or a redrive starts them over.

Mutations happen only through `apply(event)`, live and on replay alike.
Planning a delivery reads the state and returns what to lease; the caller
turns the plan into a `Leased` event and applies it before any await, so two
concurrent receives never plan the same offsets.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from logq.state.events import (
    Event,
    Extended,
    Held,
    Leased,
    Lost,
    Redriven,
    Released,
    Seeked,
    Settled,
)
from logq.state.held import HeldBack, unpack_offsets
from logq.state.lane_guard import LaneGuard, LanePolicy
from logq.state.ranges import Range, RangeSet, ranges_of


@dataclass(slots=True)
class Lease:
    start: int
    end: int
    consumer: str
    deadline_ms: int
    attempt: int
    leased_ms: int = 0  # when it was handed out (0: unknown, restored from a snapshot)
    token: int = 0  # the delivery's lease token (0: none, as before tokens)


@dataclass(slots=True)
class Pending:
    start: int
    end: int
    attempt: int  # deliveries already made
    not_before_ms: int
    token: int = 0  # lease token of the delivery it came back from (0: none)


@dataclass(frozen=True, slots=True)
class Planned:
    """A run of offsets to deliver as `attempt` (1 for a first delivery)."""

    start: int
    end: int
    attempt: int


@dataclass(slots=True)
class PartitionDelivery:
    floor: int = 0
    next_offset: int = 0
    settled: RangeSet = field(default_factory=RangeSet)
    leases: list[Lease] = field(default_factory=list)  # sorted by start, disjoint
    pending: list[Pending] = field(default_factory=list)  # sorted by start, disjoint
    last_token: int = 0  # the highest lease token handed out
    # per dead-letter partition (`Redriven.source`), the token of the last
    # redrive applied from it: one entry per DLQ partition that ever redrove here
    redrives: dict[str, int] = field(default_factory=dict)
    held: HeldBack = field(default_factory=HeldBack)  # delayed, not delivered yet

    # -- queries --------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        # offsets below the floor are settled though `settled` no longer holds them
        return sum(
            end - start
            for lease in self.leases
            for start, end in self.unsettled_ranges(lease.start, lease.end)
        )

    @property
    def pending_count(self) -> int:
        return sum(item.end - item.start for item in self.pending) + len(self.held)

    def _settled_within(self, start: int, end: int) -> int:
        """Settled offsets of [start, end): those below the floor, and the
        ranges acked above it (`settled` keeps nothing below the floor)."""
        if end <= self.floor:
            return end - start
        low = max(start, self.floor)
        return (end - start) - sum(b - a for a, b in self.settled.missing(low, end))

    def unsettled(self, log_end: int) -> int:
        """Messages of [floor, log_end) not yet settled (the group's backlog)."""
        return max(0, log_end - self.floor - self._settled_within(self.floor, log_end))

    def lease_of(self, offset: int) -> Lease | None:
        index = bisect.bisect_right([lease.start for lease in self.leases], offset) - 1
        if index >= 0 and offset < self.leases[index].end:
            return self.leases[index]
        return None

    def is_settled(self, offset: int) -> bool:
        return offset < self.floor or offset in self.settled

    def all_settled(self, start: int, end: int) -> bool:
        """Whether every offset of [start, end) is settled."""
        return end <= self.floor or self.settled.covers(max(start, self.floor), end)

    def plan(self, now_ms: int, count_max: int, log_end: int) -> list[Planned]:
        """Due redeliveries first (lowest offset first), then fresh offsets."""
        planned: list[Planned] = []
        budget = count_max
        for item in self.pending:
            if budget <= 0:
                break
            if item.not_before_ms > now_ms:
                continue
            for start, end in self.settled.missing(max(item.start, self.floor), item.end):
                take = min(end - start, budget)
                planned.append(Planned(start, start + take, item.attempt + 1))
                budget -= take
                if budget <= 0:
                    break
        if budget > 0 and self.held:
            for start, end in ranges_of(self.held.due(now_ms, budget)):
                planned.append(Planned(start, end, 1))
                budget -= end - start
        if budget > 0 and self.next_offset < log_end:
            planned += [Planned(start, end, 1) for start, end in self._fresh(log_end, budget)]
        return planned

    def _fresh(self, log_end: int, count_max: int) -> list[Range]:
        """Up to `count_max` offsets from `next_offset` on never handed out,
        in offset order: what lanes took ahead of it (leased, pending or
        settled there) is passed over."""
        start = self.next_offset
        if not self._ahead():
            return [(start, min(log_end, start + count_max))]
        fresh: list[Range] = []
        for low, high in self.free(start, log_end):
            take = min(high - low, count_max)
            fresh.append((low, low + take))
            count_max -= take
            if count_max <= 0:
                break
        return fresh

    def _ahead(self) -> bool:
        """Whether anything lies at or past `next_offset` (taken ahead by a lane)."""
        last = self.settled.last_range()
        return (
            (last is not None and last[1] > self.next_offset)
            or any(lease.end > self.next_offset for lease in self.leases[-1:])
            or any(item.end > self.next_offset for item in self.pending[-1:])
        )

    def next_token(self, now_ms: int) -> int:
        """A lease token for a new delivery: above every token handed out,
        and at least `now_ms` x 1000, so that after a crash that lost the
        last (not yet fsynced) leases the tokens handed out again are still
        new (tokens stay below 2^53: exact in JSON numbers too)."""
        return max(self.last_token + 1, now_ms * 1000)

    def takes_redrive(self, source: str, token: int) -> bool:
        """Whether a redrive from `source` under `token` is not applied yet
        (one without a token, from an old journal, always is new)."""
        return not token or token > self.redrives.get(source, 0)

    def stale_parts(self, ranges: Sequence[Range], token: int) -> list[Range]:
        """Unsettled parts of `ranges` whose current delivery is not the one
        named by `token`: leased under another token, or handed back after
        another delivery (a redriven or seeked-over offset has none)."""
        if not ranges:
            return []
        lowest, highest = min(start for start, _ in ranges), max(end for _, end in ranges)
        stale: list[Range] = []
        spans: list[Lease] | list[Pending]
        for spans in (self.leases, self.pending):  # each sorted and disjoint: by end too
            index = bisect.bisect_right(spans, lowest, key=lambda item: item.end)
            for item in spans[index:]:
                if item.start >= highest:
                    break
                if item.token == token:
                    continue
                for start, end in ranges:
                    low, high = max(start, item.start), min(end, item.end)
                    if low < high:
                        stale.extend(self.unsettled_ranges(low, high))
        if self.held and token:  # held back: no delivery names them
            for start, end in ranges:
                stale.extend(self.held.offsets.ranges_within(start, end))
        return sorted(stale)

    def next_due_ms(self) -> int | None:
        """Earliest time a pending range or a held-back message becomes deliverable."""
        due = min((item.not_before_ms for item in self.pending), default=None)
        held = self.held.next_due_ms() if self.held else None
        if held is None or due is None:
            return due if held is None else held
        return min(due, held)

    def expired(self, now_ms: int) -> list[Lease]:
        return [lease for lease in self.leases if lease.deadline_ms <= now_ms]

    def unsettled_ranges(self, start: int, end: int) -> list[Range]:
        return self.settled.missing(max(start, self.floor), end) if end > self.floor else []

    # -- mutation -------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if isinstance(event, Leased):
            for start, end in event.ranges:
                self.held.release(start, end)
                self._remove_pending(start, end)
                self._carve_leases(start, end)
                self._insert_lease(
                    Lease(
                        start,
                        end,
                        event.consumer,
                        event.deadline_ms,
                        event.attempt,
                        event.at_ms,
                        event.token,
                    )
                )
                if start <= self.next_offset:
                    self.next_offset = max(self.next_offset, end)
            self.last_token = max(self.last_token, event.token)
            self._advance_next()
        elif isinstance(event, Settled | Lost):
            for start, end in event.ranges:
                self.settled.add(start, end)
                self.held.release(start, end)
                self._remove_pending(start, end)
            self._advance_floor()
            self._drop_settled_leases()
            self._advance_next()
        elif isinstance(event, Released):
            for start, end in event.ranges:
                carved = self._carve_leases(start, end)
                self.held.release(start, end)
                self._remove_pending(start, end)
                for gap_start, gap_end in self.unsettled_ranges(start, end):
                    for low, high, token in _tokens_over(carved, gap_start, gap_end):
                        self._insert_pending(
                            Pending(low, high, event.attempt, event.not_before_ms, token)
                        )
        elif isinstance(event, Extended):
            for start, end in event.ranges:
                for piece in self._carve_leases(start, end):
                    piece.deadline_ms = event.deadline_ms
                    self._insert_lease(piece)
        elif isinstance(event, Redriven):
            if not self.takes_redrive(event.source, event.token):
                return  # applied already (a redrive finished again after a crash)
            if event.token:
                self.redrives[event.source] = event.token
            # what was never handed out since the group last moved has nothing to hand back
            for start, end in [part for r in event.ranges for part in self.handed_out(*r)]:
                if start < self.floor:
                    # lower the floor: what lay below it stays settled, as ranges
                    self.settled.add(start, self.floor)
                    self.floor = start
                self.settled.remove(start, end)
                self._carve_leases(start, end)
                self.held.release(start, end)
                self._remove_pending(start, end)
                self._insert_pending(Pending(start, end, 0, event.not_before_ms))
        elif isinstance(event, Seeked):
            self.floor = self.next_offset = event.offset
            self.settled = RangeSet()
            self.leases.clear()
            self.pending.clear()
            self.held.clear()
        elif isinstance(event, Held):
            self._hold(event)

    def _hold(self, event: Held) -> None:
        """Take leased offsets back as held until their due times (they were
        leased by the receive that found them not due yet)."""
        offsets, dues = unpack_offsets(event.offsets), unpack_offsets(event.due_ms)
        if len(offsets) != len(dues):
            raise ValueError("a hold with more offsets than due times or fewer")
        ranges = ranges_of(offsets)
        self._carve_leases_over(ranges)
        if self.pending:
            for start, end in ranges:
                self._remove_pending(start, end)
        if not ranges:
            return
        low, high = ranges[0][0], ranges[-1][1]
        if low < self.floor or self.settled.missing(low, high) != [(low, high)]:
            # some are settled (an auto-ack group settles what it plans): those stay so
            kept = [i for i, offset in enumerate(offsets) if not self.is_settled(offset)]
            offsets = array("q", [offsets[i] for i in kept])
            dues = array("q", [dues[i] for i in kept])
        self.held.hold(offsets, dues)

    def _advance_next(self) -> None:
        """Move `next_offset` over what lanes took ahead of it (leased,
        settled or pending offsets just above it): it always marks the first
        offset never handed out."""
        moved = True
        while moved:
            moved = False
            spans: list[Lease | Pending] = [*self.leases, *self.pending]
            for item in spans:
                if item.start <= self.next_offset < item.end:
                    self.next_offset = item.end
                    moved = True
            while self.next_offset in self.held:  # each held offset passed once
                self.next_offset += 1
                moved = True
            if self.next_offset in self.settled:
                for start, end in self.settled:
                    if start <= self.next_offset < end:
                        self.next_offset = end
                        moved = True
                        break

    def free(self, start: int, end: int) -> list[Range]:
        """Parts of [start, end) not settled, leased or pending."""
        gaps = self.settled.missing(max(start, self.floor), end)
        spans: list[Lease | Pending] = [*self.leases, *self.pending]
        for item in spans:
            if item.end <= start or item.start >= end:
                continue
            gaps = _subtract(gaps, item.start, item.end)
        if self.held and gaps:
            first = self.held.offsets.first_at_or_after(gaps[0][0])
            if first is not None and first < gaps[-1][1]:
                gaps = _subtract_all(gaps, self.held.offsets.ranges_within(first, gaps[-1][1]))
        return gaps

    def attempts_made(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """[start, end) split by the leases and pending ranges over it, each
        part with the deliveries made to it (the lease's attempt, or the
        pending range's; 0 where neither lies)."""
        parts: list[tuple[int, int, int]] = []
        at = start
        spans: list[Lease | Pending] = [*self.leases, *self.pending]  # disjoint
        for item in sorted(spans, key=lambda span: span.start):
            low, high = max(item.start, at), min(item.end, end)
            if low >= high:
                continue
            if at < low:
                parts.append((at, low, 0))
            parts.append((low, high, item.attempt))
            at = high
        if at < end:
            parts.append((at, end, 0))
        return parts

    def handed_out(self, start: int, end: int) -> list[Range]:
        """Parts of [start, end) handed out since the group last moved: below
        `next_offset`, or leased, pending or settled ahead of it (by a lane)."""
        parts = [(start, min(end, self.next_offset))] if start < self.next_offset else []
        low = max(start, self.next_offset)
        if low < end:
            taken = [(low, end)]
            for gap_start, gap_end in self.free(low, end):
                taken = _subtract(taken, gap_start, gap_end)
            parts += taken
        return parts

    def delivered_unsettled(self, start: int, end: int) -> list[Range]:
        """Unsettled parts of [start, end) that were handed out: below
        `next_offset`, or leased or pending ahead of it by a lane."""
        parts = self.unsettled_ranges(start, min(end, self.next_offset))
        spans: list[Lease | Pending] = [*self.leases, *self.pending]
        for item in spans:
            low, high = max(item.start, start, self.next_offset), min(item.end, end)
            if low < high:
                parts.extend(self.settled.missing(low, high))
        return sorted(parts)

    def plan_lanes(
        self,
        now_ms: int,
        count_max: int,
        log_end: int,
        lanes: Sequence[tuple[int, int, int]],
        rank: Mapping[int, int],
        guard: LaneGuard,
        policy: LanePolicy,
    ) -> list[Planned]:
        """Shared groups with priority lanes: due redeliveries first, then
        fresh offsets lane by lane in `rank` order (lane index -> position,
        0 first), each lane in offset order. `lanes` lists the (start, end,
        lane) of batches outside the normal lane (index 0), sorted. How many
        each lane gets is the starvation guard's (`guard`, see lane_guard.py):
        the highest lane first, a lower one once its bound has passed."""
        planned = self.plan(now_ms, count_max, self.next_offset)  # due redeliveries only
        budget = count_max - sum(p.end - p.start for p in planned)
        if budget <= 0 or self.next_offset >= log_end:
            return planned
        first = bisect.bisect_right(lanes, self.next_offset, key=lambda entry: entry[1])
        by_lane = self._free_by_lane(lanes, first, log_end, rank, budget + 1)
        by_lane[0] = self._free_normal(lanes, first, log_end, rank, budget + 1)
        order = sorted(by_lane, key=lambda lane: rank.get(lane, 0))
        waiting = [(lane, sum(end - start for start, end in by_lane[lane])) for lane in order]
        takes = guard.allot(waiting, budget, now_ms, policy)
        for lane, take in zip(order, takes, strict=True):
            left = take
            for start, end in by_lane[lane]:
                if left <= 0:
                    break
                count = min(end - start, left)
                planned.append(Planned(start, start + count, 1))
                left -= count
        return planned

    def _free_by_lane(
        self,
        lanes: Sequence[tuple[int, int, int]],
        first: int,
        log_end: int,
        rank: Mapping[int, int],
        wanted: int,
    ) -> dict[int, list[Range]]:
        """Up to `wanted` free offsets of each lane but normal, from lane entry `first` on."""
        by_lane: dict[int, list[Range]] = {lane: [] for lane in rank if lane != 0}
        found = dict.fromkeys(by_lane, 0)
        hungry = len(by_lane)
        for position in range(first, len(lanes)):
            start, end, lane = lanes[position]
            if start >= log_end or hungry == 0:
                break
            if lane not in found or found[lane] >= wanted:
                continue
            for low, high in self.free(max(start, self.next_offset), min(end, log_end)):
                stop = min(high, low + wanted - found[lane])
                by_lane[lane].append((low, stop))
                found[lane] += stop - low
                if found[lane] >= wanted:
                    hungry -= 1
                    break
        return by_lane

    def _free_normal(
        self,
        lanes: Sequence[tuple[int, int, int]],
        first: int,
        log_end: int,
        rank: Mapping[int, int],
        wanted: int,
    ) -> list[Range]:
        """Up to `wanted` free offsets of the normal lane: those in no entry of
        another lane (a lane no longer configured counts as normal)."""
        normal: list[Range] = []
        index = first
        for start, end in self.free(self.next_offset, log_end):
            cursor = start
            while cursor < end and wanted > 0:
                while index < len(lanes) and (
                    lanes[index][1] <= cursor or lanes[index][2] not in rank
                ):
                    index += 1
                stop = end if index == len(lanes) else min(end, max(lanes[index][0], cursor))
                if stop > cursor:
                    take = min(stop - cursor, wanted)
                    normal.append((cursor, cursor + take))
                    wanted -= take
                cursor = stop if index == len(lanes) else max(stop, lanes[index][1])
            if wanted <= 0:
                break
        return normal

    def _advance_floor(self) -> None:
        first = self.settled.first_range()
        if first is not None and first[0] <= self.floor:
            self.floor = max(self.floor, first[1])
            self.settled.drop_below(self.floor)
            self.next_offset = max(self.next_offset, self.floor)

    def _drop_settled_leases(self) -> None:
        self.leases = [
            lease
            for lease in self.leases
            if lease.end > self.floor and self.unsettled_ranges(lease.start, lease.end)
        ]

    def _insert_lease(self, lease: Lease) -> None:
        index = bisect.bisect_left([item.start for item in self.leases], lease.start)
        self.leases.insert(index, lease)

    def _carve_leases(self, start: int, end: int) -> list[Lease]:
        """Remove [start, end) from the leases; return the removed pieces."""
        carved: list[Lease] = []
        kept: list[Lease] = []
        for lease in self.leases:
            if lease.end <= start or lease.start >= end:
                kept.append(lease)
                continue
            if lease.start < start:
                kept.append(replace(lease, end=start))
            if lease.end > end:
                kept.append(replace(lease, start=end))
            carved.append(replace(lease, start=max(lease.start, start), end=min(lease.end, end)))
        self.leases = sorted(kept, key=lambda lease: lease.start)
        return carved

    def _carve_leases_over(self, ranges: list[Range]) -> None:
        """Remove sorted `ranges` from the leases, in one pass."""
        if not ranges or not self.leases:
            return
        kept: list[Lease] = []
        for lease in self.leases:
            pieces = _subtract_all([(lease.start, lease.end)], _overlapping(ranges, lease))
            if len(pieces) == 1 and pieces[0] == (lease.start, lease.end):
                kept.append(lease)
            else:
                kept.extend(replace(lease, start=low, end=high) for low, high in pieces)
        self.leases = kept

    def _insert_pending(self, item: Pending) -> None:
        index = bisect.bisect_left([entry.start for entry in self.pending], item.start)
        self.pending.insert(index, item)

    def _remove_pending(self, start: int, end: int) -> None:
        kept: list[Pending] = []
        for item in self.pending:
            if item.end <= start or item.start >= end:
                kept.append(item)
                continue
            if item.start < start:
                kept.append(replace(item, end=start))
            if item.end > end:
                kept.append(replace(item, start=end))
        self.pending = sorted(kept, key=lambda entry: entry.start)


def _tokens_over(pieces: list[Lease], start: int, end: int) -> list[tuple[int, int, int]]:
    """[start, end) split by the lease pieces (sorted) over it, each part
    with the token of its piece (0 where none lies)."""
    parts: list[tuple[int, int, int]] = []
    at = start
    for piece in pieces:
        low, high = max(piece.start, at), min(piece.end, end)
        if low >= high:
            continue
        if at < low:
            parts.append((at, low, 0))
        parts.append((low, high, piece.token))
        at = high
    if at < end:
        parts.append((at, end, 0))
    return parts


def _overlapping(ranges: list[Range], lease: Lease) -> list[Range]:
    """The sorted disjoint `ranges` that overlap the lease."""
    first = bisect.bisect_right(ranges, lease.start, key=lambda item: item[1])
    last = bisect.bisect_left(ranges, lease.end, key=lambda item: item[0])
    return ranges[first:last]


def _subtract_all(gaps: list[Range], holes: list[Range]) -> list[Range]:
    """Sorted disjoint `gaps` less sorted disjoint `holes`, in one pass."""
    if not holes:
        return gaps
    kept: list[Range] = []
    index = 0
    for low, high in gaps:
        while index < len(holes) and holes[index][1] <= low:
            index += 1
        at, scan = low, index
        while scan < len(holes) and holes[scan][0] < high:
            if holes[scan][0] > at:
                kept.append((at, holes[scan][0]))
            at = max(at, holes[scan][1])
            scan += 1
        if at < high:
            kept.append((at, high))
    return kept


def _subtract(gaps: list[Range], start: int, end: int) -> list[Range]:
    kept: list[Range] = []
    for low, high in gaps:
        if high <= start or low >= end:
            kept.append((low, high))
            continue
        if low < start:
            kept.append((low, start))
        if high > end:
            kept.append((end, high))
    return kept
