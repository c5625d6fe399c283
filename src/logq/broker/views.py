"""What the broker answers when asked to describe itself, as typed views.

Each view is a `TypedDict`: the front ends send it as it is (JSON over REST,
the native protocol's map), and the type checker holds every producer and
reader of a field to its name and type.
"""

from __future__ import annotations

from typing import Any, TypedDict


class TopicPartitionView(TypedDict, total=False):
    partition: int
    role: str  # what this broker is for the partition: "leader" on a single node
    first_offset: int
    last_offset: int
    next_offset: int
    messages: int
    bytes: int
    segments: int
    # an archived partition: where its local disk starts, what the archive holds
    local_first_offset: int
    archived_from: int | None
    archived_to: int | None
    pending: int
    in_flight: int


class DamageView(TypedDict):
    partition: int
    start: int
    end: int
    reason: str


class TopicView(TypedDict):
    name: str
    config: dict[str, Any]
    partitions: list[TopicPartitionView]
    messages: int
    bytes: int
    pending: int
    in_flight: int
    acked: int
    failed: int
    dead_lettered: int
    in_dlq: int
    groups: list[str]
    published: int
    damaged: list[DamageView]
    damaged_offsets: int


class GroupPartitionView(TypedDict):
    partition: int
    committed: int
    next_offset: int
    log_end: int
    lag: int
    in_flight: int
    pending_redelivery: int
    owner: str | None
    end_offset: int | None


class GroupView(TypedDict):
    topic: str
    group: str
    settings: dict[str, Any]
    members: list[dict[str, Any]]
    assignment: dict[str, list[int]]
    generation: int
    rebalances: list[dict[str, Any]]
    partitions: list[GroupPartitionView]
    lag: int
    in_flight: int
    counts: dict[str, int]
    lifecycle: dict[str, Any]


class MemberView(TypedDict):
    generation: int
    member: str
    mode: str
    session_timeout_ms: int | None
    partitions: list[int]
    revoking: list[int]
    incoming: list[int]


class StatsView(TypedDict):
    queues: dict[str, int]
    topics: int
    groups: int
    messages_in: int
    messages_out: int


class ArchiveStatusView(TypedDict, total=False):
    archive: str | None
    partitions: list[dict[str, Any]]
    uploaded_segments: int
    uploaded_bytes: int
    upload_failures: int
    remote_reads: int
    remote_read_bytes: int
    cache_hits: int
    cache_misses: int
    damaged_reads: int
    unavailable_reads: int
