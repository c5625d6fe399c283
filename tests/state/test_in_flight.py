"""In-flight counts what is leased and not settled, the floor included."""

from __future__ import annotations

from logq.state.delivery import PartitionDelivery
from logq.state.events import Leased, Settled


def test_a_settled_part_of_a_lease_below_the_floor_is_not_in_flight() -> None:
    state = PartitionDelivery()
    state.apply(Leased("t\0g", 0, [(0, 3)], "c", 60_000, 1, 0, 1))
    assert state.in_flight == 3
    state.apply(Settled("t\0g", 0, [(0, 1)]))  # the floor moves past offset 0
    assert state.floor == 1
    assert state.in_flight == 2
    state.apply(Settled("t\0g", 0, [(2, 3)]))
    assert state.in_flight == 1
