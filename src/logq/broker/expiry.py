"""Message TTL: which offsets of a delivery have expired and must not go out.

A message expires at its timestamp plus the topic's `ttl`, or at its own
`logq-expires-at` header (epoch ms, set at publish from a per-message TTL),
whichever comes first. The check is per batch: a batch whose newest record
is still fresh under the topic TTL, and that is not marked as holding
per-message expiries (attribute bit 6), costs one comparison. Only batches
that straddle the line, or are marked, are read record by record.

A message counts as expired once `now_ms > timestamp + ttl` or `now_ms >=
logq-expires-at`: `expires_at_ms` gives the first such instant, the one
deliveries report so a client can hold back what expired in its buffer.
"""

from __future__ import annotations

from logq.log.batch import EXPIRING, decode_batch, decode_headers, decode_timestamps, iter_headers

HEADER_EXPIRES_AT = "logq-expires-at"


def expired_offsets(
    data: bytes, start: int, end: int, ttl_ms: int | None, now_ms: int
) -> list[int]:
    """Offsets in [start, end) of the batches in `data` that have expired at `now_ms`."""
    found: list[int] = []
    threshold = None if ttl_ms is None else now_ms - ttl_ms
    for position, header in iter_headers(data):
        low, high = max(start, header.base_offset), min(end, header.next_offset)
        if low >= high:
            continue
        marked = bool(header.attributes & EXPIRING)
        if threshold is not None and header.max_timestamp < threshold:
            found.extend(range(low, high))  # the whole batch is past the topic TTL
            continue
        straddles = threshold is not None and header.first_timestamp < threshold
        if not marked and not straddles:
            continue
        base = header.base_offset
        if marked:
            decoded = decode_batch(data, position)
            times, blocks = decoded.timestamps, decoded.header_blocks
        else:
            times, blocks = decode_timestamps(data, position), []
        for offset in range(low, high):
            index = offset - base
            if threshold is not None and times[index] < threshold:
                found.append(offset)
            elif blocks and blocks[index]:
                expires = decode_headers(blocks[index]).get(HEADER_EXPIRES_AT, "")
                if expires.isdecimal() and int(expires) <= now_ms:
                    found.append(offset)
    return found


def expires_at_ms(timestamp_ms: int, headers: dict[str, str], ttl_ms: int | None) -> int | None:
    """The first instant (epoch ms) at which a message counts as expired
    (`expired_offsets` finds it from then on); None when it never expires."""
    found = None if not ttl_ms else timestamp_ms + ttl_ms + 1
    expires = headers.get(HEADER_EXPIRES_AT, "")
    if expires.isdecimal():
        own = int(expires)
        found = own if found is None else min(found, own)
    return found
