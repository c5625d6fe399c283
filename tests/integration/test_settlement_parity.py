"""One settlement semantics on every front end.

Each settlement (ack, nack without and with a delay, reject with a reason,
extend, the release of an expired message) runs through every front end
that exists, against identical setups: a fresh broker on a fake clock, one
topic and group with the same settings, one message received through that
front end and settled through it. What the settlement did is then read
from the broker itself, the same way for all: the group's counts, when the
message comes back and as which attempt (the clock moved through fixed
points, leases expired by the broker's own timer), the dead letter, the
trace. Every front end must leave the broker in the same state as the
native protocol does.

The front ends: the native protocol over TCP through the client, the REST
API through httpx (the app as `logq serve` builds it), and the embedded
broker's in-process client. A future front end (SQS, Kafka) joins by
adding a `FrontEnd` to `FRONT_ENDS`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import pytest

import logq
from logq.broker import Broker, FakeClock, OutgoingMessage
from logq.client import AsyncClient
from logq.client.messages import AsyncMessage
from logq.server.connections import ConnectionCounter
from logq.server.http_app import create_app
from logq.server.tcp import NativeServer

T = TypeVar("T")
TOPIC, GROUP = "orders", "workers"
TOPIC_SETTINGS = {
    "partitions": 1,
    "max_deliveries": 5,
    "visibility_timeout": "10s",
    "ttl_dead_letter": True,
}
GROUP_SETTINGS = {"backoff": {"initial": "2s", "multiplier": 2, "max": "1m", "jitter": 0}}
TTL_MS = 1_000
# the times (ms after the settlement) at which the broker is asked for the message
PROBES_MS = (0, 1_999, 2_000, 4_999, 5_000, 19_999, 20_000, 21_999, 22_000, 60_000)


class FrontEnd(Protocol):
    """One way into the broker: receive one message, settle it."""

    clock: FakeClock

    async def on_broker(self, work: Callable[[Broker], Awaitable[T]]) -> T:
        """Run `work` on the domain broker behind this front end (setup, observation)."""
        ...

    async def receive(self) -> tuple[str, int]:
        """Receive one message as consumer "worker": its receipt and attempt."""
        ...

    async def settle(self, kind: str, receipt: str) -> None: ...


# -- the front ends ---------------------------------------------------------------------


class _Direct:
    """A domain broker on this test's loop (the native and REST front ends serve it)."""

    def __init__(self, broker: Broker, clock: FakeClock) -> None:
        self.broker = broker
        self.clock = clock

    async def on_broker(self, work: Callable[[Broker], Awaitable[T]]) -> T:
        return await work(self.broker)


class _ThroughClient:
    """Receive and settle through an AsyncClient (native TCP or embedded)."""

    client: AsyncClient
    received: dict[str, AsyncMessage]

    async def receive(self) -> tuple[str, int]:
        (message,) = await self.client.receive(TOPIC, GROUP, consumer="worker", max=1)
        self.received[message.receipt] = message
        return message.receipt, message.attempt

    async def settle(self, kind: str, receipt: str) -> None:
        message = self.received[receipt]
        if kind == "ack":
            await message.ack()
        elif kind == "nack":
            await message.nack()
        elif kind == "nack_delay":
            await message.nack("5s")
        elif kind == "reject":
            await message.reject("poison")
        elif kind == "extend":
            await message.extend("20s")
        elif kind == "expired":
            offset = message.offset
            range_ = [message.partition, offset, offset + 1]
            await self.client.call("EXPIRED", TOPIC, GROUP, "LEASE", message.lease, *range_)
        else:
            raise AssertionError(kind)
        await self.client.flush()


class NativeFrontEnd(_Direct, _ThroughClient):
    def __init__(self, broker: Broker, clock: FakeClock, client: AsyncClient) -> None:
        super().__init__(broker, clock)
        self.client = client
        self.received = {}


class RestFrontEnd(_Direct):
    def __init__(self, broker: Broker, clock: FakeClock, http: httpx.AsyncClient) -> None:
        super().__init__(broker, clock)
        self.http = http

    async def _post(self, route: str, body: dict[str, Any]) -> Any:
        response = await self.http.post(f"/v1/topics/{TOPIC}/groups/{GROUP}/{route}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def receive(self) -> tuple[str, int]:
        (message,) = (await self._post("receive", {"consumer": "worker", "max": 1}))["messages"]
        return message["receipt"], message["attempt"]

    async def settle(self, kind: str, receipt: str) -> None:
        named: dict[str, Any] = {"receipts": [receipt]}
        route, body = {
            "ack": ("ack", named),
            "nack": ("nack", named),
            "nack_delay": ("nack", {**named, "delay": "5s"}),
            "reject": ("reject", {**named, "reason": "poison"}),
            "extend": ("extend", {**named, "visibility_timeout": "20s"}),
            "expired": ("expired", named),
        }[kind]
        answer = await self._post(route, body)
        assert list(answer.values()) == [1], answer


class EmbeddedFrontEnd(_ThroughClient):
    def __init__(self, embedded: logq.Broker, clock: FakeClock, client: AsyncClient) -> None:
        self.embedded = embedded
        self.clock = clock
        self.client = client
        self.received = {}

    async def on_broker(self, work: Callable[[Broker], Awaitable[T]]) -> T:
        domain = self.embedded.domain

        async def run() -> T:
            return await work(domain)

        loop = self.embedded._runner.loop if self.embedded._runner else None
        assert loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))


