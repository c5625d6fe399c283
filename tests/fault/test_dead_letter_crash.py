"""A crash in the middle of a dead-letter move: the copy was stored in the
DLQ, the settle was not journaled. After recovery, a retried REJECT does not
move it again, the held move finishes when its hold expires, and the DLQ
holds the message once. (Found by `logq bench chaos`: 11 of 3,308 dead
letters were stored twice over 200 kills.)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.delivery import DLQ_HOLD_MS
from logq.broker.messages import OutgoingMessage
from logq.log import FsyncPolicy, LogConfig
from logq.state.events import Event, Settled
from tests.broker.fake import run


class CrashError(Exception):
    """Stands for the process dying at this point."""


def test_an_interrupted_dead_letter_move_finishes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrokerConfig(data_dir=tmp_path / "data", log=LogConfig(fsync=FsyncPolicy.ALWAYS))
    ids: list[str] = []

    async def before_the_crash(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g", {"visibility_timeout": "30s"})
        (published,) = await broker.publish("t", [OutgoingMessage(value=b"bad")])
        ids.append(published.id)
        (message,) = await broker.receive("t", "g", "c1", max_messages=1)
        commit = broker._commit.commit

        async def crash_before_settling(events: Sequence[Event], *, durable: bool = True) -> None:
            if any(isinstance(event, Settled) for event in events):
                raise CrashError
            await commit(events, durable=durable)

        monkeypatch.setattr(broker._commit, "commit", crash_before_settling)
        with pytest.raises(CrashError):
            await broker.reject("t", "g", [message.id], reason="bad input")
        assert len(await broker.dlq_messages("t")) == 1  # the copy is stored

    run(before_the_crash, config)

    async def after_recovery(broker: Broker, clock: FakeClock) -> None:
        # recovery finished the move at once...
        assert broker.describe_group("t", "g")["lag"] == 0
        assert len(await broker.dlq_messages("t")) == 1
        # ...and the client's retried REJECT moves nothing
        assert await broker.reject("t", "g", ids, reason="bad input") == 0
        clock.advance(DLQ_HOLD_MS + 1)
        await broker.tick()
        letters = await broker.dlq_messages("t")
        assert [m.headers["logq-origin-id"] for m in letters] == ids
        assert letters[0].headers["logq-reason"] == "bad input"  # the first copy stands
        assert await broker.receive("t", "g", "c1", max_messages=10) == []  # settled
        described = broker.describe_group("t", "g")
        assert described["lag"] == 0 and described["in_flight"] == 0

    run(after_recovery, config)
