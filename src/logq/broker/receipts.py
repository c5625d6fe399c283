"""Receipts: which delivery a settlement names, and which named ones are stale.

A settlement names messages by id (`<topic>:<partition>:<offset>`), which
settles the message's current delivery whoever holds it, or by receipt
(`<id>@<lease>`, and `ACKR`'s `LEASE` groups), which settles it only while
the delivery that lease token names is still the current one. Named offsets
are gathered per (partition, lease token) as ranges, so the check works per
range, never per message; the stale parts are taken out before anything
changes and reported with `StaleDeliveryError`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from logq.broker.messages import MessageId
from logq.errors import BadArgumentError, StaleDeliveryError
from logq.state.delivery import PartitionDelivery
from logq.state.ranges import Range, RangeSet, ranges_of

IDS_PER_CALL_MAX = 100_000
LEASE_DIGITS_MAX = 19  # a lease token fits a signed 64-bit integer
STALE_LISTED_MAX = 1000  # receipts listed in one stale error (the count says the rest)
STALE_SHOWN_MAX = 100  # of them, shown in its message (an error reply is that text)

# (partition, lease token or 0 for none) -> offset ranges [start, end)
Named = dict[tuple[int, int], list[Range]]
Stale = list[tuple[int, int, int, int]]  # (partition, start, end, lease token)


def parse_receipt(text: object) -> tuple[MessageId, int]:
    """A message id, or a receipt `<id>@<lease>`: the id and the token (0 for none)."""
    if isinstance(text, str) and "@" in text:
        message_id, _, tail = text.rpartition("@")
        if not tail.isdecimal() or len(tail) > LEASE_DIGITS_MAX or int(tail) == 0:
            raise BadArgumentError(
                f"malformed receipt {text[:80]!r}, expected '<topic>:<partition>:<offset>@<lease>'"
            )
        return MessageId.parse(message_id), int(tail)
    return MessageId.parse(text), 0


def named_deliveries(topic_name: str, partitions: int, ids: Iterable[str]) -> Named:
    """Ids and receipts gathered as ranges per (partition, lease token)."""
    id_list = list(ids)
    if not id_list:
        raise BadArgumentError("give at least one message id")
    if len(id_list) > IDS_PER_CALL_MAX:
        raise BadArgumentError(f"{len(id_list)} ids in one call, the limit is {IDS_PER_CALL_MAX}")
    offsets: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
    for text in id_list:
        parsed, token = parse_receipt(text)
        if parsed.topic != topic_name:
            raise BadArgumentError(f"message {text!r} is not from topic {topic_name!r}")
        if not 0 <= parsed.partition < partitions:
            raise BadArgumentError(f"message {text!r} names a partition that does not exist")
        offsets[(parsed.partition, token)].append(parsed.offset)
    return {key: ranges_of(values) for key, values in offsets.items()}


def check_named(ranges: Named, partitions: int) -> None:
    """Refuse offset ranges naming a partition the group lacks, a negative
    lease token or a backwards range (BADARG; nothing is settled)."""
    for (partition, token), parts in ranges.items():
        if not 0 <= partition < partitions:
            raise BadArgumentError(f"partition {partition} does not exist")
        if token < 0:
            raise BadArgumentError(f"bad lease token {token}")
        for start, end in parts:
            if not 0 <= start <= end:
                raise BadArgumentError(f"bad range [{start}, {end})")


def current_parts(
    deliveries: Sequence[PartitionDelivery], named: Named
) -> tuple[dict[int, list[Range]], Stale]:
    """The named ranges per partition less the stale ones (those whose lease
    token is not their offsets' current delivery), and the stale ones."""
    current: dict[int, list[Range]] = {}
    stale: Stale = []
    merge: set[int] = set()  # partitions named under several tokens
    for (partition, token), named_ranges in named.items():
        ranges = named_ranges
        found = deliveries[partition].stale_parts(ranges, token) if token else []
        if found:
            stale += [(partition, start, end, token) for start, end in found]
            wanted = RangeSet(ranges)
            for start, end in found:
                wanted.remove(start, end)
            ranges = list(wanted)
        if partition in current:
            merge.add(partition)
            current[partition] = current[partition] + ranges
        else:
            current[partition] = ranges
    for partition in merge:  # one offset named twice counts once
        current[partition] = list(RangeSet(current[partition]))
    return {partition: ranges for partition, ranges in current.items() if ranges}, stale


def stale_error(topic_name: str, stale: Stale, count: int) -> StaleDeliveryError:
    """The error for the stale parts of a settlement that did `count` to the rest."""
    receipts: list[str] = []
    total = 0
    for partition, start, end, token in stale:
        total += end - start
        for offset in range(start, min(end, start + STALE_LISTED_MAX - len(receipts))):
            receipts.append(f"{topic_name}:{partition}:{offset}@{token}")
    listed = " ".join(receipts[:STALE_SHOWN_MAX]) + (" ..." if total > STALE_SHOWN_MAX else "")
    return StaleDeliveryError(
        f"{total} of the deliveries named are no longer current (the lease ended and the"
        f" message went out again, was dead-lettered or the group moved); they changed"
        f" nothing: {listed}",
        receipts,
        count,
    )