@asynccontextmanager
async def native_front_end() -> AsyncIterator[FrontEnd]:
    clock = FakeClock()
    broker = await Broker.open(clock=clock)
    server = NativeServer(broker, ConnectionCounter())
    listening = socket.create_server(("127.0.0.1", 0))
    await server.start(listening)
    port = listening.getsockname()[1]
    try:
        async with AsyncClient(f"127.0.0.1:{port}", clock=clock.now_ms) as client:
            yield NativeFrontEnd(broker, clock, client)
    finally:
        await server.stop_accepting()
        await server.finish(timeout_s=5)
        await broker.close()


@asynccontextmanager
async def rest_front_end() -> AsyncIterator[FrontEnd]:
    clock = FakeClock()
    broker = await Broker.open(clock=clock)
    transport = httpx.ASGITransport(app=create_app(broker, ConnectionCounter()))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://logq.test") as http:
            yield RestFrontEnd(broker, clock, http)
    finally:
        await broker.close()


@asynccontextmanager
async def embedded_front_end() -> AsyncIterator[FrontEnd]:
    clock = FakeClock()
    embedded = logq.Broker(clock=clock).start()
    try:
        async with embedded.async_client() as client:
            yield EmbeddedFrontEnd(embedded, clock, client)
    finally:
        await asyncio.to_thread(embedded.close)


FRONT_ENDS: dict[str, Callable[[], Any]] = {
    "native": native_front_end,
    "rest": rest_front_end,
    "embedded": embedded_front_end,
}
SETTLEMENTS = ("ack", "nack", "nack_delay", "reject", "extend", "expired")


# -- one run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    answered: tuple[str, int]  # the attempt received before the settlement (receipt less)
    counts: dict[str, int]
    back_at: tuple[int, int] | None  # (ms after the settlement, attempt) it came back
    dead_letters: list[dict[str, str]]
    # (event, reason or detail, attempt, consumer, until: ms after the settlement)
    trace: list[tuple[str, str, int, str, int]]
    lag: int


async def _setup(broker: Broker) -> None:
    await broker.create_topic(TOPIC, dict(TOPIC_SETTINGS))
    await broker.put_group(TOPIC, GROUP, dict(GROUP_SETTINGS))


async def run_settlement(front_end: FrontEnd, kind: str) -> Outcome:
    clock = front_end.clock
    await front_end.on_broker(_setup)
    ttl = TTL_MS if kind == "expired" else None
    await front_end.on_broker(
        lambda broker: broker.publish(TOPIC, [OutgoingMessage(b"job", ttl_ms=ttl)])
    )
    receipt, attempt = await front_end.receive()
    if kind == "expired":
        clock.advance(TTL_MS)  # it expired in the consumer's hands
    settled_at_ms = clock.now_ms()
    await front_end.settle(kind, receipt)

    async def probe(broker: Broker) -> list[int]:
        await broker.expire_leases()
        found = await broker.receive(TOPIC, GROUP, "probe", max_messages=1)
        return [message.attempt for message in found]

    back_at = None
    elapsed = 0
    for at_ms in PROBES_MS:
        clock.advance(at_ms - elapsed)
        elapsed = at_ms
        attempts = await front_end.on_broker(probe)
        if attempts:
            back_at = (at_ms, attempts[0])
            break

    async def observe(broker: Broker) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
        return (
            dict(broker.describe_group(TOPIC, GROUP)),
            await broker.dlq_messages(TOPIC),
            await broker.trace(f"{TOPIC}:0:0"),
        )

    group, dead, trace = await front_end.on_broker(observe)
    return Outcome(
        answered=(receipt.split("@")[0], attempt),
        counts={k: v for k, v in group["counts"].items() if k != "backoff_wait_ms"},
        back_at=back_at,
        dead_letters=[
            {k: m.headers[k] for k in ("logq-origin-id", "logq-attempts", "logq-reason")}
            for m in dead
        ],
        trace=[
            (
                event["event"],
                str(event.get("reason", event.get("detail", ""))),
                event.get("attempt", 0),
                event.get("consumer", ""),
                event.get("until_ms", settled_at_ms) - settled_at_ms,
            )
            for event in trace["events"]
        ],
        lag=group["lag"],
    )


async def _outcome(front_end_name: str, kind: str) -> Outcome:
    async with FRONT_ENDS[front_end_name]() as front_end:
        return await run_settlement(front_end, kind)


# What the native protocol does, checked on its own so that agreement is not vacuous.
EXPECTED_BACK_AT: dict[str, tuple[int, int] | None] = {
    "ack": None,
    "nack": (2_000, 2),  # the group's backoff for attempt 1, on REST too
    "nack_delay": (5_000, 2),
    "reject": None,
    "extend": (22_000, 2),  # the lease ran to 20 s, then the backoff's 2 s
    "expired": None,
}
EXPECTED_REASON = {"reject": "poison", "expired": "expired (ttl)"}


@pytest.mark.parametrize("kind", SETTLEMENTS)
def test_every_front_end_settles_as_the_native_protocol_does(kind: str) -> None:
    async def main() -> dict[str, Outcome]:
        return {name: await _outcome(name, kind) for name in FRONT_ENDS}

    outcomes = asyncio.run(main())
    native = outcomes["native"]
    assert native.answered == (f"{TOPIC}:0:0", 1)
    assert native.back_at == EXPECTED_BACK_AT[kind]
    reasons = [dead["logq-reason"] for dead in native.dead_letters]
    assert reasons == ([EXPECTED_REASON[kind]] if kind in EXPECTED_REASON else [])
    if kind == "expired":
        assert native.counts["ttl_expired"] == 1
        assert ("EXPIRED", "ttl", 1, "worker", 0) in native.trace
    for name, outcome in outcomes.items():
        assert outcome == native, f"{name} settles {kind} unlike the native protocol"
