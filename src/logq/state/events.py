"""Delivery-state events: what the journal records and recovery replays.

Every change to a group's delivery state is one of these events, applied by
the same code live and on replay, so recovery cannot disagree with what ran.
Offsets travel as [start, end) ranges: one event per receive or ack call,
never one per message.
"""

from __future__ import annotations

import msgspec

Ranges = list[tuple[int, int]]


class Leased(msgspec.Struct, tag="L", frozen=True, array_like=True):
    """Offsets handed to a consumer until `deadline_ms`, as delivery `attempt`,
    under lease token `token`: the name of this delivery, which settlements
    carry so that a late one cannot touch a later delivery of the same offsets."""

    group: str
    partition: int
    ranges: Ranges
    consumer: str
    deadline_ms: int
    attempt: int
    at_ms: int = 0  # when (0 in journals written before it was recorded)
    token: int = 0  # 0 in journals written before tokens, and for dead-letter holds


class Settled(msgspec.Struct, tag="S", frozen=True, array_like=True):
    """Offsets done for this group: acked, rejected or dead-lettered."""

    group: str
    partition: int
    ranges: Ranges


class Lost(msgspec.Struct, tag="X", frozen=True, array_like=True):
    """Offsets lost to damage on disk: never delivered, never acked or
    dead-lettered; the group passes them (they count as done for its floor)."""

    group: str
    partition: int
    ranges: Ranges


class Released(msgspec.Struct, tag="R", frozen=True, array_like=True):
    """Offsets back to pending (nack or lease expiry) after `attempt` deliveries,
    deliverable again from `not_before_ms`."""

    group: str
    partition: int
    ranges: Ranges
    attempt: int
    not_before_ms: int


class Extended(msgspec.Struct, tag="E", frozen=True, array_like=True):
    group: str
    partition: int
    ranges: Ranges
    deadline_ms: int


class Seeked(msgspec.Struct, tag="K", frozen=True, array_like=True):
    """The group's position in a partition moved; all delivery state resets."""

    group: str
    partition: int
    offset: int


class Redriven(msgspec.Struct, tag="D", frozen=True, array_like=True):
    """Settled offsets handed back (DLQ redrive): deliverable again from
    `not_before_ms` as if never delivered (attempts start over).

    `source` names the dead-letter partition the letters lie in
    (`<dlq topic>:<partition>`) and `token` the lease token of the redrive's
    hold there: a group's partition applies a redrive from one source once
    (tokens of one source only grow), so a redrive finished again after a
    crash hands nothing back twice. Empty and 0 in journals written before."""

    group: str
    partition: int
    ranges: Ranges
    not_before_ms: int
    source: str = ""
    token: int = 0


class Held(msgspec.Struct, tag="H", frozen=True, array_like=True):
    """First deliveries of delayed messages held back until their times:
    `offsets[i]` becomes deliverable at `due_ms[i]`. Both are packed as
    little-endian int64s (state/held.py: `pack_offsets`), so that a hold of
    thousands of messages, each its own time, costs no object per message."""

    group: str
    partition: int
    offsets: bytes
    due_ms: bytes


Event = Leased | Settled | Lost | Released | Extended | Seeked | Redriven | Held

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Event])


def encode_events(events: list[Event]) -> bytes:
    return _encoder.encode(events)


def decode_events(data: bytes) -> list[Event]:
    return _decoder.decode(data)
