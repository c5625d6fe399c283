"""The starvation guard of shared groups: strict priority across receives,
and a bounded wait for the lower lanes.

Per group and partition, each lane that has fresh messages waiting while a
higher lane has some too counts the messages of higher lanes delivered since
it last got one (`passed`), and remembers when that wait began. The lane is
due once `passed` reaches the group's interval N (round(1 / starvation_share),
10 by default) or, if the group sets `starvation_timeout_ms`, once the wait
has lasted that long; then it gets one message and its count starts again.
Until then every receive, of any size, serves the highest lane first: a
worker taking one message at a time sees exactly the order a worker taking a
hundred does.

A receive of B messages is the same as B receives of one: a lane whose count
is p, below lanes that could fill B' of it (B less what the lanes below it
took), gets min(waiting, (p + B') // (N + 1)) messages, and its count becomes
(p + B') mod (N + 1). One step per lane, whatever B is.

The counts are a fairness heuristic, not delivery state: a few integers per
lane, never journaled; a restart (or a seek) starts them at 0. A lane with
nothing waiting, or with nothing above it waiting, has no entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class LaneWait:
    passed: int = 0  # messages of higher lanes delivered since this lane last got one
    since_ms: int = 0  # when this lane last got a message (or its wait began)


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """When a waiting lower lane is due (see the module comment)."""

    interval: int = 10  # N: higher-lane messages that may pass a waiting lane
    timeout_ms: int | None = None  # or this long waited; None: no time bound


@dataclass(slots=True)
class LaneGuard:
    waits: dict[int, LaneWait] = field(default_factory=dict)  # lane index -> its wait

    def allot(
        self, waiting: Sequence[tuple[int, int]], budget: int, now_ms: int, policy: LanePolicy
    ) -> list[int]:
        """How many messages each lane gets from a receive of `budget`.

        `waiting` lists (lane, messages waiting) in priority order, highest
        first; a count above `budget` only says "more than this receive can
        take". Returns the takes in the same order, and moves the counts on
        as if the messages were served one by one by the rule."""
        counts = [count for _, count in waiting]
        top = next((i for i, count in enumerate(counts) if count > 0), len(counts))
        interval = max(1, policy.interval)
        quotas = [0] * len(counts)
        starts = [0] * len(counts)  # each lane's count before this receive
        rest = budget
        for index in range(len(counts) - 1, top, -1):
            if counts[index] <= 0:
                continue
            wait = self.waits.get(waiting[index][0])
            passed = 0 if wait is None else min(wait.passed, interval)
            if (
                wait is not None
                and policy.timeout_ms is not None
                and now_ms - wait.since_ms >= policy.timeout_ms
            ):
                passed = interval  # waited past the time bound: due now
            starts[index] = passed
            quotas[index] = min(counts[index], (passed + rest) // (interval + 1))
            rest -= quotas[index]
        takes = list(quotas)
        left = budget - sum(quotas)
        for index, count in enumerate(counts):  # the rest by strict priority
            extra = min(count - takes[index], left)
            takes[index] += extra
            left -= extra
        self._move_on(waiting, counts, takes, quotas, starts, top, now_ms, interval)
        return takes

    def _move_on(
        self,
        waiting: Sequence[tuple[int, int]],
        counts: list[int],
        takes: list[int],
        quotas: list[int],
        starts: list[int],
        top: int,
        now_ms: int,
        interval: int,
    ) -> None:
        """The counts after a receive: reset where a lane emptied or nothing
        above it waits any more, moved on where it still waits."""
        kept: dict[int, LaneWait] = {}
        above_left = 0  # messages still waiting in the lanes above `index`
        above_taken = 0  # messages of the lanes above `index` delivered now
        for index, (lane, count) in enumerate(waiting):
            if index > top and count - takes[index] > 0 and above_left > 0:
                wait = self.waits.get(lane) or LaneWait(0, now_ms)
                passed = starts[index] + above_taken - quotas[index] * interval
                wait.passed = max(0, min(passed, interval))
                if quotas[index] > 0:
                    wait.since_ms = now_ms
                kept[lane] = wait
            above_left += count - takes[index]
            above_taken += takes[index]
        self.waits = kept
