"""One broker per data directory: an exclusive lock held for the process's life.

Two brokers writing one directory hand out the same offsets and then cut
each other's files on recovery, so the second must not start. The lock is
`flock` on the file `lock` in the data directory: the kernel drops it when
the process dies (kill -9 included), so a crash never leaves a stale lock
behind, and it is per open file, so a second broker in the same process is
refused too. The file holds a line naming the holder, read only to say who
has the directory; the lock itself, not the text, decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from logq.log import durable
from logq.log.errors import LogError

LOCK_NAME = "lock"
HOLDER_BYTES_MAX = 256  # the holder line is a pid, a host name and a time


class DirectoryLockedError(LogError):
    """Another broker holds the data directory."""

    code = "LOCKED"


class DirectoryLock:
    """The held lock of one data directory; `release()` gives it back."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path) -> DirectoryLock:
        """Take the directory, or raise `DirectoryLockedError` naming the holder."""
        durable.make_directory(directory)
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, HOLDER_BYTES_MAX, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DirectoryLockedError(
                f"data directory {directory} is in use by another logq broker"
                f" ({holder or 'holder unknown'}); stop that broker or use another data directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {started}\n"
        with contextlib.suppress(OSError):  # a full disk: the lock holds without the line
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode()[:HOLDER_BYTES_MAX], 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the directory back (the file stays: removing it would race a new holder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
