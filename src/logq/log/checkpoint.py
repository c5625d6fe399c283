"""The recovery checkpoint: a durable point inside the active segment.

Everything before it was fsynced, indexes included, so recovery validates
only the batches after it. It is a small JSON file replaced atomically,
carrying a CRC32C of its fields: a checkpoint that does not verify is
reported and recovery scans the active segment whole, as it does when the
file is missing (sealed segments were fsynced when they were sealed). A
shutdown that closes thousands of logs overwrites each in place instead
and makes them all durable with one sync of the file system (one a crash
tore fails its CRC, and only lengthens that scan).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from crc32c import crc32c

from logq.log import durable

CHECKPOINT_NAME = "recovery-checkpoint.json"
CHECKPOINT_VERSION = 2
# Checkpoints of earlier releases carry no CRC; they are read as before.
UNCHECKED_VERSION = 1
CHECKPOINT_BYTES_MAX = 4096


@dataclass(frozen=True, slots=True)
class Checkpoint:
    segment: int  # base offset of the segment it points into
    position: int  # byte position of a batch boundary in that segment
    next_offset: int  # offset of the batch at that position
    max_timestamp: int  # max record time of the segment before that position


def _crc(checkpoint: Checkpoint) -> int:
    fields = (checkpoint.segment, checkpoint.position, checkpoint.next_offset)
    return crc32c(f"{fields[0]}:{fields[1]}:{fields[2]}:{checkpoint.max_timestamp}".encode())


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The JSON document (as `json.dumps` of the fields in this order would
    write it, formatted directly: a shutdown encodes one per log written
    since its last checkpoint, tens of thousands)."""
    assert type(checkpoint.segment) is type(checkpoint.position) is int
    assert type(checkpoint.next_offset) is type(checkpoint.max_timestamp) is int
    return (
        f'{{"version": {CHECKPOINT_VERSION}, "segment": {checkpoint.segment}, '
        f'"position": {checkpoint.position}, "next_offset": {checkpoint.next_offset}, '
        f'"max_timestamp": {checkpoint.max_timestamp}, "crc": {_crc(checkpoint)}}}'
    ).encode()


def write_checkpoint(directory: Path, checkpoint: Checkpoint, *, sync_parent: bool = True) -> None:
    """`sync_parent=False`: the caller fsyncs the directory next."""
    durable.write_atomic(
        directory / CHECKPOINT_NAME, encode_checkpoint(checkpoint), sync_parent=sync_parent
    )


def overwrite_checkpoint_unsynced(directory: Path | str, checkpoint: Checkpoint) -> None:
    """Overwrite the checkpoint in place, durable only with the caller's next
    `durable.sync_filesystem` (torn before it: its CRC fails, see above).
    (`directory` may be a string: a shutdown does this for thousands of logs.)"""
    durable.overwrite_unsynced(
        f"{os.fspath(directory)}/{CHECKPOINT_NAME}", encode_checkpoint(checkpoint)
    )


def drop_checkpoint(directory: Path) -> None:
    """Remove the checkpoint (and a temporary one a failed write left): the
    next recovery then scans the whole active segment."""
    path = directory / CHECKPOINT_NAME
    durable.remove_files([path, path.with_name(path.name + durable.TEMP_SUFFIX)])


class CheckpointDamagedError(Exception):
    """The checkpoint file exists but does not verify (the message says why)."""


def read_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint kept in `directory`, None when there is none; raises
    CheckpointDamagedError when the file does not verify."""
    path = directory / CHECKPOINT_NAME
    try:
        with path.open("rb") as file:
            stored = file.read(CHECKPOINT_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    try:
        payload = json.loads(stored)
        version = payload.pop("version")
        crc = payload.pop("crc", None) if version == CHECKPOINT_VERSION else None
        if version not in (CHECKPOINT_VERSION, UNCHECKED_VERSION):
            raise CheckpointDamagedError(f"unknown version {version!r}")
        checkpoint = Checkpoint(**payload)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointDamagedError(f"not a checkpoint ({type(error).__name__})") from None
    fields = (checkpoint.segment, checkpoint.position, checkpoint.next_offset)
    if not all(isinstance(value, int) and value >= 0 for value in fields):
        raise CheckpointDamagedError("a field out of range")
    if not isinstance(checkpoint.max_timestamp, int):
        raise CheckpointDamagedError("a field out of range")
    if version == CHECKPOINT_VERSION and crc != _crc(checkpoint):
        raise CheckpointDamagedError("its CRC does not match")
    if checkpoint.next_offset < checkpoint.segment:
        raise CheckpointDamagedError("its offset lies before its segment")
    return checkpoint
