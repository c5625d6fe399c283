"""What `logq bench compare` asks of each system it measures.

A `System` is one broker (logq or a peer) reached through its usual Python
asyncio client. The workloads speak only this interface, so every system
runs the very same code around its own calls:

- `connect()` opens one client connection (a publisher, an idle or busy
  connection of the connections workload);
- `Conn.publish` sends a batch to one partition and returns once the system
  has acknowledged every message of it as durable;
- `consume` takes messages until `count` have been delivered and settled:
  ordered (one consumer, cumulative commit) or shared (competing workers
  acking each message), handing each batch's values to `on_batch`.
"""

from __future__ import annotations

import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

OnBatch = Callable[[Sequence[bytes]], None]
STAMP = struct.Struct("<q")


class PeerUnavailableError(Exception):
    """The system is not installed or not reachable: its results are skipped."""


@dataclass(frozen=True, slots=True)
class Queue:
    """A topic (stream, queue set, table) of `partitions` partitions."""

    name: str
    partitions: int


class Conn(ABC):
    """One client connection to a system."""

    @abstractmethod
    async def publish(self, queue: Queue, partition: int, values: Sequence[bytes]) -> None:
        """Send `values` to one partition; return once all are durable."""

    @abstractmethod
    async def close(self) -> None: ...


class System(ABC):
    name: str
    settings: str  # durability and client settings, printed with the results
    rest_url: str | None = None  # a REST base URL where the system has a REST publish

    @abstractmethod
    async def open(self) -> None:
        """Connect the admin connection; raise PeerUnavailableError if it can't."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def connect(self) -> Conn: ...

    @abstractmethod
    async def create(self, queue: Queue) -> None: ...

    @abstractmethod
    async def drop(self, queue: Queue) -> None: ...

    @abstractmethod
    async def consume(
        self, queue: Queue, count: int, *, ordered: bool, workers: int, on_batch: OnBatch | None
    ) -> None:
        """Take `count` messages, settling each (ordered: commit per batch)."""


def stamped(size: int) -> bytes:
    """A `size`-byte value carrying the time it was made (perf_counter_ns)."""
    return STAMP.pack(time.perf_counter_ns()) + b"x" * (size - STAMP.size)


def stamp_of(value: bytes) -> int:
    return int(STAMP.unpack_from(value)[0])
