"""Per-batch compression codecs.

The producer picks the codec; the log stores the compressed body as it came
and only decompresses to validate (bounded, so a small batch cannot expand
into an unbounded buffer). Codec numbers live in the batch attributes.
"""

from __future__ import annotations

import lz4.block
import zstandard

from logq.log.errors import InvalidBatchError

NONE = 0
ZSTD = 1
LZ4 = 2
NAMES = {NONE: "none", ZSTD: "zstd", LZ4: "lz4"}
BY_NAME = {name: codec for codec, name in NAMES.items()}


class CompressionError(InvalidBatchError):
    """A body could not be decompressed within its bound, or names no codec."""


def compress(codec: int, body: bytes) -> bytes:
    if codec == NONE:
        return body
    if codec == ZSTD:
        return zstandard.ZstdCompressor(level=3).compress(body)
    if codec == LZ4:
        # store_size=True puts the uncompressed size first, so decompression is bounded.
        return bytes(lz4.block.compress(body, store_size=True))
    raise CompressionError(f"unknown compression codec {codec}")


def decompress(codec: int, body: bytes, *, size_bytes_max: int) -> bytes:
    """Decompress `body`, refusing any output above `size_bytes_max`."""
    if codec == NONE:
        return body
    try:
        if codec == ZSTD:
            declared = zstandard.frame_content_size(body)
            if declared > size_bytes_max:
                raise CompressionError(
                    f"zstd body declares {declared} bytes, limit {size_bytes_max}"
                )
            out = zstandard.ZstdDecompressor().decompress(body, max_output_size=size_bytes_max)
            if len(out) > size_bytes_max:
                raise CompressionError(f"zstd body expands past {size_bytes_max} bytes")
            return bytes(out)
        if codec == LZ4:
            if len(body) < 4:
                raise CompressionError("lz4 body is shorter than its size prefix")
            declared = int.from_bytes(body[:4], "little", signed=True)
            if not 0 <= declared <= size_bytes_max:
                raise CompressionError(
                    f"lz4 body declares {declared} bytes, limit {size_bytes_max}"
                )
            return bytes(lz4.block.decompress(body))
    except (zstandard.ZstdError, lz4.block.LZ4BlockError) as error:
        raise CompressionError(
            f"cannot decompress {NAMES.get(codec, codec)} body: {error}"
        ) from None
    raise CompressionError(f"unknown compression codec {codec}")
