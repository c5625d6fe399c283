"""Open file descriptors on demand, shared by every log of a broker.

A partition log used to hold its segment files open for its whole life, so
a broker's partitions were bounded by `ulimit -n`. Instead each segment and
index file is a `CachedFile`: a path that is opened when an operation needs
it and stays open in a least-recently-used cache of at most
`open_files_max` descriptors. When the cache is full, opening one more file
closes the descriptor used longest ago; its file reopens, transparently, on
its next use. A busy partition's files stay open because they keep being
used; an idle one's are closed in time and cost no descriptor.

Nothing in flight loses its descriptor: an operation pins the file for its
duration (`with file.pinned() as fd:`), and only unpinned descriptors are
evicted. Pins are counted, so several threads (readers in the storage pool,
the writer thread, the scrubber) may hold one file at once. When every open
descriptor is pinned the cache opens one more anyway: pins are bounded by
the operations running at once (threads), so the cache overshoots by at most
that many, and it closes the surplus as they finish.

Closing a descriptor drops no data: writes went to the page cache, which
belongs to the file, not the descriptor, and an fsync through any later
descriptor makes them durable (the kernel reports a write-back error that no
descriptor saw yet to the next one that asks).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

# Descriptors kept open when no setting says otherwise (a broker derives its
# own from the descriptor limit, see logq.server.descriptors).
OPEN_FILES_DEFAULT = 1024
OPEN_FILES_MIN = 4  # one operation pins at most a segment and its two indexes
FILE_MODE = 0o644


class CachedFile:
    """One file of a log, opened (read-write, created if missing) on demand."""

    __slots__ = ("_cache", "_closed", "_pins", "fd_or_none", "path")

    def __init__(self, cache: FileCache, path: Path) -> None:
        self._cache = cache
        self.path = path
        self.fd_or_none: int | None = None  # guarded by the cache's lock
        self._pins = 0
        self._closed = False

    @contextlib.contextmanager
    def pinned(self) -> Iterator[int]:
        """The file's descriptor, kept open until the block ends."""
        fd = self._cache.acquire(self)
        try:
            yield fd
        finally:
            self._cache.release(self)

    def close(self) -> None:
        """Give the descriptor back (at once, or when its last pin ends)."""
        self._cache.discard(self)

    @property
    def is_open(self) -> bool:
        return self.fd_or_none is not None


class FileCache:
    """The shared, bounded set of open descriptors (see the module doc)."""

    def __init__(self, open_files_max: int = OPEN_FILES_DEFAULT) -> None:
        if not isinstance(open_files_max, int) or open_files_max < OPEN_FILES_MIN:
            raise ValueError(
                f"open_files_max is {open_files_max!r}, it must be at least {OPEN_FILES_MIN}"
            )
        self.open_files_max = open_files_max
        self._lock = threading.Lock()
        self._idle: OrderedDict[CachedFile, None] = OrderedDict()  # open, unpinned: LRU first
        self._open = 0
        self.stats: dict[str, int] = {"opens": 0, "evictions": 0, "hits": 0}

    def file(self, path: Path) -> CachedFile:
        return CachedFile(self, path)

    @property
    def open_files(self) -> int:
        return self._open

    def statistics(self) -> dict[str, int]:
        with self._lock:
            return {**self.stats, "open_files": self._open, "open_files_max": self.open_files_max}

    # -- pins ------------------------------------------------------------------

    def acquire(self, file: CachedFile) -> int:
        with self._lock:
            if file._closed:
                raise OSError(errno.EBADF, f"{file.path} was closed")
            fd = file.fd_or_none
            if fd is not None:
                self.stats["hits"] += 1
                file._pins += 1
                self._idle.pop(file, None)
                return fd
            while self._open >= self.open_files_max and self._idle:
                self._evict_locked()
            fd = self._open_locked(file.path)
            file.fd_or_none = fd
            file._pins = 1
            self._open += 1
            self.stats["opens"] += 1
            return fd

    def release(self, file: CachedFile) -> None:
        with self._lock:
            file._pins -= 1
            assert file._pins >= 0
            if file._pins:
                return
            if file._closed or self._open > self.open_files_max:
                self._close_locked(file)  # closed meanwhile, or over the cap while all were pinned
            else:
                self._idle[file] = None

    def discard(self, file: CachedFile) -> None:
        with self._lock:
            if file._closed:
                return
            file._closed = True
            if file._pins == 0 and file.fd_or_none is not None:
                self._idle.pop(file, None)
                self._close_locked(file)

    def close_idle(self) -> int:
        """Close every descriptor no operation holds (they reopen on use); how many."""
        with self._lock:
            count = len(self._idle)
            while self._idle:
                self._evict_locked()
            return count

    # -- under the lock ----------------------------------------------------------

    def _open_locked(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE) or not self._idle:
                raise
        # the process ran out (connections took the rest): give back half of
        # what this cache keeps idle, then try once more
        for _ in range(max(1, len(self._idle) // 2)):
            self._evict_locked()
        return os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)

    def _evict_locked(self) -> None:
        victim, _ = self._idle.popitem(last=False)
        self._close_locked(victim)
        self.stats["evictions"] += 1

    def _close_locked(self, file: CachedFile) -> None:
        fd = file.fd_or_none
        if fd is None:
            return
        file.fd_or_none = None
        self._open -= 1
        os.close(fd)
