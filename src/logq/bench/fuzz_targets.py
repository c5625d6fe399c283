"""Fuzz targets: bytes in, and either the documented error or a checked result.

Each target takes one input of arbitrary bytes and returns True when the code
under test refused it with its documented error (`ProtocolError` for the
RESP parser, a `LogError` for the batch codec, a `LogqError` for a command),
False when it accepted it. Any other exception is a bug: the target lets it
through, and so does a broken invariant (`InvariantError`), such as a parser
that buffers past its limits, a value that does not survive encoding, a
batch that validates but does not decode, a reply the server could not
encode, or a command that does not finish in time.

The targets need no fuzzer: `logq bench fuzz` drives them with atheris
(coverage-guided), the test suite with Hypothesis, and `--replay` runs one
saved input. Every input starts from scratch (a new parser, a new in-memory
broker), so a saved input reproduces on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import cast

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.errors import LogqError
from logq.log import LogError, compression
from logq.log.batch import (
    decode_batch,
    decode_headers,
    decode_timestamps,
    encode_batch,
    iter_headers,
    read_header,
    validate_batch,
)
from logq.protocol import NEED_MORE, Limits, Parser, ProtocolError, Push, encode
from logq.server.commands import HANDLERS, Session, dispatch


class InvariantError(AssertionError):
    """The code under test answered, but not as it promised."""


class _Reader:
    """Structured values out of fuzz bytes; zeros once the bytes run out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.position

    def byte(self) -> int:
        if self.position >= len(self.data):
            return 0
        value = self.data[self.position]
        self.position += 1
        return value

    def take(self, count: int) -> bytes:
        chunk = self.data[self.position : self.position + count]
        self.position += len(chunk)
        return chunk

    def integer(self, size: int, *, signed: bool = True) -> int:
        return int.from_bytes(self.take(size).ljust(size, b"\0"), "little", signed=signed)


# -- parser and encoder -------------------------------------------------------------

# Small limits, so garbage reaches every limit check within a few hundred bytes.
PARSER_LIMITS = Limits(
    max_bulk_bytes=256, max_elements=32, max_depth=8, max_line_bytes=256, max_buffer_bytes=2048
)
_ROUND_TRIP_LIMITS = Limits(max_line_bytes=1 << 20)
# The parser nests at most max_depth values, a few frames each, and the
# round-trip check encodes and parses them again: far fewer frames than this.
RECURSION_BUDGET = 150


def parser_input(data: bytes) -> bool:
    """First byte: bit 0 inline commands, bit 1 commands (else values), bits
    2-7 the size of each feed (0: all at once). The rest is fed to a parser
    with small limits; each value that comes out must survive encoding."""
    if not data:
        return False
    control, body = data[0], data[1:]
    inline, commands = bool(control & 1), bool(control & 2)
    chunk = (control >> 2) or max(len(body), 1)
    parser = Parser(PARSER_LIMITS, inline=inline)
    try:
        with _recursion_budget(RECURSION_BUDGET):
            for start in range(0, len(body), chunk):
                parser.feed(body[start : start + chunk])
                _check_buffered(parser)
                _drain(parser, commands=commands)
    except ProtocolError:
        return True
    return False


@contextlib.contextmanager
def _recursion_budget(frames: int) -> Iterator[None]:
    """Allow only `frames` more frames of recursion than the caller's depth:
    with a small budget, unbounded recursion shows in a few hundred bytes
    instead of the thousands Python's own limit needs."""
    depth, frame = 0, cast("FrameType | None", sys._getframe())
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _check_buffered(parser: Parser) -> None:
    if parser.buffered > PARSER_LIMITS.max_buffer_bytes:
        raise InvariantError(
            f"{parser.buffered} bytes buffered, the limit is {PARSER_LIMITS.max_buffer_bytes}"
        )


def _drain(parser: Parser, *, commands: bool) -> None:
    while True:
        before = parser.buffered
        if commands:
            command = parser.next_command()
            if command is None:
                return
            if not command or not all(type(arg) is bytes for arg in command):
                raise InvariantError(f"a command that is not a list of bytes: {command!r}")
        else:
            value = parser.next_value()
            if value is NEED_MORE:
                return
            check_round_trip(value)
        if parser.buffered >= before:
            raise InvariantError("a value came out of the parser without consuming bytes")
        _check_buffered(parser)


