"""Incremental RESP2/RESP3 parser: bytes in, whole values out, no I/O.

Feed it what the socket gave; take complete values out. Every length is
checked against `Limits` before anything is buffered for it, so a peer can
make the parser hold at most one frame of `max_bulk_bytes` plus small change.
A value that is not complete yet costs nothing to retry: the parser
remembers how many bytes it needs before trying again, and keeps the
containers (arrays, maps...) it has opened with the items parsed so far, so
each byte is parsed once however many reads a large reply or command takes
(re-parsing from the start on every read costs the square of its size).

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
_OPENED: Final = object()  # _item's answer when it opened a container
_ANNOTATES: Final = object()  # a closed attribute: it annotates the value that follows
# the kinds of container
_ARRAY, _MAP, _PUSH, _ATTRIBUTE, _ANNOTATED = range(5)


class _Open:
    """A container whose items are still arriving."""

    __slots__ = ("items", "kind", "wanted")

    def __init__(self, kind: int, wanted: int) -> None:
        self.kind = kind
        self.wanted = wanted  # items still to come (a map's keys and values both count)
        self.items: list[object] = []


class Parser:
    """Parse RESP frames out of a byte stream."""

    def __init__(self, limits: Limits | None = None, *, inline: bool = False) -> None:
        self.limits = limits or Limits()
        self._inline = inline
        self._buffer = bytearray()
        self._start = 0
        self._need = 0  # buffer length (from _start) below which parsing cannot succeed
        # a value that is still arriving: its containers still open, outermost
        # first, with the items they have so far, and where the next item
        # starts; so each byte is parsed once, however many pieces a large
        # reply or command comes in
        self._open: list[_Open] = []
        self._resume = 0

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
            value, end = self._parse()
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
                value = self.next_value()
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

    def _parse(self) -> tuple[object, int]:
        """The value at `_start` and where it ends, taken up where the last
        try stopped (the containers still open are on `_open`, the next item
        starts at `_resume`); raises _IncompleteError for more bytes."""
        open_ = self._open
        buffer = self._buffer
        position = self._resume if open_ else self._start
        max_depth = self.limits.max_depth
        max_bulk = self.limits.max_bulk_bytes
        while True:
            if len(open_) > max_depth:
                raise ProtocolError(f"values nested deeper than {max_depth}")
            # bulk strings and integers, nearly all of a reply, are read here
            # when whole and well formed; everything else by _item
            value: object = _OPENED
            kind = buffer[position] if position < len(buffer) else 0
            if kind in (0x24, 0x3A):  # '$' bulk string, ':' integer
                end = buffer.find(_CRLF, position + 1)
                if 1 < end - position <= 41:  # a line of 1..40 bytes
                    try:
                        number = int(buffer[position + 1 : end])
                    except ValueError:
                        pass  # not a number: _item says so
                    else:
                        if kind == 0x3A:
                            value, position = number, end + 2
                        elif 0 <= number <= max_bulk:
                            stop = end + 2 + number
                            if buffer[stop : stop + 2] == _CRLF:
                                value, position = bytes(buffer[end + 2 : stop]), stop + 2
            if value is _OPENED:
                try:
                    value, position = self._item(position)
                except _IncompleteError:
                    self._resume = position
                    raise
                if value is _OPENED:
                    if open_[-1].wanted:
                        continue
                    value = self._close(open_.pop())
            # hand the value to the containers it completes, innermost first
            while open_:
                if value is _ANNOTATES:  # an attribute: the value it annotates is next,
                    open_.append(_Open(_ANNOTATED, 1))  # one level deeper (bounded by max_depth)
                    break
                container = open_[-1]
                container.items.append(value)
                container.wanted -= 1
                if (
                    isinstance(value, (list, dict))
                    and container.kind in (_MAP, _ATTRIBUTE)
                    and container.wanted % 2
                ):
                    raise ProtocolError("a map key must be a plain value")
                if container.wanted:
                    break
                value = self._close(open_.pop())
            else:
                if value is _ANNOTATES:
                    open_.append(_Open(_ANNOTATED, 1))
                    continue
                return value, position

    def _close(self, container: _Open) -> object:
        """The value of a container whose items have all arrived."""
        kind, items = container.kind, container.items
        if kind == _ARRAY:
            return items
        if kind == _MAP:
            return dict(zip(items[::2], items[1::2], strict=True))
        if kind == _PUSH:
            return Push(items)
        if kind == _ATTRIBUTE:
            return _ANNOTATES
        return items[0]  # _ANNOTATED: the value an attribute annotated

    def _item(self, position: int) -> tuple[object, int]:
        """One value at `position`: a scalar and where it ends, or _OPENED
        with a container pushed on `_open` (its items come next)."""
        if position >= len(self._buffer):
            raise _IncompleteError(position + 1)
        kind = self._buffer[position]
        line, position = self._line(position + 1)
        if kind == 0x24:  # '$' bulk string
            return self._blob(position, line)
        if kind == 0x3A:  # ':' integer
            return self._integer(line), position
        if kind == 0x2A:  # '*' array
            count = self._count(line, "array")
            if count == -1:
                return None, position
            if count < 0:
                raise ProtocolError(f"bad array length {count}")
            self._open.append(_Open(_ARRAY, count))
            return _OPENED, position
        if kind in (0x25, 0x7C):  # '%' map, '|' attribute
            count = self._count(line, "map")
            if count < 0:
                raise ProtocolError(f"bad map length {count}")
            self._open.append(_Open(_MAP if kind == 0x25 else _ATTRIBUTE, 2 * count))
            return _OPENED, position
        if kind in (0x7E, 0x3E):  # '~' set, '>' push
            count = self._count(line, "set")
            if count < 0:
                raise ProtocolError(f"bad length {count}")
            self._open.append(_Open(_ARRAY if kind == 0x7E else _PUSH, count))
            return _OPENED, position
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
        raise ProtocolError(f"unknown RESP type byte {bytes([kind])!r}")

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
