"""The descriptor cache's size derived from the descriptor limit, and the
warning when open descriptors pass 80% of it: once per crossing, not per
check."""

from __future__ import annotations

import logging

import pytest

from logq.log.file_cache import OPEN_FILES_DEFAULT, OPEN_FILES_MIN
from logq.server.descriptors import (
    BROKER_DESCRIPTORS,
    DescriptorWatch,
    derive_open_files_max,
    open_files_cap,
)


def test_the_cache_keeps_room_for_connections_and_the_brokers_own_files() -> None:
    for limit, connections in ((20_000, 10_000), (1_024, 10_000), (65_536, 100), (100, 10)):
        cached = derive_open_files_max(limit, connections).open_files_max
        room = min(connections, limit // 4)
        assert cached + BROKER_DESCRIPTORS + room == limit
    assert derive_open_files_max(64, 10).open_files_max == OPEN_FILES_MIN  # never less
    derived = derive_open_files_max(20_000, 10_000)
    assert "descriptor limit 20000" in derived.how and "5000 for connections" in derived.how


def test_a_set_size_wins_and_no_limit_has_the_default() -> None:
    assert open_files_cap(7, 100, 1_000).open_files_max == 7
    assert open_files_cap(None, 100, None).open_files_max == OPEN_FILES_DEFAULT
    assert open_files_cap(None, 100, 1_000) == derive_open_files_max(1_000, 100)


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