def check_round_trip(value: object) -> None:
    """Any value the parser produces encodes in both protocol versions, and
    its RESP3 frame parses back to a value that encodes to the same frame.

    Encoding normalizes once (attributes are dropped, CR and LF in simple
    strings become spaces, map keys that encode alike merge), so the frame
    compared is the second encoding."""
    encode(value, 2)
    first = encode(value, 3)
    second = encode(parse_one(first), 3)
    third = encode(parse_one(second), 3)
    if third != second:
        raise InvariantError(f"re-encoding changed the frame: {second[:200]!r} -> {third[:200]!r}")


def parse_one(frame: bytes) -> object:
    """The single value in `frame`; anything else breaks the invariant."""
    parser = Parser(_ROUND_TRIP_LIMITS)
    parser.feed(frame)
    try:
        value = parser.next_value()
    except ProtocolError as error:
        raise InvariantError(f"the parser refuses a frame the encoder wrote: {error}") from error
    if value is NEED_MORE or parser.buffered:
        raise InvariantError(f"the encoder wrote an incomplete or longer frame: {frame[:200]!r}")
    return value


# -- batch codec --------------------------------------------------------------------

BATCH_BYTES_MAX = 1 << 16
BATCH_RECORDS_MAX = 1000
_CODECS = (compression.NONE, compression.ZSTD, compression.LZ4)


def batch_input(data: bytes) -> bool:
    """First byte picks the check: validate (then decode) the rest as a batch,
    decode the rest as garbage, or build a batch from records read out of the
    rest and check it round-trips."""
    if not data:
        return False
    mode, body = data[0] % 3, data[1:]
    try:
        if mode == 0:
            _validate_then_decode(body)
        elif mode == 1:
            _decode_garbage(body)
        else:
            _encode_round_trip(_Reader(body))
    except LogError:
        return True
    return False


def _validate_then_decode(batch: bytes) -> None:
    header = validate_batch(batch, size_bytes_max=BATCH_BYTES_MAX, records_max=BATCH_RECORDS_MAX)
    try:
        decoded = decode_batch(batch)
        timestamps = decode_timestamps(batch)
    except LogError as error:
        raise InvariantError(f"a batch that validates does not decode: {error}") from error
    count = header.record_count
    columns = (decoded.timestamps, decoded.keys, decoded.values, decoded.header_blocks)
    if any(len(column) != count for column in columns) or timestamps != decoded.timestamps:
        raise InvariantError(f"a valid batch of {count} records decodes to other counts")
    if [position for position, _ in iter_headers(batch)] != [0]:
        raise InvariantError("iter_headers does not find the one valid batch")
    decoded.records()  # header blocks are not validated: InvalidBatchError is allowed


def _decode_garbage(data: bytes) -> None:
    """Every decoder on garbage: a LogError or a result, nothing else."""
    rejected: LogError | None = None
    for decoder in (read_header, decode_batch, decode_timestamps):
        try:
            decoder(data)
        except LogError as error:
            rejected = error
    for block in (data, data[1:]):
        try:
            decode_headers(block)
        except LogError as error:
            rejected = error
    iter_headers(data)  # stops at the first batch that does not fit: never raises
    if rejected is not None:
        raise rejected


def _text(reader: _Reader) -> str:
    size = reader.byte() % 12
    raw = reader.take(size)
    if reader.byte() % 16 == 0:  # now and then text that is not valid Unicode
        return raw.decode("utf-16-le", errors="surrogatepass") if len(raw) % 2 == 0 else "\udcff"
    return raw.decode(errors="replace")


def _blob(reader: _Reader) -> bytes | None:
    size = reader.byte()
    return None if size == 255 else reader.take(size % 48)


def _timestamp(reader: _Reader) -> int:
    kind = reader.byte() % 8
    if kind == 0:
        return reader.integer(9)  # past 64 bits now and then
    if kind == 1:
        return -reader.integer(4, signed=False)
    return 1_700_000_000_000 + reader.integer(4)


