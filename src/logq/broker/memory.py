"""Giving the C allocator's freed memory back to the system.

Once glibc has freed a buffer larger than its mmap threshold, it raises that
threshold (and its trim threshold with it) and from then on keeps freed
memory of that size in the heap instead of returning it. A state snapshot of
a million held-back delays is one buffer of about 8 MiB, written now and
then: without a trim the broker's resident memory keeps the largest few it
ever made. `malloc_trim(0)` returns the free pages of every arena; it costs a
walk of the heap (milliseconds), so it runs in a thread after a large
snapshot only. Elsewhere than glibc (musl, macOS) there is nothing to call.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

# Snapshots at least this large are followed by a trim (glibc's default mmap
# threshold is 128 KiB; buffers below a MiB leave little behind).
TRIM_AFTER_BYTES = 1 << 20


def _find_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: glibc's if linked with it
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_trim = _find_trim()


def can_trim() -> bool:
    """Whether this process's allocator can be trimmed."""
    return _trim is not None


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system (call it off the event
    loop: ctypes lets go of the GIL for the call); whether anything was
    returned."""
    return _trim is not None and _trim(0) == 1
