"""The record batch: logq's unit of storage and transfer.

A batch is a fixed 61-byte header shaped like Kafka's v2 record batch header,
followed by a columnar body: five arrays of 32-bit integers (offset deltas,
timestamp deltas, and the cumulative end of each key, value and header block)
packed with one `struct` call, two null bitmaps (keys, values), then all keys,
all values and all header blocks joined. Columns make both ends cheap in
Python: encoding and decoding are a handful of C-level calls per batch, and
because the columns hold ends rather than lengths, the log checks a batch's
structure in constant time (the last ends must add up to the body size).

The producer builds the batch; the log validates it once (length, CRC32C,
structure), writes its base offset into the first eight bytes (outside the
CRC, as Kafka does) and stores and serves it as it came. Full layout:
docs/format.md.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import NamedTuple

from crc32c import crc32c

from logq.log import compression
from logq.log.errors import BatchTooLargeError, CorruptBatchError, InvalidBatchError

FORMAT_VERSION = 1

# base_offset, batch_length, leader_epoch, version, crc, attributes,
# last_offset_delta, first_timestamp, max_timestamp, producer_id,
# producer_epoch, base_sequence, record_count
HEADER = struct.Struct("<qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
assert HEADER_SIZE == 61

BASE_OFFSET = struct.Struct("<q")
# base_offset, batch_length, leader_epoch: the first 16 bytes, outside the CRC
STAMPED_HEAD = struct.Struct("<qii")
STAMPED_HEAD_SIZE = STAMPED_HEAD.size  # 16
# Byte positions of header fields, for the few places that patch or peek.
BATCH_LENGTH_AT = 8
LEADER_EPOCH_AT = 12
VERSION_AT = 16
CRC_AT = 17
ATTRIBUTES_AT = 21
LENGTH_PREFIX_SIZE = 12  # base_offset + batch_length: the part not counted by batch_length
_PEEK = struct.Struct("<qi")  # base_offset, batch_length
_COUNTS = struct.Struct("<i")

# Attribute bits.
CODEC_MASK = 0b0000_0111
LANE_SHIFT = 3
LANE_MASK = 0b0011_1000  # priority lane index 0..7
EXPIRING = 0b0100_0000  # some record carries a logq-expires-at header (TTL)
DELAYED = 0b1000_0000  # record timestamps are delivery times, some maybe in the future
DEDUP = 0b1_0000_0000  # one record with a logq-dedup-id header
KNOWN_ATTRIBUTE_BITS = CODEC_MASK | LANE_MASK | EXPIRING | DELAYED | DEDUP

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1
COLUMN_COUNT = 5
_LAST_ENDS = struct.Struct("<I")
_HEADER_ENTRY = struct.Struct("<HI")  # header key length, header value length
_HEADER_COUNT = struct.Struct("<H")


class BatchHeader(NamedTuple):
    """The fixed fields of one batch, as read from its first 61 bytes (a
    tuple: the server reads one per batch, several times, so it is cheap)."""

    base_offset: int
    batch_length: int
    leader_epoch: int
    version: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + LENGTH_PREFIX_SIZE

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK

    @property
    def lane(self) -> int:
        return (self.attributes & LANE_MASK) >> LANE_SHIFT


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record, for consumers; the server never builds these."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch decoded into columns; `records()` builds per-record objects."""

    header: BatchHeader
    timestamps: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    header_blocks: list[bytes]

    def records(self) -> list[Record]:
        base = self.header.base_offset
        return [
            Record(base + index, timestamp, key, value, decode_headers(block))
            for index, (timestamp, key, value, block) in enumerate(
                zip(self.timestamps, self.keys, self.values, self.header_blocks, strict=True)
            )
        ]


