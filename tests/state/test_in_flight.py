"""In-flight counts the unsettled offsets of the leases, whichever side of
the floor their settled part lies."""

from __future__ import annotations

from logq.state.delivery import PartitionDelivery
from logq.state.events import Leased, Settled


def test_a_lease_acked_at_its_start_counts_only_what_is_left() -> None:
    state = PartitionDelivery()
    state.apply(Leased("t/g", 0, [(0, 2)], "c", 10_000, 1, 0, 1))
    state.apply(Settled("t/g", 0, [(0, 1)]))  # the floor moves over it
    assert state.floor == 1
    assert state.in_flight == 1
    assert state.unsettled(2) == 1


def test_a_lease_acked_in_the_middle_and_at_its_start() -> None:
    state = PartitionDelivery()
    state.apply(Leased("t/g", 0, [(0, 10)], "c", 10_000, 1, 0, 1))
    state.apply(Settled("t/g", 0, [(4, 6)]))
    assert state.in_flight == 8
    state.apply(Settled("t/g", 0, [(0, 3)]))
    assert (state.floor, state.in_flight, state.unsettled(10)) == (3, 5, 5)


def test_a_settled_part_of_a_lease_below_the_floor_is_not_in_flight() -> None:
    state = PartitionDelivery()
    state.apply(Leased("t\0g", 0, [(0, 3)], "c", 60_000, 1, 0, 1))
    assert state.in_flight == 3
    state.apply(Settled("t\0g", 0, [(0, 1)]))  # the floor moves past offset 0
    assert state.floor == 1
    assert state.in_flight == 2
    state.apply(Settled("t\0g", 0, [(2, 3)]))
    assert state.in_flight == 1
