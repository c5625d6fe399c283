"""Where a keyed message goes: the one documented, stable key hash.

CRC32C of the key bytes, modulo the partition count. The broker places
messages with it and clients that build batches themselves use the same
function, so a key always lands on the same partition either way.
"""

from __future__ import annotations

from crc32c import crc32c


def partition_for_key(key: bytes, partitions: int) -> int:
    return int(crc32c(key)) % partitions
