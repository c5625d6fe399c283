"""logq: a durable message broker.

A topic is a partitioned, append-only log (replay by offset or time) delivered
with queue semantics (per-message ack, leases, retries, dead letters).
"""

__version__ = "0.1.0"