def _encode_round_trip(reader: _Reader) -> None:
    count = reader.byte() % 12  # zero records is refused with InvalidBatchError
    values = [_blob(reader) for _ in range(count)]
    keys = [_blob(reader) for _ in range(count)] if reader.byte() & 1 else None
    headers: list[dict[str, str] | None] | None = None
    if reader.byte() & 1:
        headers = [
            {_text(reader): _text(reader) for _ in range(reader.byte() % 3)}
            if reader.byte() & 1
            else None
            for _ in range(count)
        ]
    flags = reader.byte()
    timestamps = [_timestamp(reader) for _ in range(count)] if flags & 1 else None
    codec_byte = reader.byte()
    codec = _CODECS[codec_byte % 3] if codec_byte < 250 else codec_byte  # unknown codecs too
    lane = reader.byte() % 10 - 1  # -1..8: the ends are out of range
    timestamp_ms = _timestamp(reader)
    batch = encode_batch(
        values,
        keys=keys,
        headers=headers,
        timestamps=timestamps,
        timestamp_ms=timestamp_ms,
        codec=codec,
        lane=lane,
        producer_id=reader.integer(8),
        producer_epoch=reader.integer(2),
        base_sequence=reader.integer(4),
        expiring=bool(flags & 2),
        delayed=bool(flags & 4),
        dedup=bool(flags & 8),
    )
    try:
        header = validate_batch(batch, size_bytes_max=1 << 24, records_max=BATCH_RECORDS_MAX)
        decoded = decode_batch(batch)
    except LogError as error:
        raise InvariantError(f"encode_batch built a batch that does not decode: {error}") from error
    expected_times = timestamps if timestamps is not None else [timestamp_ms] * count
    checks = {
        "record count": header.record_count == count,
        "lane": header.lane == lane,
        "codec": header.codec == codec,
        "values": decoded.values == values,
        "keys": decoded.keys == (keys if keys is not None else [None] * count),
        "timestamps": decoded.timestamps == expected_times,
        "headers": [decode_headers(block) for block in decoded.header_blocks]
        == [dict(h or {}) for h in (headers or [None] * count)],
    }
    wrong = [name for name, ok in checks.items() if not ok]
    if wrong:
        raise InvariantError(f"a batch does not decode to what was encoded: {', '.join(wrong)}")


# -- commands -----------------------------------------------------------------------

COMMAND_NAMES: tuple[str, ...] = tuple(sorted(HANDLERS))
COMMAND_SECONDS_MAX = 5.0  # a command that runs longer than this is a hang
_SEED_BATCH = encode_batch([b"one", None], keys=[b"k", None], timestamp_ms=1_700_000_000_000)
_SEED_ZSTD_BATCH = encode_batch(
    [b"x" * 100], headers=[{"h": "v"}], codec=compression.ZSTD, timestamp_ms=1_700_000_000_000
)
_SEED_EXPIRING_BATCH = encode_batch(
    [b"soon", b"later"],
    headers=[{"logq-expires-at": "1700000000001"}, {"logq-dedup-id": "d"}],
    expiring=True,
    delayed=True,
    timestamps=[1_700_000_000_000, 1_700_000_060_000],
)
_WORD_GROUPS = (
    # names the seeded broker knows, and message ids in it
    "t t.dlq g c x y t:0:0 t:1:0 t:0:1 t:0:99 x:0:0 ::",
    # numbers and flags
    "0 1 2 -1 3 8 100 1000 1024 1048576 99999999999999999999 1.5 nan inf -inf 1e308 true false",
    # durations and times
    "1ms 10ms 1s 30s 5m 2h 7d 0s -1s 2024-01-01T00:00:00Z 2024-01-01 1700000000000",
    # options and their words
    "PARTITIONS RETENTION RETENTION_BYTES MAX_DELIVERIES VISIBILITY_TIMEOUT DLQ TTL",
    "TTL_DEAD_LETTER MAX_DELAY DEDUP_WINDOW TRACE BACKOFF_INITIAL BACKOFF_MULTIPLIER",
    "BACKOFF_MAX BACKOFF_JITTER KEY PARTITION PRIORITY DELAY AT DEDUP HEADER MODE COUNT",
    "WAIT AUTO_ACK MAX_IN_FLIGHT STARVATION_SHARE STARVATION_TIMEOUT ASSIGNOR",
    "REVOKE_TIMEOUT SESSION_TIMEOUT",
    "FROM TO LIMIT OFFSET MAXBYTES CREDIT REASON EARLIEST LATEST TIME SETNAME",
    "ordered shared sticky range high normal low content-type logq-dedup-id logq-expires-at",
    # digits that str.isdigit accepts and int() does not, and ones int() takes
    "\u00b2 \u0663 \uff11 1_0 0x10",
)
VOCABULARY: tuple[bytes, ...] = (
    *(word.encode() for group in _WORD_GROUPS for word in group.split()),
    b"",
    _SEED_BATCH,
    _SEED_ZSTD_BATCH,
    _SEED_EXPIRING_BATCH,
    _SEED_BATCH[:-1] + bytes([_SEED_BATCH[-1] ^ 1]),  # a CRC that does not match
)
assert len(VOCABULARY) <= 0x80
_RAW = 0x80  # an argument tag at or above this: raw bytes follow


