"""The broker's metadata records: the metadata.json of earlier releases is
split into records (crash-safe at every step), a damaged record leaves out
its topic or group and nothing else, and its name is not reused over it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.metadata import MetadataRecords
from logq.broker.settings import GroupMode
from logq.errors import BadArgumentError, CorruptError, StorageError
from logq.log import FileBackend, encode_batch
from logq.log.metadata_slots import escape_segment
from logq.server.storage_metrics import StorageCollector
from tests.broker.fake import run

# written by the broker before per-key records (the whole-metadata document)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "metadata-json-0.1.json"
TOPICS = ["events", "jobs", "orders", "orders.dead"]
GROUPS = [("events", "all"), ("orders", "audit"), ("orders", "billing")]


class CrashError(Exception):
    """Power went here."""


def _legacy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    shutil.copy(FIXTURE, directory / "metadata.json")
    return directory


async def _assert_fixture_content(broker: Broker) -> None:
    assert sorted(broker.topics) == TOPICS
    orders = broker.topics["orders"].settings
    assert (orders.partitions, orders.max_deliveries, orders.dlq) == (3, 3, "orders.dead")
    assert orders.retention_ms == 7 * 86_400_000
    assert broker.topics["events"].settings.retention_bytes == 1_048_576
    assert len(broker.topics["orders"].partitions) == 3
    assert sorted((g.topic, g.name) for g in broker.groups.values()) == GROUPS
    assert broker.group("orders", "billing").settings.mode is GroupMode.ORDERED
    assert broker.group("events", "all").settings.auto_ack
    assert "orders.dead" in broker._core.dead_letter_topics.made


def test_metadata_json_of_an_earlier_release_becomes_records(tmp_path: Path) -> None:
    directory = _legacy_dir(tmp_path)
    config = BrokerConfig(data_dir=directory)

    async def migrated(broker: Broker, clock: FakeClock) -> None:
        await _assert_fixture_content(broker)
        assert not (directory / "metadata.json").exists()
        assert (directory / "meta" / "topic" / "orders.dead.a").is_file()
        assert (directory / "meta" / "group" / "orders" / "billing.a").is_file()
        await broker.delete_topic("orders")  # the DLQ it made stays closed to clients
        with pytest.raises(BadArgumentError, match="dead-letter topic"):
            await broker.publish_batch("orders.dead", 0, b"")

    run(migrated, config)

    async def reopened(broker: Broker, clock: FakeClock) -> None:
        assert sorted(broker.topics) == ["events", "jobs", "orders.dead"]
        assert sorted((g.topic, g.name) for g in broker.groups.values()) == [("events", "all")]
        with pytest.raises(BadArgumentError, match="dead-letter topic"):
            await broker.publish_batch("orders.dead", 0, b"")

    run(reopened, config)


@pytest.mark.parametrize("puts_before_crash", range(8))
def test_a_split_cut_short_at_any_step_is_done_again(
    tmp_path: Path, puts_before_crash: int
) -> None:
    directory = _legacy_dir(tmp_path)

    class CrashingBackend(FileBackend):
        puts = 0

        def put(self, key: str, value: bytes, expected_version: int | None) -> int:
            if self.puts == puts_before_crash:
                raise CrashError
            self.puts += 1
            return super().put(key, value, expected_version)

        def retire_legacy_metadata(self) -> None:
            raise CrashError  # 7 records are all written: the crash comes before the removal

    records = MetadataRecords(CrashingBackend(directory), run=None)  # type: ignore[arg-type]
    with pytest.raises(CrashError):
        records.load()
    assert (directory / "metadata.json").exists()
    written = FileBackend(directory).list("")
    assert len(written) == min(puts_before_crash, 7)

    async def opened(broker: Broker, clock: FakeClock) -> None:
        await _assert_fixture_content(broker)
        assert not (directory / "metadata.json").exists()

    run(opened, BrokerConfig(data_dir=directory))
    run(opened, BrokerConfig(data_dir=directory))
    assert FileBackend(directory).get("topic/jobs") is not None
    versions = [FileBackend(directory).get(key) for key in FileBackend(directory).list("")]
    assert all(found is not None and found[0] == 1 for found in versions)  # nothing written twice


def test_an_unreadable_metadata_json_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    directory = _legacy_dir(tmp_path)
    data = bytearray((directory / "metadata.json").read_bytes())
    data[0] = ord("x")
    (directory / "metadata.json").write_bytes(bytes(data))
    with pytest.raises(StorageError, match=r"metadata.json cannot be read .*backup"):
        run(_never, BrokerConfig(data_dir=directory))


async def _never(broker: Broker, clock: FakeClock) -> None:
    raise AssertionError("the broker opened")


def _damage_record(directory: Path, *segments: str) -> None:
    parent = directory.joinpath("meta", *(escape_segment(s) for s in segments[:-1]))
    for suffix in (".a", ".b"):
        path = parent / f"{escape_segment(segments[-1])}{suffix}"
        if path.exists():
            data = bytearray(path.read_bytes())
            data[-1] ^= 0x01  # one changed byte
            path.write_bytes(bytes(data))


def test_a_damaged_record_leaves_out_its_topic_and_serves_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = BrokerConfig(data_dir=tmp_path)

    async def made(broker: Broker, clock: FakeClock) -> None:
        for name in ("orders", "payments"):
            await broker.create_topic(name, {"partitions": 2})
            await broker.put_group(name, "workers", {"mode": "ordered"})
            await broker.publish_batch(name, 1, encode_batch([b"kept"]))
        await broker.update_topic("orders", {"max_deliveries": 9})  # two slots written
        await broker.put_group("payments", "audit")

    run(made, config)
    _damage_record(tmp_path, "topic", "orders")
    _damage_record(tmp_path, "group", "payments", "audit")
    caplog.set_level(logging.ERROR)

    async def damaged(broker: Broker, clock: FakeClock) -> None:
        assert sorted(broker.topics) == ["payments"]
        assert sorted(g.key for g in broker.groups.values()) == ["payments/workers"]
        result = await broker.publish_batch("payments", 0, encode_batch([b"still serving"]))
        assert result.base_offset == 0 and (tmp_path / "topics" / "payments" / "0").is_dir()
        # the damaged names are not made again over their records and files
        with pytest.raises(CorruptError, match="damaged"):
            await broker.create_topic("orders", {"partitions": 1})
        with pytest.raises(CorruptError, match="damaged"):
            await broker.put_group("payments", "audit")
        assert "payments/audit" not in broker.groups
        assert (tmp_path / "topics" / "orders" / "1").is_dir()
        families = {f.name: f for f in StorageCollector(broker).collect()}
        assert families["logq_metadata_records_damaged"].samples[0].value == 2
        assert families["logq_metadata_slots_damaged"].samples[0].value == 3

    run(damaged, config)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "metadata record 'topic/orders' is damaged" in logged
    assert "serves without their topics and groups" in logged
    # the group record of the damaged topic is kept for when it is restored
    assert FileBackend(tmp_path).list("group/orders/") == ["group/orders/workers"]


def test_group_records_of_a_topic_whose_delete_was_cut_short_are_removed(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path)

    async def made(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("orders", {"partitions": 1})
        await broker.put_group("orders", "workers")

    run(made, config)
    # as if a delete went as far as the topic record: the groups' remain
    backend = FileBackend(tmp_path)
    found = backend.get("topic/orders")
    assert found is not None
    backend.delete("topic/orders", found[0])

    async def reopened(broker: Broker, clock: FakeClock) -> None:
        assert broker.topics == {} and broker.groups == {}
        await broker.create_topic("orders", {"partitions": 1})
        assert broker.groups == {}  # the old group does not come back with the name

    run(reopened, config)
    assert FileBackend(tmp_path).list("group/") == []


def test_memory_brokers_keep_records_in_their_backend() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("orders", {"partitions": 1})
        await broker.put_group("orders", "workers")
        await broker.update_topic("orders", {"partitions": 2})
        backend = broker.backend
        assert backend.list("") == ["group/orders/workers", "topic/orders"]
        found = backend.get("topic/orders")
        assert found is not None and found[0] == 2
        assert json.loads(found[1])["settings"]["partitions"] == 2
        await broker.delete_topic("orders")
        assert backend.list("") == []

    run(scenario, BrokerConfig())
