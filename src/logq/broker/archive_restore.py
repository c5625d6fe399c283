"""Restoring a topic from the archive onto a broker that does not hold it
(a broker that lost its disk, or a new one attached to the same store).

The store keeps, beside each partition's segment objects, numbered copies
of its manifest with the topic's settings and each group's settings and
committed position (archiver.py). A restore reads the newest copy of each
partition, creates the topic with those settings, starts each partition's
empty local log at the end of what is archived, gives it the manifest
(written durably as a state snapshot, so a restart keeps it), and makes
the groups again at their committed positions. Messages published after
the last archived segment were on the lost disk only: they are not in the
store, and the restored topic goes on from where the archive ends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from logq.archive.tiered_log import TieredLog
from logq.broker.archiving import BrokerArchive
from logq.errors import AlreadyExistsError, BadArgumentError, TopicNotFoundError

if TYPE_CHECKING:
    from logq.broker.broker import Broker

logger = logging.getLogger(__name__)


async def archived_topics(broker: Broker) -> dict[str, list[int]]:
    """The topics the store holds manifests of, with their partitions."""
    archive = _archive(broker)
    found = await archive.archiver.archived_topics()
    return {topic: sorted(versions) for topic, versions in sorted(found.items())}


async def restore_topic(broker: Broker, name: str) -> dict[str, Any]:
    """Make `name` again from the store (see the module doc); returns what
    was restored per partition."""
    # the archive's modules load with the broker's archive (archiving.py)
    from logq.archive.archiver import restored_state  # noqa: PLC0415
    from logq.archive.manifest import Manifest  # noqa: PLC0415

    archive = _archive(broker)
    if name in broker.topics:
        raise AlreadyExistsError(f"topic {name!r} exists on this broker: delete it first")
    versions = (await archive.archiver.archived_topics()).get(name)
    if not versions:
        raise TopicNotFoundError(f"the archive holds no topic {name!r}")
    documents = {
        index: await archive.archiver.manifest_copy(name, index, version)
        for index, version in sorted(versions.items())
    }
    first = documents[min(documents)]
    settings = first.get("settings")
    if not isinstance(settings, dict):
        raise BadArgumentError(f"the archive's copy of {name!r} has no topic settings")
    declared = [d.get("partitions") for d in documents.values()]
    count = max([max(documents) + 1, *(n for n in declared if isinstance(n, int))])
    topic = await broker.create_topic(name, {**settings, "partitions": count, "archive": True})
    restored: dict[str, Any] = {"topic": name, "partitions": []}
    for index, document in documents.items():
        state = restored_state(document)
        manifest = Manifest.restored(state)  # a copy names no object retiring
        partition = topic.partitions[index]
        log = partition.log
        assert isinstance(log, TieredLog)
        end = manifest.archived_end or 0
        if end > 0:
            local = log.local
            await broker.run(lambda local=local, end=end: local.truncate_fully_and_start_at(end))  # type: ignore[misc]
        archived = archive.archiver.get(name, index)
        assert archived is not None
        archived.manifest = manifest
        await broker.state_writer.snapshot(topic, partition)
        restored["partitions"].append(
            {"partition": index, "archived_from": manifest.first_offset, "archived_to": end}
        )
    await _restore_groups(broker, name, documents)
    logger.info("topic %r restored from the archive (%d partitions)", name, len(documents))
    return restored


async def _restore_groups(
    broker: Broker, name: str, documents: dict[int, dict[str, object]]
) -> None:
    groups: dict[str, dict[str, Any]] = {}
    positions: dict[str, dict[int, int]] = {}
    for index, document in documents.items():
        found = document.get("groups")
        if not isinstance(found, dict):
            continue
        for group, info in found.items():
            if not isinstance(info, dict):
                continue
            settings = info.get("settings")
            if isinstance(settings, dict):
                groups.setdefault(str(group), settings)
            committed = info.get("committed")
            if isinstance(committed, int):
                positions.setdefault(str(group), {})[index] = committed
    for group, settings in groups.items():
        await broker.put_group(name, group, settings)
        for index, offset in positions.get(group, {}).items():
            await broker.seek(name, group, {"offset": offset, "partition": index})


def _archive(broker: Broker) -> BrokerArchive:
    if broker.archive is None:
        raise BadArgumentError("this broker has no archive (start it with --archive URL)")
    return broker.archive
