"""Open connections across both listeners: counted, bounded, and admitted.

Every socket of either listener is admitted here before anything it sends
is read. Three caps hold at once: all connections (`limit`), connections
from one address (`per_address_limit`), and connections that have not
signed in yet (`unauthenticated_limit`, at most half of `limit`, so signed-in
clients always have room). When a cap is reached the oldest connection that
has not signed in gives up its place (from the same address when that
address's cap is the one reached); only when none is left to give way is the
newcomer refused. So sockets that never sign in can hold places only for as
long as it takes others to connect, and never starve a client that signs in.
With authentication off every connection counts as signed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol


class Admitted(Protocol):
    """A connection the counter may close to make room (it has not signed in)."""

    def evict(self, reason: str) -> None: ...


@dataclass(slots=True)
class ConnectionCounter:
    limit: int = 10_000
    per_address_limit: int = 2_500
    unauthenticated_limit: int = 1_000
    native: int = 0
    http_sockets: int = 0
    http: int = 0  # HTTP requests in progress
    refused: int = 0
    evicted: int = 0
    oversize: int = 0  # closed for sending more than a handshake's worth before signing in
    # connections closed for taking too long: to sign in, to send a request, or idle
    timed_out: dict[str, int] = field(
        default_factory=lambda: {"handshake": 0, "idle": 0, "http_header": 0, "http_body": 0}
    )
    closing: bool = False  # the server is stopping: long-lived streams end
    _addresses: dict[Admitted, tuple[str, bool]] = field(default_factory=dict)  # address, http
    _by_address: dict[str, int] = field(default_factory=dict)
    _unauthenticated: OrderedDict[Admitted, str] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.unauthenticated_limit = max(1, min(self.unauthenticated_limit, self.limit // 2))

    @property
    def http_connections(self) -> int:
        # every request runs on a socket; an app driven without the socket
        # layer (embedded, tests over ASGI) counts its requests instead
        return max(self.http_sockets, self.http)

    @property
    def active(self) -> int:
        return self.native + self.http_connections

    @property
    def unauthenticated(self) -> int:
        return len(self._unauthenticated)

    def admit(self, member: Admitted, address: str, *, signed_in: bool, http: bool) -> str | None:
        """Count `member` in, making room if it must; the reason it is refused, or None."""
        if self.closing:
            self.refused += 1
            return "SHUTDOWN the server is stopping"
        while (reason := self._full(address, signed_in)) is not None:
            victim = self._oldest_unauthenticated(address if reason == "address" else None)
            if victim is None:
                self.refused += 1
                return self._refusal(reason, address)
            self.evicted += 1
            self.release(victim)
            victim.evict(
                "LIMIT closed to make room: it did not sign in, and the connection limit was reached"
            )
        self._addresses[member] = (address, http)
        self._by_address[address] = self._by_address.get(address, 0) + 1
        if not signed_in:
            self._unauthenticated[member] = address
        if http:
            self.http_sockets += 1
        else:
            self.native += 1
        return None

    def signed_in(self, member: Admitted) -> None:
        self._unauthenticated.pop(member, None)

    def release(self, member: Admitted) -> None:
        """Count `member` out (again is harmless)."""
        found = self._addresses.pop(member, None)
        if found is None:
            return
        address, http = found
        self._unauthenticated.pop(member, None)
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]
        if http:
            self.http_sockets -= 1
        else:
            self.native -= 1

    def _full(self, address: str, signed_in: bool) -> str | None:
        if self._by_address.get(address, 0) >= self.per_address_limit:
            return "address"
        if self.active >= self.limit:
            return "total"
        if not signed_in and len(self._unauthenticated) >= self.unauthenticated_limit:
            return "unauthenticated"
        return None

    def _oldest_unauthenticated(self, address: str | None) -> Admitted | None:
        for member, where in self._unauthenticated.items():
            if address is None or where == address:
                return member
        return None

    def _refusal(self, reason: str, address: str) -> str:
        if reason == "address":
            return (
                f"LIMIT {self._by_address.get(address, 0)} connections open from {address}, "
                f"the limit is {self.per_address_limit}"
            )
        if reason == "unauthenticated":
            return (
                f"LIMIT {len(self._unauthenticated)} connections not signed in, "
                f"the limit is {self.unauthenticated_limit}"
            )
        return f"LIMIT {self.active} connections open, the limit is {self.limit}"

    def statistics(self) -> dict[str, int]:
        return {
            "active_connections": self.active,
            "native_connections": self.native,
            "http_connections": self.http_connections,
            "http_requests": self.http,
            "unauthenticated_connections": len(self._unauthenticated),
            "connections_limit": self.limit,
            "connections_refused": self.refused,
            "connections_evicted": self.evicted,
            "connections_closed_oversize": self.oversize,
            **{f"connections_timed_out_{kind}": count for kind, count in self.timed_out.items()},
        }
