"""One archived segment as one object: its batches, its indexes, a footer.

A closed segment goes to the object store whole, in one put, so an object
either exists complete or not at all. Its layout (docs/format.md, "Archive
objects"):

    data          the segment's batches, as stored (offsets and epochs in)
    offset index  OFFSET_ENTRY (u32 relative offset, u32 byte position) each
    time index    TIME_ENTRY (i64 max timestamp so far, u32 relative offset) each
    footer        FOOTER, then `epoch_count` EPOCH entries
    trailer       u32 footer length, u32 CRC32C of the footer, magic `LQAO`

The indexes are rebuilt from the batch headers while packing (one entry
every INDEX_INTERVAL_BYTES of data), not copied from the local index files,
so an object never depends on a local file that might be damaged; every
batch's CRC is checked before it is packed. A reader fetches the tail
(trailer, footer and indexes, usually one ranged request), finds the byte
position of an offset or a time in the indexes, and then reads data in
ranged chunks, checking every batch's CRC before handing it on.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from crc32c import crc32c

from logq.archive.errors import ArchiveDamagedError
from logq.log.batch import HEADER_SIZE, LENGTH_PREFIX_SIZE, compute_crc, read_header
from logq.log.index import OFFSET_ENTRY, TIME_ENTRY

MAGIC = b"LQAO"
VERSION = 1
TRAILER = struct.Struct("<II4s")  # footer length, footer CRC32C, magic
FOOTER = struct.Struct("<HHqqqqIQIIIIIII")
EPOCH = struct.Struct("<iq")  # leader epoch, its first offset in this object
INDEX_INTERVAL_BYTES = 64 * 1024
# A reader's first request: the trailer, the footer and (for segments of
# usual sizes) both indexes.
TAIL_READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Footer:
    """What an archived segment holds, and where its parts lie."""

    base_offset: int
    next_offset: int
    first_timestamp: int
    max_timestamp: int
    batch_count: int
    data_length: int
    data_crc: int
    offset_index: bytes
    time_index: bytes
    epochs: tuple[tuple[int, int], ...]  # (leader epoch, first offset), ascending

    @property
    def record_count(self) -> int:
        return self.next_offset - self.base_offset

    def position_of(self, offset: int) -> int:
        """Byte position of the indexed batch at or before `offset` (read on
        from there to find the batch that holds it)."""
        entries = _entries(self.offset_index, OFFSET_ENTRY)
        relative = offset - self.base_offset
        at = bisect.bisect_right([entry[0] for entry in entries], relative) - 1
        return 0 if at < 0 else int(entries[at][1])

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """An offset at or before the first batch whose max timestamp is at
        least `timestamp_ms` (None: every batch here is older)."""
        if timestamp_ms > self.max_timestamp:
            return None
        entries = _entries(self.time_index, TIME_ENTRY)
        at = bisect.bisect_left([entry[0] for entry in entries], timestamp_ms)
        if at == 0:
            return self.base_offset
        return self.base_offset + int(entries[at - 1][1])


def _entries(raw: bytes, entry: struct.Struct) -> list[tuple[int, ...]]:
    return list(entry.iter_unpack(raw))


def pack_segment(data: bytes | memoryview) -> tuple[bytes, Footer]:
    """The object for a closed segment whose file holds `data`: every batch
    checked (header, offset continuity, CRC) or ArchiveDamagedError, naming where."""
    view = memoryview(data)
    offsets = bytearray()
    times = bytearray()
    epochs: list[tuple[int, int]] = []
    position = 0
    last_indexed = -INDEX_INTERVAL_BYTES
    expected: int | None = None
    base_offset = first_timestamp = 0
    max_timestamp = -1
    batches = 0
    while position < len(view):
        if len(view) - position < HEADER_SIZE:
            raise ArchiveDamagedError(f"a torn batch header at byte {position} of the segment")
        header = read_header(view, position)
        size = header.size
        if header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE or position + size > len(view):
            raise ArchiveDamagedError(f"a batch at byte {position} runs past the segment's end")
        if expected is not None and header.base_offset != expected:
            raise ArchiveDamagedError(
                f"the batch at byte {position} starts at offset {header.base_offset},"
                f" {expected} expected"
            )
        if compute_crc(view, position, size) != header.crc:
            raise ArchiveDamagedError(
                f"the batch at byte {position} (offset {header.base_offset}) does not verify"
            )
        if expected is None:
            base_offset, first_timestamp = header.base_offset, header.first_timestamp
        relative = header.base_offset - base_offset
        if position - last_indexed >= INDEX_INTERVAL_BYTES:
            offsets += OFFSET_ENTRY.pack(relative, position)
            last_indexed = position
        if header.max_timestamp > max_timestamp:
            if not times or position == last_indexed:
                times += TIME_ENTRY.pack(header.max_timestamp, relative)
            max_timestamp = header.max_timestamp
        if not epochs or epochs[-1][0] != header.leader_epoch:
            epochs.append((header.leader_epoch, header.base_offset))
        expected = header.next_offset
        batches += 1
        position += size
    if expected is None:
        raise ArchiveDamagedError("an empty segment is not archived")
    footer = Footer(
        base_offset=base_offset,
        next_offset=expected,
        first_timestamp=first_timestamp,
        max_timestamp=max_timestamp,
        batch_count=batches,
        data_length=len(view),
        data_crc=crc32c(view),
        offset_index=bytes(offsets),
        time_index=bytes(times),
        epochs=tuple(epochs),
    )
    return b"".join((view, footer.offset_index, footer.time_index, encode_footer(footer))), footer


def encode_footer(footer: Footer) -> bytes:
    body = FOOTER.pack(
        VERSION,
        0,
        footer.base_offset,
        footer.next_offset,
        footer.first_timestamp,
        footer.max_timestamp,
        footer.batch_count,
        footer.data_length,
        footer.data_crc,
        len(footer.offset_index) // OFFSET_ENTRY.size,
        crc32c(footer.offset_index),
        len(footer.time_index) // TIME_ENTRY.size,
        crc32c(footer.time_index),
        len(footer.epochs),
        0,
    ) + b"".join(EPOCH.pack(epoch, start) for epoch, start in footer.epochs)
    return body + TRAILER.pack(len(body), crc32c(body), MAGIC)


def footer_span(object_size: int, tail: bytes) -> tuple[int, int]:
    """From the last bytes of an object (at least the trailer): the byte range
    (start, end) of its indexes and footer, to read if `tail` lacks them."""
    if len(tail) < TRAILER.size or object_size < TRAILER.size:
        raise ArchiveDamagedError("an archive object shorter than its trailer")
    length, _, magic = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    if magic != MAGIC:
        raise ArchiveDamagedError(
            "an archive object without its trailer (not a logq segment object)"
        )
    footer_start = object_size - TRAILER.size - length
    if footer_start < 0 or length < FOOTER.size:
        raise ArchiveDamagedError(f"an archive object's footer length {length} does not fit")
    return footer_start, object_size


def decode_footer(object_size: int, tail: bytes) -> Footer:
    """The footer and indexes of an object of `object_size` bytes, from its
    last `len(tail)` bytes (which must hold them: see `footer_span`)."""
    tail_start = object_size - len(tail)
    length, crc, _ = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    footer_start, _ = footer_span(object_size, tail)
    body = tail[footer_start - tail_start : footer_start - tail_start + length]
    if len(body) != length or crc32c(body) != crc:
        raise ArchiveDamagedError("an archive object's footer does not verify")
    (
        version,
        _,
        base_offset,
        next_offset,
        first_timestamp,
        max_timestamp,
        batch_count,
        data_length,
        data_crc,
        offset_count,
        offset_crc,
        time_count,
        time_crc,
        epoch_count,
        _,
    ) = FOOTER.unpack_from(body)
    if version != VERSION:
        raise ArchiveDamagedError(f"archive object version {version}, this release reads {VERSION}")
    if FOOTER.size + epoch_count * EPOCH.size != length:
        raise ArchiveDamagedError("an archive object's footer length does not match its epochs")
    index_start = data_length
    offsets_end = index_start + offset_count * OFFSET_ENTRY.size
    times_end = offsets_end + time_count * TIME_ENTRY.size
    if times_end != footer_start:
        raise ArchiveDamagedError("an archive object's parts do not add up to its size")
    if index_start < tail_start:
        raise ArchiveDamagedError("the tail read does not reach the object's indexes")
    offset_index = tail[index_start - tail_start : offsets_end - tail_start]
    time_index = tail[offsets_end - tail_start : times_end - tail_start]
    if crc32c(offset_index) != offset_crc or crc32c(time_index) != time_crc:
        raise ArchiveDamagedError("an archive object's index does not verify")
    epochs = tuple(
        (int(epoch), int(start))
        for epoch, start in EPOCH.iter_unpack(
            body[FOOTER.size : FOOTER.size + epoch_count * EPOCH.size]
        )
    )
    return Footer(
        base_offset=base_offset,
        next_offset=next_offset,
        first_timestamp=first_timestamp,
        max_timestamp=max_timestamp,
        batch_count=batch_count,
        data_length=data_length,
        data_crc=data_crc,
        offset_index=bytes(offset_index),
        time_index=bytes(time_index),
        epochs=epochs,
    )


def whole_batches(
    chunk: bytes | memoryview, start_position: int, from_offset: int, footer: Footer
) -> tuple[bytes, int]:
    """The verified batches of `chunk` (read from byte `start_position` of the
    data) that end after `from_offset`, and the byte position just past the
    last whole one (where the next read starts). A batch handed on that does
    not verify raises ArchiveDamagedError: no damaged byte is handed on."""
    view = memoryview(chunk)
    position = 0
    first: int | None = None
    while len(view) - position >= HEADER_SIZE:
        header = read_header(view, position)
        size = header.size
        if header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE:
            raise ArchiveDamagedError(
                f"archived batch at byte {start_position + position} has a bad length"
            )
        if start_position + position + size > footer.data_length:
            raise ArchiveDamagedError(
                f"archived batch at byte {start_position + position} runs past the data"
            )
        if position + size > len(view):
            break  # the rest comes with the next read
        if not footer.base_offset <= header.base_offset < footer.next_offset:
            raise ArchiveDamagedError(
                f"archived batch at byte {start_position + position} has offset"
                f" {header.base_offset}, outside {footer.base_offset}-{footer.next_offset}"
            )
        wanted = header.next_offset > from_offset
        # a batch below `from_offset` is stepped over by its header alone: it is
        # not handed on, so damage inside it leaves the batches after it readable
        if wanted and compute_crc(view, position, size) != header.crc:
            raise ArchiveDamagedError(
                f"archived batch at offset {header.base_offset} does not verify"
            )
        if first is None and wanted:
            first = position
        position += size
    if first is None:
        return b"", start_position + position
    return bytes(view[first:position]), start_position + position
