"""The client's check of a message against the broker's limits agrees with
the bytes the batch encoder writes and the broker checks, so a message the
client lets through is not refused for its size, and one it refuses would be."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logq.client.limits import MessageLimits
from logq.errors import BadArgumentError, TooBigError
from logq.log.batch import check_record_sizes, encode_batch, encode_headers
from logq.log.errors import BatchTooLargeError

TEXT = st.text(max_size=40)
HEADERS = st.none() | st.dictionaries(TEXT, TEXT, max_size=8)
BYTES = st.none() | st.binary(max_size=200)


@given(key=BYTES, value=BYTES, headers=HEADERS)
def test_the_size_the_client_counts_is_what_the_batch_holds(
    key: bytes | None, value: bytes | None, headers: dict[str, str] | None
) -> None:
    size = MessageLimits().check(key, value, headers)
    assert size == len(key or b"") + len(value or b"") + len(encode_headers(headers))


@given(key=BYTES, value=BYTES, headers=HEADERS, limit=st.integers(1, 300))
def test_the_client_refuses_exactly_what_the_broker_refuses(
    key: bytes | None, value: bytes | None, headers: dict[str, str] | None, limit: int
) -> None:
    limits = MessageLimits(
        message_bytes_max=limit,
        key_bytes_max=limit // 2,
        header_count_max=3,
        header_bytes_max=limit,
    )
    try:
        limits.check(key, value, headers)
        client_refused = False
    except TooBigError:
        client_refused = True
    batch = encode_batch([value], keys=[key], headers=[headers])
    try:
        check_record_sizes(
            batch,
            message_bytes_max=limits.message_bytes_max,
            key_bytes_max=limits.key_bytes_max,
            header_bytes_max=limits.header_bytes_max,
            header_count_max=limits.header_count_max,
        )
        broker_refused = False
    except BatchTooLargeError:
        broker_refused = True
    assert client_refused == broker_refused


def test_headers_over_the_count_are_refused_however_short() -> None:
    # one empty name and one-byte names: the smallest block that holds four headers
    headers = {"": "", "a": "", "b": "", "c": ""}
    batch = encode_batch([b"v"], headers=[headers])
    with pytest.raises(BatchTooLargeError, match="4 headers, the limit header_count_max is 3"):
        check_record_sizes(
            batch,
            message_bytes_max=100,
            key_bytes_max=100,
            header_bytes_max=100,
            header_count_max=3,
        )
    with pytest.raises(TooBigError, match="4 headers, the limit header_count_max is 3"):
        MessageLimits(header_count_max=3).check(None, b"v", headers)


def test_limits_come_from_the_hello_reply_and_bad_values_are_ignored() -> None:
    limits = MessageLimits.from_server(
        {"message_bytes_max": 1000, "key_bytes_max": -1, "unknown": 5, "header_count_max": "x"}
    )
    assert limits.message_bytes_max == 1000
    assert limits.key_bytes_max == MessageLimits().key_bytes_max
    assert limits.header_count_max == MessageLimits().header_count_max
    assert MessageLimits.from_server(None) == MessageLimits()


def test_a_header_that_is_not_text_is_refused() -> None:
    with pytest.raises(BadArgumentError, match="must be str"):
        MessageLimits().check(None, b"v", {"n": 1})  # type: ignore[dict-item]


@given(
    pairs=st.lists(st.tuples(BYTES, BYTES), min_size=1, max_size=20),
    keyless=st.booleans(),
    limit=st.integers(1, 300),
)
def test_a_ready_made_batch_is_checked_as_each_of_its_messages(
    pairs: list[tuple[bytes | None, bytes | None]], keyless: bool, limit: int
) -> None:
    """The bulk check (C-level passes) refuses and counts as `check` on each does."""
    keys = None if keyless else [key for key, _ in pairs]
    values = [value for _, value in pairs]
    limits = MessageLimits(message_bytes_max=limit, key_bytes_max=limit // 2 + 1)
    one_by_one: int | str = 0
    for index, (key, value) in enumerate(zip(keys or [None] * len(values), values, strict=True)):
        try:
            assert isinstance(one_by_one, int)
            one_by_one += limits.check(key, value, None)
        except TooBigError:
            one_by_one = f"message {index}"
            break
    try:
        together: int | str = limits.check_batch(keys, values)
    except TooBigError as error:
        together = error.message
    if isinstance(one_by_one, int):
        assert together == one_by_one
    else:
        assert isinstance(together, str)
