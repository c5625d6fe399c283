"""Open connections across both listeners, counted for stats and bounded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ConnectionCounter:
    limit: int = 10_000
    native: int = 0
    http: int = 0
    refused: int = 0
    closing: bool = False  # the server is stopping: long-lived streams end

    @property
    def active(self) -> int:
        return self.native + self.http

    def statistics(self) -> dict[str, int]:
        return {
            "active_connections": self.active,
            "native_connections": self.native,
            "http_connections": self.http,
            "connections_limit": self.limit,
            "connections_refused": self.refused,
        }
