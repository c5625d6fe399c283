"""A hierarchical timing wheel: timers for the near future, O(1) to add.

Level 0 has `slots` buckets of `tick_ms` each; every level above covers
`slots` times the span of the one below. A timer goes into the lowest level
whose span reaches its due time; as time passes, the buckets of higher
levels whose time has come are emptied into the levels below (cascading),
and the level-0 buckets that are due hand out their timers. Timers due past
the `horizon_ms` are refused: the caller keeps those in its durable store
(for logq, the partition log and the groups' journaled state) and adds them
once they come near.

`advance(now)` costs the buckets it passes plus the timers it hands out:
it skips straight over empty stretches by jumping to the next occupied
bucket, so a long quiet gap costs nothing. Timers come out in due order,
timers of the same due time in the order they were added; none comes out
before its due time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class TimingWheel(Generic[T]):
    __slots__ = ("_buckets", "_counter", "_levels", "_now", "_size", "_slots", "tick_ms")

    def __init__(
        self, tick_ms: int = 10, slots: int = 256, levels: int = 4, start_ms: int = 0
    ) -> None:
        if tick_ms < 1 or slots < 2 or levels < 1:
            raise ValueError("tick_ms >= 1, slots >= 2 and levels >= 1 are needed")
        self.tick_ms = tick_ms
        self._slots = slots
        self._levels = levels
        self._now = start_ms // tick_ms  # in ticks: everything before this tick is handed out
        # level -> slot -> [(due_ms, sequence, item)]
        self._buckets: list[list[list[tuple[int, int, T]]]] = [
            [[] for _ in range(slots)] for _ in range(levels)
        ]
        self._size = 0
        self._counter = 0

    @property
    def horizon_ms(self) -> int:
        """How far past the current time a timer may be due."""
        return int(self.tick_ms * self._slots**self._levels)

    def __len__(self) -> int:
        return self._size

    def add(self, due_ms: int, item: T) -> bool:
        """Schedule `item`; False (and nothing done) if it is due past the horizon."""
        tick = due_ms // self.tick_ms
        if tick - self._now >= self._slots**self._levels:
            return False
        self._counter += 1
        self._place((max(due_ms, 0), self._counter, item), max(tick, self._now))
        self._size += 1
        return True

    def _place(self, entry: tuple[int, int, T], tick: int) -> None:
        delta = tick - self._now
        level = 0
        span = self._slots
        while delta >= span and level < self._levels - 1:
            level += 1
            span *= self._slots
        slot = (tick // (self._slots**level)) % self._slots
        self._buckets[level][slot].append(entry)

    def advance(self, now_ms: int) -> list[tuple[int, T]]:
        """Move time to `now_ms`; the (due_ms, item) now due, in due order."""
        target = now_ms // self.tick_ms
        fired: list[tuple[int, int, T]] = []
        while self._size:
            tick = self._next_occupied_tick(target)
            if tick is None:
                break
            self._now = tick
            self._cascade()
            slot = tick % self._slots
            bucket = self._buckets[0][slot]
            if tick < target:
                fired.extend(bucket)
                self._size -= len(bucket)
                self._buckets[0][slot] = []
                self._now = tick + 1
                continue
            ready = [entry for entry in bucket if entry[0] <= now_ms]
            if ready:
                self._buckets[0][slot] = [entry for entry in bucket if entry[0] > now_ms]
                fired.extend(ready)
                self._size -= len(ready)
            break  # the rest of this tick is due later within it
        self._now = max(self._now, target)
        fired.sort()
        return [(due, item) for due, _, item in fired]

    def _cascade(self) -> None:
        """Empty the higher-level buckets whose time has come into the levels below."""
        for level in range(self._levels - 1, 0, -1):
            unit = self._slots**level
            if self._now % unit:
                continue
            slot = (self._now // unit) % self._slots
            bucket = self._buckets[level][slot]
            if bucket:
                self._buckets[level][slot] = []
                for entry in bucket:
                    self._place(entry, max(entry[0] // self.tick_ms, self._now))

    def _next_occupied_tick(self, limit: int) -> int | None:
        """The first tick in [now, limit] at which something fires or cascades."""
        best: int | None = None
        for level in range(self._levels):
            unit = self._slots**level
            first = -(-self._now // unit) * unit
            for step in range(self._slots):
                tick = first + step * unit
                if tick > limit or (best is not None and tick >= best):
                    break
                if self._buckets[level][(tick // unit) % self._slots]:
                    best = tick
                    break
        return best

    def next_due_ms(self) -> int | None:
        """A time no later than the earliest pending timer (tick-rounded), or None."""
        if not self._size:
            return None
        tick = self._next_occupied_tick(self._now + self._slots**self._levels)
        if tick is None:
            return None
        bucket = self._buckets[0][tick % self._slots]
        if tick == self._now and bucket:
            overdue = min(entry[0] for entry in bucket)  # placed at now, maybe due earlier
            return min(tick * self.tick_ms, overdue)
        return tick * self.tick_ms

    def __iter__(self) -> Iterator[tuple[int, T]]:
        for level in self._buckets:
            for bucket in level:
                for due, _, item in bucket:
                    yield due, item
