"""Time for the broker, passed in so tests drive it by hand.

`now_ms` is wall-clock milliseconds (stored in leases and backoff deadlines,
so they survive a restart); `monotonic` is for measuring intervals, and
`sleep_until` waits for a moment of it: a long-poll receive waits on the
broker's clock, so a fake clock moves it on without anybody sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `monotonic()` has reached `deadline`."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))


class FakeClock:
    """A clock that moves only when told to (for tests): `sleep_until`
    returns when `advance` reaches the deadline, however long that takes."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms
        self._monotonic = 0.0
        # (deadline, order of arrival, future) of each sleeper, earliest first
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._monotonic:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._arrivals), woken))
        await woken

    @property
    def sleepers(self) -> int:
        """How many `sleep_until` calls are waiting (tests wait for a
        receive to reach its wait before they move the clock)."""
        return sum(not woken.done() for _, _, woken in self._sleepers)

    def advance(self, milliseconds: int) -> None:
        self._now_ms += milliseconds
        self._monotonic += milliseconds / 1000
        while self._sleepers and self._sleepers[0][0] <= self._monotonic:
            _, _, woken = heapq.heappop(self._sleepers)
            if not woken.done():  # a cancelled sleeper is simply dropped
                woken.set_result(None)
