"""The damage `logq bench corrupt` does to one file of a stopped broker's data directory.

Each file is named by what it is on disk (docs/format.md), so the report can
count trials per kind of file; each damage is one of:

- `flip`: one byte of the file xor a random non-zero byte;
- `truncate`: the file cut at a random length below its size;
- `stale`: the file replaced by the copy an earlier stop of the same run
  left (a checkpoint, a metadata slot or a state log segment, which holds
  the partition's snapshots), when that copy differs;
- `delete-index`: an offset or time index removed.

The damage is described by the file, the byte range it touched and what was
there before, so a failed trial can be replayed by hand.
"""

from __future__ import annotations

import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from crc32c import crc32c

from logq.log.batch import iter_headers
from logq.log.index import TIME_ENTRY
from logq.log.time_index import (
    CHECKED_TIME_ENTRY,
    TIME_INDEX_HEADER,
    TIME_INDEX_MAGIC,
    TIME_INDEX_VERSION,
)

DAMAGE_KINDS = ("flip", "truncate", "stale", "delete-index")
STALE_KINDS = frozenset({"checkpoint", "meta-slot", "state-segment"})
INDEX_KINDS = frozenset(
    f"{where}{kind}" for where in ("", "state-", "trace-") for kind in ("index", "timeindex")
)


def file_kind(relative: Path) -> str | None:
    """What a file of the data directory is, or None for one no damage is done to."""
    parts = relative.parts
    name = relative.name
    if name == "lock" or name.endswith(".tmp"):
        return None
    if parts[0] == "meta" and name[-2:] in {".a", ".b"}:
        return "meta-slot"
    if parts[0] == "commit" and name.endswith(".wal"):
        return "commit-journal"
    where = "trace-" if parts[0] == "trace" else ""
    if parts[0] == "topics" and len(parts) >= 3 and parts[-2].endswith(".state"):
        where = "state-"
    if name == "recovery-checkpoint.json":
        return "checkpoint"
    if name == "leader-epochs":
        return "epochs"
    for suffix, kind in ((".log", "segment"), (".index", "index"), (".timeindex", "timeindex")):
        if name.endswith(suffix):
            return where + kind
    return "other"


