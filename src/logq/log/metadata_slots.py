"""The bytes of one metadata record slot file, and keys as file names.

A record (a key's current value and version) is kept in two slot files,
`<key>.a` and `<key>.b`; a put writes the slot not holding the current
version, so a crash or a damaged sector leaves the other one. Each slot is a
fixed header, the key and the value, checked as a whole by CRC32C:

    magic            4  b"LQMR"
    format version   1  1
    reserved         1  0
    key length       2  bytes of the UTF-8 key that follows the header
    version          8  the record's version (1 for a new record, +1 a put)
    value length     4  bytes of the value that follows the key
    crc32c           4  of the 20 bytes above, then the key, then the value

all little-endian. A slot verifies when its magic, format version and lengths
are right, the file holds exactly header + key + value, the key is the one
asked for (a slot copied under another name is not that key's) and the CRC
matches. See docs/format.md.

Keys are `/`-separated segments (`topic/orders`); each segment is a file or
directory name, escaped so that any key is a safe, distinct name: letters,
digits, `_` and `-` stay, `.` stays except as the first character, every
other byte of the UTF-8 segment becomes `%XX` (upper-case hex).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from crc32c import crc32c

from logq.log.errors import InvalidKeyError

MAGIC = b"LQMR"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sBBHQII")
HEADER_SIZE = HEADER.size  # 24
CHECKED_HEADER_SIZE = HEADER_SIZE - 4  # the CRC covers the header up to itself
VALUE_BYTES_MAX = 1 << 20  # a topic's or group's settings take about 1 KiB
KEY_BYTES_MAX = 1024
SEGMENT_NAME_BYTES_MAX = 240  # a file name is at most 255 bytes: room for ".a" and ".tmp"
VERSION_MAX = 2**63 - 1
SLOT_SUFFIXES = (".a", ".b")
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_HEX = frozenset("0123456789ABCDEF")


@dataclass(frozen=True, slots=True)
class Slot:
    """A slot that verified."""

    version: int
    value: bytes


class SlotError(Exception):
    """A slot file that does not verify; the message says why."""


def encode_slot(key: str, version: int, value: bytes) -> bytes:
    key_bytes = key.encode()
    assert 1 <= version <= VERSION_MAX
    assert len(key_bytes) <= KEY_BYTES_MAX and len(value) <= VALUE_BYTES_MAX
    head = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(key_bytes), version, len(value), 0)
    crc = crc32c(value, crc32c(key_bytes, crc32c(head[:CHECKED_HEADER_SIZE])))
    slot = head[:CHECKED_HEADER_SIZE] + struct.pack("<I", crc) + key_bytes + value
    assert decode_slot(key, slot) == Slot(version, value)
    return slot


def decode_slot(key: str, data: bytes) -> Slot:
    """The slot's version and value, or SlotError saying why it does not verify."""
    if len(data) < HEADER_SIZE:
        raise SlotError(f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, form, reserved, key_length, version, value_length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SlotError(f"bad magic {magic!r}")
    if form != FORMAT_VERSION or reserved != 0:
        raise SlotError(f"unknown format version {form}.{reserved}")
    if key_length > KEY_BYTES_MAX or value_length > VALUE_BYTES_MAX:
        raise SlotError(f"lengths out of range: key {key_length}, value {value_length}")
    if len(data) != HEADER_SIZE + key_length + value_length:
        raise SlotError(
            f"{len(data)} bytes where the header says {HEADER_SIZE + key_length + value_length}"
        )
    body = memoryview(data)[HEADER_SIZE:]
    actual = crc32c(body, crc32c(memoryview(data)[:CHECKED_HEADER_SIZE]))
    if actual != crc:
        raise SlotError(f"CRC32C {actual:08x} where the header says {crc:08x}")
    if bytes(body[:key_length]) != key.encode():
        raise SlotError(f"holds the key {bytes(body[:key_length])!r}")
    if not 1 <= version <= VERSION_MAX:
        raise SlotError(f"version {version} out of range")
    return Slot(version, bytes(body[key_length:]))


def check_key(key: str) -> list[str]:
    """The key's escaped segments, or InvalidKeyError."""
    if not isinstance(key, str) or not key or len(key.encode()) > KEY_BYTES_MAX:
        raise InvalidKeyError(f"a metadata key is 1..{KEY_BYTES_MAX} bytes of text, got {key!r}")
    segments = key.split("/")
    if any(not segment or "\0" in segment for segment in segments):
        raise InvalidKeyError(f"metadata key {key!r} has an empty segment or a NUL")
    names = [escape_segment(segment) for segment in segments]
    for name in names:
        if len(name) > SEGMENT_NAME_BYTES_MAX:
            raise InvalidKeyError(
                f"metadata key {key[:80]!r}... has a segment of {len(name)} bytes as a file "
                f"name, the limit is {SEGMENT_NAME_BYTES_MAX}"
            )
    return names


def escape_segment(segment: str) -> str:
    parts: list[str] = []
    for position, byte in enumerate(segment.encode()):
        if byte in _PLAIN and not (position == 0 and byte == ord(".")):
            parts.append(chr(byte))
        else:
            parts.append(f"%{byte:02X}")
    return "".join(parts)


def unescape_segment(name: str) -> str | None:
    """The segment a file name stands for, or None for a name `escape_segment`
    never makes (a stray file)."""
    raw = bytearray()
    position = 0
    while position < len(name):
        char = name[position]
        if char == "%":
            digits = name[position + 1 : position + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                return None
            raw.append(int(digits, 16))
            position += 3
        elif char.isascii():
            raw.append(ord(char))
            position += 1
        else:
            return None
    try:
        segment = raw.decode()
    except UnicodeDecodeError:
        return None
    return segment if segment and escape_segment(segment) == name else None
