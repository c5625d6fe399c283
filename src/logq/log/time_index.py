"""The time index of a segment (`.timeindex`): entries that vouch for themselves.

An entry `(T, o)` lets a lookup by time skip every batch before offset `o`
(T is the largest record time among them). A damaged entry with a smaller T
or a larger o would make a lookup skip batches it must return, and a lost
final entry would understate the segment's largest time (retention would
delete it early, a lookup would pass it by). So, unlike the offset index,
whose entries are checked against the batch header they point at, each time
entry carries a CRC32C of the segment's base offset and its two fields, and
the file starts with a header naming its format and segment. An entry whose
CRC fails is never used: the reader raises `TimeIndexDamagedError` and the
log rebuilds the index from the segment's batches. A sealed segment's index
always ends with an entry at the segment's end offset carrying its largest
time, so an index cut short (or an older copy from while the segment was
active) is told by its last entry. Checks cost a CRC of 20 bytes per entry
read: a lookup checks the entries its binary search touches; an open checks
the first and last entries of a sealed segment's index, and every entry of
the active one (which recovery trusts below its checkpoint).
"""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

from crc32c import crc32c

from logq.log.file_cache import FileCache
from logq.log.index import TIME_ENTRY, SparseIndex

TIME_INDEX_MAGIC = b"LQTI"
TIME_INDEX_VERSION = 2
# magic, version, reserved (0), the segment's base offset
TIME_INDEX_HEADER = struct.Struct("<4sHHq")
# max timestamp before the entry's offset, relative offset, CRC32C of the
# segment's base offset (i64) and the two fields as TIME_ENTRY packs them
CHECKED_TIME_ENTRY = struct.Struct("<qII")


class TimeIndexDamagedError(Exception):
    """The time index does not verify (the message says where and why)."""


