"""The timing wheel against a sorted list: same timers out, same order, never early."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from logq.broker.wheel import TimingWheel


def test_timers_come_out_in_due_order_and_not_before() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=10, slots=4, levels=3)
    for due, name in ((35, "c"), (5, "a"), (35, "d"), (12, "b"), (400, "e")):
        assert wheel.add(due, name)
    assert wheel.advance(4) == []
    assert wheel.advance(5) == [(5, "a")]
    assert wheel.advance(34) == [(12, "b")]
    assert wheel.advance(35) == [(35, "c"), (35, "d")]  # same time: the order they came
    assert len(wheel) == 1
    assert wheel.next_due_ms() is not None and wheel.next_due_ms() <= 400  # type: ignore[operator]
    assert wheel.advance(10_000) == [(400, "e")]
    assert len(wheel) == 0 and wheel.next_due_ms() is None


def test_beyond_the_horizon_is_refused_and_the_past_fires_at_once() -> None:
    wheel: TimingWheel[int] = TimingWheel(tick_ms=10, slots=4, levels=2, start_ms=1_000)
    assert wheel.horizon_ms == 160
    assert not wheel.add(1_000 + 160, 1)
    assert wheel.add(1_000 + 159, 2)
    assert wheel.add(3, 3)  # already due
    assert wheel.advance(1_000) == [(3, 3)]


class WheelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimingWheel[int] = TimingWheel(tick_ms=7, slots=4, levels=3, start_ms=1_000)
        self.now = 1_000
        self.model: list[tuple[int, int]] = []  # (due, sequence)
        self.sequence = 0

    @rule(ahead=st.integers(min_value=-50, max_value=600))
    def add(self, ahead: int) -> None:
        due = self.now + ahead
        accepted = self.wheel.add(due, self.sequence)
        assert accepted == (due // 7 - self.now // 7 < 4**3)
        if accepted:
            self.model.append((due, self.sequence))
        self.sequence += 1

    @rule(
        step=st.one_of(
            st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=5_000)
        )
    )
    def advance(self, step: int) -> None:
        self.now += step
        fired = self.wheel.advance(self.now)
        expected = sorted(item for item in self.model if item[0] <= self.now)
        self.model = [item for item in self.model if item[0] > self.now]
        assert fired == expected

    @invariant()
    def sizes_and_bounds(self) -> None:
        assert len(self.wheel) == len(self.model)
        if self.model:
            bound = self.wheel.next_due_ms()
            assert bound is not None and bound <= min(due for due, _ in self.model)


TestWheel = WheelMachine.TestCase
TestWheel.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


@pytest.mark.parametrize("count", [100_000])
def test_many_timers_over_an_hour(count: int) -> None:
    wheel: TimingWheel[int] = TimingWheel(tick_ms=10, slots=256, levels=3)
    for index in range(count):
        assert wheel.add((index * 36_000_00 // count) % 3_600_000, index)
    seen = 0
    for now in range(0, 3_600_001, 60_000):
        fired = wheel.advance(now)
        assert all(due <= now for due, _ in fired)
        seen += len(fired)
    assert seen == count and len(wheel) == 0
