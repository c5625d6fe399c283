"""`AsyncClient`: the asyncio Python client of logq, over the native protocol.

    import asyncio
    import logq

    async def main() -> None:
        async with logq.AsyncClient("127.0.0.1:7070") as client:
            await client.create_topic("orders", partitions=3, exist_ok=True)
            await client.publish_many("orders", [f"order {n}" for n in range(50)])
            async for msg in client.consume("orders", "workers", limit=50):
                print(msg.id, msg.value)
                msg.ack()  # no await needed: sent within this loop turn

    asyncio.run(main())

It reconnects on its own: a request that meets a lost connection is sent
again on a new one (publishes are idempotent, acks are idempotent, a lease
taken by a lost receive expires and is delivered again).

The client owns what it hands out: the producers and consumers it made,
and the settlements of every message it received. `flush()` waits until
the broker has confirmed all of them; `close()` (the end of `async with`)
flushes, closes the consumers and producers, and returns only when every
settlement and publish made before it is confirmed, or raises
`UnconfirmedError` naming those that were not within `timeout_s`.

Every call is bounded in time: `request_timeout_s` (or a call's own
`timeout_s`) covers reconnecting, the handshake and the wait for the
reply. A broker that does not answer in time yields `logq.errors.TimeoutError`
(and the connection is dropped, as its pipeline is stuck); one that cannot
be reached, `ConnectionLostError`. Both are retriable `LogqError`s. A
call the broker answers with `UNAVAILABLE` (it could not reach its
archive's store, and changed nothing) is sent again, with the same
backoff, until it succeeds or its timeout has passed: then that
`UnavailableError` is raised.
Publishes have their own, longer bound, the delivery timeout (see
producer.py), within which they are retried idempotently.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from logq.client.access import credentials_from, tls_context
from logq.client.connection import Connection, Connector, parse_server
from logq.client.consumer import AsyncConsumer, default_consumer_name
from logq.client.limits import MessageLimits
from logq.client.messages import AsyncMessage, received
from logq.client.producer import (
    BLOCK_TIMEOUT_DEFAULT_S,
    BUFFER_BYTES_DEFAULT,
    AsyncProducer,
    as_bytes,
)
from logq.client.records import (
    MessageData,
    PublishResult,
    as_map,
    message_from_reply,
)
from logq.client.settle import Settler, settled_count, unconfirmed_error
from logq.durations import parse_duration_ms
from logq.errors import (
    BadArgumentError,
    ConnectionLostError,
    UnavailableError,
    UnconfirmedError,
)
from logq.errors import TimeoutError as CallTimeoutError
from logq.lanes import DEFAULT_LANES, Lanes
from logq.partitioning import partition_for_key
from logq.protocol import Push

DEFAULT_SERVER = "127.0.0.1:7070"
# How long close() waits for the broker to confirm what was sent before it
# gives up: a few reconnection attempts' worth (see backoff_s).
CLOSE_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_DEFAULT_S = 30.0  # as Kafka's request.timeout.ms
DELIVERY_TIMEOUT_DEFAULT_S = 120.0  # as Kafka's delivery.timeout.ms
BACKOFF_MAX_S = 1.0  # the longest pause between two tries of a call
Duration = str | int
Time = str | int


def _time_text(value: str | int | datetime | None) -> str | int | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _options(pairs: Mapping[str, object]) -> list[bytes | str | int]:
    args: list[bytes | str | int] = []
    for name, given in pairs.items():
        if given is None:
            continue
        value = int(given) if isinstance(given, bool) else given
        if not isinstance(value, (bytes, str, int)):
            raise BadArgumentError(f"{name.lower()} must be a string or an integer, got {value!r}")
        args += [name, value]
    return args


class AsyncClient:
    def __init__(
        self,
        server: str | None = None,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_DEFAULT_S,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_DEFAULT_S,
        connect_timeout_s: float = 5.0,
        connector: Connector | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | bool | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """`server` is "host:port" (default LOGQ_SERVER, else 127.0.0.1:7070);
        `connector` replaces the TCP connection (an embedded broker uses it).
        `clock` gives the time in epoch ms by which a received message's TTL
        is checked before it is handed out (default the system's; an
        embedded broker passes its own).

        Signing in: a `token` (default LOGQ_TOKEN), or `username` and
        `password` (LOGQ_USERNAME, LOGQ_PASSWORD). TLS: an SSLContext, or True
        for the system's CAs; LOGQ_TLS_CA names a CA file to trust instead.

        Timeouts: `request_timeout_s` bounds each call (reconnects, handshake
        and reply; a call's `timeout_s` overrides it), `connect_timeout_s`
        each connection attempt (TCP, TLS and the sign-in handshake), and
        `delivery_timeout_s` how long a publish is retried before its future
        fails."""
        self.host, self.port = parse_server(
            server or os.environ.get("LOGQ_SERVER") or DEFAULT_SERVER
        )
        for name, value in (
            ("request_timeout_s", request_timeout_s),
            ("delivery_timeout_s", delivery_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
        ):
            if not value > 0:
                raise BadArgumentError(f"{name} must be more than 0, got {value!r}")
        self.request_timeout_s = request_timeout_s
        self.delivery_timeout_s = delivery_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.limits = MessageLimits()  # the server's, once connected
        self.now_ms: Callable[[], int] = clock or _system_now_ms
        self._connector = connector
        self.credentials = credentials_from(token, username, password, os.environ)
        self.tls = tls_context(tls, os.environ)
        self._connection: Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._partitions: dict[str, int] = {}
        self._producer: AsyncProducer | None = None
        self._settlers: dict[tuple[str, str], Settler] = {}  # of receive(), per group
        # every settler with settlements out or failures to report, whoever made it
        self.settling: set[Settler] = set()
        self._consumers: set[AsyncConsumer] = set()  # handed out, until closed
        self._producers: set[AsyncProducer] = set()  # handed out, until closed
        self._round_robin = -1
        self.lane_names = DEFAULT_LANES  # the server's, once connected
        self._lanes_known = False
        # the member name of receive() calls that give none: one per client,
        # so a receive loop is one member of the group, not one per call
        self.consumer_name = default_consumer_name()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the connection -------------------------------------------------------------------

    def backoff_s(self, attempt: int) -> float:
        return float(min(0.02 * 2 ** (attempt - 1), BACKOFF_MAX_S) * (0.5 + random.random() / 2))

    async def connect(self) -> Connection:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                self._connection = await self.open_connection()
        return self._connection

    async def lanes(self) -> Lanes:
        """The server's priority lanes (names and order): learnt on the first
        connection (with the same retries as `call`), then kept, so a producer
        never fails for a connection that is being re-made."""
        if not self._lanes_known:
            await self.call("PING")
        return self.lane_names

    async def open_connection(self, on_push: Callable[[Push], None] | None = None) -> Connection:
        """A new connection of its own (consumers take one for their pushes)."""
        if self._connector is not None:
            connection = await self._connector(on_push)
        else:
            connection = await Connection.open(
                self.host,
                self.port,
                timeout_s=self.connect_timeout_s,
                on_push=on_push,
                tls=self.tls,
                credentials=self.credentials,
            )
        info = as_map(connection.server_info) if connection.server_info else {}
        lanes = info.get("lanes")
        if isinstance(lanes, list) and lanes:
            self.lane_names = Lanes(lanes)
        limits = info.get("limits")
        self.limits = MessageLimits.from_server(limits if isinstance(limits, dict) else None)
        self._lanes_known = True
        return connection

    async def call(self, *args: bytes | str | int, timeout_s: float | None = None) -> Any:
        """Send one command and return its reply. A lost connection is made
        again and the command sent again, with backoff, until `timeout_s`
        (default `request_timeout_s`) has passed since the call began: then
        ConnectionLostError (no connection) or TimeoutError (no reply). An
        UNAVAILABLE reply is tried again the same way (then UnavailableError)."""
        budget_s = self.request_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        attempt = 0
        while True:
            connection: Connection | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    connection = await self.connect()
                    return await connection.call(*args)
            except TimeoutError as error:
                if isinstance(error, CallTimeoutError):  # one connection attempt's own timeout
                    attempt += 1
                    await self._pause(attempt, deadline, budget_s, error)
                    continue
                # the call's deadline
                if connection is None:
                    raise CallTimeoutError(
                        f"no connection to {self.host}:{self.port} within {budget_s} s"
                    ) from None
                # the reply may still come, behind which every later one waits: start afresh
                connection.close()
                raise CallTimeoutError(
                    f"no answer from {self.host}:{self.port} to {_name(args)} within {budget_s} s"
                ) from None
            except (ConnectionLostError, OSError, UnavailableError) as error:
                attempt += 1
                await self._pause(attempt, deadline, budget_s, error)

    async def _pause(
        self, attempt: int, deadline: float, budget_s: float, error: BaseException
    ) -> None:
        """Back off before the next try, or raise if it would come after the deadline."""
        pause_s = self.backoff_s(attempt)
        if asyncio.get_running_loop().time() + pause_s >= deadline:
            if isinstance(error, UnavailableError):  # the broker's own answer says it best
                raise error
            kind = CallTimeoutError if isinstance(error, TimeoutError) else ConnectionLostError
            raise kind(
                f"no connection to {self.host}:{self.port} within {budget_s} s "
                f"({attempt} tries): {error}"
            ) from error
        await asyncio.sleep(pause_s)

    def release(self, component: AsyncConsumer | AsyncProducer) -> None:
        """Forget a consumer or producer that closed (each calls this itself)."""
        if isinstance(component, AsyncConsumer):
            self._consumers.discard(component)
        else:
            self._producers.discard(component)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the broker has confirmed every publish queued in the
        producers this client handed out and every settlement made so far
        (acks included, awaited or not). Raises `UnconfirmedError` naming
        those it refused or did not answer (within `timeout_s`, if given);
        what is still out keeps going."""
        try:
            await asyncio.wait_for(self._flush_all(), timeout_s)
        except TimeoutError:
            left = [item for settler in self.settling for item in settler.outstanding()]
            left += [f"publishes of producer {p.producer_id}" for p in self._producers if p.busy]
            raise unconfirmed_error(f"flush timed out after {timeout_s} s", left) from None

    async def _flush_all(self) -> None:
        failures: list[str] = []
        for producer in list(self._producers):
            await producer.flush()
        while self.settling:
            for settler in list(self.settling):
                try:
                    await settler.flush()
                except UnconfirmedError as error:
                    failures += error.unconfirmed
        if failures:
            raise unconfirmed_error("flush", failures)

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Flush, then close, in this order: the producers handed out (their
        queued publishes sent), the consumers (they leave their groups and
        give back the messages they had not handed out), every settlement
        made (confirmed by the broker), then the connection.

        Waits up to `timeout_s` in all; what is not confirmed by then is
        cancelled, and `UnconfirmedError` names it (and any settlement the
        broker refused). The connection is closed either way."""
        failures: list[str] = []
        try:
            await asyncio.wait_for(self._close_components(failures), timeout_s)
        except TimeoutError:
            failures.append(f"close timed out after {timeout_s} s")
        finally:
            for consumer in list(self._consumers):
                await consumer.abort()
            for producer in list(self._producers):
                failures += await producer.abort()
                self._producers.discard(producer)
            for settler in list(self.settling):
                failures += await settler.abandon()
            self.settling.clear()
            self._producer = None
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        if failures:
            raise unconfirmed_error(f"closing the client of {self.host}:{self.port}", failures)

    async def _close_components(self, failures: list[str]) -> None:
        """Each in turn, whatever the one before met: a producer that fails
        must not keep a consumer's acks from being sent."""
        for producer in list(self._producers):
            try:
                await producer.close()
            except Exception as error:
                failures.append(f"closing producer {producer.producer_id}: {error}")
        for consumer in list(self._consumers):
            try:
                await consumer.close()
            except UnconfirmedError as error:
                failures += error.unconfirmed
            except Exception as error:
                failures.append(f"closing consumer {consumer.consumer}: {error}")
        try:
            await self._flush_all()
        except UnconfirmedError as error:
            failures += error.unconfirmed

    # -- topics ----------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        *,
        partitions: int | None = None,
        retention: Duration | None = None,
        retention_bytes: int | None = None,
        max_deliveries: int | None = None,
        visibility_timeout: Duration | None = None,
        dlq: str | None = None,
        backoff: Mapping[str, str | int | float] | None = None,
        ttl: Duration | None = None,
        ttl_dead_letter: bool | None = None,
        max_delay: Duration | None = None,
        dedup_window: Duration | None = None,
        trace: bool | None = None,
        archive: bool | None = None,
        local_retention: Duration | None = None,
        local_retention_bytes: int | None = None,
        archive_retention: Duration | None = None,
        exist_ok: bool = False,
    ) -> dict[str, Any]:
        """Create a topic. `backoff`: {"initial": "1s", "multiplier": 2,
        "max": "5m", "jitter": 0.2}, the wait before a redelivery. `trace`:
        record every message's lifecycle (on by default). `archive`: copy
        closed segments to the broker's archive, keeping `local_retention`
        on its disk and what passed `retention` until `archive_retention`."""
        options = _options(
            {
                "PARTITIONS": partitions,
                "RETENTION": retention,
                "RETENTION_BYTES": retention_bytes,
                "MAX_DELIVERIES": max_deliveries,
                "VISIBILITY_TIMEOUT": visibility_timeout,
                "DLQ": dlq,
                "TTL": ttl,
                "TTL_DEAD_LETTER": ttl_dead_letter,
                "MAX_DELAY": max_delay,
                "DEDUP_WINDOW": dedup_window,
                "TRACE": trace,
                "ARCHIVE": archive,
                "LOCAL_RETENTION": local_retention,
                "LOCAL_RETENTION_BYTES": local_retention_bytes,
                "ARCHIVE_RETENTION": archive_retention,
            }
        ) + _backoff_options(backoff)
        try:
            reply = as_map(await self.call("CREATE", name, *options))
        except Exception as error:
            if exist_ok and getattr(error, "code", "") == "EXISTS":
                return await self.describe_topic(name)
            raise
        self._partitions[name] = _partition_count(reply)
        return reply

    async def list_topics(self) -> list[dict[str, Any]]:
        return [as_map(item) for item in await self.call("TOPICS")]

    async def describe_topic(self, name: str) -> dict[str, Any]:
        reply = as_map(await self.call("DESCRIBE", name))
        self._partitions[name] = _partition_count(reply)
        return reply

    async def alter_topic(
        self, name: str, *, partitions: int | None = None, retention: Duration | None = None
    ) -> dict[str, Any]:
        reply = as_map(
            await self.call(
                "ALTER", name, *_options({"PARTITIONS": partitions, "RETENTION": retention})
            )
        )
        self._partitions[name] = _partition_count(reply)
        return reply

    async def delete_topic(self, name: str) -> None:
        await self.call("DROP", name)
        self._partitions.pop(name, None)

    async def partition_for(self, topic: str, key: bytes | None) -> int:
        """The partition the broker would choose; -1 lets the producer rotate."""
        count = self._partitions.get(topic)
        if count is None:
            count = _partition_count(await self.describe_topic(topic))
        if key is not None:
            return partition_for_key(key, count)
        self._round_robin = (self._round_robin + 1) % count
        return self._round_robin

    # -- publishing -------------------------------------------------------------------------

    def producer(
        self,
        *,
        linger_ms: float = 5.0,
        batch_records: int = 1000,
        batch_bytes: int = 1 << 20,
        compression: str = "none",
        delivery_timeout_s: float | None = None,
        buffer_bytes_max: int = BUFFER_BYTES_DEFAULT,
        block_timeout_s: float = BLOCK_TIMEOUT_DEFAULT_S,
    ) -> AsyncProducer:
        """A batching producer: `await producer.send(...)` returns a future per
        message. Use it as `async with`, or close it; the client flushes and
        closes any still open when it closes. Each message is retried until
        `delivery_timeout_s` (default the client's); `send` waits while
        `buffer_bytes_max` bytes are queued, for at most `block_timeout_s`."""
        producer = AsyncProducer(
            self,
            linger_ms=linger_ms,
            batch_records=batch_records,
            batch_bytes=batch_bytes,
            compression=compression,
            delivery_timeout_s=delivery_timeout_s,
            buffer_bytes_max=buffer_bytes_max,
            block_timeout_s=block_timeout_s,
        )
        self._producers.add(producer)
        return producer

    async def publish(
        self,
        topic: str,
        value: bytes | str | None,
        *,
        key: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        priority: str = "normal",
        partition: int | None = None,
        ttl: str | int | timedelta | None = None,
        delay: str | int | timedelta | None = None,
        deliver_at: datetime | int | str | None = None,
        dedup_id: str | None = None,
        timeout_s: float | None = None,
    ) -> PublishResult:
        """Publish one message and wait until it is durable. `ttl`: never
        delivered after that long; `delay` or `deliver_at`: delivered from
        then; `dedup_id`: stored once within the topic's dedup window (a
        repeat returns the first message's id); `timeout_s`: its delivery
        timeout (default `delivery_timeout_s`), retried until then."""
        if self._producer is None:
            self._producer = self.producer(linger_ms=0)
        future = await self._producer.send(
            topic,
            value,
            key=key,
            headers=headers,
            priority=priority,
            partition=partition,
            ttl=ttl,
            delay=delay,
            deliver_at=deliver_at,
            dedup_id=dedup_id,
            delivery_timeout_s=timeout_s,
        )
        return await future

    async def publish_many(
        self, topic: str, messages: Iterable[Mapping[str, Any] | bytes | str]
    ) -> list[PublishResult]:
        """Publish many messages (each bytes, str or a dict of `value`, `key`,
        `headers`, `priority`, `partition`) in batches; wait for all."""
        if self._producer is None:
            self._producer = self.producer(linger_ms=0)
        futures = []
        for message in messages:
            if isinstance(message, Mapping):
                futures.append(
                    await self._producer.send(
                        topic,
                        message.get("value"),
                        key=message.get("key"),
                        headers=message.get("headers"),
                        priority=message.get("priority", "normal"),
                        partition=message.get("partition"),
                        ttl=message.get("ttl"),
                        delay=message.get("delay"),
                        deliver_at=message.get("deliver_at"),
                        dedup_id=message.get("dedup_id"),
                    )
                )
            else:
                futures.append(await self._producer.send(topic, message))
        await self._producer.flush()
        return [await future for future in futures]

    # -- groups and consuming --------------------------------------------------------------------

    async def put_group(
        self,
        topic: str,
        group: str,
        *,
        mode: str | None = None,
        visibility_timeout: Duration | None = None,
        max_deliveries: int | None = None,
        auto_ack: bool | None = None,
        max_in_flight: int | None = None,
        backoff: Mapping[str, str | int | float] | None = None,
        starvation_share: float | None = None,
        starvation_timeout: Duration | None = None,
        assignor: str | None = None,
        revoke_timeout: Duration | None = None,
        session_timeout: Duration | None = None,
    ) -> dict[str, Any]:
        """Create or configure a group (see create_topic for `backoff`).
        `starvation_share`: in shared groups, a lower priority lane with
        messages waiting lets round(1 / starvation_share) messages of higher
        lanes go ahead (10 at the default 0.1), then gets one; with
        `starvation_timeout` it also gets one once it has waited that long.
        `assignor` (`sticky` or `range`) spreads an ordered group's partitions;
        a moving partition waits up to `revoke_timeout` for its in-flight
        messages; a member not heard from for `session_timeout` leaves."""
        options = _options(
            {
                "MODE": mode,
                "VISIBILITY_TIMEOUT": visibility_timeout,
                "MAX_DELIVERIES": max_deliveries,
                "AUTO_ACK": auto_ack,
                "MAX_IN_FLIGHT": max_in_flight,
                "STARVATION_SHARE": None if starvation_share is None else str(starvation_share),
                "STARVATION_TIMEOUT": starvation_timeout,
                "ASSIGNOR": assignor,
                "REVOKE_TIMEOUT": revoke_timeout,
                "SESSION_TIMEOUT": session_timeout,
            }
        ) + _backoff_options(backoff)
        return as_map(await self.call("GROUP", topic, group, *options))

    async def describe_group(self, topic: str, group: str) -> dict[str, Any]:
        """Members and their partitions, lag and in-flight per partition,
        counts and the recent rebalances."""
        return as_map(await self.call("GROUPINFO", topic, group))

    async def replay(
        self,
        topic: str,
        group: str,
        *,
        from_time: str | int | datetime | None = None,
        to_time: str | int | datetime | None = None,
        dlq: bool = False,
        mode: str | None = None,
    ) -> dict[str, Any]:
        """Create `group` to replay [from_time, to_time) of `topic` (of its
        dead letters with `dlq`): one call, then consume it like any group.
        Times are datetimes, epoch ms or RFC 3339 text."""
        options = _options(
            {
                "FROM": _time_text(from_time),
                "TO": _time_text(to_time),
                "DLQ": dlq or None,
                "MODE": mode,
            }
        )
        return as_map(await self.call("REPLAY", topic, group, *options))

    async def join(
        self, topic: str, group: str, consumer: str, *, session_timeout: Duration | None = None
    ) -> dict[str, Any]:
        """Join a group as `consumer` (for receive loops; `consume()` joins by
        itself). Returns the member's partitions; stay alive with heartbeat()."""
        options = _options({"SESSION_TIMEOUT": session_timeout})
        return as_map(await self.call("JOIN", topic, group, consumer, *options))

    async def heartbeat(self, topic: str, group: str, consumer: str) -> dict[str, Any]:
        return as_map(await self.call("HEARTBEAT", topic, group, consumer))

    async def leave(self, topic: str, group: str, consumer: str) -> bool:
        return bool(await self.call("LEAVE", topic, group, consumer))

    async def list_groups(self) -> list[dict[str, Any]]:
        return [as_map(item) for item in await self.call("GROUPS")]

    def settler(self, topic: str, group: str) -> Settler:
        settler = self._settlers.get((topic, group))
        if settler is None:
            settler = self._settlers[(topic, group)] = Settler(self, topic, group)
        return settler

    async def receive(
        self,
        topic: str,
        group: str,
        *,
        consumer: str | None = None,
        max: int = 1,
        wait: Duration | None = None,
        visibility_timeout: Duration | None = None,
        timeout_s: float | None = None,
    ) -> list[AsyncMessage]:
        """Lease up to `max` messages, waiting up to `wait` for the first;
        `timeout_s` (default `request_timeout_s`) counts from the end of the wait."""
        options = _options({"COUNT": max, "WAIT": wait, "VISIBILITY_TIMEOUT": visibility_timeout})
        budget_s = (self.request_timeout_s if timeout_s is None else timeout_s) + _wait_s(wait)
        reply = await self.call(
            "FETCH", topic, group, consumer or self.consumer_name, *options, timeout_s=budget_s
        )
        settler = self.settler(topic, group)
        found: list[AsyncMessage] = []
        now_ms = self.now_ms()
        for partition, start, end, attempt, data, *rest in reply:
            lease = rest[0] if rest else 0  # servers before lease tokens send none
            ttl_ms = rest[1] if len(rest) > 1 else 0  # the topic's TTL (0: none)
            found += received(
                topic,
                partition,
                start,
                end,
                attempt,
                data,
                group,
                settler,
                self.lane_names,
                lease,
                ttl_ms,
                now_ms,
            )
        return found

    def consume(
        self,
        topic: str,
        group: str,
        *,
        consumer: str | None = None,
        prefetch: int = 1000,
        visibility_timeout: Duration | None = None,
        auto_ack: bool = False,
        limit: int | None = None,
        session_timeout: Duration | None = None,
        on_outage: Callable[[BaseException], None] | None = None,
    ) -> AsyncConsumer:
        """An async iterator of messages pushed by the broker (see AsyncConsumer);
        `limit` caps how many it leases and hands out in all. The consumer is a
        member of the group until it is closed (or silent for `session_timeout`);
        the client closes it, and waits for its acks, when it closes itself.
        It subscribes again after every outage for as long as it is open;
        `on_outage(error)` hears of each (a log line does too)."""
        handed = AsyncConsumer(
            self,
            topic,
            group,
            consumer=consumer,
            prefetch=prefetch,
            visibility_timeout=visibility_timeout,
            auto_ack=auto_ack,
            limit=limit,
            session_timeout=session_timeout,
            on_outage=on_outage,
        )
        self._consumers.add(handed)
        return handed

    async def ack(
        self, topic: str, group: str, ids: Iterable[str], *, timeout_s: float | None = None
    ) -> int:
        return settled_count(await self.call("ACK", topic, group, *ids, timeout_s=timeout_s))

    async def nack(
        self,
        topic: str,
        group: str,
        ids: Iterable[str],
        *,
        delay: Duration | None = None,
        timeout_s: float | None = None,
    ) -> int:
        options = _options({"DELAY": delay})
        return settled_count(
            await self.call("NACK", topic, group, *options, *ids, timeout_s=timeout_s)
        )

    async def reject(
        self,
        topic: str,
        group: str,
        ids: Iterable[str],
        *,
        reason: str = "rejected",
        timeout_s: float | None = None,
    ) -> int:
        return settled_count(
            await self.call("REJECT", topic, group, "REASON", reason, *ids, timeout_s=timeout_s)
        )

    async def extend(
        self,
        topic: str,
        group: str,
        ids: Iterable[str],
        *,
        visibility_timeout: Duration | None = None,
    ) -> int:
        options = _options({"VISIBILITY_TIMEOUT": visibility_timeout})
        return settled_count(await self.call("EXTEND", topic, group, *options, *ids))

    async def seek(
        self, topic: str, group: str, to: str | Mapping[str, int | str]
    ) -> dict[int, int]:
        """`to`: "earliest", "latest", {"offset": n, "partition": p} or {"time": T}."""
        if isinstance(to, str):
            args: list[bytes | str | int] = [to.upper()]
        elif "offset" in to:
            args = ["OFFSET", to["offset"], *_options({"PARTITION": to.get("partition")})]
        elif "time" in to:
            args = ["TIME", to["time"]]
        else:
            raise BadArgumentError(f"seek to 'earliest', 'latest', an offset or a time, got {to!r}")
        reply = as_map(await self.call("SEEK", topic, group, *args))
        return {int(partition): int(offset) for partition, offset in reply.items()}

    # -- reading without a group, inspection ---------------------------------------------------------

    async def peek(
        self,
        topic: str,
        *,
        partition: int | None = None,
        offset: int | None = None,
        from_time: Time | None = None,
        to_time: Time | None = None,
        limit: int = 100,
        include_deleted: bool = False,
    ) -> list[MessageData]:
        """Read without a group, changing nothing; `include_deleted` reaches
        below the topic's start into what its archive keeps for audit."""
        options = _options(
            {
                "PARTITION": partition,
                "OFFSET": offset,
                "FROM": from_time,
                "TO": to_time,
                "LIMIT": limit,
                "INCLUDE_DELETED": 1 if include_deleted else None,
            }
        )
        return [message_from_reply(item) for item in await self.call("PEEK", topic, *options)]

    async def get_message(self, message_id: str) -> MessageData:
        return message_from_reply(await self.call("MSG", message_id))

    async def trace(self, message_id: str) -> dict[str, Any]:
        """The message's lifecycle: `events` (published, delivered, acked...,
        each with `at_ms` and its group, consumer, attempt, reason), the
        `delivery_attempts` and the `total_latency_ms` from publish to the
        last settle."""
        return as_map(await self.call("TRACE", message_id))

    async def dlq(self, topic: str, *, limit: int = 100) -> list[MessageData]:
        """The dead letters of `topic` (headers carry origin id, group, attempts, reason)."""
        return [message_from_reply(item) for item in await self.call("DLQ", topic, "LIMIT", limit)]

    async def redrive(self, topic: str, ids: Iterable[str] | None = None) -> int:
        """Hand dead letters of `topic` back to the groups that dead-lettered them
        (the given dead-letter ids, or all); attempts start over. Returns how many."""
        return int(await self.call("REDRIVE", topic, *(ids or [])))

    async def purge_dlq(self, topic: str, ids: Iterable[str] | None = None) -> int:
        """Drop dead letters of `topic` (the given dead-letter ids, or all); returns how many."""
        return int(await self.call("PURGE", topic, *(ids or [])))

    async def requeue_dlq(self, topic: str, ids: Iterable[str] | None = None) -> int:
        """Publish dead letters of `topic` again as new messages (every group
        sees them), then drop them from the DLQ (the given ids, or all)."""
        return int(await self.call("REQUEUE", topic, *(ids or [])))

    async def stats(self) -> dict[str, Any]:
        reply = as_map(await self.call("STATS"))
        if "queues" in reply:
            reply["queues"] = {str(k): v for k, v in as_map(reply["queues"]).items()}
        return reply

    async def archive_status(self, topic: str | None = None) -> dict[str, Any]:
        """The broker's archive (None when it has none) and, per archived
        partition, the archived and local ranges, upload lag and last error."""
        reply = as_map(await self.call("ARCHIVE", *([topic] if topic else [])))
        reply["partitions"] = [as_map(item) for item in reply.get("partitions") or []]
        return reply

    async def archived_topics(self) -> dict[str, list[int]]:
        """The topics the broker's archive holds, with their partitions."""
        reply = as_map(await self.call("ARCHIVED"))
        return {str(topic): [int(p) for p in parts] for topic, parts in reply.items()}

    async def restore_topic(self, topic: str) -> dict[str, Any]:
        """Make `topic` again from the archive (a broker that lost its disk):
        its data up to the last archived segment, its groups at their
        committed positions."""
        reply = as_map(await self.call("RESTORE", topic))
        reply["partitions"] = [as_map(item) for item in reply.get("partitions") or []]
        return reply

    async def ping(self, *, timeout_s: float | None = None) -> bool:
        return str(await self.call("PING", timeout_s=timeout_s)) == "PONG"


def _system_now_ms() -> int:
    return time.time_ns() // 1_000_000


def _name(args: tuple[bytes | str | int, ...]) -> str:
    first = args[0] if args else ""
    return first.decode(errors="replace") if isinstance(first, bytes) else str(first)


def _wait_s(wait: Duration | None) -> float:
    """A receive's WAIT in seconds, so that its call's timeout comes after it."""
    return 0.0 if wait is None else parse_duration_ms(wait, name="wait") / 1000


def _backoff_options(backoff: Mapping[str, str | int | float] | None) -> list[bytes | str | int]:
    args: list[bytes | str | int] = []
    for key, value in (backoff or {}).items():
        if key not in ("initial", "multiplier", "max", "jitter"):
            raise BadArgumentError(
                f"unknown backoff setting {key!r} (initial, multiplier, max, jitter)"
            )
        args += [f"BACKOFF_{key.upper()}", str(value) if isinstance(value, float) else value]
    return args


def _partition_count(topic: Mapping[str, Any]) -> int:
    partitions = topic["partitions"]
    return len(partitions) if isinstance(partitions, list) else int(partitions)


__all__ = ["AsyncClient", "as_bytes"]
