"""Incremental RESP2/RESP3 parser: bytes in, whole values out, no I/O.

Feed it what the socket gave; take complete values out. Every length is
checked against `Limits` before anything is buffered for it, so a peer can
make the parser hold at most one frame of `max_bulk_bytes` plus small change.
A value that is not complete yet costs nothing to retry: the parser
remembers how many bytes it needs before trying again.

The server side also accepts inline commands (a line of words, as typed
into telnet), split like the Redis server does.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Final

from logq.protocol.values import ProtocolError, Push, RespError, SimpleString


@dataclass(frozen=True, slots=True)
class Limits:
    max_bulk_bytes: int = 256 << 20
    max_elements: int = 1 << 20
    max_depth: int = 8
    max_line_bytes: int = 64 << 10
    max_buffer_bytes: int = 512 << 20


class _IncompleteError(Exception):
    """Raised inside the parser: `need` bytes from the frame start are required."""

    def __init__(self, need: int) -> None:
        self.need = need


NEED_MORE: Final = object()
_CRLF = b"\r\n"
_TYPES = frozenset(b"+-:$*_#,(!=%~|>")


class Parser:
    """Parse RESP frames out of a byte stream."""

    def __init__(self, limits: Limits | None = None, *, inline: bool = False) -> None:
        self.limits = limits or Limits()
        self._inline = inline
        self._buffer = bytearray()
        self._start = 0
        self._need = 0  # buffer length (from _start) below which parsing cannot succeed
        # a command array that is still arriving: its items so far, where the
        # next one starts, how many it has; so each byte is parsed once, however
        # many pieces the array comes in
        self._partial: tuple[list[object], int, int] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self.buffered + len(data) > self.limits.max_buffer_bytes:
            raise ProtocolError(
                f"more than {self.limits.max_buffer_bytes} bytes buffered without a complete frame"
            )
        self._buffer += data

    def next_value(self) -> object:
        """The next complete value, or NEED_MORE."""
        if self.buffered == 0 or self.buffered < self._need:
            return NEED_MORE
        try:
            value, end = self._value(self._start, 0)
        except _IncompleteError as incomplete:
            self._need = incomplete.need - self._start
            return NEED_MORE
        self._consume(end)
        return value

    def next_command(self) -> list[bytes] | None:
        """The next complete command (an array of bulk strings, or an inline
        line of words), or None when more bytes are needed."""
        while True:
            if self.buffered == 0 or self.buffered < self._need:
                return None
            first = self._buffer[self._start]
            if first == 0x2A:  # '*'
                value = self._next_array()
                if value is NEED_MORE:
                    return None
                if value is None:
                    continue  # a null array is no command
                if not isinstance(value, list) or not all(isinstance(a, bytes) for a in value):
                    raise ProtocolError("a command must be an array of bulk strings")
                if not value:
                    continue
                return value
            if not self._inline or first in _TYPES:
                raise ProtocolError(f"expected a command array, got {bytes([first])!r}")
            words = self._inline_command()
            if words is None:
                return None
            if words:
                return words

    # -- internals ---------------------------------------------------------------------

    def _next_array(self) -> object:
        """The array at `_start` (None for a null array), or NEED_MORE; the
        items parsed so far are kept between calls."""
        if self._partial is None:
            try:
                line, position = self._line(self._start + 1)
            except _IncompleteError as incomplete:
                self._need = incomplete.need - self._start
                return NEED_MORE
            count = self._count(line, "array")
            if count == -1:
                self._consume(position)
                return None
            if count < 0:
                raise ProtocolError(f"bad array length {count}")
            self._partial = ([], position, count)
        items, position, count = self._partial
        while len(items) < count:
            try:
                item, position = self._value(position, 1)
            except _IncompleteError as incomplete:
                self._partial = (items, position, count)
                self._need = incomplete.need - self._start
                return NEED_MORE
            items.append(item)
        self._partial = None
        self._consume(position)
        return items

    def _consume(self, end: int) -> None:
        self._start = end
        self._need = 0
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        elif self._start > 65536 and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0

    def _line(self, position: int) -> tuple[bytes, int]:
        end = self._buffer.find(_CRLF, position)
        if end < 0:
            if len(self._buffer) - position > self.limits.max_line_bytes:
                raise ProtocolError(f"a line longer than {self.limits.max_line_bytes} bytes")
            raise _IncompleteError(len(self._buffer) + 1)
        if end - position > self.limits.max_line_bytes:
            raise ProtocolError(f"a line longer than {self.limits.max_line_bytes} bytes")
        return bytes(self._buffer[position:end]), end + 2

    def _integer(self, line: bytes) -> int:
        if not line or len(line) > 40:
            raise ProtocolError(f"bad integer {line[:40]!r}")
        try:
            return int(line)
        except ValueError:
            raise ProtocolError(f"bad integer {line[:40]!r}") from None

    def _count(self, line: bytes, what: str) -> int:
        count = self._integer(line)
        if count > self.limits.max_elements:
            raise ProtocolError(
                f"{what} of {count} elements, the limit is {self.limits.max_elements}"
            )
        return count

    def _blob(self, position: int, line: bytes) -> tuple[bytes | None, int]:
        length = self._integer(line)
        if length == -1:
            return None, position
        if length < 0 or length > self.limits.max_bulk_bytes:
            raise ProtocolError(
                f"bulk string of {length} bytes, the limit is {self.limits.max_bulk_bytes}"
            )
        end = position + length
        if end + 2 > len(self._buffer):
            raise _IncompleteError(end + 2)
        if self._buffer[end : end + 2] != _CRLF:
            raise ProtocolError("bulk string not followed by CRLF")
        return bytes(self._buffer[position:end]), end + 2

    def _value(self, position: int, depth: int) -> tuple[object, int]:
        if position >= len(self._buffer):
            raise _IncompleteError(position + 1)
        if depth > self.limits.max_depth:
            raise ProtocolError(f"values nested deeper than {self.limits.max_depth}")
        kind = self._buffer[position]
        line, position = self._line(position + 1)
        if kind == 0x24:  # '$' bulk string
            return self._blob(position, line)
        if kind == 0x2A:  # '*' array
            count = self._count(line, "array")
            if count == -1:
                return None, position
            if count < 0:
                raise ProtocolError(f"bad array length {count}")
            items: list[object] = []
            for _ in range(count):
                item, position = self._value(position, depth + 1)
                items.append(item)
            return items, position
        if kind == 0x3A:  # ':' integer
            return self._integer(line), position
        if kind == 0x2B:  # '+' simple string
            return SimpleString(line.decode(errors="replace")), position
        if kind == 0x2D:  # '-' error
            return RespError(line.decode(errors="replace")), position
        if kind == 0x5F:  # '_' null
            return None, position
        if kind == 0x23:  # '#' boolean
            if line not in (b"t", b"f"):
                raise ProtocolError(f"bad boolean {line[:10]!r}")
            return line == b"t", position
        if kind == 0x2C:  # ',' double
            try:
                return float(line), position
            except ValueError:
                raise ProtocolError(f"bad double {line[:40]!r}") from None
        if kind == 0x28:  # '(' big number
            try:
                return int(line), position
            except ValueError:
                raise ProtocolError(f"bad big number {line[:40]!r}") from None
        if kind in (0x21, 0x3D):  # '!' bulk error, '=' verbatim string
            blob, position = self._blob(position, line)
            text = (blob or b"").decode(errors="replace")
            if kind == 0x21:
                return RespError(text), position
            return text[4:] if text[3:4] == ":" else text, position
        if kind in (0x25, 0x7C):  # '%' map, '|' attribute
            count = self._count(line, "map")
            if count < 0:
                raise ProtocolError(f"bad map length {count}")
            mapping: dict[object, object] = {}
            for _ in range(count):
                key, position = self._value(position, depth + 1)
                value, position = self._value(position, depth + 1)
                if isinstance(key, (list, dict)):
                    raise ProtocolError("a map key must be a plain value")
                mapping[key] = value
            if kind == 0x7C:  # attributes annotate the value that follows (one level deeper,
                # so a chain of attributes is bounded by max_depth like any nesting)
                return self._value(position, depth + 1)
            return mapping, position
        if kind in (0x7E, 0x3E):  # '~' set, '>' push
            count = self._count(line, "set")
            if count < 0:
                raise ProtocolError(f"bad length {count}")
            members: list[object] = []
            for _ in range(count):
                item, position = self._value(position, depth + 1)
                members.append(item)
            return (Push(members) if kind == 0x3E else members), position
        raise ProtocolError(f"unknown RESP type byte {bytes([kind])!r}")

    def _inline_command(self) -> list[bytes] | None:
        try:
            line, end = self._line(self._start)
        except _IncompleteError as incomplete:
            self._need = incomplete.need - self._start
            return None
        self._consume(end)
        try:
            words = shlex.split(line.decode(errors="replace"), posix=True)
        except ValueError as error:
            raise ProtocolError(f"bad inline command: {error}") from None
        return [word.encode() for word in words]