def commands_input(data: bytes) -> bool:
    """Up to four commands against a fresh in-memory broker with a topic `t`
    (2 partitions, DLQ `t.dlq`), a group `g` and a few messages."""
    return _commands_target()(data)


def decode_commands(data: bytes) -> list[tuple[str, list[bytes]]]:
    """The command sequence in fuzz bytes.

    First byte: the number of commands (1-4). Each command: a name byte (an
    index into the command table, or from 0xF0 up a name of raw bytes), an
    argument count byte (0-9), then per argument a tag byte: below 0x80 a
    word of `VOCABULARY`, else raw bytes of length tag & 0x7F."""
    reader = _Reader(data)
    commands: list[tuple[str, list[bytes]]] = []
    for _ in range(1 + reader.byte() % 4):
        name_byte = reader.byte()
        if name_byte >= 0xF0:
            name = reader.take(name_byte & 0x0F).decode(errors="replace")
        else:
            name = COMMAND_NAMES[name_byte % len(COMMAND_NAMES)]
        args: list[bytes] = []
        for _ in range(reader.byte() % 10):
            tag = reader.byte()
            args.append(
                VOCABULARY[tag % len(VOCABULARY)] if tag < _RAW else reader.take(tag & 0x7F)
            )
        commands.append((name, args))
        if reader.left == 0:
            break
    return commands


def encode_commands(commands: Sequence[Sequence[str | bytes]]) -> bytes:
    """The fuzz bytes of a command sequence (for seeds): the inverse of
    `decode_commands` for names in the table and short arguments."""
    out = bytearray([len(commands) - 1])
    for name, *args in commands:
        out.append(COMMAND_NAMES.index(str(name)))
        out.append(len(args))
        for arg in args:
            raw = arg.encode() if isinstance(arg, str) else arg
            if raw in VOCABULARY:
                out.append(VOCABULARY.index(raw))
            else:
                out.append(_RAW | len(raw[:0x7F]))
                out += raw[:0x7F]
    return bytes(out)


@dataclass
class _CommandsTarget:
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def __call__(self, data: bytes) -> bool:
        return self.loop.run_until_complete(self._run(decode_commands(data)))

    async def _run(self, commands: list[tuple[str, list[bytes]]]) -> bool:
        broker = await _seeded_broker()
        pushes: list[Push] = []
        session = Session(protocol=2, push=lambda frame: _keep(pushes, frame))
        rejected = False
        try:
            for name, args in commands:
                async with asyncio.timeout(COMMAND_SECONDS_MAX) as deadline:
                    try:
                        reply = await dispatch(broker, session, name, args)
                    except LogqError:
                        rejected = True
                        continue
                    finally:
                        if deadline.expired():
                            raise InvariantError(f"{name} did not finish within 5 s: {args!r}")
                encode(reply, session.protocol)  # the connection writes every reply
                await asyncio.sleep(0)  # a subscription takes its first turn
            for frame in pushes:
                encode(frame, 3)
        finally:
            if session.subscription is not None:
                await session.subscription.stop()
            await broker.close()
        return rejected


def _keep(pushes: list[Push], frame: Push) -> None:
    if len(pushes) < 100:
        pushes.append(frame)


async def _seeded_broker() -> Broker:
    broker = await Broker.open(BrokerConfig(receive_wait_ms_max=20), clock=FakeClock())
    await broker.create_topic("t", {"partitions": 2, "dlq": "t.dlq"})
    await broker.put_group("t", "g", {"mode": "shared"})
    await broker.publish(
        "t",
        [
            OutgoingMessage(value=b"v0", key=b"k", partition=0),
            OutgoingMessage(value=b"v1", partition=1, headers={"h": "1"}),
            OutgoingMessage(value=None, partition=0),
        ],
    )
    return broker


_commands: list[_CommandsTarget] = []


def _commands_target() -> _CommandsTarget:
    if not _commands:
        _commands.append(_CommandsTarget())
    return _commands[0]


