"""Per-client quotas: messages and bytes published per second, and requests
per second, as token buckets (a burst of one second's worth, then the rate).

A client is its user when authentication is on, else its address. Over a
quota, the request is refused with THROTTLED and the time to wait; nothing
of it is stored. Buckets of clients idle for a minute are dropped, so memory
follows the active clients only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from logq.errors import ThrottledError

CLIENTS_MAX = 100_000
IDLE_S = 60.0


@dataclass(frozen=True, slots=True)
class Quota:
    """Per second, per client; 0 means no limit."""

    messages_per_s: int = 0
    bytes_per_s: int = 0
    requests_per_s: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.messages_per_s or self.bytes_per_s or self.requests_per_s)


@dataclass(slots=True)
class _Bucket:
    rate: float
    tokens: float
    updated: float

    def take(self, amount: float, now: float) -> float:
        """Take `amount`; 0.0 if it was there, else the seconds until it will be."""
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if amount <= self.tokens or (amount > self.rate and self.tokens >= self.rate):
            self.tokens -= amount  # a request above one second's worth passes on a full bucket
            return 0.0
        return (amount - self.tokens) / self.rate


@dataclass(slots=True)
class _Client:
    messages: _Bucket | None
    bytes: _Bucket | None
    requests: _Bucket | None
    seen: float


class Quotas:
    def __init__(
        self,
        default: Quota,
        per_client: dict[str, Quota] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default = default
        self.per_client = per_client or {}
        self.clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        # read per request: computed once
        self.enabled = not default.unlimited or any(
            not q.unlimited for q in self.per_client.values()
        )

    def request(self, client: str) -> None:
        """Count one request against the client's request rate."""
        state = self._client(client)
        if state is not None and state.requests is not None:
            self._take(state.requests, 1, client, "requests")

    def publish(self, client: str, messages: int, size: int) -> None:
        """Count a publish of `messages` messages and `size` bytes, or refuse it whole."""
        state = self._client(client)
        if state is None:
            return
        now = self.clock()
        waits = [
            (bucket.take(amount, now), bucket, amount, what)
            for bucket, amount, what in (
                (state.messages, messages, "messages"),
                (state.bytes, size, "bytes"),
            )
            if bucket is not None
        ]
        refused = [(wait, what, bucket) for wait, bucket, amount, what in waits if wait > 0]
        if refused:
            for wait, bucket, amount, _ in waits:
                if wait == 0:
                    bucket.tokens += amount  # refused whole: give back what was taken
            wait, what, bucket = max(refused, key=lambda item: item[0])
            raise ThrottledError(
                f"client {client!r} is over its quota of {bucket.rate:.0f} {what}/s; "
                f"retry in {max(1, round(wait * 1000))} ms"
            )

    def _take(self, bucket: _Bucket, amount: int, client: str, what: str) -> None:
        wait = bucket.take(amount, self.clock())
        if wait > 0:
            raise ThrottledError(
                f"client {client!r} is over its quota of {bucket.rate:.0f} {what}/s; "
                f"retry in {max(1, round(wait * 1000))} ms"
            )

    def _client(self, client: str) -> _Client | None:
        quota = self.per_client.get(client, self.default)
        if quota.unlimited:
            return None
        now = self.clock()
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _Client(
                _bucket(quota.messages_per_s, now),
                _bucket(quota.bytes_per_s, now),
                _bucket(quota.requests_per_s, now),
                now,
            )
        state.seen = now
        self._clients.move_to_end(client)
        while self._clients:
            oldest = next(iter(self._clients.values()))
            if now - oldest.seen < IDLE_S and len(self._clients) <= CLIENTS_MAX:
                break
            self._clients.popitem(last=False)
        return state


def _bucket(rate: int, now: float) -> _Bucket | None:
    return _Bucket(float(rate), float(rate), now) if rate else None
