"""The recovery checkpoint: a durable point inside the active segment.

Everything before it was fsynced, indexes included, so recovery validates
only the batches after it. It is a small JSON file replaced atomically; a
missing or unreadable checkpoint only means a longer scan (of the active
segment alone: sealed segments were fsynced when they were sealed). It
carries a CRC32C of its other fields (`crc`), so a shutdown that closes
thousands of logs may overwrite each in place and make them all durable
with one sync of the file system: one torn by a crash fails its CRC and
counts as missing. (A checkpoint without `crc`, of an earlier release, is
read as before.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crc32c import crc32c

from logq.log import durable

CHECKPOINT_NAME = "recovery-checkpoint.json"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    segment: int  # base offset of the segment it points into
    position: int  # byte position of a batch boundary in that segment
    next_offset: int  # offset of the batch at that position
    max_timestamp: int  # max record time of the segment before that position


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    payload: dict[str, Any] = {"version": CHECKPOINT_VERSION, **asdict(checkpoint)}
    payload["crc"] = crc32c(_canonical(payload))
    return _canonical(payload)


def write_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    durable.write_atomic(directory / CHECKPOINT_NAME, encode_checkpoint(checkpoint))


def overwrite_checkpoint_unsynced(directory: Path, checkpoint: Checkpoint) -> None:
    """Overwrite the checkpoint in place, durable only with the caller's next
    `durable.sync_filesystem` (torn before it: its CRC fails, see above)."""
    durable.overwrite_unsynced(directory / CHECKPOINT_NAME, encode_checkpoint(checkpoint))


def drop_checkpoint(directory: Path) -> None:
    """Remove the checkpoint (and a temporary one a failed write left): the
    next recovery then scans the whole active segment."""
    path = directory / CHECKPOINT_NAME
    durable.remove_files([path, path.with_name(path.name + durable.TEMP_SUFFIX)])


def read_checkpoint(directory: Path) -> Checkpoint | None:
    try:
        payload = json.loads((directory / CHECKPOINT_NAME).read_bytes())
        crc = payload.pop("crc", None)
        if crc is not None and crc != crc32c(_canonical(payload)):
            return None
        if payload.pop("version") != CHECKPOINT_VERSION:
            return None
        checkpoint = Checkpoint(**payload)
    except (FileNotFoundError, ValueError, TypeError, KeyError, AttributeError):
        return None
    fields = (checkpoint.segment, checkpoint.position, checkpoint.next_offset)
    if not all(isinstance(value, int) and value >= 0 for value in fields):
        return None
    if checkpoint.next_offset < checkpoint.segment:
        return None
    return checkpoint
