"""RESP encoding: Python values to frames, for either protocol version.

`encode_into` appends the pieces of a frame to a list, so a reply that
carries stored batches (bytes or memoryviews) is handed to the transport
with `writelines` without being copied into one buffer first.

Mapping of Python values: bytes-like -> bulk string, str -> bulk string
(UTF-8), SimpleString -> simple string, int -> integer (past 64 bits: big
number, RESP2: bulk string), bool -> boolean
(RESP2: 1/0), float -> double (RESP2: bulk string), None -> null (RESP2:
null bulk string), list/tuple -> array, dict -> map (RESP2: flat array of
key, value, ...), Push -> push (RESP2: array), RespError -> error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from logq.protocol.values import Push, RespError, SimpleString

_CRLF = b"\r\n"
_NULL3 = b"_\r\n"
_NULL2 = b"$-1\r\n"
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def encode_into(value: object, out: list[bytes | memoryview], protocol: int = 3) -> None:
    """Append the frame for `value` to `out`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        out.append(b"$%d\r\n" % len(value))
        out.append(value if not isinstance(value, bytearray) else bytes(value))
        out.append(_CRLF)
    elif isinstance(value, SimpleString):
        out.append(b"+" + value.replace("\r", " ").replace("\n", " ").encode() + _CRLF)
    elif isinstance(value, str):
        data = value.encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif value is None:
        out.append(_NULL3 if protocol == 3 else _NULL2)
    elif isinstance(value, bool):
        if protocol == 3:
            out.append(b"#t\r\n" if value else b"#f\r\n")
        else:
            out.append(b":1\r\n" if value else b":0\r\n")
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            out.append(b":%d\r\n" % value)
        elif protocol == 3:  # RESP integers are 64-bit: wider ones are big numbers
            out.append(b"(%d\r\n" % value)
        else:
            text = b"%d" % value
            out.append(b"$%d\r\n%b\r\n" % (len(text), text))
    elif isinstance(value, float):
        text = _double(value)
        if protocol == 3:
            out.append(b"," + text + _CRLF)
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(text), text))
    elif isinstance(value, dict):
        if protocol == 3:
            out.append(b"%%%d\r\n" % len(value))
        else:
            out.append(b"*%d\r\n" % (2 * len(value)))
        for key, item in value.items():
            encode_into(key, out, protocol)
            encode_into(item, out, protocol)
    elif isinstance(value, Push):
        out.append((b">%d\r\n" if protocol == 3 else b"*%d\r\n") % len(value))
        for item in value:
            encode_into(item, out, protocol)
    elif isinstance(value, (list, tuple)):
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            encode_into(item, out, protocol)
    elif isinstance(value, RespError):
        line = value.text.replace("\r", " ").replace("\n", " ")
        out.append(b"-" + line.encode() + _CRLF)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as RESP")


def encode(value: object, protocol: int = 3) -> bytes:
    out: list[bytes | memoryview] = []
    encode_into(value, out, protocol)
    return b"".join(out)


def _double(value: float) -> bytes:
    if math.isnan(value):
        return b"nan"
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    return repr(value).encode()


def encode_command(args: Sequence[bytes | str | int]) -> bytes:
    """A command as an array of bulk strings (what every RESP client sends)."""
    parts: list[bytes] = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = bytes(arg) if not isinstance(arg, bytes) else arg
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(_CRLF)
    return b"".join(parts)
