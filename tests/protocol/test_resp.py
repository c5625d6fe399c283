"""The RESP codec on its own: round trips, any chunking, limits, bad bytes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logq.protocol import (
    NEED_MORE,
    Limits,
    Parser,
    ProtocolError,
    Push,
    RespError,
    SimpleString,
    encode,
    encode_command,
)

scalars = st.one_of(
    st.binary(max_size=64),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"),
        max_size=20,
    ).map(SimpleString),
    st.text(alphabet="ABCDEFGHIJ abc", min_size=1, max_size=20).map(RespError),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.binary(max_size=8), children, max_size=4),
        st.lists(children, max_size=4).map(Push),
    ),
    max_leaves=20,
)


def parse_all(data: bytes, chunk: int = 0, parser: Parser | None = None) -> list[object]:
    parser = parser or Parser()
    found: list[object] = []
    pieces = [data] if chunk <= 0 else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        parser.feed(piece)
        while (value := parser.next_value()) is not NEED_MORE:
            found.append(value)
    assert parser.buffered == 0
    return found


@given(st.lists(values, max_size=5), st.integers(min_value=0, max_value=7))
def test_resp3_values_round_trip_under_any_chunking(items: list[object], chunk: int) -> None:
    data = b"".join(encode(item, 3) for item in items)
    assert parse_all(data, chunk) == items


@given(
    st.lists(st.binary(max_size=100), min_size=1, max_size=10),
    st.integers(min_value=1, max_value=9),
)
def test_commands_round_trip(args: list[bytes], chunk: int) -> None:
    parser = Parser()
    data = encode_command(args) * 3
    commands = []
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
        while (command := parser.next_command()) is not None:
            commands.append(command)
    assert commands == [args] * 3


def test_resp2_maps_are_flat_arrays_and_null_is_a_null_bulk() -> None:
    assert encode({"a": 1}, 2) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert encode(None, 2) == b"$-1\r\n"
    assert encode(True, 2) == b":1\r\n"
    assert encode(Push([b"x"]), 2) == b"*1\r\n$1\r\nx\r\n"
    assert encode({"a": 1}, 3) == b"%1\r\n$1\r\na\r\n:1\r\n"


def test_integers_past_64_bits_are_big_numbers() -> None:
    # A big number read from a peer ('(' + 41 digits) used to be written back
    # as a RESP integer, which no parser (ours included) accepts past 64 bits.
    big = 10**40
    assert encode(big, 3) == b"(%d\r\n" % big
    assert encode(-big, 2) == b"$42\r\n-%d\r\n" % big
    assert encode(2**63 - 1) == b":9223372036854775807\r\n"
    assert encode(-(2**63)) == b":-9223372036854775808\r\n"
    assert encode(2**63) == b"(9223372036854775808\r\n"
    (value,) = parse_all(encode([big, -big], 3))
    assert value == [big, -big]


def test_memoryviews_are_sent_without_copies_into_the_frame() -> None:
    data = memoryview(b"hello world")[6:]
    assert encode(data) == b"$5\r\nworld\r\n"


def test_error_replies_keep_their_code() -> None:
    (error,) = parse_all(encode(RespError("NOTOPIC no topic named 'x'")))
    assert isinstance(error, RespError)
    assert error.code == "NOTOPIC"
    assert error.message == "no topic named 'x'"


def test_inline_commands_split_like_redis() -> None:
    parser = Parser(inline=True)
    parser.feed(b'PUB orders "hello world" KEY k1\r\nPING\r\n\r\nPI')
    assert parser.next_command() == [b"PUB", b"orders", b"hello world", b"KEY", b"k1"]
    assert parser.next_command() == [b"PING"]
    assert parser.next_command() is None
    parser.feed(b"NG\n\r\n")  # lone LF stays inside the line
    assert parser.next_command() == [b"PING"]


def test_inline_commands_are_refused_when_not_enabled() -> None:
    parser = Parser()
    parser.feed(b"PING\r\n")
    with pytest.raises(ProtocolError):
        parser.next_command()


@pytest.mark.parametrize(
    "data",
    [
        b"$5\r\nhelloXX",  # no CRLF after the bulk
        b"*1\r\n:1\r\n",  # a command that is not bulk strings
        b":12a\r\n",
        b"$-2\r\n",
        b"?\r\n",
        b"#x\r\n",
        b"%1\r\n*0\r\n:1\r\n",  # a list as a map key
    ],
)
def test_bad_frames_are_protocol_errors(data: bytes) -> None:
    parser = Parser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        parser.next_command() if data.startswith(b"*1") else parser.next_value()


def test_limits_are_checked_before_buffering() -> None:
    parser = Parser(Limits(max_bulk_bytes=10, max_elements=3, max_depth=2, max_line_bytes=16))
    for data in (b"$11\r\n", b"*4\r\n", b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", b"+" + b"x" * 20):
        parser = Parser(Limits(max_bulk_bytes=10, max_elements=3, max_depth=2, max_line_bytes=16))
        parser.feed(data)
        with pytest.raises(ProtocolError):
            parser.next_value()
    small = Parser(Limits(max_buffer_bytes=8))
    with pytest.raises(ProtocolError):
        small.feed(b"$100\r\n" + b"x" * 10)


def test_a_large_bulk_arrives_in_many_chunks() -> None:
    parser = Parser()
    payload = bytes(range(256)) * 4000
    frame = encode_command([b"PUBBATCH", b"t", b"0", payload])
    for i in range(0, len(frame) - 1, 4096):
        parser.feed(frame[i : min(i + 4096, len(frame) - 1)])
        assert parser.next_command() is None
    parser.feed(frame[-1:])
    assert parser.next_command() == [b"PUBBATCH", b"t", b"0", payload]
    assert parser.buffered == 0


def test_resp3_types_from_other_servers_decode() -> None:
    data = b",3.5\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n~2\r\n:1\r\n:2\r\n|1\r\n+a\r\n+b\r\n:5\r\n!5\r\nERR x\r\n"
    assert parse_all(data) == [3.5, 12345678901234567890, "abc", [1, 2], 5, RespError("ERR x")]


def test_a_chain_of_attributes_is_bounded_by_the_depth_limit() -> None:
    # Each attribute used to read the value it annotates at its own depth, so
    # "|0\r\n" repeated a thousand times (4 KB) recursed past Python's limit
    # and raised RecursionError instead of ProtocolError.
    for frame in (b"|0\r\n" * 2000 + b":1\r\n", b"*1\r\n" + b"|0\r\n" * 2000 + b"$1\r\nx\r\n"):
        parser = Parser()
        parser.feed(frame)
        with pytest.raises(ProtocolError, match="nested deeper"):
            parser.next_command() if frame.startswith(b"*") else parser.next_value()
    assert parse_all(b"|0\r\n" * 8 + b":1\r\n") == [1]


@given(st.binary(max_size=300), st.booleans())
def test_garbage_only_ever_raises_the_protocol_error(data: bytes, inline: bool) -> None:
    parser = Parser(
        Limits(max_bulk_bytes=64, max_elements=16, max_line_bytes=128, max_buffer_bytes=1024),
        inline=inline,
    )
    try:
        for index in range(len(data)):
            parser.feed(data[index : index + 1])  # a byte at a time
            while parser.next_command() is not None:
                pass
    except ProtocolError:
        pass


@given(st.lists(values, max_size=4))
def test_values_fed_a_byte_at_a_time(items: list[object]) -> None:
    data = b"".join(encode(item, 3) for item in items)
    assert parse_all(data, chunk=1) == items


class LineSearches(bytearray):
    """A parser's buffer that counts the searches for a line's end: one per
    value parsed (its type and length line), so the parser's work."""

    made = 0

    def find(self, *args: Any) -> int:
        self.made += 1
        return super().find(*args)


