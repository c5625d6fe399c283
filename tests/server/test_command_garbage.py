"""Native commands given arguments no client should send: each answers with a
catalogue error (a LogqError), never another exception. These inputs came
out of `logq bench fuzz --target commands` and the Hypothesis tests in
tests/fuzz."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.messages import MessageId
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError
from logq.server.commands import Session, dispatch

pytestmark = pytest.mark.anyio

SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() says yes, int() says no


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    opened = await Broker.open(BrokerConfig(), clock=FakeClock())
    await opened.create_topic("t", {"partitions": 2})
    await opened.put_group("t", "g", {"mode": "shared"})
    await dispatch(opened, Session(), "PUB", [b"t", b"v", b"PARTITION", b"0"])
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize(
    "command",
    [
        ["ACK", "t", "g", f"t:{SUPERSCRIPT_TWO}:0"],
        ["MSG", f"t:0:{SUPERSCRIPT_TWO}"],
        ["TRACE", f"t:{SUPERSCRIPT_TWO}:{SUPERSCRIPT_TWO}"],
        ["NACK", "t", "g", "DELAY", SUPERSCRIPT_TWO, "t:0:0"],
        ["RECV", "t", "g", "c", "WAIT", f" {SUPERSCRIPT_TWO} "],
        ["PEEK", "t", "FROM", SUPERSCRIPT_TWO],
        ["SEEK", "t", "g", "TIME", f"-{SUPERSCRIPT_TWO}"],
    ],
)
async def test_digits_that_are_not_decimal_are_a_bad_argument(
    broker: Broker, command: list[str]
) -> None:
    # "²" passed str.isdigit() in message ids, durations and times, and then
    # int() raised ValueError: the connection answered "ERR internal error".
    name, *args = command
    with pytest.raises(BadArgumentError):
        await dispatch(broker, Session(), name, [arg.encode() for arg in args])


def test_parsers_accept_decimal_digits_only() -> None:
    for parse in (parse_duration_ms, parse_time_ms):
        with pytest.raises(BadArgumentError):
            parse(SUPERSCRIPT_TWO)
    with pytest.raises(BadArgumentError):
        MessageId.parse(f"t:{SUPERSCRIPT_TWO}:0")
    assert parse_duration_ms(" 250 ") == 250
    assert parse_time_ms("-5") == -5
    assert MessageId.parse("t:2:45") == MessageId("t", 2, 45)
