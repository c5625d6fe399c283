"""File descriptors: the process's limit, how many are open, the size of
the partition logs' descriptor cache that follows from the limit, and a
warning before they run out.

Every connection holds a descriptor, and the broker some of its own (the
delivery journal, the trace log, the listeners, the directory lock, the
interpreter's). A partition holds none of its own: its segment and index
files are opened through the broker's descriptor cache
(logq.log.file_cache) when an operation needs them, and the cache keeps
at most `limits.openFiles` of them open, closing the least recently used
(a partition being written uses 3 while it stays in the cache: its active
segment's log, offset index and time index; a read of a sealed segment 1).
So the partition count is no longer bounded by the descriptor limit, and
`limits.partitions` is a cap only when the config sets one. What the limit
bounds is the cache: unless the config sets `limits.openFiles`, it gets
what is left once the broker's own files and room for connections are
kept aside (`derive_open_files_max`).
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass

from logq.log.file_cache import OPEN_FILES_DEFAULT, OPEN_FILES_MIN

logger = logging.getLogger("logq.server")

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
class OpenFilesCap:
    open_files_max: int
    how: str  # how it was found, for the start-up log


def derive_open_files_max(descriptors_max: int, connections_max: int) -> OpenFilesCap:
    """The descriptors the partition logs may keep open in a broker with
    `descriptors_max` descriptors, keeping room for its own files and its
    connections (never fewer than the cache's least)."""
    connections_room = min(connections_max, int(descriptors_max * CONNECTION_SHARE))
    left = descriptors_max - BROKER_DESCRIPTORS - connections_room
    return OpenFilesCap(
        max(left, OPEN_FILES_MIN),
        f"derived from the descriptor limit {descriptors_max}: less {BROKER_DESCRIPTORS} for the"
        f" broker's own files and {connections_room} for connections",
    )


def open_files_cap(
    configured: int | None, connections_max: int, descriptors_max: int | None
) -> OpenFilesCap:
    """The descriptor cache a server runs with: the configured size, else one
    derived from the descriptor limit, else (no limit) the cache's default."""
    if configured is not None:
        return OpenFilesCap(configured, "set by limits.openFiles")
    if descriptors_max is None:
        return OpenFilesCap(OPEN_FILES_DEFAULT, "the default: no descriptor limit")
    return derive_open_files_max(descriptors_max, connections_max)


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
