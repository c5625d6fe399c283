"""Who is in a group, and (for `ordered` groups) which partitions each owns.

Rebalancing is cooperative and incremental. When a member joins, leaves or
dies, the strategy computes a target owner for every partition. Partitions
whose owner stays keep flowing. A partition that moves from a live member
is *revoking*: its owner gets nothing new from it, and it is handed over as
soon as its in-flight messages are settled (acked, nacked, rejected, or
their leases ended), or when the revoke bound passes, whichever is first.
Messages still leased then stay leased to the old owner until they are
settled or expire, so no message is ever out with two members at once. A
partition whose owner is gone is handed over at once.

Pure state: the caller supplies the clock and the in-flight counts.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from logq.broker.assignors import assignor, sticky

logger = logging.getLogger(__name__)

HISTORY_MAX = 20


@dataclass(slots=True)
class Member:
    name: str
    joined_ms: int
    last_seen_ms: int
    session_timeout_ms: int


@dataclass(slots=True)
class Rebalance:
    """One change of membership and the partition moves it caused."""

    generation: int
    at_ms: int
    reason: str
    members: list[str]
    moves: list[tuple[int, str | None, str]]  # partition, from, to
    done_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "at_ms": self.at_ms,
            "reason": self.reason,
            "members": self.members,
            "moves": [{"partition": p, "from": a, "to": b} for p, a, b in self.moves],
            "done_ms": self.done_ms,
            "duration_ms": None if self.done_ms is None else self.done_ms - self.at_ms,
        }


@dataclass(slots=True)
class Membership:
    partitions: int
    ordered: bool
    strategy: str = "sticky"
    revoke_timeout_ms: int = 30_000
    members: dict[str, Member] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)  # who may lease from it now
    target: dict[int, str] = field(default_factory=dict)  # who should own it
    revoking: dict[int, int] = field(default_factory=dict)  # partition -> hand-over deadline
    generation: int = 0
    history: deque[Rebalance] = field(default_factory=lambda: deque(maxlen=HISTORY_MAX))

    # -- membership ---------------------------------------------------------------

    def touch(self, name: str, now_ms: int, session_timeout_ms: int) -> bool:
        """Note that `name` is alive; returns True if it just joined."""
        member = self.members.get(name)
        if member is not None:
            member.last_seen_ms = now_ms
            return False
        self.members[name] = Member(name, now_ms, now_ms, session_timeout_ms)
        self._rebalance(now_ms, f"{name} joined")
        return True

    def leave(self, name: str, now_ms: int, reason: str = "left") -> bool:
        if self.members.pop(name, None) is None:
            return False
        self._rebalance(now_ms, f"{name} {reason}")
        return True

    def expire(self, now_ms: int) -> list[str]:
        """Members silent for longer than their session timeout leave."""
        gone = [
            m.name for m in self.members.values() if now_ms - m.last_seen_ms > m.session_timeout_ms
        ]
        for name in gone:
            self.leave(name, now_ms, "session expired")
        return gone

    def resize(self, partitions: int, now_ms: int) -> None:
        if partitions != self.partitions:
            self.partitions = partitions
            self._rebalance(now_ms, f"partitions now {partitions}")

    def set_strategy(self, strategy: str, now_ms: int) -> None:
        assignor(strategy)  # unknown names fail before anything changes
        if strategy != self.strategy:
            self.strategy = strategy
            self._rebalance(now_ms, f"assignor now {strategy}")

    # -- assignment ----------------------------------------------------------------

    def _rebalance(self, now_ms: int, reason: str) -> None:
        self.generation += 1
        if not self.ordered:
            self.history.append(Rebalance(self.generation, now_ms, reason, list(self.members), []))
            self.history[-1].done_ms = now_ms
            return
        names = list(self.members)
        self.target = self._assign(names)
        moves: list[tuple[int, str | None, str]] = []
        for partition in range(self.partitions):
            before = self.owner.get(partition)
            after = self.target.get(partition)
            if before == after:
                self.revoking.pop(partition, None)
                continue
            if after is not None:
                moves.append((partition, before, after))
            if before is None or before not in self.members:
                self._hand_over(partition)
            elif partition not in self.revoking:
                self.revoking[partition] = now_ms + self.revoke_timeout_ms
        self.history.append(Rebalance(self.generation, now_ms, reason, names, moves))
        self._note_done(now_ms)

    def _assign(self, names: list[str]) -> dict[int, str]:
        if not names:
            return {}
        result = assignor(self.strategy)(self.partitions, names, self.target)
        if sorted(result) != list(range(self.partitions)) or not set(result.values()) <= set(names):
            logger.warning("assignor %r gave a bad assignment; using sticky", self.strategy)
            result = sticky(self.partitions, names, self.target)
        return result

    def _hand_over(self, partition: int) -> None:
        self.revoking.pop(partition, None)
        after = self.target.get(partition)
        if after is None:
            self.owner.pop(partition, None)
        else:
            self.owner[partition] = after

    def settle(self, in_flight: Callable[[int], int], now_ms: int) -> list[int]:
        """Hand over the revoking partitions that are drained or overdue;
        returns the partitions handed over."""
        moved = [
            partition
            for partition, deadline in self.revoking.items()
            if in_flight(partition) == 0 or now_ms >= deadline
        ]
        for partition in moved:
            self._hand_over(partition)
        if moved:
            self._note_done(now_ms)
        return moved

    def _note_done(self, now_ms: int) -> None:
        if not self.revoking and self.history and self.history[-1].done_ms is None:
            for record in self.history:
                if record.done_ms is None:
                    record.done_ms = now_ms

    # -- queries -------------------------------------------------------------------

    def partitions_for(self, name: str) -> list[int]:
        """Partitions `name` may lease from now (ordered groups)."""
        return [
            p
            for p in range(self.partitions)
            if self.owner.get(p) == name and p not in self.revoking
        ]

    def assignment(self) -> dict[str, dict[str, list[int]]]:
        """Per member: partitions it owns, and those it is giving up or about to get."""
        result: dict[str, dict[str, list[int]]] = {
            name: {"partitions": [], "revoking": [], "incoming": []} for name in self.members
        }
        for partition in range(self.partitions):
            owner = self.owner.get(partition)
            if owner in result:
                kind = "revoking" if partition in self.revoking else "partitions"
                result[owner][kind].append(partition)
            target = self.target.get(partition)
            if partition in self.revoking and target in result:
                result[target]["incoming"].append(partition)
        if not self.ordered:
            for entry in result.values():
                entry["partitions"] = list(range(self.partitions))
        return result
