"""File descriptors: the process's limit, how many are open, the partition
cap that follows from the limit, and a warning before they run out.

Every open partition holds descriptors (its active segment's log, offset
index and time index), every connection one, and the broker some of its
own (the delivery journal, the trace log, the listeners, the directory
lock, the interpreter's). A broker out of descriptors can neither open a
file nor accept a connection, so `limits.partitions`, unless the config
sets it, is derived at start from the descriptor limit: what is left once
the broker's own files and room for connections are kept aside, divided by
what a partition costs. The cost is one constant and the derivation one
function (`derive_partitions_max`), so a cheaper partition changes them
alone.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("logq.server")

# Descriptors one open partition holds: its active segment's log, offset
# index and time index.
DESCRIPTORS_PER_PARTITION = 3
# Descriptors of the broker itself: the journal's and the trace log's
# segments and indexes, the listeners, the directory lock, the interpreter
# and its libraries, the storage threads' short-lived opens, with room.
BROKER_DESCRIPTORS = 64
# Room kept for connections: `limits.connections`, but no more than this
# share of the limit, so a small limit still holds partitions.
CONNECTION_SHARE = 0.25
# The warning's threshold, and how far under it descriptors must drop
# before another crossing warns again (no warning per request at the edge).
WARN_SHARE = 0.80
REARM_SHARE = 0.75
_PROC_FDS = "/proc/self/fd"


def descriptor_limit() -> int | None:
    """The soft limit on open descriptors (`ulimit -n`); None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY or soft < 0 else soft


def open_descriptors() -> int | None:
    """Descriptors this process holds now; None where it cannot be told (no
    /proc, or none left to read it with)."""
    try:
        return len(os.listdir(_PROC_FDS)) - 1  # less the one listdir held
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class PartitionCap:
    partitions_max: int
    how: str  # how it was found, for the start-up log


def derive_partitions_max(descriptors_max: int, connections_max: int) -> PartitionCap:
    """The partitions a broker with `descriptors_max` descriptors holds while
    keeping room for its own files and its connections."""
    connections_room = min(connections_max, int(descriptors_max * CONNECTION_SHARE))
    left = descriptors_max - BROKER_DESCRIPTORS - connections_room
    partitions = max(left // DESCRIPTORS_PER_PARTITION, 0)
    return PartitionCap(
        partitions,
        f"derived from the descriptor limit {descriptors_max}: less {BROKER_DESCRIPTORS} for the"
        f" broker's own files and {connections_room} for connections, at"
        f" {DESCRIPTORS_PER_PARTITION} per partition",
    )


def partition_cap(
    configured: int | None, in_memory: bool, connections_max: int, descriptors_max: int | None
) -> PartitionCap | None:
    """The cap a server runs with: the configured one, else one derived from
    the descriptor limit; none in memory (partitions hold no descriptors) or
    without a limit."""
    if configured is not None:
        return PartitionCap(configured, "set by limits.partitions")
    if in_memory or descriptors_max is None:
        return None
    return derive_partitions_max(descriptors_max, connections_max)


class DescriptorWatch:
    """Open descriptors against the limit, for the metrics and the logs: a
    warning when they pass WARN_SHARE of the limit, once per crossing (again
    only after they fell under REARM_SHARE), and a note when they are back;
    and how often each listener ran out (`logq.server.accept`)."""

    def __init__(
        self,
        limit: int | None,
        count: Callable[[], int | None] = open_descriptors,
    ) -> None:
        self.limit = limit
        self.open: int | None = None
        self.warned = False
        # per listener, the times accepting stopped for want of descriptors
        self.accept_paused: dict[str, int] = {}
        self._count = count

    def check(self) -> int | None:
        """Count the open descriptors now, warn on a crossing; the count."""
        found = self._count()
        if found is None:
            return self.open
        self.open = found
        if self.limit is None:
            return found
        if not self.warned and found >= self.limit * WARN_SHARE:
            self.warned = True
            logger.warning(
                "%d descriptors open, %d%% of the limit %d: new partitions and connections"
                " will fail when it is reached (raise `ulimit -n`, or lower limits.partitions"
                " or limits.connections)",
                found,
                round(100 * found / self.limit),
                self.limit,
            )
        elif self.warned and found < self.limit * REARM_SHARE:
            self.warned = False
            logger.info(
                "%d descriptors open, back under %d%% of the limit %d",
                found,
                round(100 * REARM_SHARE),
                self.limit,
            )
        return found
