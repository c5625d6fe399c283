"""Upgrade in place: a data directory written by an earlier release opens
with this code and holds everything its manifest says.

`tests/fixtures/datadir-release-<N>.tar.gz` and its manifest `.json` are made
by `scripts/make_upgrade_fixture.py` with the release named (see
docs/operations.md, "Upgrades"); they are kept as made and never regenerated
by a later release: this test is what proves that a release migrates them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, Message, OutgoingMessage
from logq.broker.settings import TopicSettings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASES = sorted(
    int(path.stem.rpartition("-")[2]) for path in FIXTURES.glob("datadir-release-*.json")
)
RECEIVE_MAX = 1000
CONSUMER = "upgraded"


def _unpack(release: int, into: Path) -> tuple[Path, dict[str, Any]]:
    stem = FIXTURES / f"datadir-release-{release}"
    manifest: dict[str, Any] = json.loads(stem.with_suffix(".json").read_text())
    copy = into / "fixture.tar.gz"
    shutil.copyfile(stem.with_suffix(".tar.gz"), copy)  # the fixture itself stays untouched
    directory = into / "data"
    with tarfile.open(copy) as tar:
        tar.extractall(directory, filter="data")
    return directory, manifest


def _stored(message: Message) -> dict[str, Any]:
    """A message in the manifest's shape."""
    return {
        "id": message.id,
        "partition": message.partition,
        "offset": message.offset,
        "key": None if message.key is None else base64.b64encode(message.key).decode(),
        "value": None if message.value is None else base64.b64encode(message.value).decode(),
        "headers": message.headers,
        "priority": message.priority,
        "timestamp_ms": message.timestamp_ms,
    }


async def _receive_all(broker: Broker, topic: str, group: str) -> dict[str, int]:
    """Everything the group delivers now (id -> attempt), acked at once so it
    does not come back."""
    found: dict[str, int] = {}
    while True:
        batch = await broker.receive(topic, group, CONSUMER, max_messages=RECEIVE_MAX)
        if not batch:
            return found
        for message in batch:
            assert message.id not in found, f"{message.id} delivered twice"
            found[message.id] = message.attempt
        await broker.ack(topic, group, [m.id for m in batch])


def _check_storage(broker: Broker, manifest: dict[str, Any]) -> None:
    for name, expected in manifest["topics"].items():
        described = broker.describe_topic(name)
        config = dict(described["config"])
        # settings this release added keep their defaults on an older topic
        added = {k: config.pop(k) for k in list(config) if k not in expected["config"]}
        assert added == {k: v for k, v in TopicSettings().as_dict().items() if k in added}, name
        assert config == expected["config"], name
        assert [p["next_offset"] for p in described["partitions"]] == expected["next_offsets"]
    for key, expected in manifest["groups"].items():
        group = broker.describe_group(expected["topic"], expected["group"])
        assert group["settings"] == expected["settings"], key
        partitions = [
            {k: dict(p)[k] for k in expected["partitions"][0]} for p in group["partitions"]
        ]
        assert partitions == expected["partitions"], key
        assert (group["in_flight"], group["lag"]) == (
            expected["in_flight"],
            expected["lag"],
        ), key


async def _check_messages(broker: Broker, manifest: dict[str, Any]) -> None:
    for topic, messages in manifest["messages"].items():
        for expected in messages:
            assert _stored(await broker.get_message(expected["id"])) == expected
        partitions = len(manifest["topics"][topic]["next_offsets"])
        replayed = [
            _stored(m)
            for p in range(partitions)
            for m in await broker.read_messages(topic, p, offset=0, limit=RECEIVE_MAX)
        ]
        assert replayed == messages, topic


async def _check_dead_letters(broker: Broker, manifest: dict[str, Any]) -> None:
    for topic, expected in manifest["dead_letters"].items():
        letters = [
            {
                "origin_id": m.headers["logq-origin-id"],
                "group": m.headers["logq-group"],
                "attempts": int(m.headers["logq-attempts"]),
                "reason": m.headers["logq-reason"],
            }
            for m in await broker.dlq_messages(topic)
        ]
        assert letters == expected, topic


async def _check_publishing(broker: Broker, manifest: dict[str, Any]) -> None:
    """A known dedup id within its window, and a retried idempotent batch,
    store nothing and answer with the first result."""
    for name in manifest["topics"]:
        before = broker.describe_topic(name)["messages"]
        for item in manifest["dedup"] if name == "payments" else []:
            value = base64.b64decode(item["value"])
            (again,) = await broker.publish(
                name, [OutgoingMessage(value, key=b"acct-1", dedup_id=item["dedup_id"])]
            )
            assert again.id == item["id"]
        for item in manifest["producer"] if name == "payments" else []:
            batch = base64.b64decode(item["batch"])
            retried = await broker.publish_batch(name, item["partition"], batch)
            assert retried.duplicate
            assert (retried.base_offset, retried.last_offset) == (
                item["base_offset"],
                item["last_offset"],
            )
        assert broker.describe_topic(name)["messages"] == before, name


async def _check_deliveries(broker: Broker, clock: FakeClock, manifest: dict[str, Any]) -> None:
    """Now: what is due now; then past every lease deadline and due time (and
    the backoff an expired lease earns): exactly the rest, each attempt one
    more than the deliveries the fixture made."""
    groups = manifest["groups"].values()
    for expected in groups:
        now = await _receive_all(broker, expected["topic"], expected["group"])
        assert now == expected["receive_now"], expected["group"]
    latest = max(expected["latest_deadline_ms"] for expected in groups)
    clock.advance(latest - clock.now_ms() + 1)
    await broker.tick()  # leases past their deadline go back, after their backoff
    backoff_max = max(
        (expected["settings"]["backoff"] or {"max_ms": 0})["max_ms"] for expected in groups
    )
    clock.advance(backoff_max + 1)
    await broker.tick()
    for expected in groups:
        later = await _receive_all(broker, expected["topic"], expected["group"])
        assert later == expected["receive_later"], expected["group"]
        described = broker.describe_group(expected["topic"], expected["group"])
        assert (described["lag"], described["in_flight"]) == (0, 0)


@pytest.mark.parametrize("release", RELEASES)
def test_a_data_directory_of_an_earlier_release_opens_in_place(
    release: int, tmp_path: Path
) -> None:
    directory, manifest = _unpack(release, tmp_path)
    assert manifest["release"] == release
    assert manifest["journal_records_after_snapshot"] > 0  # recovery replays the journal

    async def main() -> None:
        clock = FakeClock(manifest["end_ms"])
        broker = await Broker.open(BrokerConfig(data_dir=directory), clock=clock)
        try:
            _check_storage(broker, manifest)
            for message_id, events in manifest["traces"].items():
                assert (await broker.trace(message_id))["events"] == events, message_id
            await _check_messages(broker, manifest)
            await _check_dead_letters(broker, manifest)
            await _check_publishing(broker, manifest)
            await _check_deliveries(broker, clock, manifest)
        finally:
            await broker.close()

    asyncio.run(main())


def test_there_is_a_fixture_of_each_release() -> None:
    assert RELEASES, f"no upgrade fixture in {FIXTURES}"
    assert list(range(1, len(RELEASES) + 1)) == RELEASES  # none missing between