# -- the table ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    run: Callable[[bytes], bool]
    expected: str  # the documented error, as reports name it
    seeds: Callable[[], list[bytes]]
    dictionary: tuple[bytes, ...] = ()
    max_len: int = 4096


def _parser_seeds() -> list[bytes]:
    frames = [
        b"*3\r\n$3\r\nPUB\r\n$1\r\nt\r\n$5\r\nhello\r\n",
        b"*2\r\n$4\r\nPING\r\n$-1\r\n*-1\r\n*0\r\n",
        b"PUB t 'hello world' KEY k\r\n",
        b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n#t\r\n>2\r\n,1.5\r\n(123\r\n",
        b"~2\r\n_\r\n-ERR x\r\n|1\r\n+k\r\n+v\r\n=7\r\ntxt:abc\r\n!3\r\nERR\r\n",
        b"*1\r\n|1\r\n+a\r\n:1\r\n:2\r\n",
        b"$1000000\r\n",
    ]
    return [bytes([control]) + frame for frame in frames for control in (0, 2, 3, 4, 7)]


def _batch_seeds() -> list[bytes]:
    batches = [
        encode_batch([b"a"]),
        encode_batch(
            [b"one", None, b""],
            keys=[b"k", None, b"k2"],
            headers=[{"a": "b"}, None, {"c": ""}],
            timestamps=[5, 3, 9],
            lane=2,
            expiring=True,
        ),
        encode_batch([b"z" * 200, b"y"], codec=compression.ZSTD),
        encode_batch([b"z" * 200, b"y"], codec=compression.LZ4, delayed=True),
    ]
    built = bytes([2, 3, 1, 2, 3, 255, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 2])
    return [bytes([mode]) + batch for batch in batches for mode in (0, 1)] + [built]


def _commands_seeds() -> list[bytes]:
    sequences: list[list[list[str | bytes]]] = [
        [["PING"]],
        [["HELLO", "3"], ["STATS"]],
        [["PUB", "t", "v", "KEY", "k", "PRIORITY", "high", "HEADER", "h", "1"]],
        [["PUBBATCH", "t", "0", _SEED_BATCH, "1", _SEED_ZSTD_BATCH]],
        [["RECV", "t", "g", "c", "COUNT", "2"], ["ACK", "t", "g", "t:0:0"]],
        [["FETCH", "t", "g", "c"], ["ACKR", "t", "g", "0", "0", "1"]],
        [["RECV", "t", "g", "c"], ["NACK", "t", "g", "DELAY", "1s", "t:0:0"]],
        [["RECV", "t", "g", "c"], ["REJECT", "t", "g", "t:0:0"], ["DLQ", "t"], ["REDRIVE", "t"]],
        [["CREATE", "x", "PARTITIONS", "3", "TTL", "5m"], ["ALTER", "x", "PARTITIONS", "8"]],
        [["GROUP", "t", "y", "MODE", "ordered"], ["JOIN", "t", "y", "c"], ["GROUPINFO", "t", "y"]],
        [["SEEK", "t", "g", "OFFSET", "1", "PARTITION", "0"], ["PEEK", "t", "LIMIT", "2"]],
        [["READ", "t", "0", "0", "MAXBYTES", "1000"], ["MSG", "t:0:0"], ["TRACE", "t:0:0"]],
        [["REPLAY", "t", "y", "FROM", "1700000000000"], ["DROP", "t"]],
        [["HELLO", "3"], ["CONSUME", "t", "g", "c", "CREDIT", "2"], ["STOP"]],
    ]
    return [encode_commands(sequence) for sequence in sequences]


_RESP_TOKENS = (
    b"\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"|0\r\n",
    b"%1\r\n",
    b"*1\r\n",
    b"~1\r\n",
    b">1\r\n",
    b"$0\r\n\r\n",
    b"(12345678901234567890\r\n",
    b",nan\r\n",
    b"=4\r\ntxt:\r\n",
)

TABLE: dict[str, Target] = {
    "parser": Target(
        "parser", parser_input, "ProtocolError", _parser_seeds, _RESP_TOKENS, max_len=8192
    ),
    "batch": Target("batch", batch_input, "LogError", _batch_seeds),
    "commands": Target("commands", commands_input, "LogqError", _commands_seeds, max_len=1024),
}


def run_one(target: str, data: bytes) -> bool:
    """Run `data` through `target`: True when refused with the documented error."""
    return TABLE[target].run(data)
