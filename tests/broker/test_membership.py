"""Membership and cooperative rebalancing, as pure state (no clock, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from logq.broker.assignors import contiguous, register_assignor, sticky
from logq.broker.membership import Membership

SESSION = 1_000


def owned(membership: Membership) -> dict[str, list[int]]:
    return {name: entry["partitions"] for name, entry in membership.assignment().items()}


def test_first_members_share_partitions_evenly() -> None:
    m = Membership(12, ordered=True)
    for name in ("a", "b", "c"):
        m.touch(name, 0, SESSION)
    m.settle(lambda p: 0, 0)  # nothing in flight: moves are immediate
    assert sorted(len(p) for p in owned(m).values()) == [4, 4, 4]
    assert not m.revoking


def test_a_joining_member_takes_only_what_it_needs_and_others_keep_going() -> None:
    m = Membership(12, ordered=True)
    for name in ("a", "b", "c"):
        m.touch(name, 0, SESSION)
    m.settle(lambda p: 0, 0)
    before = owned(m)
    m.touch("d", 10, SESSION)
    # each old member gives up exactly one partition, and keeps serving the rest
    assert len(m.revoking) == 3
    for name in ("a", "b", "c"):
        assert len(m.partitions_for(name)) == 3
        assert set(m.partitions_for(name)) <= set(before[name])
    assert m.partitions_for("d") == []
    assert sorted(m.assignment()["d"]["incoming"]) == sorted(m.revoking)
    # the moves happen as each partition drains
    busy = set(list(m.revoking)[:1])
    moved = m.settle(lambda p: 5 if p in busy else 0, 20)
    assert len(moved) == 2
    assert len(m.partitions_for("d")) == 2
    assert m.history[-1].done_ms is None
    moved = m.settle(lambda p: 0, 30)
    assert moved == list(busy)
    assert sorted(len(p) for p in owned(m).values()) == [3, 3, 3, 3]
    assert m.history[-1].done_ms == 30
    assert len(m.history[-1].moves) == 3


def test_revoking_partitions_move_when_the_bound_passes() -> None:
    m = Membership(4, ordered=True, revoke_timeout_ms=500)
    m.touch("a", 0, SESSION)
    m.touch("b", 0, SESSION)
    assert len(m.revoking) == 2
    assert m.settle(lambda p: 1, 499) == []
    assert len(m.settle(lambda p: 1, 500)) == 2
    assert len(m.partitions_for("b")) == 2


def test_a_member_that_leaves_hands_its_partitions_over_at_once() -> None:
    m = Membership(12, ordered=True)
    for name in ("a", "b", "c", "d"):
        m.touch(name, 0, SESSION)
    m.settle(lambda p: 0, 0)
    before = owned(m)
    m.leave("b", 5)
    assert not m.revoking  # nothing to wait for: b is gone
    after = owned(m)
    for name in ("a", "c", "d"):
        assert set(before[name]) <= set(after[name])  # sticky: nobody lost anything
    assert sorted(len(p) for p in after.values()) == [4, 4, 4]


def test_silent_members_expire() -> None:
    m = Membership(6, ordered=True)
    m.touch("a", 0, SESSION)
    m.touch("b", 0, 5_000)
    m.touch("a", 900, SESSION)
    assert m.expire(1_500) == []
    assert m.expire(1_901) == ["a"]
    assert m.partitions_for("b") == list(range(6))
    assert "session expired" in m.history[-1].reason


def test_shared_groups_never_revoke() -> None:
    m = Membership(6, ordered=False)
    m.touch("a", 0, SESSION)
    m.touch("b", 0, SESSION)
    assert not m.revoking
    assert owned(m) == {"a": list(range(6)), "b": list(range(6))}


def test_range_assignor_is_contiguous() -> None:
    assert contiguous(5, ["a", "b"], {}) == {0: "a", 1: "a", 2: "a", 3: "b", 4: "b"}


def test_strategies_are_pluggable() -> None:
    register_assignor(
        "all-to-first", lambda n, members, current: dict.fromkeys(range(n), members[0])
    )
    m = Membership(3, ordered=True)
    m.set_strategy("all-to-first", 0)
    m.touch("a", 0, SESSION)
    m.touch("b", 0, SESSION)
    assert owned(m) == {"a": [0, 1, 2], "b": []}


@given(
    count=st.integers(1, 40),
    before=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True),
    after=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True),
)
def test_sticky_is_balanced_and_moves_little(
    count: int, before: list[str], after: list[str]
) -> None:
    first = sticky(count, before, {})
    second = sticky(count, after, first)
    assert sorted(second) == list(range(count))
    loads = [sum(1 for owner in second.values() if owner == name) for name in after]
    assert max(loads) - min(loads) <= 1
    # a partition moves only if its owner left or was over its fair share
    kept = [name for name in after if name in before]
    for name in kept:
        had = [p for p, owner in first.items() if owner == name]
        has = [p for p, owner in second.items() if owner == name]
        lost = set(had) - set(has)
        assert not lost or len(has) >= count // len(after)
