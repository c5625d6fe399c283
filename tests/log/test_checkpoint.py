"""The recovery checkpoint carries a CRC32C of its fields: one torn by a
crash (a shutdown overwrites checkpoints in place) reads as missing, never
as a wrong durable point; one of an earlier release, without a CRC, is read
as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logq.log.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    CheckpointDamagedError,
    overwrite_checkpoint_unsynced,
    read_checkpoint,
    write_checkpoint,
)

POINT = Checkpoint(segment=52_000, position=67_108_864, next_offset=577_000, max_timestamp=17)


def test_a_checkpoint_reads_back_and_a_changed_field_does_not_verify(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, POINT)
    assert read_checkpoint(tmp_path) == POINT
    path = tmp_path / CHECKPOINT_NAME
    text = path.read_text()
    assert "67108864" in text
    path.write_text(text.replace("67108864", "67108865"))  # a digit of a torn overwrite
    with pytest.raises(CheckpointDamagedError, match="CRC"):
        read_checkpoint(tmp_path)  # opening the log reports it and scans instead


def test_an_overwrite_in_place_over_a_longer_one_leaves_no_tail(tmp_path: Path) -> None:
    longer = Checkpoint(segment=10**15, position=10**15, next_offset=10**15, max_timestamp=10**15)
    write_checkpoint(tmp_path, longer)
    overwrite_checkpoint_unsynced(tmp_path, POINT)
    assert read_checkpoint(tmp_path) == POINT


def test_a_checkpoint_without_a_crc_is_read_as_before(tmp_path: Path) -> None:
    payload = {"version": 1, "segment": 0, "position": 61, "next_offset": 1, "max_timestamp": 5}
    (tmp_path / CHECKPOINT_NAME).write_text(json.dumps(payload))
    assert read_checkpoint(tmp_path) == Checkpoint(0, 61, 1, 5)
