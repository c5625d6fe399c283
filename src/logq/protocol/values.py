"""The RESP value types that plain Python types cannot tell apart.

A bulk string is `bytes`, an integer `int`, null `None`, an array `list`, a
map `dict`. These three mark the rest: a simple string (status line such as
OK), an error reply (stable code word first), and a push frame (RESP3 `>`).
"""

from __future__ import annotations


class SimpleString(str):
    """A RESP simple string (`+OK`): short status text, never binary."""

    __slots__ = ()


class Push(list[object]):
    """A RESP3 push frame: data the server sends without a request."""

    __slots__ = ()


class RespError(Exception):
    """An error reply. The first word of the text is the stable code."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @property
    def code(self) -> str:
        return self.text.split(" ", 1)[0]

    @property
    def message(self) -> str:
        parts = self.text.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RespError) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"RespError({self.text!r})"


class ProtocolError(Exception):
    """The bytes are not valid RESP, or break a limit: the connection must close."""

    code = "PROTO"
