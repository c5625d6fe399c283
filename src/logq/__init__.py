"""logq: a durable message broker.

A topic is a partitioned, append-only log (replay by offset or time) delivered
with queue semantics (per-message ack, leases, retries, dead letters).
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logq.client import AsyncClient, Client
    from logq.embedded import Broker

__all__ = ["AsyncClient", "Broker", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import logq.log` stays light, and the layers
    # below the facade never load the client.
    if name in ("Client", "AsyncClient"):
        from logq import client  # noqa: PLC0415

        return getattr(client, name)
    if name == "Broker":
        from logq.embedded import Broker  # noqa: PLC0415

        return Broker
    raise AttributeError(f"module 'logq' has no attribute {name!r}")
