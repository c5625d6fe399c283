"""Free space on the data directory's disk.

While free space is below `disk_free_min_bytes`, publishes are refused with
DISKFULL (between two measures, the bytes stored since count against it); what is left stays for acks, the delivery journal and the trace,
so consumers go on. A write that meets ENOSPC (the disk filled between two
measures, or the minimum is 0) is refused the same way and the guard turns
on at once. The broker measures again on its timer, and publishing resumes
by itself once space returns. Memory mode has no disk: nothing is refused.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

from logq.errors import DiskFullError, LogqError, StorageError

logger = logging.getLogger("logq.broker")

_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskGuard:
    def __init__(
        self,
        directory: Path | None,
        free_min_bytes: int,
        *,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.directory = directory
        self.free_min_bytes = free_min_bytes
        self.free_bytes: int | None = None
        self.full = False
        self._statvfs = statvfs

    def measure(self) -> None:
        """Read the free space (a blocking call: run it off the event loop)."""
        if self.directory is None:
            return
        try:
            stats = self._statvfs(self.directory)
        except OSError as error:
            logger.warning("cannot measure free space of %s: %s", self.directory, error)
            return
        self.free_bytes = stats.f_bavail * stats.f_frsize
        self._set_full(self.free_bytes < self.free_min_bytes)

    def spend(self, size: int) -> None:
        """Count `size` bytes just stored against the last measure, so a burst
        of publishes between two measures cannot eat the reserve."""
        if self.free_bytes is not None:
            self.free_bytes -= size
            if self.free_bytes < self.free_min_bytes:
                self._set_full(True)

    def check_publish(self) -> None:
        """Refuse a publish while the disk is full."""
        if self.full:
            raise DiskFullError(self._describe())

    def storage_error(self, error: OSError) -> LogqError:
        """The catalogue error for a failed storage call; a full disk turns
        the guard on until the next measure finds room."""
        if error.errno in _FULL:
            self._set_full(True)
            return DiskFullError(self._describe())
        return StorageError(f"storage failed: {error.strerror or error}")

    def _set_full(self, full: bool) -> None:
        if full != self.full:
            if full:
                logger.warning("disk full: %s; publishes are refused", self._describe())
            else:
                logger.warning(
                    "disk space is back (%s bytes free); publishes resume", self.free_bytes
                )
        self.full = full

    def _describe(self) -> str:
        where = f"the disk of {self.directory}"
        if self.free_bytes is None:
            return f"{where} is full; publishing resumes by itself once space returns"
        return (
            f"{where} has {self.free_bytes} bytes free, the limit disk_free_min_bytes is "
            f"{self.free_min_bytes}; publishing resumes by itself once space returns"
        )
