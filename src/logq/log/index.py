"""Sparse indexes beside each segment: offset -> position, and time -> offset.

An index is a file of fixed-size little-endian entries, appended as batches
are written, one entry per `index_interval_bytes` of log. Offsets are stored
relative to the segment's base offset (32 bits suffice inside a segment).

Indexes are hints: the log is the truth, and recovery truncates or rebuilds
an index that does not agree with its segment. The active segment keeps its
entries in a bytearray; a sealed segment's index is loaded on first use and
can be dropped again, so memory follows what readers touch, not the log size.
Only the active segment's index is written, through a descriptor of the
broker's cache (file_cache.py): it holds none while it is idle.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from logq.log import durable
from logq.log.file_cache import CachedFile, FileCache

OFFSET_ENTRY = struct.Struct("<II")  # relative offset, byte position in the segment
TIME_ENTRY = struct.Struct("<qI")  # max timestamp so far, relative offset of that batch


class SparseIndex:
    """A sorted file of fixed-size entries with binary search on any field."""

    def __init__(self, path: Path, entry: struct.Struct, files: FileCache) -> None:
        self.path = path
        self.entry = entry
        self._files = files
        self._entries: bytearray | None = None  # loaded lazily
        self._file: CachedFile | None = None  # only while the segment is active

    # -- loading -----------------------------------------------------------

    def _load(self) -> bytearray:
        if self._entries is None:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            usable = len(data) - len(data) % self.entry.size
            self._entries = bytearray(data[:usable])
        return self._entries

    def open_for_append(self) -> None:
        entries = self._load()
        file = self._files.file(self.path)
        with file.pinned() as fd:
            os.ftruncate(fd, len(entries))
        self._file = file

    def seal(self) -> None:
        """Flush and close the writable file; entries stay readable."""
        if self._file is not None:
            with self._file.pinned() as fd:
                durable.sync_data(fd)
            self._file.close()
            self._file = None

    def sync(self) -> None:
        if self._file is not None:
            with self._file.pinned() as fd:
                durable.sync_data(fd)

    def unload(self) -> None:
        """Forget the loaded entries of a sealed index (reloaded on next use)."""
        if self._file is None:
            self._entries = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._entries = None

    # -- reading -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._load()) // self.entry.size

    def get(self, index: int) -> tuple[int, ...]:
        return self.entry.unpack_from(self._load(), index * self.entry.size)

    def last(self) -> tuple[int, ...] | None:
        if self._entries is None:
            return self._last_from_file()
        count = len(self)
        return self.get(count - 1) if count else None

    def _last_from_file(self) -> tuple[int, ...] | None:
        """The last whole entry, read from the file without loading the index."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return None
        usable = size - size % self.entry.size
        if usable == 0:
            return None
        with self.path.open("rb") as file:
            file.seek(usable - self.entry.size)
            return self.entry.unpack(file.read(self.entry.size))

    def count_at_most(self, field: int, value: int) -> int:
        """How many leading entries have `field` <= value (fields are sorted)."""
        low, high = 0, len(self)
        while low < high:
            middle = (low + high) // 2
            if self.get(middle)[field] <= value:
                low = middle + 1
            else:
                high = middle
        return low

    def floor(self, field: int, value: int) -> tuple[int, ...] | None:
        """The last entry whose `field` is <= value."""
        count = self.count_at_most(field, value)
        return self.get(count - 1) if count else None

    def is_sane(self, field_limits: tuple[int, ...]) -> bool:
        """Cheap check on open, reading two entries whatever the index size:
        whole entries only, first <= last, last entry within `field_limits`."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        if size % self.entry.size:
            return False
        if size == 0:
            return True
        with self.path.open("rb") as file:
            first = self.entry.unpack(file.read(self.entry.size))
            file.seek(size - self.entry.size)
            last = self.entry.unpack(file.read(self.entry.size))
        if any(f > la for f, la in zip(first, last, strict=True)):
            return False
        return all(value <= limit for value, limit in zip(last, field_limits, strict=True))

    # -- writing -----------------------------------------------------------

    def append(self, *values: int) -> None:
        assert self._file is not None, "append to a sealed index"
        packed = self.entry.pack(*values)
        entries = self._load()
        with self._file.pinned() as fd:
            os.pwrite(fd, packed, len(entries))
        entries += packed

    def truncate_entries(self, count: int) -> None:
        """Keep only the first `count` entries."""
        entries = self._load()
        del entries[count * self.entry.size :]
        if self._file is not None:
            with self._file.pinned() as fd:
                os.ftruncate(fd, len(entries))

    def replace(self, entries: bytes, *, header: bytes = b"") -> None:
        """Rewrite the whole index (after a rebuild), after `header` if any."""
        assert len(entries) % self.entry.size == 0
        self._entries = bytearray(entries)
        if self._file is not None:
            with self._file.pinned() as fd:
                os.ftruncate(fd, 0)
                os.pwrite(fd, header + entries, 0)
        else:
            durable.write_atomic(self.path, header + entries)
