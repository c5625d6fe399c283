"""A redrive interrupted between its steps is finished exactly once by the
next start: the message is back in its group once, its letter is out of the
DLQ once, never both, never neither. The crash is a commit that writes what
went to the other partitions' state logs and then dies before the DLQ's
settle (or before the hand-back), as a SIGKILL between two file writes can."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.messages import OutgoingMessage
from logq.log import FsyncPolicy, LogConfig
from logq.state.delivery import PartitionDelivery
from logq.state.events import Event, Redriven, Settled
from tests.broker.fake import run


class CrashError(Exception):
    """Stands for the process dying at this point."""


def _config(
    tmp_path: Path, fault_hook: Callable[[str], Awaitable[None]] | None = None
) -> BrokerConfig:
    return BrokerConfig(
        data_dir=tmp_path / "data",
        log=LogConfig(fsync=FsyncPolicy.ALWAYS),
        fault_hook=fault_hook,
    )


def _dlq_settle(event: Event) -> bool:
    return isinstance(event, Settled) and event.group.endswith("/~dlq")


def _crash_at(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, dies: Callable[[Event], bool]
) -> None:
    """From now on, a commit holding an event for which `dies` is true writes
    its other events (those state logs' writes landed) and then crashes."""
    commit = broker._commit.commit

    async def crashing(events: Sequence[Event], *, durable: bool = True) -> None:
        if any(dies(event) for event in events):
            await commit([e for e in events if not dies(e)], durable=durable)
            raise CrashError
        await commit(events, durable=durable)

    monkeypatch.setattr(broker._commit, "commit", crashing)


async def _dead_letter_one(broker: Broker) -> None:
    await broker.create_topic("t", {"partitions": 2})
    await broker.put_group("t", "g", {"visibility_timeout": "30s"})
    await broker.put_group("t", "other", {})
    await broker.publish("t", [OutgoingMessage(b"bad", partition=1)])
    (message,) = await broker.receive("t", "g", "c1", max_messages=1)
    assert await broker.reject("t", "g", [message.id], reason="bad input") == 1
    (taken,) = await broker.receive("t", "other", "c2", max_messages=1)
    assert await broker.ack("t", "other", [taken.id]) == 1


async def _back_once(broker: Broker, clock: FakeClock) -> None:
    """The message is in `g` once more, the DLQ empty, `other` untouched."""
    assert await broker.dlq_messages("t") == []
    (back,) = await broker.receive("t", "g", "c1", max_messages=10)
    assert back.value == b"bad" and back.attempt == 1
    assert await broker.ack("t", "g", [back.id]) == 1
    await _nothing_more(broker, clock)


async def _nothing_more(broker: Broker, clock: FakeClock) -> None:
    clock.advance(600_000)
    await broker.tick()
    assert await broker.receive("t", "g", "c1", max_messages=10) == []
    assert await broker.receive("t", "other", "c2", max_messages=10) == []
    assert await broker.dlq_messages("t") == []
    for group in ("g", "other"):
        described = broker.describe_group("t", group)
        assert described["lag"] == 0 and described["in_flight"] == 0


def test_a_crash_after_the_hand_back_settles_the_letter_at_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def before(broker: Broker, clock: FakeClock) -> None:
        await _dead_letter_one(broker)
        _crash_at(broker, monkeypatch, _dlq_settle)
        with pytest.raises(CrashError):
            await broker.redrive("t")

    run(before, _config(tmp_path))
    run(_back_once, _config(tmp_path))


def test_a_message_acked_after_the_hand_back_is_not_handed_back_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def before(broker: Broker, clock: FakeClock) -> None:
        await _dead_letter_one(broker)
        _crash_at(broker, monkeypatch, _dlq_settle)
        with pytest.raises(CrashError):
            await broker.redrive("t")
        monkeypatch.undo()
        # the consumer had it and acked it before the process went down
        (back,) = await broker.receive("t", "g", "c1", max_messages=10)
        assert await broker.ack("t", "g", [back.id]) == 1

    run(before, _config(tmp_path))

    async def after(broker: Broker, clock: FakeClock) -> None:
        await _nothing_more(broker, clock)

    run(after, _config(tmp_path))


def test_the_hand_back_is_recognised_from_a_snapshot_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def before(broker: Broker, clock: FakeClock) -> None:
        await _dead_letter_one(broker)
        _crash_at(broker, monkeypatch, _dlq_settle)
        with pytest.raises(CrashError):
            await broker.redrive("t")
        monkeypatch.undo()
        (back,) = await broker.receive("t", "g", "c1", max_messages=10)
        assert await broker.ack("t", "g", [back.id]) == 1
        await broker.snapshot_delivery_state()  # the hand-back event is behind a snapshot

    run(before, _config(tmp_path))

    async def after(broker: Broker, clock: FakeClock) -> None:
        await _nothing_more(broker, clock)

    run(after, _config(tmp_path))


def test_a_crash_before_the_hand_back_finishes_the_redrive_at_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def before(broker: Broker, clock: FakeClock) -> None:
        await _dead_letter_one(broker)
        _crash_at(broker, monkeypatch, lambda event: isinstance(event, Redriven))
        with pytest.raises(CrashError):
            await broker.redrive("t")

    run(before, _config(tmp_path))
    run(_back_once, _config(tmp_path))


def test_a_hold_of_several_ranges_hands_each_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters 0 and 2 of one DLQ partition, redriven together, are held as two
    ranges under one token: recovery hands both back, to one origin partition."""

    async def before(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g", {"visibility_timeout": "30s"})
        await broker.publish("t", [OutgoingMessage(v) for v in (b"a", b"b", b"c")])
        taken = await broker.receive("t", "g", "c1", max_messages=3)
        assert await broker.reject("t", "g", [m.id for m in taken], reason="bad") == 3
        letters = await broker.dlq_messages("t")
        chosen = [m.id for m in letters if m.value in (b"a", b"c")]
        _crash_at(broker, monkeypatch, lambda event: isinstance(event, Redriven))
        with pytest.raises(CrashError):
            await broker.redrive("t", chosen)

    run(before, _config(tmp_path))

    async def after(broker: Broker, clock: FakeClock) -> None:
        assert [m.value for m in await broker.dlq_messages("t")] == [b"b"]
        back = await broker.receive("t", "g", "c1", max_messages=10)
        assert sorted(m.value or b"" for m in back) == [b"a", b"c"]

    run(after, _config(tmp_path))


def test_the_fault_hook_stops_a_redrive_at_each_step(tmp_path: Path) -> None:
    """The named points a `logq serve` under LOGQ_FAULT_CRASH dies at."""
    for point in ("redrive.held", "redrive.handed_back"):
        data = tmp_path / point
        reached: list[str] = []

        async def dies_at(name: str, point: str = point, reached: list[str] = reached) -> None:
            reached.append(name)
            if name == point:
                raise CrashError

        async def before(broker: Broker, clock: FakeClock) -> None:
            await _dead_letter_one(broker)
            with pytest.raises(CrashError):
                await broker.redrive("t")

        run(before, _config(data, fault_hook=dies_at))
        assert reached[-1] == point
        run(_back_once, _config(data))


def test_a_later_redrive_finishes_an_unfinished_one_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redrive whose hand-back failed (a write error) is finished by the
    next DLQ operation, before that one takes a newer token."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await _dead_letter_one(broker)
        _crash_at(broker, monkeypatch, lambda event: isinstance(event, Redriven))
        with pytest.raises(CrashError):
            await broker.redrive("t")
        monkeypatch.undo()
        assert len(await broker.dlq_messages("t")) == 1  # held, still listed
        assert await broker.purge_dlq("t") == 0  # the redrive finished first
        await _back_once(broker, clock)

    run(test, _config(tmp_path))


def test_a_redrive_applies_once_per_source_and_token() -> None:
    state = PartitionDelivery()
    state.apply(Settled("t/g", 0, [(0, 1)]))
    state.apply(Redriven("t/g", 0, [(0, 1)], 5, "t.dlq:0", 7))
    state.apply(Settled("t/g", 0, [(0, 1)]))  # delivered again and acked
    state.apply(Redriven("t/g", 0, [(0, 1)], 5, "t.dlq:0", 7))  # the same redrive again
    assert state.is_settled(0)
    state.apply(Redriven("t/g", 0, [(0, 1)], 5, "t.dlq:0", 8))  # a later one
    assert not state.is_settled(0)
