"""Native commands given arguments no client should send: each answers with a
catalogue error (a LogqError), never another exception. These inputs came
out of `logq bench fuzz --target commands` and the Hypothesis tests in
tests/fuzz."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.delivery import HEADER_ATTEMPTS, HEADER_DEAD_AT, HEADER_GROUP, HEADER_ORIGIN_ID
from logq.broker.expiry import HEADER_EXPIRES_AT
from logq.broker.messages import MessageId
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError
from logq.log import encode_batch
from logq.server.commands import Session, dispatch
from logq.server.http_messages import dead_letter_json

pytestmark = pytest.mark.anyio

SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() says yes, int() says no
START_MS = 1_700_000_000_000  # FakeClock's start


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    opened = await Broker.open(BrokerConfig(), clock=FakeClock())
    await opened.create_topic("t", {"partitions": 2, "dlq": "t.dlq"})
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


def test_a_date_alone_is_its_midnight_utc_and_a_datetime_needs_its_zone() -> None:
    assert parse_time_ms("2025-01-01") == 1_735_689_600_000  # --from-snapshot 2025-01-01
    assert parse_time_ms("2025-01-01T00:00:00Z") == 1_735_689_600_000
    with pytest.raises(BadArgumentError, match="no time zone"):
        parse_time_ms("2025-01-01T00:00:00")
    with pytest.raises(BadArgumentError):
        parse_time_ms("2025-13-01")


async def test_a_logq_header_with_a_non_decimal_digit_does_not_poison_a_partition(
    broker: Broker,
) -> None:
    # A batch marked as expiring whose logq-expires-at header held "²" made
    # every RECV and FETCH of its partition (and TRACE of the message) fail
    # with ValueError: one published batch stopped the group's consumers.
    poison = encode_batch(
        [b"poison"],
        headers=[{HEADER_EXPIRES_AT: SUPERSCRIPT_TWO}],
        expiring=True,
        timestamp_ms=START_MS,
    )
    session = Session()
    # a client's is refused now (only digits are taken there) ...
    with pytest.raises(BadArgumentError, match="logq-expires-at"):
        await dispatch(broker, session, "PUBBATCH", [b"t", b"0", poison])
    # ... and one stored before that check still does not poison the partition
    stored = await broker.publish_batch("t", 0, poison, as_broker=True)
    partition, offset = stored.partition, stored.base_offset
    received = await dispatch(broker, session, "RECV", [b"t", b"g", b"c", b"COUNT", b"10"])
    assert {message["value"] for message in received} == {b"v", b"poison"}
    trace = await dispatch(broker, session, "TRACE", [f"t:{partition}:{offset}".encode()])
    assert trace["events"][0]["event"] == "PUBLISHED"


async def test_dead_letter_headers_with_a_non_decimal_digit_are_shown_not_raised(
    broker: Broker,
) -> None:
    # Dead-letter headers are read back as numbers by REDRIVE and by the REST
    # listing of the DLQ; "²" there raised ValueError (REST answered 500).
    headers = {
        HEADER_ORIGIN_ID: "t:0:0",
        HEADER_GROUP: "g",
        HEADER_ATTEMPTS: SUPERSCRIPT_TWO,
        HEADER_DEAD_AT: SUPERSCRIPT_TWO,
    }
    await broker.create_topic("t.dlq", {})
    await broker.publish("t.dlq", [OutgoingMessage(value=b"dead", headers=headers)], as_broker=True)
    (letter,) = await broker.dlq_messages("t", 10)
    shown = dead_letter_json(letter)
    assert shown["attempts"] is None
    assert shown["dead_lettered_at"] is None
    assert await broker.redrive("t", None) == 1
