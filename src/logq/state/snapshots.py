"""A group's delivery state of one partition, as snapshots store it."""

from __future__ import annotations

import msgspec

from logq.state.delivery import Lease, PartitionDelivery, Pending
from logq.state.held import HeldBack, HeldSnapshot
from logq.state.ranges import RangeSet


class PartitionSnapshot(msgspec.Struct, array_like=True):
    floor: int
    next_offset: int
    settled: list[tuple[int, int]]
    leases: list[tuple[int, int, str, int, int]]
    pending: list[tuple[int, int, int, int]]
    # lease tokens, one per lease and per pending range (absent in snapshots
    # written before tokens: those read as 0, no token)
    lease_tokens: list[int] = []
    pending_tokens: list[int] = []
    # the highest lease token ever handed out (0 in snapshots written before
    # it was kept): tokens of settled deliveries are never handed out again,
    # so a dead-letter move after a restart is not taken for an earlier one
    last_token: int = 0
    # the last redrive applied per dead-letter partition (PartitionDelivery.redrives)
    redrives: dict[str, int] = {}
    # delayed messages held back before their first delivery, packed (absent
    # in snapshots written before: those kept them in `pending`)
    held: HeldSnapshot | None = None


def snapshot_partition(state: PartitionDelivery) -> PartitionSnapshot:
    return PartitionSnapshot(
        state.floor,
        state.next_offset,
        list(state.settled),
        [(x.start, x.end, x.consumer, x.deadline_ms, x.attempt) for x in state.leases],
        [(x.start, x.end, x.attempt, x.not_before_ms) for x in state.pending],
        [x.token for x in state.leases],
        [x.token for x in state.pending],
        state.last_token,
        dict(state.redrives),
        state.held.snapshot() if state.held else None,
    )


def restore_partition(snapshot: PartitionSnapshot) -> PartitionDelivery:
    lease_tokens = snapshot.lease_tokens or [0] * len(snapshot.leases)
    pending_tokens = snapshot.pending_tokens or [0] * len(snapshot.pending)
    leases = [  # leased_ms is not kept
        Lease(*lease, token=token)
        for lease, token in zip(snapshot.leases, lease_tokens, strict=True)
    ]
    pending = [
        Pending(*item, token=token)
        for item, token in zip(snapshot.pending, pending_tokens, strict=True)
    ]
    return PartitionDelivery(
        floor=snapshot.floor,
        next_offset=snapshot.next_offset,
        settled=RangeSet(snapshot.settled),
        leases=leases,
        pending=pending,
        last_token=max([snapshot.last_token, *lease_tokens, *pending_tokens]),
        redrives=dict(snapshot.redrives),
        held=HeldBack.restore(snapshot.held) if snapshot.held is not None else HeldBack(),
    )
