"""BatchColumns, the lazy read of a batch: every field of every record equals
what the eager `decode_batch` gives, whatever the records, codec and lane."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logq.log import compression, decode_batch, encode_batch
from logq.log.batch import BatchColumns, decode_headers

_fields = st.one_of(st.none(), st.binary(max_size=40))
_headers = st.one_of(
    st.none(),
    st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=3),
)


@st.composite
def _batches(draw: st.DrawFn) -> tuple[bytes, int]:
    count = draw(st.integers(min_value=1, max_value=40))
    values = draw(st.lists(_fields, min_size=count, max_size=count))
    keys = draw(st.one_of(st.none(), st.lists(_fields, min_size=count, max_size=count)))
    headers = draw(st.one_of(st.none(), st.lists(_headers, min_size=count, max_size=count)))
    first = draw(st.integers(min_value=0, max_value=2**40))
    timestamps = draw(
        st.one_of(
            st.none(),
            st.lists(
                st.integers(min_value=first, max_value=first + 2**31),
                min_size=count,
                max_size=count,
            ),
        )
    )
    batch = encode_batch(
        values,
        keys=keys,
        headers=headers,
        timestamps=timestamps,
        timestamp_ms=first,
        codec=draw(st.sampled_from([compression.NONE, compression.ZSTD, compression.LZ4])),
        lane=draw(st.integers(min_value=0, max_value=7)),
        base_offset=draw(st.integers(min_value=0, max_value=2**40)),
    )
    prefix = draw(st.binary(max_size=5))  # a batch is read where it lies in a fetched buffer
    return prefix + batch, len(prefix)


@settings(max_examples=300, deadline=None)
@given(_batches())
def test_each_field_read_lazily_equals_the_eager_decode(found: tuple[bytes, int]) -> None:
    data, position = found
    eager = decode_batch(data, position)
    lazy = BatchColumns(data, position)
    assert lazy.header == eager.header
    assert lazy.count == len(eager.values)
    for index in range(lazy.count):
        assert lazy.key(index) == eager.keys[index]
        assert lazy.value(index) == eager.values[index]
        assert lazy.header_block(index) == eager.header_blocks[index]
        assert lazy.headers(index) == decode_headers(eager.header_blocks[index])
        assert lazy.timestamp(index) == eager.timestamps[index]
        assert type(lazy.key(index)) is type(eager.keys[index])
        assert type(lazy.value(index)) is type(eager.values[index])


def test_keys_and_values_that_are_none_empty_or_set_keep_their_kind() -> None:
    batch = encode_batch([None, b"", b"v", None], keys=[b"k", None, b"", None])
    columns = BatchColumns(batch)
    assert [columns.key(index) for index in range(4)] == [b"k", None, b"", None]
    assert [columns.value(index) for index in range(4)] == [None, b"", b"v", None]
    assert [columns.headers(index) for index in range(4)] == [{}, {}, {}, {}]