class TimeIndex(SparseIndex):
    """A segment's time index; `get` returns (T, relative offset) of entries
    whose CRC verifies, and raises TimeIndexDamagedError for any other."""

    def __init__(self, path: Path, base_offset: int, files: FileCache) -> None:
        super().__init__(path, CHECKED_TIME_ENTRY, files)
        self._header = TIME_INDEX_HEADER.pack(TIME_INDEX_MAGIC, TIME_INDEX_VERSION, 0, base_offset)
        self._seed = crc32c(base_offset.to_bytes(8, "little", signed=True))
        # why the file, as loaded, is not a time index of this segment (None: it is)
        self.problem: str | None = None

    def _crc(self, timestamp: int, relative: int) -> int:
        return int(crc32c(TIME_ENTRY.pack(timestamp, relative), self._seed))

    def _load(self) -> bytearray:
        if self._entries is None:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            self.problem = self._header_problem(data, len(data))
            body = data[len(self._header) :] if self.problem is None else b""
            usable = len(body) - len(body) % self.entry.size
            self._entries = bytearray(body[:usable])
        return self._entries

    def _header_problem(self, head: bytes, size: int) -> str | None:
        if size == 0:
            return None  # a new segment's, not written yet
        if head[: len(self._header)] != self._header:
            return "no valid header (an index of an earlier release, or damaged)"
        return None

    def open_for_append(self) -> None:
        entries = self._load()
        file = self._files.file(self.path)
        with file.pinned() as fd:
            os.ftruncate(fd, len(self._header) + len(entries))
            os.pwrite(fd, self._header, 0)
        self._file = file
        self.problem = None  # what it holds now is a valid index (none, if it was not)

    def floor(self, field: int, value: int) -> tuple[int, ...] | None:
        self._load()
        if self.problem is not None:
            raise TimeIndexDamagedError(f"{self.path}: {self.problem}")
        return super().floor(field, value)

    def get(self, index: int) -> tuple[int, ...]:
        timestamp, relative, crc = self.entry.unpack_from(self._load(), index * self.entry.size)
        if crc != self._crc(timestamp, relative):
            raise TimeIndexDamagedError(f"{self.path}: entry {index} fails its CRC")
        return timestamp, relative

    def _last_from_file(self) -> tuple[int, ...] | None:
        """The last entry, read (with the header) without loading the index."""
        head, _, last = self._read_ends()
        if head is None:
            return None
        problem = self._header_problem(head, len(head))
        if problem is not None:
            raise TimeIndexDamagedError(f"{self.path}: {problem}")
        return None if last is None else self._verified(last, -1)

    def _read_ends(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(header, first entry, last entry) as stored; None for what is not there."""
        try:
            with self.path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                head = file.read(len(self._header))
                count = max(size - len(self._header), 0) // self.entry.size
                if count == 0:
                    return head, None, None
                first = file.read(self.entry.size)
                file.seek(len(self._header) + (count - 1) * self.entry.size)
                return head, first, file.read(self.entry.size)
        except FileNotFoundError:
            return None, None, None

    def _verified(self, raw: bytes, index: int) -> tuple[int, int]:
        timestamp, relative, crc = self.entry.unpack(raw)
        if crc != self._crc(timestamp, relative):
            raise TimeIndexDamagedError(f"{self.path}: entry {index} fails its CRC")
        return timestamp, relative

    def check(self, end_relative: int | None, *, every_entry: bool) -> str | None:
        """Why this index cannot be trusted for its segment, or None.

        A valid header; its first and last entries (or every entry) verifying,
        neither field going back; the last offset within `end_relative`, and
        for a sealed segment with batches (`end_relative` given, above 0)
        exactly there: the final entry. Asked only of a segment holding
        batches, whose index file was made with its header at once: a file
        missing, shorter than its header or ending in a partial entry was
        damaged (or torn by a power cut: rebuilt all the same)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return "missing"
        if size < len(self._header):
            return f"cut within its header ({size} bytes)"
        if (size - len(self._header)) % self.entry.size:
            return f"a partial entry at its end ({size} bytes)"
        if every_entry:
            self._entries = None  # read it afresh
            self._load()
            if self.problem is not None:
                return self.problem
            try:
                entries = [self.get(index) for index in range(len(self))]
            except TimeIndexDamagedError as error:
                return str(error).rpartition(": ")[2]
        else:
            head, first, last = self._read_ends()
            if head is None:
                return "missing"
            problem = self._header_problem(head, len(head))
            if problem is not None:
                return problem
            try:
                entries = [self._verified(raw, at) for at, raw in ((0, first), (-1, last)) if raw]
            except TimeIndexDamagedError as error:
                return str(error).rpartition(": ")[2]
        if not all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(entries)):
            return "entries out of order"
        if end_relative is None:
            return None
        if entries and entries[-1][1] > end_relative:
            return f"an entry past the segment's end (offset {entries[-1][1]} > {end_relative})"
        if end_relative > 0 and (not entries or entries[-1][1] != end_relative):
            return "no entry at the segment's end (cut short, or an older copy)"
        return None

    def append(self, *values: int) -> None:
        assert self._file is not None, "append to a sealed index"
        timestamp, relative = values
        packed = self.entry.pack(timestamp, relative, self._crc(timestamp, relative))
        entries = self._load()
        with self._file.pinned() as fd:
            os.pwrite(fd, packed, len(self._header) + len(entries))
        entries += packed

    def truncate_entries(self, count: int) -> None:
        entries = self._load()
        del entries[count * self.entry.size :]
        if self._file is not None:
            with self._file.pinned() as fd:
                os.ftruncate(fd, len(self._header) + len(entries))

    def replace_with(self, pairs: list[tuple[int, int]]) -> None:
        """Rewrite the whole index from (T, relative offset) pairs (a rebuild)."""
        stored = b"".join(self.entry.pack(t, r, self._crc(t, r)) for t, r in pairs)
        self.problem = None
        self.replace(stored, header=self._header)

    def disagreement(self, pairs: list[tuple[int, int]]) -> str | None:
        """Why the stored index is not `pairs` (the entries a walk of the
        segment built), or None. Read afresh, then forgotten again."""
        self._entries = None
        try:
            self._load()
            if self.problem is not None:
                return f"its time index: {self.problem}"
            try:
                stored = [self.get(index) for index in range(len(self))]
            except TimeIndexDamagedError as error:
                return f"its time index: {str(error).rpartition(': ')[2]}"
            if stored != pairs:
                return "its time index does not match its batches"
            return None
        finally:
            if self._file is None:
                self._entries = None