def test_a_command_arriving_in_many_pieces_is_parsed_once() -> None:
    """Each item of a command array is parsed once however many pieces the
    array comes in (re-parsing it from its start on every piece would cost
    the square of its length: a slow sender could burn the server's CPU)."""
    args = [b"x" * 5] * 20_000
    frame = encode_command(["PUBBATCH", *args])
    parser = Parser()
    parser._buffer = searches = LineSearches()
    commands = []
    for at in range(0, len(frame), 100):
        parser.feed(frame[at : at + 100])
        while (command := parser.next_command()) is not None:
            commands.append(command)
    assert commands == [[b"PUBBATCH", *args]]
    pieces = len(frame) // 100 + 1
    assert searches.made <= len(args) + 2 + 2 * pieces  # each item once, a retry or two a piece


def test_a_reply_arriving_in_many_pieces_is_parsed_once() -> None:
    """A large nested reply (a PEEK of thousands of messages, each a map) is
    parsed once however many reads it arrives in: re-parsing it from its
    start on every read cost the square of its size (10,000 messages took
    the client seconds, the broker's work a tenth of that)."""
    message = {b"id": b"orders:0:7", b"offset": 7, b"headers": {b"k": b"v"}, b"value": b"x" * 90}
    reply = [{**message, b"offset": n} for n in range(2_000)]
    data = encode(reply, 3) + encode(SimpleString("OK"), 3)
    values_in_reply = 1 + len(reply) * (1 + 2 * len(message) + 2)
    parser = Parser()
    parser._buffer = searches = LineSearches()
    pieces = [data[at : at + 4096] for at in range(0, len(data), 4096)]
    assert parse_all(data, 4096, parser) == [reply, "OK"]
    assert searches.made <= values_in_reply + 1 + 2 * len(pieces)  # once, a retry or two a piece
