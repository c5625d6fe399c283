"""The storage backend contract: one suite, run against MemoryBackend and
FileBackend alike (a PostgreSQL backend joins the same suite later).

The first part takes the `backend` fixture, parametrized over both. The
rest covers what only a data directory can do: reopen and keep everything,
and find damage in a record's slots, falling back to the previous version
or reporting the record damaged and never overwriting it.
"""

from __future__ import annotations

import logging
import random
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from crc32c import crc32c

from logq.log import (
    FileBackend,
    LogConfig,
    MemoryBackend,
    MetadataConflictError,
    MetadataDamagedError,
    StorageBackend,
    encode_batch,
)
from logq.log.config import KIB
from logq.log.errors import InvalidKeyError, MetadataTooLargeError
from logq.log.metadata_slots import VALUE_BYTES_MAX, escape_segment, unescape_segment

CONFIG = LogConfig(segment_bytes=4 * KIB, retention_ms=None, retention_bytes=None)
ODD_KEYS = [
    "topic/orders",
    "topic/orders.dlq",
    "topic/.hidden",
    "topic/100%",
    "topic/é~ü",
    "group/orders/~dlq",
    "group/orders/billing",
    "group/orders.dlq/~dlq",
    "broker",
]


@pytest.fixture(params=["memory", "file"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    made: StorageBackend = MemoryBackend() if request.param == "memory" else FileBackend(tmp_path)
    yield made
    made.close()


def _append(backend: StorageBackend, topic: str, partition: int, values: list[bytes]) -> None:
    log = backend.open_log(topic, partition, CONFIG)
    try:
        log.append(encode_batch(values))
    finally:
        log.close()


# -- logs ----------------------------------------------------------------------------


def test_a_partitions_data_and_state_logs_are_separate_logs(backend: StorageBackend) -> None:
    data = backend.open_log("orders", 0, CONFIG)
    state = backend.open_state_log("orders", 0, CONFIG)
    other = backend.open_log("orders", 1, CONFIG)
    try:
        assert data.append(encode_batch([b"a", b"b"])).last_offset == 1
        assert state.append(encode_batch([b"s"])).last_offset == 0
        assert (data.next_offset, state.next_offset, other.next_offset) == (2, 1, 0)
        assert backend.has_topic_files("orders")
        assert not backend.has_topic_files("payments")
    finally:
        for log in (data, state, other):
            log.close()


def test_deleting_a_topic_removes_its_data_and_state_logs(backend: StorageBackend) -> None:
    _append(backend, "orders", 0, [b"a"])
    state = backend.open_state_log("orders", 0, CONFIG)
    state.append(encode_batch([b"s"]))
    state.close()
    _append(backend, "kept", 0, [b"k"])
    backend.delete_topic("orders")
    assert not backend.has_topic_files("orders")
    assert backend.has_topic_files("kept")
    data, state = backend.open_log("orders", 0, CONFIG), backend.open_state_log("orders", 0, CONFIG)
    assert (data.next_offset, state.next_offset) == (0, 0)
    data.close()
    state.close()
    backend.delete_topic("never-made")  # nothing stored is fine


def test_retention_follows_a_reconfigured_open_log(backend: StorageBackend) -> None:
    log = backend.open_log("orders", 0, CONFIG)
    try:
        for _ in range(20):  # old records over several segments
            log.append(encode_batch([b"x" * 1000], timestamp_ms=1_000))
        assert log.segment_count > 2
        now_ms = 10**12
        assert log.apply_retention(now_ms).deleted_segments == 0  # no retention yet
        backend.set_retention(log, 60_000, None)
        result = log.apply_retention(now_ms)
        assert result.deleted_segments > 0
        assert log.first_offset == result.first_offset > 0
    finally:
        log.close()


def test_topic_names_that_cannot_name_a_directory_are_refused(backend: StorageBackend) -> None:
    for name in ("", "a/b", "a\0b"):
        with pytest.raises(InvalidKeyError):
            backend.open_log(name, 0, CONFIG)


# -- metadata records -------------------------------------------------------------------


def test_put_get_and_compare_and_swap(backend: StorageBackend) -> None:
    assert backend.get("topic/orders") is None
    assert backend.put("topic/orders", b"one", None) == 1
    assert backend.get("topic/orders") == (1, b"one")
    with pytest.raises(MetadataConflictError) as refused:
        backend.put("topic/orders", b"again", None)  # must not exist
    assert refused.value.code == "CONFLICT"
    assert backend.put("topic/orders", b"two", 1) == 2
    for stale in (1, 3):
        with pytest.raises(MetadataConflictError):
            backend.put("topic/orders", b"stale", stale)
    assert backend.get("topic/orders") == (2, b"two")
    with pytest.raises(MetadataConflictError):
        backend.put("topic/payments", b"x", 1)  # absent, not at version 1
    assert backend.get("topic/payments") is None


def test_a_listing_hides_nothing_put_or_deleted_after_it(backend: StorageBackend) -> None:
    # (the file backend reads only the slot files a listing saw, until a change)
    backend.put("topic/orders", b"one", None)
    backend.put("topic/payments", b"one", None)
    assert backend.list("topic/") == ["topic/orders", "topic/payments"]
    assert backend.put("topic/orders", b"two", 1) == 2  # into the slot the listing did not see
    assert backend.get("topic/orders") == (2, b"two")
    assert backend.list("topic/") == ["topic/orders", "topic/payments"]
    backend.delete("topic/payments", 1)
    assert backend.get("topic/payments") is None
    assert backend.get("topic/orders") == (2, b"two")


def test_delete_is_compare_and_swap_too(backend: StorageBackend) -> None:
    backend.put("group/orders/billing", b"v1", None)
    backend.put("group/orders/billing", b"v2", 1)
    with pytest.raises(MetadataConflictError):
        backend.delete("group/orders/billing", 1)
    assert backend.get("group/orders/billing") == (2, b"v2")
    backend.delete("group/orders/billing", 2)
    assert backend.get("group/orders/billing") is None
    assert backend.list("") == []
    with pytest.raises(MetadataConflictError):
        backend.delete("group/orders/billing", 2)
    assert backend.put("group/orders/billing", b"new", None) == 1  # a new record starts at 1


def test_versions_rise_by_one_per_put_against_a_model(backend: StorageBackend) -> None:
    chooser = random.Random(7)
    model: dict[str, tuple[int, bytes]] = {}
    keys = ODD_KEYS[:5]
    for step in range(300):
        key = chooser.choice(keys)
        current = model.get(key)
        if current is not None and chooser.random() < 0.15:
            backend.delete(key, current[0])
            del model[key]
        else:
            value = f"{key}@{step}".encode() * chooser.randint(0, 20)
            version = backend.put(key, value, None if current is None else current[0])
            assert version == (1 if current is None else current[0] + 1)
            model[key] = (version, value)
        assert all(backend.get(k) == model.get(k) for k in keys)
    assert backend.list("") == sorted(model)


def test_list_by_prefix_with_any_key_characters(backend: StorageBackend) -> None:
    for index, key in enumerate(ODD_KEYS):
        backend.put(key, str(index).encode(), None)
    assert backend.list("") == sorted(ODD_KEYS)
    assert backend.list("topic/") == sorted(k for k in ODD_KEYS if k.startswith("topic/"))
    assert backend.list("group/orders/") == ["group/orders/billing", "group/orders/~dlq"]
    assert backend.list("topic/orders") == ["topic/orders", "topic/orders.dlq"]
    assert backend.list("group/none/") == []
    for index, key in enumerate(ODD_KEYS):
        assert backend.get(key) == (1, str(index).encode())


def test_bad_keys_and_values_are_refused(backend: StorageBackend) -> None:
    for key in ("", "a//b", "/a", "a/", "a\0b", "x" * 300, "topic/" + "é" * 130):
        with pytest.raises(InvalidKeyError) as refused:
            backend.put(key, b"v", None)
        assert refused.value.code == "BADARG"
    with pytest.raises(MetadataTooLargeError) as too_big:
        backend.put("topic/big", b"x" * (VALUE_BYTES_MAX + 1), None)
    assert too_big.value.code == "TOOBIG"
    assert backend.list("") == []


def test_concurrent_puts_of_one_version_let_exactly_one_through(backend: StorageBackend) -> None:
    backend.put("topic/orders", b"v1", None)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        try:
            backend.put("topic/orders", f"writer {n}".encode(), 1)
            result = "stored"
        except MetadataConflictError:
            result = "conflict"
        with lock:
            outcomes.append(result)

    def other(n: int) -> None:
        backend.put(f"topic/t{n}", b"x", None)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    threads += [threading.Thread(target=other, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["stored"]
    found = backend.get("topic/orders")
    assert found is not None and found[0] == 2
    assert len(backend.list("topic/t")) == 8


def test_key_escaping_round_trips() -> None:
    for segment in ["orders", ".hidden", "~dlq", "100%", "é~ü", "a.b-c_d", "..", "%41"]:
        name = escape_segment(segment)
        assert not name.startswith(".") and "/" not in name
        assert unescape_segment(name) == segment
    assert escape_segment("~dlq") == "%7Edlq"
    assert unescape_segment("%7edlq") is None  # not a name escaping makes
    assert unescape_segment("a%2") is None


# -- a data directory -------------------------------------------------------------------


def test_reopening_keeps_logs_state_logs_and_records(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    _append(backend, "orders", 0, [b"a", b"b"])
    state = backend.open_state_log("orders", 0, CONFIG)
    state.append(encode_batch([b"s"]))
    state.close()
    for index, key in enumerate(ODD_KEYS):
        backend.put(key, f"{index}".encode(), None)
        backend.put(key, f"{index}+".encode(), 1)
    backend.delete("broker", 2)
    backend.close()
    again = FileBackend(tmp_path)
    data = again.open_log("orders", 0, CONFIG)
    state = again.open_state_log("orders", 0, CONFIG)
    assert (data.next_offset, state.next_offset) == (2, 1)
    data.close()
    state.close()
    assert again.list("") == sorted(k for k in ODD_KEYS if k != "broker")
    for index, key in enumerate(ODD_KEYS[:-1]):
        assert again.get(key) == (2, f"{index}+".encode())
    assert again.put("topic/orders", b"third", 2) == 3  # versions go on where they were
    assert (tmp_path / "topics" / "orders" / "0.state").is_dir()
    assert (tmp_path / "meta" / "group" / "orders" / "%7Edlq.a").is_file()


def _slots(tmp_path: Path, *segments: str) -> tuple[Path, Path]:
    parent = tmp_path.joinpath("meta", *segments[:-1])
    return parent / f"{segments[-1]}.a", parent / f"{segments[-1]}.b"


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_damaged_slot_falls_back_to_the_previous_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FileBackend(tmp_path)
    backend.put("topic/orders", b"first", None)
    backend.put("topic/orders", b"second", 1)
    a, b = _slots(tmp_path, "topic", "orders")
    _flip(b, -1)  # a byte of the newest value
    caplog.set_level(logging.WARNING)
    reopened = FileBackend(tmp_path)
    assert reopened.get("topic/orders") == (1, b"first")
    assert reopened.get("topic/orders") == (1, b"first")
    reported = [r for r in caplog.records if "does not verify" in r.getMessage()]
    assert len(reported) == 1  # logged once
    assert "CRC32C" in reported[0].getMessage()
    assert reopened.metadata_statistics()["slots_damaged"] == 1
    # the way back: the next put goes over the damaged slot, the good one stays
    assert reopened.put("topic/orders", b"repaired", 1) == 2
    assert a.read_bytes().endswith(b"first")
    assert FileBackend(tmp_path).get("topic/orders") == (2, b"repaired")


def test_a_torn_overwrite_leaves_the_previous_version(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    for version, value in enumerate([b"v1", b"v2", b"v3"], 1):
        backend.put("group/orders/billing", value, version - 1 or None)
    a, _ = _slots(tmp_path, "group", "orders", "billing")  # v3 went over v1 in slot a
    a.write_bytes(a.read_bytes()[:30])  # as if power went mid-write
    assert FileBackend(tmp_path).get("group/orders/billing") == (2, b"v2")
    a.write_bytes(b"")
    assert FileBackend(tmp_path).get("group/orders/billing") == (2, b"v2")


def test_both_slots_damaged_is_reported_and_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FileBackend(tmp_path)
    backend.put("topic/orders", b"first", None)
    backend.put("topic/orders", b"second", 1)
    backend.put("topic/kept", b"fine", None)
    a, b = _slots(tmp_path, "topic", "orders")
    _flip(a, 10)  # the version field
    _flip(b, 0)  # the magic
    damaged = (a.read_bytes(), b.read_bytes())
    caplog.set_level(logging.WARNING)
    reopened = FileBackend(tmp_path)
    for _ in range(2):
        with pytest.raises(MetadataDamagedError) as refused:
            reopened.get("topic/orders")
    assert refused.value.code == "CORRUPT" and refused.value.key == "topic/orders"
    for expected in (None, 1, 2, 3):
        with pytest.raises(MetadataDamagedError):
            reopened.put("topic/orders", b"overwrite", expected)
    with pytest.raises(MetadataDamagedError):
        reopened.delete("topic/orders", 2)
    assert (a.read_bytes(), b.read_bytes()) == damaged
    assert reopened.list("topic/") == ["topic/kept", "topic/orders"]
    assert reopened.get("topic/kept") == (1, b"fine")
    statistics = reopened.metadata_statistics()
    assert (statistics["records_damaged"], statistics["slots_damaged"]) == (1, 2)
    assert len([r for r in caplog.records if "is damaged" in r.getMessage()]) == 1


def test_a_slot_copied_under_another_key_does_not_verify(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.put("topic/orders", b"orders", None)
    backend.put("topic/payments", b"payments", None)
    orders_a, _ = _slots(tmp_path, "topic", "orders")
    payments_a, _ = _slots(tmp_path, "topic", "payments")
    payments_a.write_bytes(orders_a.read_bytes())
    with pytest.raises(MetadataDamagedError, match="holds the key"):
        FileBackend(tmp_path).get("topic/payments")


def test_a_slot_file_has_the_documented_bytes(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.put("topic/orders", b'{"x":1}', None)
    data = _slots(tmp_path, "topic", "orders")[0].read_bytes()
    magic, form, reserved, key_length, version, value_length, crc = struct.unpack_from(
        "<4sBBHQII", data
    )
    assert (magic, form, reserved, key_length, version, value_length) == (
        b"LQMR",
        1,
        0,
        len(b"topic/orders"),
        1,
        7,
    )
    assert data[24:] == b'topic/orders{"x":1}'
    assert crc == crc32c(data[24:], crc32c(data[:20]))
    assert len(data) == 24 + 12 + 7
