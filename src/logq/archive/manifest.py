"""A partition's archive manifest: which objects hold which offsets.

The manifest is state of the partition, changed only by records applied in
order (kept in the partition's state log and its snapshots, so a broker that
takes the partition over knows what is archived without reading the store):

- `Copied`: a segment object now holds offsets [base, next). Segments are
  recorded in offset order and without gaps; a record for a range already
  held is ignored (its object is an orphan for the reconciler: the first
  record wins, so a retried upload can never replace what readers use).
- `StartMoved`: the topic's start (its `retention`) moved up; segments wholly
  below it are kept for audit reads (`include_deleted`) until
  `archive_retention` retires them.
- `Retired`: segments below an offset leave the manifest; readers stop
  seeing them at once, and their objects are deleted after a grace period
  (readers already inside one finish), then recorded `Purged`.

Everything is a value: `apply` returns nothing and changes only this
manifest, so replaying the same records always gives the same manifest.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import msgspec


class ArchivedSegment(msgspec.Struct, array_like=True, frozen=True):
    key: str
    base_offset: int
    next_offset: int
    size: int
    first_timestamp: int
    max_timestamp: int


class Copied(msgspec.Struct, array_like=True, tag="c", frozen=True):
    segment: ArchivedSegment


class StartMoved(msgspec.Struct, array_like=True, tag="m", frozen=True):
    offset: int


class Retired(msgspec.Struct, array_like=True, tag="r", frozen=True):
    before_offset: int
    at_ms: int


class Purged(msgspec.Struct, array_like=True, tag="p", frozen=True):
    keys: list[str]


Record = Copied | StartMoved | Retired | Purged


class ManifestState(msgspec.Struct, array_like=True):
    """The manifest as a snapshot holds it."""

    segments: list[ArchivedSegment] = []
    start_offset: int = 0
    retiring: list[tuple[str, int]] = []  # (key, retired at ms): deleted after the grace
    version: int = 0  # records applied: names the manifest's copy in the store


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_state_decoder = msgspec.msgpack.Decoder(ManifestState)


def encode_state(state: ManifestState) -> bytes:
    return _record_encoder.encode(state)


def decode_state(raw: bytes | memoryview) -> ManifestState:
    return _state_decoder.decode(raw)


def encode_record(record: Record) -> bytes:
    return _record_encoder.encode(record)


def decode_record(raw: bytes | memoryview) -> Record:
    return _record_decoder.decode(raw)


@dataclass(slots=True)
class Manifest:
    """The archived segments of one partition (see the module doc)."""

    segments: list[ArchivedSegment] = field(default_factory=list)
    start_offset: int = 0
    retiring: dict[str, int] = field(default_factory=dict)
    version: int = 0
    _bases: list[int] = field(default_factory=list)

    @classmethod
    def restored(cls, state: ManifestState) -> Manifest:
        manifest = cls(
            list(state.segments), state.start_offset, dict(state.retiring), state.version
        )
        manifest._bases = [segment.base_offset for segment in manifest.segments]
        return manifest

    def state(self) -> ManifestState:
        return ManifestState(
            list(self.segments), self.start_offset, list(self.retiring.items()), self.version
        )

    # -- what it holds ------------------------------------------------------------------

    @property
    def archived_end(self) -> int | None:
        """The offset after the last archived segment (None: nothing archived)."""
        return self.segments[-1].next_offset if self.segments else None

    @property
    def first_offset(self) -> int | None:
        """The first offset any object holds (audit reads reach down to it)."""
        return self.segments[0].base_offset if self.segments else None

    def holds(self, key: str) -> bool:
        """Whether the object is the manifest's (live or awaiting deletion):
        what the reconciler must never delete."""
        return key in self.retiring or any(segment.key == key for segment in self.segments)

    def segment_for(self, offset: int, *, include_deleted: bool = False) -> ArchivedSegment | None:
        """The segment that holds `offset`; below the topic's start only with
        `include_deleted`."""
        if offset < self.start_offset and not include_deleted:
            return None
        at = bisect.bisect_right(self._bases, offset) - 1
        if at < 0:
            return None
        segment = self.segments[at]
        return segment if offset < segment.next_offset else None

    def offset_for_time(self, timestamp_ms: int, *, include_deleted: bool = False) -> int | None:
        """An offset at or before the first message at least as new as
        `timestamp_ms`: the start of the first segment whose newest message
        is (the segment object's time index then narrows it)."""
        floor = 0 if include_deleted else self.start_offset
        for segment in self.segments:
            if segment.next_offset <= floor:
                continue
            if segment.max_timestamp >= timestamp_ms:
                return max(segment.base_offset, floor)
        return None

    def due_for_purge(self, now_ms: int, grace_ms: int) -> list[str]:
        return [key for key, at in self.retiring.items() if now_ms - at >= grace_ms]

    # -- records ------------------------------------------------------------------------

    def check(self, record: Record) -> str | None:
        """Why `record` cannot follow this manifest (None: it can, or it is
        a repeat that `apply` ignores)."""
        if isinstance(record, Copied):
            segment = record.segment
            if segment.next_offset <= segment.base_offset:
                return f"an empty range {segment.base_offset}-{segment.next_offset}"
            end = self.archived_end
            if end is not None and segment.base_offset < end:
                return None  # held already: ignored
            if end is not None and segment.base_offset != end:
                return f"a gap: archived to {end}, the segment starts at {segment.base_offset}"
        return None

    def apply(self, record: Record) -> None:
        refused = self.check(record)
        if refused is not None:
            raise ValueError(f"manifest: {refused}")
        self.version += 1
        if isinstance(record, Copied):
            segment = record.segment
            end = self.archived_end
            if end is not None and segment.base_offset < end:
                return  # the range is held: the first record wins
            self.segments.append(segment)
            self._bases.append(segment.base_offset)
        elif isinstance(record, StartMoved):
            self.start_offset = max(self.start_offset, record.offset)
        elif isinstance(record, Retired):
            kept = [s for s in self.segments if s.next_offset > record.before_offset]
            for segment in self.segments[: len(self.segments) - len(kept)]:
                self.retiring.setdefault(segment.key, record.at_ms)
            self.segments = kept
            self._bases = [segment.base_offset for segment in kept]
        else:
            for key in record.keys:
                self.retiring.pop(key, None)