def damageable_files(root: Path) -> dict[str, list[Path]]:
    """The files under `root` by kind (paths relative to `root`, sorted)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root)
        kind = file_kind(relative)
        if kind is not None:
            found.setdefault(kind, []).append(relative)
    return found


@dataclass(frozen=True, slots=True)
class Damage:
    kind: str  # one of DAMAGE_KINDS
    file_kind: str
    path: Path  # relative to the data directory
    size_before: int
    position: int  # first byte changed (the cut for a truncation; 0 for a whole file)
    detail: str

    def describe(self) -> str:
        return f"{self.kind} of {self.file_kind} {self.path} ({self.detail})"


def choices(root: Path, stale_root: Path) -> list[tuple[str, str, Path]]:
    """Every (damage kind, file kind, file) this directory allows."""
    files = damageable_files(root)
    found: list[tuple[str, str, Path]] = []
    for kind, paths in files.items():
        for relative in paths:
            size = (root / relative).stat().st_size
            if size > 0:
                found.append(("flip", kind, relative))
                found.append(("truncate", kind, relative))
            older = stale_root / relative
            if (
                kind in STALE_KINDS
                and older.is_file()
                and older.read_bytes() != (root / relative).read_bytes()
            ):
                found.append(("stale", kind, relative))
            if kind in INDEX_KINDS:
                found.append(("delete-index", kind, relative))
    return found


def pick(rng: random.Random, root: Path, stale_root: Path) -> tuple[str, str, Path]:
    """A damage kind at random, then a kind of file it applies to, then a file."""
    possible = choices(root, stale_root)
    assert possible, f"nothing to damage in {root}"
    damage = rng.choice(sorted({d for d, _, _ in possible}))
    kinds = sorted({k for d, k, _ in possible if d == damage})
    kind = rng.choice(kinds)
    paths = sorted(p for d, k, p in possible if d == damage and k == kind)
    return damage, kind, rng.choice(paths)


def apply(rng: random.Random, root: Path, stale_root: Path) -> Damage:
    """Do one random damage to one random file under `root`."""
    damage, kind, relative = pick(rng, root, stale_root)
    path = root / relative
    size = path.stat().st_size
    if damage == "flip":
        stored = bytearray(path.read_bytes())
        position = rng.randrange(size)
        mask = rng.randrange(1, 256)
        before = stored[position]
        stored[position] ^= mask
        path.write_bytes(bytes(stored))
        detail = f"byte {position} of {size}: {before:#04x} -> {stored[position]:#04x}"
        return Damage(damage, kind, relative, size, position, detail)
    if damage == "truncate":
        position = rng.randrange(size)
        with path.open("r+b") as file:
            file.truncate(position)
        return Damage(damage, kind, relative, size, position, f"cut to {position} of {size} bytes")
    if damage == "stale":
        older = stale_root / relative
        shutil.copyfile(older, path)
        detail = f"older copy of {older.stat().st_size} bytes instead of {size}"
        return Damage(damage, kind, relative, size, 0, detail)
    path.unlink()
    return Damage(damage, kind, relative, size, 0, f"removed ({size} bytes)")


def _batch_starts(segment: bytes) -> list[tuple[int, int, int]]:
    """(position, base offset, max timestamp) of each whole batch at the front of `segment`."""
    starts = []
    for position, header in iter_headers(segment):
        if position + header.size > len(segment):
            break
        starts.append((position, header.base_offset, header.max_timestamp))
    return starts


def index_still_correct(root: Path, damage: Damage) -> bool:
    """Whether a damaged index is still a correct sparse index of its segment:
    each offset entry names a batch's start, each time entry's time is at
    least that of every batch before its offset (an understated time would
    make a time query skip data; an overstated one only scans more). Such
    an index may lack entries (a cut at an entry boundary), which costs a
    longer walk and nothing else: the broker needs not report it."""
    if damage.kind not in {"flip", "truncate"}:
        return False
    path = root / damage.path
    stored = path.read_bytes()
    base = int(path.name.partition(".")[0])
    segment = path.with_suffix(".log")
    batches = _batch_starts(segment.read_bytes()) if segment.exists() else []
    by_offset = {offset - base: position for position, offset, _ in batches}
    if path.suffix == ".index":
        if len(stored) % 8:
            return False
        entries = [struct.unpack_from("<II", stored, at) for at in range(0, len(stored), 8)]
        return all(by_offset.get(relative) == position for relative, position in entries)
    return _time_index_still_correct(stored, base, batches, segment)


def _time_index_still_correct(
    stored: bytes, base: int, batches: list[tuple[int, int, int]], segment: Path
) -> bool:
    """A time index (docs/format.md: a header, then entries with a CRC32C
    each) whose every entry verifies and is true of its segment: its offset
    a batch's start or the segment's end, its time the largest before it."""
    header = TIME_INDEX_HEADER.pack(TIME_INDEX_MAGIC, TIME_INDEX_VERSION, 0, base)
    if not stored.startswith(header) or (len(stored) - len(header)) % CHECKED_TIME_ENTRY.size:
        return False
    seed = crc32c(base.to_bytes(8, "little", signed=True))
    layout = iter_headers(segment.read_bytes()) if batches else []
    end = layout[len(batches) - 1][1].next_offset - base if batches else 0
    starts = {offset - base for _, offset, _ in batches}
    for at in range(len(header), len(stored), CHECKED_TIME_ENTRY.size):
        time_ms, relative, crc = CHECKED_TIME_ENTRY.unpack_from(stored, at)
        if crc != crc32c(TIME_ENTRY.pack(time_ms, relative), seed):
            return False
        if relative not in starts and relative != end:
            return False
        before = [t for _, offset, t in batches if offset - base < relative]
        if before and time_ms < max(before):
            return False
    return True
