"""A redriven range comes back as a first delivery, below the floor or above it."""

from __future__ import annotations

from logq.state.delivery import PartitionDelivery, Planned
from logq.state.events import Leased, Redriven, Settled


def delivered_and_settled(count: int) -> PartitionDelivery:
    state = PartitionDelivery()
    state.apply(Leased("t/g", 0, [(0, count)], "c", 1_000, 1))
    state.apply(Settled("t/g", 0, [(0, count)]))
    return state


def test_redrive_below_the_floor_lowers_it_and_keeps_the_rest_settled() -> None:
    state = delivered_and_settled(10)
    assert state.floor == 10
    state.apply(Redriven("t/g", 0, [(3, 5)], 500))
    assert state.floor == 3
    assert [state.is_settled(o) for o in range(10)] == [True] * 3 + [False] * 2 + [True] * 5
    assert state.plan(now_ms=499, count_max=10, log_end=10) == []
    assert state.plan(now_ms=500, count_max=10, log_end=10) == [Planned(3, 5, 1)]
    assert state.unsettled(10) == 2
    state.apply(Leased("t/g", 0, [(3, 5)], "c", 2_000, 1))
    state.apply(Settled("t/g", 0, [(3, 5)]))
    assert state.floor == 10 and state.unsettled(10) == 0


def test_redrive_of_offsets_never_delivered_changes_nothing() -> None:
    state = delivered_and_settled(4)
    state.apply(Redriven("t/g", 0, [(6, 8)], 0))
    assert state.plan(now_ms=0, count_max=10, log_end=8) == [Planned(4, 8, 1)]
