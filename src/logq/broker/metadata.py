"""The broker's settings as metadata records, one per topic and per group.

    topic/<topic>            {"settings": {...}, "dead_letter_topic": bool}
    group/<topic>/<group>    the group's settings
    format/<name>            {}: the data directory's state is kept in this
                             form (format/dedup-ids: state snapshots hold
                             the dedup ids, see broker/dedup.py)

each JSON, kept by the storage backend (log/backend.py) with a version. A
change writes only the record it changes, so a create costs the same at 10
or 10,000 topics, and concurrent changes of different records run side by
side; changes of one record take turns, each writing the state current
when its turn comes (a record whose subject is gone is deleted).

`dead_letter_topic` marks a topic the broker made as some topic's dead-letter
topic: closed to clients, also after its origin topic is deleted.

On start, `load` reads every record. A record that fails its checks in both
slots, or that verifies but does not decode, is damaged: its topic or group
is left out and reported, and the record is left as it is (the name cannot
be used until an operator restores or removes it: docs/operations.md). A
group record whose topic record is gone (a topic delete cut short by a
crash: the topic record goes first) is deleted.

A data directory of an earlier release holds one `metadata.json`: `load`
splits it into records (a put per topic and group, each durable, skipped
when the record already holds that value), and only then removes it. A
crash part way leaves metadata.json in place and the split is done again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from logq.broker.errors import from_log_error
from logq.errors import CorruptError, StorageError
from logq.log.backend import StorageBackend
from logq.log.errors import LogError, MetadataDamagedError

logger = logging.getLogger(__name__)
T = TypeVar("T")
TOPIC_PREFIX = "topic/"
GROUP_PREFIX = "group/"
FORMAT_PREFIX = "format/"
DEDUP_IDS_FORMAT = f"{FORMAT_PREFIX}dedup-ids"


def topic_record_key(topic: str) -> str:
    return f"{TOPIC_PREFIX}{topic}"


def group_record_key(topic: str, group: str) -> str:
    return f"{GROUP_PREFIX}{topic}/{group}"


def encode_record(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Recovered:
    """What the records held at start."""

    topics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> settings
    dead_letter_topics: set[str] = field(default_factory=set)
    groups: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)  # record keys
    formats: set[str] = field(default_factory=set)  # format/ record keys present


class MetadataRecords:
    """The broker's records in a backend, with the version of each it wrote."""

    def __init__(
        self, backend: StorageBackend, run: Callable[[Callable[[], Any]], Awaitable[Any]]
    ) -> None:
        self.backend = backend
        self._run = run
        self._versions: dict[str, int] = {}
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}
        self.damaged: set[str] = set()  # record keys found damaged: names not to reuse

    # -- start ------------------------------------------------------------------------

    def load(self) -> Recovered:
        """Every record (blocking: before the broker serves)."""
        recovered = Recovered()
        legacy = self.backend.legacy_metadata()
        if legacy is not None:
            self._split_legacy(legacy)
        for key in self.backend.list(TOPIC_PREFIX):
            document = self._get(key, recovered)
            if document is None:
                continue
            name = key[len(TOPIC_PREFIX) :]
            settings = document.get("settings")
            if not isinstance(settings, dict):
                self._note_damaged(key, recovered, "no settings in the record")
                continue
            recovered.topics[name] = settings
            if document.get("dead_letter_topic") is True:
                recovered.dead_letter_topics.add(name)
        for key in self.backend.list(GROUP_PREFIX):
            topic, _, group = key[len(GROUP_PREFIX) :].partition("/")
            if not group:
                continue
            if topic not in recovered.topics and topic_record_key(topic) not in self.damaged:
                self._delete_orphan(key)
                continue
            document = self._get(key, recovered)
            if document is not None:
                recovered.groups[(topic, group)] = document
        for key in self.backend.list(FORMAT_PREFIX):
            try:
                found = self.backend.get(key)
            except MetadataDamagedError as error:
                # read as absent: what it marks is done again, then it is rewritten
                logger.warning("metadata record %r is damaged (%s)", key, error)
                continue
            if found is not None:
                self._versions[key] = found[0]
                recovered.formats.add(key)
        return recovered

    def _get(self, key: str, recovered: Recovered) -> dict[str, Any] | None:
        try:
            found = self.backend.get(key)
        except MetadataDamagedError as error:
            self._note_damaged(key, recovered, str(error))
            return None
        if found is None:
            return None
        version, value = found
        self._versions[key] = version
        try:
            document = json.loads(value)
        except ValueError as error:
            self._note_damaged(key, recovered, f"not JSON: {error}")
            return None
        if not isinstance(document, dict):
            self._note_damaged(key, recovered, "not a JSON object")
            return None
        return document

    def _note_damaged(self, key: str, recovered: Recovered, reason: str) -> None:
        self.damaged.add(key)
        recovered.damaged.append(key)
        self._versions.pop(key, None)
        logger.error(
            "metadata record %r is damaged (%s): its %s is left out until the record is "
            "restored or removed (docs/operations.md, damaged metadata records)",
            key,
            reason,
            "topic" if key.startswith(TOPIC_PREFIX) else "group",
        )

    def note_unreadable(self, key: str, reason: str) -> None:
        """A record that verified but whose settings the broker refuses: damaged too."""
        self._note_damaged(key, Recovered(), reason)

    def check_usable(self, key: str) -> None:
        """CORRUPT for a record found damaged: its name stays taken until an
        operator restores or removes the record (nothing overwrites it)."""
        if key in self.damaged:
            raise CorruptError(
                f"the metadata record {key!r} is damaged: the name cannot be used until it "
                "is restored or removed (docs/operations.md, damaged metadata records)"
            )

    def _delete_orphan(self, key: str) -> None:
        try:
            found = self.backend.get(key)
            if found is not None:
                self.backend.delete(key, found[0])
        except MetadataDamagedError:
            return  # left for an operator, as every damaged record
        logger.info("metadata record %r of a deleted topic removed", key)

    def _split_legacy(self, legacy: bytes) -> None:
        """metadata.json as records, then removed (idempotent: see the module doc)."""
        try:
            document = json.loads(legacy)
            topics = document.get("topics", {})
            groups = document.get("groups", {})
            dead_letter_topics = set(document.get("dead_letter_topics", []))
            assert isinstance(topics, dict) and isinstance(groups, dict)
        except (ValueError, AttributeError, TypeError, AssertionError) as error:
            raise StorageError(
                f"metadata.json cannot be read ({error}): restore it from a backup, or move "
                "it away to start without the topics and groups it names"
            ) from None
        for name, settings in topics.items():
            record = {"settings": settings, "dead_letter_topic": name in dead_letter_topics}
            self._put_once(topic_record_key(name), record)
        for group_key, settings in groups.items():
            topic, _, group = str(group_key).partition("/")
            self._put_once(group_record_key(topic, group), settings)
        self.backend.retire_legacy_metadata()
        logger.info(
            "metadata.json split into records: %d topics, %d groups", len(topics), len(groups)
        )

    def _put_once(self, key: str, document: dict[str, Any]) -> None:
        value = encode_record(document)
        found = self.backend.get(key)
        if found is None:
            self.backend.put(key, value, None)
        elif found[1] != value:
            self.backend.put(key, value, found[0])

    # -- changes ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        lock, users = self._turns.get(key, (asyncio.Lock(), 0))
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def sync(self, key: str, document_of: Callable[[], dict[str, Any] | None]) -> None:
        """Make the record `key` hold `document_of()` (None: no record), as the
        state is when this change's turn comes; returns once durable."""
        async with self._turn(key):
            document = document_of()
            version = self._versions.get(key)
            try:
                if document is None:
                    if version is not None:
                        await self._run(lambda: self.backend.delete(key, version))
                        del self._versions[key]
                    return
                value = encode_record(document)
                self._versions[key] = await self._run(lambda: self.backend.put(key, value, version))
            except LogError as error:
                raise from_log_error(error) from None
