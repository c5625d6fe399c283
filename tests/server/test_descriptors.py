"""The partition cap derived from the descriptor limit, and the warning
when open descriptors pass 80% of it: once per crossing, not per check."""

from __future__ import annotations

import logging

import pytest

from logq.server.descriptors import (
    BROKER_DESCRIPTORS,
    DESCRIPTORS_PER_PARTITION,
    DescriptorWatch,
    derive_partitions_max,
    partition_cap,
)


def test_the_cap_keeps_room_for_connections_and_the_brokers_own_files() -> None:
    for limit, connections in ((20_000, 10_000), (1_024, 10_000), (65_536, 100), (100, 10)):
        cap = derive_partitions_max(limit, connections).partitions_max
        room = min(connections, limit // 4)
        used = cap * DESCRIPTORS_PER_PARTITION + BROKER_DESCRIPTORS + room
        assert used <= limit < used + DESCRIPTORS_PER_PARTITION
    assert derive_partitions_max(64, 10).partitions_max == 0  # nothing left: no partition
    derived = derive_partitions_max(20_000, 10_000)
    assert "descriptor limit 20000" in derived.how and "5000 for connections" in derived.how


def test_a_set_cap_wins_and_memory_or_no_limit_has_none() -> None:
    assert partition_cap(7, False, 100, 1_000) is not None
    assert partition_cap(7, True, 100, None).partitions_max == 7  # type: ignore[union-attr]
    assert partition_cap(None, True, 100, 1_000) is None
    assert partition_cap(None, False, 100, None) is None
    derived = partition_cap(None, False, 100, 1_000)
    assert derived == derive_partitions_max(1_000, 100)


def test_the_warning_comes_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    counts = iter([10, 79, 80, 95, 99, 76, 74, 90, 100])
    watch = DescriptorWatch(100, count=lambda: next(counts))
    caplog.set_level(logging.INFO, logger="logq.server")
    warned = []
    for _ in range(9):
        watch.check()
        warned.append(len([r for r in caplog.records if r.levelno == logging.WARNING]))
    # warned at 80 (the first crossing), again only after falling under 75 and rising
    assert warned == [0, 0, 1, 1, 1, 1, 1, 2, 2]
    assert "80 descriptors open, 80% of the limit 100" in caplog.records[0].getMessage()
    assert any("back under" in r.getMessage() for r in caplog.records)
    assert watch.open == 100


def test_an_uncountable_process_keeps_the_last_count() -> None:
    watch = DescriptorWatch(None, count=lambda: None)
    assert watch.check() is None and not watch.warned
