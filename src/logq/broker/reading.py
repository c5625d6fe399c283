"""Reading without a group: raw batches, peeks, replays by offset or time.

Nothing here changes delivery state. Every read stops at the partition's
readable end; an audit read (`include_deleted`) of an archived topic
reaches below the topic's start into what its archive keeps.
"""

from __future__ import annotations

from logq.broker.core import Core
from logq.broker.errors import from_log_error
from logq.broker.messages import Message, MessageId, message_from_record
from logq.errors import BadArgumentError, MessageNotFoundError
from logq.log import LogError, decode_batch
from logq.log.batch import iter_headers

READ_CHUNK_BYTES = 1 << 20
PEEK_LIMIT_MAX = 10_000


class Reader:
    """Reads stored messages for peeks, replays and lookups."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def read_raw(self, topic_name: str, partition: int, offset: int, max_bytes: int) -> bytes:
        """Stored batches from `offset` on, as they lie (whole batches), up
        to the partition's readable end."""
        stored = self._core.topic(topic_name).partition(partition)
        log = stored.log
        if stored.readable_end() <= offset <= log.next_offset:
            return b""  # nothing readable there yet: as at the end, the reader comes back
        try:
            result = await self._core.run(lambda: log.read(offset, max_bytes))
        except LogError as error:
            raise from_log_error(error) from None
        return result.data

    async def read_messages(
        self,
        topic_name: str,
        partition: int | None = None,
        *,
        offset: int | None = None,
        from_time_ms: int | None = None,
        to_time_ms: int | None = None,
        limit: int = 100,
        include_deleted: bool = False,
    ) -> list[Message]:
        """Peek or replay: by offset or time window [from, to), changing nothing;
        `include_deleted` reaches below the topic's start into what its archive
        keeps for audit (archive_retention)."""
        topic = self._core.topic(topic_name)
        archiver = self._core.archive.archiver if self._core.archive is not None else None
        audit = include_deleted and archiver is not None and topic.settings.archive
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= PEEK_LIMIT_MAX
        ):
            raise BadArgumentError(f"limit must be within 1..{PEEK_LIMIT_MAX}, got {limit!r}")
        indexes = (
            [topic.partition(partition).index]
            if partition is not None
            else [p.index for p in topic.partitions]
        )
        found: list[Message] = []
        for index in indexes:
            log = topic.partitions[index].log
            floor = log.first_offset
            if audit and archiver is not None:
                floor = archiver.audit_start(topic_name, index, floor)
            start = offset
            if start is None and from_time_ms is not None:
                start = await self._offset_for_time(topic_name, index, from_time_ms, audit)
                if start is None:
                    continue
            if start is None:
                start = floor
            start = max(start, floor)
            found.extend(
                await self._collect(
                    topic_name, index, start, limit, from_time_ms, to_time_ms, audit=audit
                )
            )
        found.sort(
            key=lambda m: (m.timestamp_ms, m.partition, m.offset) if partition is None else m.offset
        )
        return found[:limit]

    async def _collect(
        self,
        topic_name: str,
        partition: int,
        start: int,
        limit: int,
        from_time_ms: int | None,
        to_time_ms: int | None,
        *,
        audit: bool = False,
    ) -> list[Message]:
        end = self._core.topic(topic_name).partitions[partition].readable_end()
        messages: list[Message] = []
        offset = start
        log = self._core.topic(topic_name).partitions[partition].log
        while len(messages) < limit and offset < end:
            data: bytes | None = None
            if audit and self._core.archive is not None and offset < log.first_offset:
                data = await self._core.archive.archiver.read(
                    topic_name, partition, offset, READ_CHUNK_BYTES, include_deleted=True
                )
            if data is None:
                data = await self.read_raw(topic_name, partition, offset, READ_CHUNK_BYTES)
            if not data:
                break
            for position, header in iter_headers(data):
                for record in decode_batch(data, position).records():
                    if record.offset < offset:
                        continue
                    if to_time_ms is not None and record.timestamp >= to_time_ms:
                        continue
                    if from_time_ms is not None and record.timestamp < from_time_ms:
                        continue
                    messages.append(
                        message_from_record(
                            topic_name, partition, record, header.lane, 0, self._core.lanes
                        )
                    )
                offset = header.next_offset
                if len(messages) >= limit:
                    break
        return messages[:limit]

    async def _offset_for_time(
        self, topic_name: str, index: int, timestamp_ms: int, audit: bool
    ) -> int | None:
        log = self._core.topic(topic_name).partitions[index].log
        if audit and self._core.archive is not None:
            archived = self._core.archive.archiver.get(topic_name, index)
            if archived is not None:
                found = await archived.offset_for_time(timestamp_ms, include_deleted=True)
                if found is not None and found < log.first_offset:
                    return found
        return await self._core.run(lambda: log.offset_for_time(timestamp_ms))

    async def get_message(self, message_id: str) -> Message:
        parsed = MessageId.parse(message_id)
        topic = self._core.topics.get(parsed.topic)
        if topic is None or not 0 <= parsed.partition < len(topic.partitions):
            raise MessageNotFoundError(f"no message {message_id!r}")
        stored = topic.partitions[parsed.partition]
        if not stored.log.first_offset <= parsed.offset < stored.readable_end():
            raise MessageNotFoundError(f"no message {message_id!r} (not stored or past retention)")
        found = await self._collect(parsed.topic, parsed.partition, parsed.offset, 1, None, None)
        if not found or found[0].offset != parsed.offset:
            raise MessageNotFoundError(f"no message {message_id!r}")
        return found[0]