def read_header(buffer: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Read the header of the batch that starts at `position` in `buffer`."""
    if len(buffer) - position < HEADER_SIZE:
        raise InvalidBatchError(
            f"batch header needs {HEADER_SIZE} bytes, {len(buffer) - position} given"
        )
    return BatchHeader._make(HEADER.unpack_from(buffer, position))


def peek_size(buffer: bytes | bytearray | memoryview, position: int = 0) -> int:
    """Total size of the batch at `position`, from its length field alone."""
    _, batch_length = _PEEK.unpack_from(buffer, position)
    return int(batch_length) + LENGTH_PREFIX_SIZE


def compute_crc(buffer: bytes | bytearray | memoryview, position: int, size: int) -> int:
    """CRC32C over everything after the CRC field of the batch at `position`."""
    view = memoryview(buffer)[position + ATTRIBUTES_AT : position + size]
    return int(crc32c(view))


@lru_cache(maxsize=16)
def _dense_offset_deltas(count: int) -> bytes:
    return struct.pack(f"<{count}I", *range(count))


def encode_headers(headers: dict[str, str] | None) -> bytes:
    """Encode one record's headers: u16 count, then (u16 key len, u32 value len, key, value)."""
    if not headers:
        return b""
    try:
        parts = [_HEADER_COUNT.pack(len(headers))]
        for name, value in headers.items():
            name_bytes = name.encode()
            value_bytes = value.encode()
            parts.append(_HEADER_ENTRY.pack(len(name_bytes), len(value_bytes)))
            parts.append(name_bytes)
            parts.append(value_bytes)
    except (UnicodeEncodeError, struct.error) as error:
        raise InvalidBatchError(
            "record headers cannot be encoded (valid Unicode, names of at most 65,535 bytes, "
            f"at most 65,535 headers): {error}"
        ) from None
    return b"".join(parts)


def _header_blocks(headers: Sequence[dict[str, str] | None]) -> list[bytes]:
    """Each record's header block; records sharing one dict share its encoding."""
    blocks: list[bytes] = []
    last: dict[str, str] | None = None
    block = b""
    for record_headers in headers:
        if record_headers is not last or not blocks:
            last = record_headers
            block = encode_headers(record_headers)
        blocks.append(block)
    return blocks


def decode_headers(block: bytes) -> dict[str, str]:
    if not block:
        return {}
    try:
        (count,) = _HEADER_COUNT.unpack_from(block, 0)
        position = _HEADER_COUNT.size
        headers: dict[str, str] = {}
        for _ in range(count):
            name_length, value_length = _HEADER_ENTRY.unpack_from(block, position)
            position += _HEADER_ENTRY.size
            name = block[position : position + name_length].decode()
            position += name_length
            headers[name] = block[position : position + value_length].decode()
            position += value_length
    except (struct.error, UnicodeDecodeError) as error:
        raise InvalidBatchError(f"malformed record headers: {error}") from None
    if position != len(block):
        raise InvalidBatchError("malformed record headers: trailing bytes")
    return headers


def encode_batch(
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[dict[str, str] | None] | None = None,
    timestamps: Sequence[int] | None = None,
    timestamp_ms: int = 0,
    codec: int = compression.NONE,
    lane: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = 0,
    base_sequence: int = NO_SEQUENCE,
    leader_epoch: int = 0,
    base_offset: int = 0,
    expiring: bool = False,
    delayed: bool = False,
    dedup: bool = False,
) -> bytes:
    """Build one batch from records. This is producer-side work, per record.

    `expiring` marks a batch in which some record has a `logq-expires-at`
    header (per-message TTL); `delayed` one whose record timestamps are the
    times the records become deliverable; `dedup` one that holds a single
    record with a `logq-dedup-id` header.

    `timestamps` gives each record its own time in ms; without it every record
    takes `timestamp_ms`.
    """
    count = len(values)
    if count == 0:
        raise InvalidBatchError("a batch needs at least one record")
    if not 0 <= lane <= LANE_MASK >> LANE_SHIFT:
        raise InvalidBatchError(f"lane {lane} is outside 0..{LANE_MASK >> LANE_SHIFT}")
    if timestamps is None:
        first_timestamp = max_timestamp = timestamp_ms
        timestamp_deltas: Sequence[int] = [0] * count
    else:
        if len(timestamps) != count:
            raise InvalidBatchError("timestamps and values differ in length")
        first_timestamp, max_timestamp = min(timestamps), max(timestamps)
        timestamp_deltas = [timestamp - first_timestamp for timestamp in timestamps]
    key_column = keys if keys is not None else [None] * count
    header_blocks = _header_blocks(headers) if headers else [b""] * count
    if len(key_column) != count or len(header_blocks) != count:
        raise InvalidBatchError("keys, headers and values differ in length")
    try:
        columns = struct.pack(
            f"<{count}I{count}I{count}I{count}I",
            *timestamp_deltas,
            *accumulate(len(k) if k else 0 for k in key_column),
            *accumulate(len(v) if v else 0 for v in values),
            *accumulate(map(len, header_blocks)),
        )
    except struct.error as error:
        raise InvalidBatchError(f"record field out of range: {error}") from None
    body = b"".join(
        (
            _dense_offset_deltas(count),
            columns,
            _null_bitmap(key_column),
            _null_bitmap(values),
            b"".join(k for k in key_column if k),
            b"".join(v for v in values if v),
            b"".join(header_blocks),
        )
    )
    body = compression.compress(codec, body)
    attributes = (
        codec
        | (lane << LANE_SHIFT)
        | (EXPIRING if expiring else 0)
        | (DELAYED if delayed else 0)
        | (DEDUP if dedup else 0)
    )
    try:
        header = bytearray(
            HEADER.pack(
                base_offset,
                HEADER_SIZE - LENGTH_PREFIX_SIZE + len(body),
                leader_epoch,
                FORMAT_VERSION,
                0,
                attributes,
                count - 1,
                first_timestamp,
                max_timestamp,
                producer_id,
                producer_epoch,
                base_sequence,
                count,
            )
        )
    except struct.error as error:
        raise InvalidBatchError(f"batch field out of range: {error}") from None
    crc = crc32c(body, crc32c(memoryview(header)[ATTRIBUTES_AT:]))
    struct.pack_into("<I", header, CRC_AT, crc)
    return bytes(header) + body


def validate_batch(
    batch: bytes | bytearray | memoryview,
    *,
    size_bytes_max: int,
    records_max: int,
) -> BatchHeader:
    """Check a whole batch offered for append: length, version, CRC, structure.

    Per-batch work only: a few C-level calls whatever the record count.
    Raises an InvalidBatchError subclass naming what is wrong.
    """
    size = len(batch)
    if size > size_bytes_max:
        raise BatchTooLargeError(f"batch is {size} bytes, the limit is {size_bytes_max}")
    header = read_header(batch)
    if header.size != size:
        raise InvalidBatchError(f"batch length field says {header.size} bytes, got {size}")
    if header.version != FORMAT_VERSION:
        raise InvalidBatchError(f"batch version {header.version}, expected {FORMAT_VERSION}")
    if compute_crc(batch, 0, size) != header.crc:
        raise CorruptBatchError("batch CRC32C does not match its bytes")
    if header.attributes & ~KNOWN_ATTRIBUTE_BITS:
        raise InvalidBatchError(f"unknown attribute bits {header.attributes:#06x}")
    count = header.record_count
    if count < 1:
        raise InvalidBatchError(f"record count {count} is not positive")
    if count > records_max:
        raise BatchTooLargeError(f"batch holds {count} records, the limit is {records_max}")
    if header.last_offset_delta != count - 1:
        raise InvalidBatchError(
            f"last offset delta {header.last_offset_delta} does not match record count {count}"
        )
    if header.max_timestamp < header.first_timestamp:
        raise InvalidBatchError("max timestamp is before first timestamp")
    body = _body(batch, header, size_limit=size_bytes_max)
    _check_columns(body, header)
    return header


def check_record_sizes(
    batch: bytes | bytearray | memoryview,
    *,
    message_bytes_max: int,
    key_bytes_max: int,
    header_bytes_max: int,
    header_count_max: int,
) -> None:
    """Refuse a batch holding a record over a limit (key + value, key alone,
    encoded headers, header count), naming the record, its size and the limit.

    Constant time when the column totals are under the limits (the usual
    case: no single record can be over then); otherwise one C-level pass
    over the column ends, and a look at the header blocks big enough to be
    over the count. A malformed batch passes here: validation refuses it."""
    try:
        body, count, keys, values, headers = _column_totals(batch)
        # a block of more than the count holds 2 bytes, then 6 per header and
        # a name of a byte at least for all but one (one name may be empty)
        count_floor = 2 + 7 * (header_count_max + 1) - 1
        if (
            keys <= key_bytes_max
            and headers <= header_bytes_max
            and keys + values <= message_bytes_max
            and headers < count_floor
        ):
            return
        ends = struct.unpack_from(f"<{3 * count}I", body, 8 * count)
    except (struct.error, InvalidBatchError, compression.CompressionError):
        return
    columns = (ends[:count], ends[count : 2 * count], ends[2 * count :])
    key_sizes, value_sizes, header_sizes = (
        list(map(operator.sub, column, (0, *column[:-1]))) for column in columns
    )
    for what, sizes, name, limit in (
        ("a key", key_sizes, "key_bytes_max", key_bytes_max),
        ("headers", header_sizes, "header_bytes_max", header_bytes_max),
        (
            "key and value",
            list(map(operator.add, key_sizes, value_sizes)),
            "message_bytes_max",
            message_bytes_max,
        ),
    ):
        biggest = max(sizes)
        if biggest > limit:
            raise BatchTooLargeError(
                f"record {sizes.index(biggest)} has {what} of {biggest} bytes, "
                f"the limit {name} is {limit}"
            )
    blocks_at = _data_start(count) + keys + values
    for index, size in enumerate(header_sizes):
        if size >= count_floor:
            at = blocks_at + (columns[2][index - 1] if index else 0)
            (found,) = _HEADER_COUNT.unpack_from(body, at)
            if found > header_count_max:
                raise BatchTooLargeError(
                    f"record {index} has {found} headers, "
                    f"the limit header_count_max is {header_count_max}"
                )


def header_names_with(batch: bytes | bytearray | memoryview, prefix: bytes) -> dict[str, str]:
    """Header names starting with `prefix` in the batch's records, each with
    one of its values. One C-level search of the headers column: records
    are decoded only when it finds the prefix. A malformed batch gives {}
    here: validation refuses it."""
    try:
        body, count, keys, values, headers = _column_totals(batch)
        start = _data_start(count) + keys + values
        column = bytes(body[start : start + headers])
        if column.find(prefix) < 0:
            return {}
        ends = struct.unpack_from(f"<{count}I", body, 16 * count)
    except (struct.error, InvalidBatchError, compression.CompressionError):
        return {}
    found: dict[str, str] = {}
    for begin, end in zip((0, *ends[:-1]), ends, strict=True):
        for name, value in decode_headers(column[begin:end]).items():
            if name.encode().startswith(prefix):
                found[name] = value
    return found


def _column_totals(
    batch: bytes | bytearray | memoryview,
) -> tuple[bytes | memoryview, int, int, int, int]:
    """The body, the record count and the byte totals of the keys, values
    and headers columns (their last ends), read without decoding a record."""
    header = read_header(batch)
    body = _body(batch, header, size_limit=1 << 31)
    count = header.record_count
    last = 4 * count - 4
    (keys,) = _LAST_ENDS.unpack_from(body, last + 8 * count)
    (values,) = _LAST_ENDS.unpack_from(body, last + 12 * count)
    (headers,) = _LAST_ENDS.unpack_from(body, last + 16 * count)
    return body, count, keys, values, headers


def _body(
    batch: bytes | bytearray | memoryview, header: BatchHeader, size_limit: int
) -> bytes | memoryview:
    raw = memoryview(batch)[HEADER_SIZE : header.size]
    if header.codec == compression.NONE:
        return raw
    try:
        return compression.decompress(header.codec, bytes(raw), size_bytes_max=size_limit)
    except compression.CompressionError as error:
        raise InvalidBatchError(str(error)) from None


def _bitmap_size(count: int) -> int:
    return (count + 7) // 8


def _null_bitmap(items: Sequence[bytes | None]) -> bytes:
    """Bit i (little-endian bit order) is set when item i is None."""
    bits = 0
    for index, item in enumerate(items):
        if item is None:
            bits |= 1 << index
    return bits.to_bytes(_bitmap_size(len(items)), "little")


def _data_start(count: int) -> int:
    return 4 * COLUMN_COUNT * count + 2 * _bitmap_size(count)


def _check_columns(body: bytes | memoryview, header: BatchHeader) -> None:
    """Constant-time structure check: the dense offset deltas and the last
    end of each data column must account for every byte of the body."""
    count = header.record_count
    data_start = _data_start(count)
    if len(body) < data_start:
        raise InvalidBatchError(
            f"body of {len(body)} bytes is too short for {count} records' columns"
        )
    if body[: 4 * count] != _dense_offset_deltas(count):
        raise InvalidBatchError("offset deltas are not 0..count-1")
    last = 4 * count - 4
    (keys_size,) = _LAST_ENDS.unpack_from(body, last + 8 * count)
    (values_size,) = _LAST_ENDS.unpack_from(body, last + 12 * count)
    (headers_size,) = _LAST_ENDS.unpack_from(body, last + 16 * count)
    described = data_start + keys_size + values_size + headers_size
    if described != len(body):
        raise InvalidBatchError(
            f"columns describe {described} bytes, the body holds {len(body)}; "
            f"is the record count ({count}) right?"
        )


def _split(
    data: bytes, start: int, ends: tuple[int, ...], nulls: int
) -> tuple[list[bytes | None], int]:
    """Cut one data column by its cumulative ends; None where the bitmap says."""
    starts = (0, *ends[:-1])
    region = data[start : start + (ends[-1] if ends else 0)]
    if nulls == 0 and not region:
        items: list[bytes | None] = [b""] * len(ends)
    elif nulls == 0:
        items = [region[a:b] for a, b in zip(starts, ends, strict=True)]
    elif nulls == (1 << len(ends)) - 1:
        items = [None] * len(ends)
    else:
        items = [
            None if nulls >> index & 1 else region[a:b]
            for index, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]
    return items, start + (ends[-1] if ends else 0)


def _decoded_body(
    batch: bytes | bytearray | memoryview, position: int
) -> tuple[BatchHeader, bytes]:
    header = read_header(batch, position)
    raw = bytes(memoryview(batch)[position + HEADER_SIZE : position + header.size])
    body = compression.decompress(header.codec, raw, size_bytes_max=1 << 31)
    count = header.record_count
    if count < 0 or len(body) < _data_start(count):
        raise InvalidBatchError(f"body of {len(body)} bytes is too short for {count} records")
    return header, body


def decode_batch(batch: bytes | bytearray | memoryview, position: int = 0) -> DecodedBatch:
    """Decode the batch at `position` into columns (consumer-side work)."""
    header, body = _decoded_body(batch, position)
    count = header.record_count
    columns = struct.unpack_from(f"<{4 * count}I", body, 4 * count)
    bitmap_size = _bitmap_size(count)
    bitmaps_at = 4 * COLUMN_COUNT * count
    key_nulls = int.from_bytes(body[bitmaps_at : bitmaps_at + bitmap_size], "little")
    value_nulls = int.from_bytes(
        body[bitmaps_at + bitmap_size : bitmaps_at + 2 * bitmap_size], "little"
    )
    keys, cursor = _split(body, _data_start(count), columns[count : 2 * count], key_nulls)
    values, cursor = _split(body, cursor, columns[2 * count : 3 * count], value_nulls)
    blocks, _ = _split(body, cursor, columns[3 * count :], 0)
    first = header.first_timestamp
    return DecodedBatch(
        header=header,
        timestamps=[first + delta for delta in columns[:count]],
        keys=keys,
        values=values,
        header_blocks=[block or b"" for block in blocks],
    )


def _u32_array(body: bytes, start: int, end: int) -> array[int]:
    """Little-endian u32s of `body[start:end]` as an array (one copy in C)."""
    column = array("I", body[start:end])
    if sys.byteorder != "little":
        column.byteswap()
    return column


class BatchColumns:
    """A batch's columns read once, its records' fields cut out when asked.

    The consumer's view of a fetched batch: building it costs one array
    copy of the four integer columns, two bitmap reads and one slice per
    data region, whatever the record count; a field costs one slice when
    (and only if) it is read. Each field equals what `decode_batch` gives
    for the same record."""

    __slots__ = (
        "_blocks",
        "_ends",
        "_key_nulls",
        "_keys",
        "_value_nulls",
        "_values",
        "count",
        "header",
    )

    def __init__(self, batch: bytes | bytearray | memoryview, position: int = 0) -> None:
        assert array("I").itemsize == 4
        header, body = _decoded_body(batch, position)
        count = header.record_count
        # timestamp deltas, key ends, value ends, header ends: 4·count u32,
        # copied as one array (an int is made only for an end that is read)
        ends = _u32_array(body, 4 * count, 20 * count)
        bitmap_size = _bitmap_size(count)
        bitmaps_at = 4 * COLUMN_COUNT * count
        keys_at = _data_start(count)
        values_at = keys_at + (ends[2 * count - 1] if count else 0)
        blocks_at = values_at + (ends[3 * count - 1] if count else 0)
        blocks_end = blocks_at + (ends[4 * count - 1] if count else 0)
        self.header = header
        self.count = count
        self._ends = ends
        self._key_nulls = int.from_bytes(body[bitmaps_at : bitmaps_at + bitmap_size], "little")
        self._value_nulls = int.from_bytes(
            body[bitmaps_at + bitmap_size : bitmaps_at + 2 * bitmap_size], "little"
        )
        self._keys = body[keys_at:values_at]
        self._values = body[values_at:blocks_at]
        self._blocks = body[blocks_at:blocks_end]

    def timestamp(self, index: int) -> int:
        return self.header.first_timestamp + self._ends[index]

    # Record i's field is region[end[i - 1] : end[i]], the end before record 0's being 0.
    def key(self, index: int) -> bytes | None:
        if self._key_nulls and self._key_nulls >> index & 1:
            return None
        ends, at = self._ends, self.count + index
        return self._keys[ends[at - 1] if index else 0 : ends[at]]

    def value(self, index: int) -> bytes | None:
        if self._value_nulls and self._value_nulls >> index & 1:
            return None
        ends, at = self._ends, 2 * self.count + index
        return self._values[ends[at - 1] if index else 0 : ends[at]]

    def header_block(self, index: int) -> bytes:
        ends, at = self._ends, 3 * self.count + index
        return self._blocks[ends[at - 1] if index else 0 : ends[at]]

    def headers(self, index: int) -> dict[str, str]:
        block = self.header_block(index)
        return decode_headers(block) if block else {}


def decode_timestamps(batch: bytes | bytearray | memoryview, position: int = 0) -> list[int]:
    """Only the record timestamps of the batch at `position`."""
    header, body = _decoded_body(batch, position)
    count = header.record_count
    deltas = struct.unpack_from(f"<{count}I", body, 4 * count)
    return [header.first_timestamp + delta for delta in deltas]


def stamped_head(header: BatchHeader, base_offset: int, leader_epoch: int) -> bytes:
    """The first 16 bytes of a batch as the log stores it: the base offset it
    was given and the leader epoch it was appended in (the CRC covers
    neither), its length kept; the rest of the batch follows as it came."""
    return STAMPED_HEAD.pack(base_offset, header.batch_length, leader_epoch)


def with_base_offset(batch: bytes, base_offset: int) -> bytes:
    """A copy of `batch` with its base offset set (the CRC does not cover it)."""
    return BASE_OFFSET.pack(base_offset) + batch[8:]


def iter_headers(
    buffer: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
) -> list[tuple[int, BatchHeader]]:
    """(position, header) of each whole batch in `buffer[start:end]`."""
    stop = len(buffer) if end is None else end
    found: list[tuple[int, BatchHeader]] = []
    position = start
    while stop - position >= HEADER_SIZE:
        header = read_header(buffer, position)
        if position + header.size > stop or header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE:
            break
        found.append((position, header))
        position += header.size
    return found
