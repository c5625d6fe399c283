"""The batch codec on bytes it did not write: only InvalidBatchError (a
LogError) comes out, whatever the header claims."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from logq.log import InvalidBatchError, LogError, compression, decode_batch, encode_batch
from logq.log.batch import (
    ATTRIBUTES_AT,
    HEADER,
    HEADER_SIZE,
    decode_timestamps,
)

RECORD_COUNT_AT = HEADER_SIZE - 4


def _with(batch: bytes, at: int, fmt: str, value: int) -> bytes:
    patched = bytearray(batch)
    struct.pack_into(fmt, patched, at, value)
    return bytes(patched)


@pytest.mark.parametrize("count", [-1, -(2**31), 2, 1000, 2**31 - 1])
def test_a_record_count_the_body_cannot_hold_is_an_invalid_batch(count: int) -> None:
    # decode_batch and decode_timestamps unpacked `count` columns from the
    # body unchecked: struct.error ("bad char in struct format" for a negative
    # count, "unpack_from requires a buffer of ..." for a large one).
    batch = _with(encode_batch([b"value"]), RECORD_COUNT_AT, "<i", count)
    for decode in (decode_batch, decode_timestamps):
        with pytest.raises(InvalidBatchError, match="too short"):
            decode(batch)


@pytest.mark.parametrize("codec", [compression.ZSTD, compression.LZ4, 5, 7])
def test_a_body_that_does_not_decompress_is_an_invalid_batch(codec: int) -> None:
    # The decoders let compression.CompressionError (no LogError) escape for
    # a corrupt zstd or lz4 body, or a codec number no codec has.
    batch = encode_batch([b"value" * 20])
    attributes = HEADER.unpack_from(batch)[5]
    garbled = _with(batch, ATTRIBUTES_AT, "<h", (attributes & ~0b111) | codec)
    for decode in (decode_batch, decode_timestamps):
        with pytest.raises(InvalidBatchError):
            decode(garbled)


def test_an_unknown_codec_is_refused_when_encoding_too() -> None:
    with pytest.raises(InvalidBatchError, match="unknown compression codec 7"):
        encode_batch([b"value"], codec=7)
    assert issubclass(compression.CompressionError, LogError)


def test_batches_the_codec_wrote_still_decode() -> None:
    for codec in (compression.NONE, compression.ZSTD, compression.LZ4):
        batch = encode_batch([b"a", None, b""], keys=[None, b"k", b""], codec=codec)
        decoded = decode_batch(batch)
        assert decoded.values == [b"a", None, b""]
        assert decoded.keys == [None, b"k", b""]
        assert decode_timestamps(batch) == [0, 0, 0]


@pytest.mark.parametrize(
    "fields",
    [
        {"timestamp_ms": 2**63},
        {"timestamps": [-(2**63) - 1]},
        {"timestamps": [2**63 + 5]},
        {"producer_id": 2**63},
        {"producer_epoch": 2**15},
        {"base_sequence": -(2**31) - 1},
    ],
)
def test_header_fields_out_of_range_are_an_invalid_batch(fields: dict[str, Any]) -> None:
    # A timestamp or producer field past its 64/32/16 bits made the header's
    # struct.pack raise struct.error out of encode_batch.
    with pytest.raises(InvalidBatchError, match="out of range"):
        encode_batch([b"value"], **fields)


@pytest.mark.parametrize(
    "headers",
    [
        {"\udcff": "v"},
        {"name": "a\ud800b"},
        {"n" * 65_536: "v"},
        {str(index): "" for index in range(65_536)},
    ],
    ids=["surrogate-name", "surrogate-value", "long-name", "many-headers"],
)
def test_headers_the_format_cannot_hold_are_an_invalid_batch(headers: dict[str, str]) -> None:
    # A lone surrogate in a header name or value (text with no UTF-8) raised
    # UnicodeEncodeError out of encode_batch; a name of 65,536 bytes or
    # 65,536 headers (the format counts both in 16 bits) raised struct.error.
    with pytest.raises(InvalidBatchError, match="record headers cannot be encoded"):
        encode_batch([b"value"], headers=[headers])
    assert decode_batch(encode_batch([b"v"], headers=[{"n" * 65_535: "v"}])).records()
