"""Native protocol commands: arguments in, broker call, reply value out.

Each handler takes the command's arguments (bytes, as RESP delivers them),
checks them, calls the Broker and returns a plain value (dict, list, bytes,
int, None, or `Status` for a RESP simple string) that the connection
encodes. Every command is listed in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from logq import __version__
from logq.broker import Broker, Message
from logq.broker.archive_restore import archived_topics, restore_topic
from logq.broker.delivery import Delivery
from logq.broker.messages import OutgoingMessage
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import (
    BadArgumentError,
    LogqError,
    NotExpiredError,
    StaleDeliveryError,
    TooBigError,
    UnknownCommandError,
)
from logq.protocol import Push, RespError, SimpleString
from logq.protocol.commands import REGISTRY
from logq.server.auth import Principal
from logq.server.security import Security
from logq.server.subscription import Subscription

Reply = Any
ARGUMENT_BYTES_MAX = (
    64 * 1024
)  # names, ids and option values; batches and values are bounded elsewhere
BATCHES_PER_COMMAND_MAX = 10_000
AUTH_FAILURES_MAX = 10  # failed AUTHs before the connection is closed


Status = SimpleString
OK = Status("OK")


@dataclass(slots=True)
class Session:
    """Per-connection state the commands may change."""

    protocol: int = 2
    closing: bool = False
    subscription: Subscription | None = None
    client_name: str = ""
    push: Callable[[Push], None] | None = None
    # resolves while the peer reads what is written (the transport is below
    # its high-water mark): pushes wait on it, so a stuck reader holds no more
    writable: Callable[[], Awaitable[object]] | None = None
    members: set[tuple[str, str, str]] = field(default_factory=set)  # joined with JOIN
    security: Security | None = None
    principal: Principal | None = None  # who signed in (everyone, with auth off)
    auth_failures: int = 0
    address: str = "local"  # the peer's
    extra: dict[str, Any] = field(default_factory=dict)


def text(value: bytes, what: str) -> str:
    if len(value) > ARGUMENT_BYTES_MAX:
        raise TooBigError(f"{what} is {len(value)} bytes, the limit is {ARGUMENT_BYTES_MAX}")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise BadArgumentError(f"{what} is not valid UTF-8") from None


def integer(value: bytes, what: str) -> int:
    try:
        return int(text(value, what))
    except ValueError:
        raise BadArgumentError(f"{what} must be an integer, got {value[:40]!r}") from None


def need(args: list[bytes], count: int, usage: str) -> None:
    if len(args) < count:
        raise BadArgumentError(f"wrong number of arguments: usage {usage}")


def options(
    args: list[bytes],
    allowed: dict[str, bool],
    usage: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[dict[str, bytes], list[bytes]]:
    """Keyword options (name -> takes a value?) and the remaining positional args.

    With a `headers` list, HEADER name value may repeat and fills it. Anything
    that is not a known keyword is positional (ids, for instance)."""
    found: dict[str, bytes] = {}
    rest: list[bytes] = []
    index = 0
    while index < len(args):
        word = args[index].upper().decode(errors="replace") if len(args[index]) < 32 else ""
        if word == "HEADER" and headers is not None:
            need(args, index + 3, usage)
            headers.append((args[index + 1], args[index + 2]))
            index += 3
        elif word in allowed:
            if allowed[word]:
                if index + 1 >= len(args):
                    raise BadArgumentError(f"option {word} needs a value: usage {usage}")
                found[word] = args[index + 1]
                index += 2
            else:
                found[word] = b"1"
                index += 1
        else:
            rest.append(args[index])
            index += 1
    return found, rest


def only_options(
    args: list[bytes],
    allowed: dict[str, bool],
    usage: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, bytes]:
    """Keyword options, with nothing else allowed among them."""
    found, rest = options(args, allowed, usage, headers)
    if rest:
        raise BadArgumentError(f"unexpected argument {rest[0][:40]!r}: usage {usage}")
    return found


def message_reply(message: Message) -> dict[str, Reply]:
    return {
        "id": message.id,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key,
        "value": message.value,
        "headers": message.headers,
        "priority": message.priority,
        "timestamp": message.timestamp_ms,
        "attempt": message.attempt,
        "lease": message.lease,
        **({} if message.expires_at_ms is None else {"expires_at": message.expires_at_ms}),
    }


def delivery_reply(delivery: Delivery) -> list[Reply]:
    return [
        delivery.partition,
        delivery.start,
        delivery.end,
        delivery.attempt,
        delivery.data,
        delivery.lease,
        delivery.ttl_ms,
    ]


async def gather_all(work: list[Awaitable[None]]) -> None:
    """Run all; once all are done, raise the first error (none is left running)."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


Handler = Callable[[Broker, Session, list[bytes]], Awaitable[Reply]]
HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    # a command is served only with an entry in the permission table
    assert name in REGISTRY, f"{name} has no entry in logq.protocol.commands.REGISTRY"

    def register(handler: Handler) -> Handler:
        HANDLERS[name] = handler
        return handler

    return register


async def dispatch(broker: Broker, session: Session, name: str, args: list[bytes]) -> Reply:
    handler = HANDLERS.get(name.upper())
    if handler is None:
        raise UnknownCommandError(f"unknown command {name[:64]!r}; see docs/protocol.md")
    return await handler(broker, session, args)


# -- connection -------------------------------------------------------------------


@command("HELLO")
async def _hello(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    """HELLO [protover [AUTH username password] [SETNAME name]]"""
    if args:
        version = integer(args[0], "protocol version")
        if version not in (2, 3):
            raise BadArgumentError(f"protocol version {version} is not supported (2 or 3)")
        rest = args[1:]
        while rest:
            option = rest[0].upper()
            if option == b"AUTH" and len(rest) >= 3:
                await _sign_in(session, text(rest[1], "username"), text(rest[2], "password"))
                rest = rest[3:]
            elif option == b"SETNAME" and len(rest) >= 2:
                session.client_name = text(rest[1], "client name")[:200]
                rest = rest[2:]
            else:
                raise BadArgumentError(
                    "usage: HELLO protover [AUTH username password] [SETNAME name]"
                )
        session.protocol = version
    return {
        "server": "logq",
        "version": __version__,
        "proto": session.protocol,
        "node": broker.config.node_id,
        "lanes": list(broker.lanes.order),
        # what clients check each message against before it joins a batch
        "limits": {
            "message_bytes_max": broker.config.message_bytes_max,
            "key_bytes_max": broker.config.key_bytes_max,
            "header_count_max": broker.config.header_count_max,
            "header_bytes_max": broker.config.header_bytes_max,
            "batch_bytes_max": broker.config.log.batch_bytes_max,
        },
    }


@command("AUTH")
async def _auth(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "AUTH token | AUTH username password")
    if len(args) > 2:
        raise BadArgumentError("usage: AUTH token | AUTH username password")
    if len(args) == 1:
        await _sign_in(session, None, text(args[0], "token"))
    else:
        await _sign_in(session, text(args[0], "username"), text(args[1], "password"))
    return OK


async def _sign_in(session: Session, username: str | None, secret: str) -> None:
    security = session.security
    if security is None or not security.auth_enabled:
        raise BadArgumentError("authentication is off on this server: no AUTH is needed")
    try:
        session.principal = await security.authenticator.login(
            username, secret, address=session.address
        )
    except LogqError:
        session.auth_failures += 1
        if session.auth_failures >= AUTH_FAILURES_MAX:
            session.closing = True  # too many tries on one connection: hang up
        raise
    session.auth_failures = 0


@command("PING")
async def _ping(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    return args[0] if args else Status("PONG")


@command("QUIT")
async def _quit(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    session.closing = True
    return OK


@command("CLIENT")
async def _client(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    # redis-cli and RESP libraries send CLIENT SETNAME/SETINFO on connect.
    if args and args[0].upper() == b"SETNAME" and len(args) > 1:
        session.client_name = text(args[1], "client name")[:200]
    return OK


@command("COMMAND")
async def _command(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    # redis-cli asks for the command table on start; an empty list is valid.
    return []


# -- topics -----------------------------------------------------------------------

_BACKOFF_OPTIONS = {
    "BACKOFF_INITIAL": True,
    "BACKOFF_MULTIPLIER": True,
    "BACKOFF_MAX": True,
    "BACKOFF_JITTER": True,
}
_TOPIC_OPTIONS = {
    "PARTITIONS": True,
    "RETENTION": True,
    "RETENTION_BYTES": True,
    "MAX_DELIVERIES": True,
    "VISIBILITY_TIMEOUT": True,
    "DLQ": True,
    "TTL": True,
    "TTL_DEAD_LETTER": True,
    "MAX_DELAY": True,
    "DEDUP_WINDOW": True,
    "TRACE": True,
    "ARCHIVE": True,
    "LOCAL_RETENTION": True,
    "LOCAL_RETENTION_BYTES": True,
    "ARCHIVE_RETENTION": True,
    **_BACKOFF_OPTIONS,
}


def flag(value: bytes, what: str) -> bool:
    word = text(value, what).lower()
    if word not in ("0", "1", "true", "false"):
        raise BadArgumentError(f"{what} must be 0 or 1, got {word[:20]!r}")
    return word in ("1", "true")


def number(value: bytes, what: str) -> float:
    try:
        return float(text(value, what))
    except ValueError:
        raise BadArgumentError(f"{what} must be a number, got {value[:40]!r}") from None


def backoff_settings(found: dict[str, bytes], settings: dict[str, Any]) -> None:
    """BACKOFF_INITIAL d, BACKOFF_MULTIPLIER x, BACKOFF_MAX d, BACKOFF_JITTER x."""
    backoff: dict[str, Any] = {}
    for name in _BACKOFF_OPTIONS:
        if name in found:
            key = name.removeprefix("BACKOFF_").lower()
            value = found[name]
            backoff[key] = (
                number(value, name) if key in ("multiplier", "jitter") else text(value, name)
            )
    if backoff:
        settings["backoff"] = backoff


def _topic_settings(found: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    backoff_settings(found, settings)
    for name, value in found.items():
        if name in ("PARTITIONS", "RETENTION_BYTES", "MAX_DELIVERIES", "LOCAL_RETENTION_BYTES"):
            settings[name.lower()] = integer(value, name)
        elif name in ("LOCAL_RETENTION", "ARCHIVE_RETENTION"):
            settings[name.lower()] = text(value, name)
        elif name == "RETENTION":
            settings["retention_ms"] = text(value, name)
        elif name == "VISIBILITY_TIMEOUT":
            settings["visibility_timeout"] = text(value, name)
        elif name == "DLQ":
            settings["dlq"] = text(value, name)
        elif name == "TTL":
            settings["ttl"] = text(value, name)
        elif name == "MAX_DELAY":
            settings["max_delay"] = text(value, name)
        elif name == "DEDUP_WINDOW":
            settings["dedup_window"] = text(value, name)
        elif name in ("TTL_DEAD_LETTER", "TRACE", "ARCHIVE"):
            settings[name.lower()] = flag(value, name)
    return settings


@command("CREATE")
async def _create(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "CREATE topic [PARTITIONS n] [RETENTION d] [MAX_DELIVERIES n] [VISIBILITY_TIMEOUT d] [DLQ t]"
    need(args, 1, usage)
    found = only_options(args[1:], _TOPIC_OPTIONS, usage)
    name = text(args[0], "topic")
    await broker.create_topic(name, _topic_settings(found))
    return broker.describe_topic(name)


@command("ALTER")
async def _alter(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "ALTER topic [PARTITIONS n] [RETENTION d] ..."
    need(args, 1, usage)
    found = only_options(args[1:], _TOPIC_OPTIONS, usage)
    name = text(args[0], "topic")
    await broker.update_topic(name, _topic_settings(found))
    return broker.describe_topic(name)


@command("TOPICS")
async def _topics(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    return broker.list_topics()


@command("DESCRIBE")
async def _describe(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "DESCRIBE topic")
    return broker.describe_topic(text(args[0], "topic"))


@command("DROP")
async def _drop(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "DROP topic")
    await broker.delete_topic(text(args[0], "topic"))
    return OK


# -- publishing ---------------------------------------------------------------------


@command("PUB")
async def _pub(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "PUB topic value [KEY k] [PARTITION p] [PRIORITY lane] [TTL d] [DELAY d | AT time] [DEDUP id] [HEADER name value]..."
    need(args, 2, usage)
    headers_raw: list[tuple[bytes, bytes]] = []
    found = only_options(
        args[2:],
        {
            "KEY": True,
            "PARTITION": True,
            "PRIORITY": True,
            "TTL": True,
            "DELAY": True,
            "AT": True,
            "DEDUP": True,
        },
        usage,
        headers_raw,
    )
    key = found.get("KEY")
    ttl = found.get("TTL")
    deliver_at = None
    if "DELAY" in found and "AT" in found:
        raise BadArgumentError("give DELAY or AT, not both")
    if "DELAY" in found:
        delay = parse_duration_ms(text(found["DELAY"], "DELAY"), name="DELAY")
        deliver_at = broker.clock.now_ms() + delay
    elif "AT" in found:
        deliver_at = parse_time_ms(text(found["AT"], "AT"), name="AT")
    partition = found.get("PARTITION")
    priority = found.get("PRIORITY")
    message = OutgoingMessage(
        value=args[1],
        key=key,
        headers={text(n, "header name"): text(v, "header value") for n, v in headers_raw},
        priority=text(priority, "priority") if priority is not None else "normal",
        partition=integer(partition, "partition") if partition is not None else None,
        ttl_ms=parse_duration_ms(text(ttl, "TTL"), name="TTL") if ttl is not None else None,
        deliver_at_ms=deliver_at,
        dedup_id=text(found["DEDUP"], "DEDUP") if "DEDUP" in found else None,
    )
    results = await broker.publish(text(args[0], "topic"), [message])
    return results[0].id


@command("PUBBATCH")
async def _pubbatch(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "PUBBATCH topic partition batch [partition batch ...]"
    need(args, 3, usage)
    if len(args) % 2 != 1:
        raise BadArgumentError(f"partitions and batches must come in pairs: usage {usage}")
    pairs = (len(args) - 1) // 2
    if pairs > BATCHES_PER_COMMAND_MAX:
        raise TooBigError(f"{pairs} batches in one command, the limit is {BATCHES_PER_COMMAND_MAX}")
    topic = text(args[0], "topic")
    # Partitions are stored concurrently (each log syncs on its own); the
    # batches of one partition in order, as the producer sent them.
    chains: dict[int, list[int]] = {}
    for index in range(pairs):
        chains.setdefault(integer(args[1 + 2 * index], "partition"), []).append(index)
    replies: list[Reply] = [None] * pairs
    # One partition: an error fails the command (the reply as it always was).
    # More: each batch is answered on its own, stored or its error, so that
    # a client fails only the messages that were refused.
    per_batch = len(chains) > 1

    async def one(partition: int, index: int) -> None:
        try:
            result = await broker.publish_batch(topic, partition, args[2 + 2 * index])
        except LogqError as error:
            if not per_batch:
                raise
            replies[index] = RespError(f"{error.code} {error.message}")
            return
        replies[index] = [
            result.partition,  # a dedup duplicate answers where the first went
            result.base_offset,
            result.last_offset,
            int(result.duplicate),
        ]

    async def store(partition: int, indexes: list[int]) -> None:
        # The first alone (it may load the partition's producer table); then
        # the rest, started in order, reach the partition's appender in order
        # and share its next storage job: one write and one fsync for them all.
        await one(partition, indexes[0])
        if len(indexes) > 1:
            await gather_all([one(partition, index) for index in indexes[1:]])

    if not per_batch:
        await store(*next(iter(chains.items())))
    else:
        await gather_all([store(partition, indexes) for partition, indexes in chains.items()])
    return replies


# -- groups -------------------------------------------------------------------------------


@command("GROUP")
async def _group(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "GROUP topic group [MODE m] [VISIBILITY_TIMEOUT d] [MAX_DELIVERIES n] [AUTO_ACK 0|1] [MAX_IN_FLIGHT n] [ASSIGNOR sticky|range] [REVOKE_TIMEOUT d] [SESSION_TIMEOUT d] [BACKOFF_INITIAL d] ..."
    need(args, 2, usage)
    found = only_options(
        args[2:],
        {
            "MODE": True,
            "VISIBILITY_TIMEOUT": True,
            "MAX_DELIVERIES": True,
            "AUTO_ACK": True,
            "MAX_IN_FLIGHT": True,
            "STARVATION_SHARE": True,
            "STARVATION_TIMEOUT": True,
            "ASSIGNOR": True,
            "REVOKE_TIMEOUT": True,
            "SESSION_TIMEOUT": True,
            **_BACKOFF_OPTIONS,
        },
        usage,
    )
    settings: dict[str, Any] = {}
    backoff_settings(found, settings)
    for name, value in found.items():
        if name in _BACKOFF_OPTIONS:
            continue
        if name == "MODE":
            settings["mode"] = text(value, name).lower()
        elif name in (
            "VISIBILITY_TIMEOUT",
            "ASSIGNOR",
            "REVOKE_TIMEOUT",
            "SESSION_TIMEOUT",
            "STARVATION_TIMEOUT",
        ):
            settings[name.lower()] = text(value, name)
        elif name == "AUTO_ACK":
            settings["auto_ack"] = flag(value, name)
        elif name == "STARVATION_SHARE":
            settings["starvation_share"] = number(value, name)
        else:
            settings[name.lower()] = integer(value, name)
    topic, group = text(args[0], "topic"), text(args[1], "group")
    await broker.put_group(topic, group, settings)
    return broker.describe_group(topic, group)


@command("REPLAY")
async def _replay(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "REPLAY topic new-group [FROM time] [TO time] [DLQ 0|1] [MODE ordered|shared]"
    need(args, 2, usage)
    found = only_options(args[2:], {"FROM": True, "TO": True, "DLQ": True, "MODE": True}, usage)
    return await broker.replay(
        text(args[0], "topic"),
        text(args[1], "group"),
        from_time=text(found["FROM"], "FROM") if "FROM" in found else None,
        to_time=text(found["TO"], "TO") if "TO" in found else None,
        dlq=flag(found["DLQ"], "DLQ") if "DLQ" in found else False,
        settings={"mode": text(found["MODE"], "MODE").lower()} if "MODE" in found else None,
    )


@command("GROUPINFO")
async def _groupinfo(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 2, "GROUPINFO topic group")
    return broker.describe_group(text(args[0], "topic"), text(args[1], "group"))


@command("GROUPS")
async def _groups(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    return broker.list_groups()


_RECEIVE_OPTIONS = {"COUNT": True, "WAIT": True, "VISIBILITY_TIMEOUT": True}


def receive_arguments(args: list[bytes], usage: str) -> tuple[str, str, str, dict[str, Any]]:
    need(args, 3, usage)
    found = only_options(args[3:], _RECEIVE_OPTIONS, usage)
    kwargs: dict[str, Any] = {}
    if "COUNT" in found:
        kwargs["max_messages"] = integer(found["COUNT"], "COUNT")
    if "WAIT" in found:
        kwargs["wait_ms"] = parse_duration_ms(text(found["WAIT"], "WAIT"), name="WAIT")
    if "VISIBILITY_TIMEOUT" in found:
        kwargs["visibility_timeout_ms"] = parse_duration_ms(
            text(found["VISIBILITY_TIMEOUT"], "VISIBILITY_TIMEOUT"),
            name="VISIBILITY_TIMEOUT",
        )
    return text(args[0], "topic"), text(args[1], "group"), text(args[2], "consumer"), kwargs


@command("RECV")
async def _recv(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    topic, group, consumer, kwargs = receive_arguments(
        args, "RECV topic group consumer [COUNT n] [WAIT d] [VISIBILITY_TIMEOUT d]"
    )
    messages = await broker.receive(topic, group, consumer, **kwargs)
    return [message_reply(message) for message in messages]


@command("FETCH")
async def _fetch(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    topic, group, consumer, kwargs = receive_arguments(
        args, "FETCH topic group consumer [COUNT n] [WAIT d] [VISIBILITY_TIMEOUT d]"
    )
    deliveries = await broker.receive_raw(topic, group, consumer, **kwargs)
    return [delivery_reply(delivery) for delivery in deliveries]


def _ids(args: list[bytes]) -> list[str]:
    return [text(value, "message id") for value in args]


async def _settled(settlement: Awaitable[int]) -> Reply:
    """A settlement's count; when some deliveries it named were stale but it
    did something to the rest, a map of the count and the stale receipts (an
    error only when it changed nothing)."""
    try:
        return await settlement
    except StaleDeliveryError as error:
        if not error.count:
            raise
        return {"count": error.count, "stale": list(error.stale)}
    except NotExpiredError as error:
        if not error.count:
            raise
        return {"count": error.count, "not_expired": list(error.not_expired)}


@command("ACK")
async def _ack(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 3, "ACK topic group id [id ...]")
    topic, group = text(args[0], "topic"), text(args[1], "group")
    return await _settled(broker.ack(topic, group, _ids(args[2:])))


@command("ACKR")
async def _ackr(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = (
        "ACKR topic group [LEASE token] partition start end [[LEASE token] partition start end ...]"
    )
    topic, group, ranges = _range_arguments(args, usage)
    return await _settled(broker.ack_ranges(topic, group, ranges))


@command("EXPIRED")
async def _expired(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = (
        "EXPIRED topic group [LEASE token] partition start end"
        " [[LEASE token] partition start end ...]"
    )
    topic, group, ranges = _range_arguments(args, usage)
    return await _settled(broker.release_expired_ranges(topic, group, ranges))


def _range_arguments(
    args: list[bytes], usage: str
) -> tuple[str, str, dict[tuple[int, int], list[tuple[int, int]]]]:
    """topic, group and the ranges per (partition, lease token) of ACKR and EXPIRED."""
    need(args, 5, usage)
    ranges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    token = 0
    index = 2
    while index < len(args):
        if args[index].upper() == b"LEASE" and index + 1 < len(args):
            token = integer(args[index + 1], "LEASE")
            index += 2
            continue
        if index + 3 > len(args):
            raise BadArgumentError(f"ranges come as partition start end: usage {usage}")
        partition = integer(args[index], "partition")
        start, end = integer(args[index + 1], "start"), integer(args[index + 2], "end")
        ranges.setdefault((partition, token), []).append((start, end))
        index += 3
    if not ranges:
        raise BadArgumentError(f"no ranges: usage {usage}")
    return text(args[0], "topic"), text(args[1], "group"), ranges


@command("NACK")
async def _nack(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "NACK topic group [DELAY d] id [id ...]"
    need(args, 3, usage)
    found, ids = options(args[2:], {"DELAY": True}, usage)
    delay = (
        parse_duration_ms(text(found["DELAY"], "DELAY"), name="DELAY") if "DELAY" in found else None
    )
    topic, group = text(args[0], "topic"), text(args[1], "group")
    return await _settled(broker.nack(topic, group, _ids(ids), delay))


@command("REJECT")
async def _reject(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "REJECT topic group [REASON text] id [id ...]"
    need(args, 3, usage)
    found, ids = options(args[2:], {"REASON": True}, usage)
    reason = text(found["REASON"], "REASON") if "REASON" in found else "rejected"
    topic, group = text(args[0], "topic"), text(args[1], "group")
    return await _settled(broker.reject(topic, group, _ids(ids), reason))


@command("EXTEND")
async def _extend(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "EXTEND topic group [VISIBILITY_TIMEOUT d] id [id ...]"
    need(args, 3, usage)
    found, ids = options(args[2:], {"VISIBILITY_TIMEOUT": True}, usage)
    lease = (
        parse_duration_ms(
            text(found["VISIBILITY_TIMEOUT"], "VISIBILITY_TIMEOUT"), name="VISIBILITY_TIMEOUT"
        )
        if "VISIBILITY_TIMEOUT" in found
        else None
    )
    topic, group = text(args[0], "topic"), text(args[1], "group")
    return await _settled(broker.extend(topic, group, _ids(ids), lease))


@command("SEEK")
async def _seek(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "SEEK topic group EARLIEST|LATEST|OFFSET n [PARTITION p]|TIME t"
    need(args, 3, usage)
    where = args[2].upper()
    target: object
    if where in (b"EARLIEST", b"LATEST"):
        target = where.decode().lower()
    elif where == b"OFFSET":
        need(args, 4, usage)
        target = {"offset": integer(args[3], "offset")}
        found, _ = options(args[4:], {"PARTITION": True}, usage)
        if "PARTITION" in found:
            target["partition"] = integer(found["PARTITION"], "PARTITION")
    elif where == b"TIME":
        need(args, 4, usage)
        target = {"time": parse_time_ms(text(args[3], "time"), name="time")}
    else:
        raise BadArgumentError(f"usage {usage}")
    positions = await broker.seek(text(args[0], "topic"), text(args[1], "group"), target)
    return {str(partition): offset for partition, offset in positions.items()}


# -- reading and inspection ------------------------------------------------------------------


@command("PEEK")
async def _peek(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "PEEK topic [PARTITION p] [OFFSET n] [FROM t] [TO t] [LIMIT n] [INCLUDE_DELETED 0|1]"
    need(args, 1, usage)
    found = only_options(
        args[1:],
        {
            "PARTITION": True,
            "OFFSET": True,
            "FROM": True,
            "TO": True,
            "LIMIT": True,
            "INCLUDE_DELETED": True,
        },
        usage,
    )

    def get_int(name: str) -> int | None:
        value = found.get(name)
        return integer(value, name) if value is not None else None

    def get_time(name: str) -> int | None:
        value = found.get(name)
        return parse_time_ms(text(value, name), name=name) if value is not None else None

    messages = await broker.read_messages(
        text(args[0], "topic"),
        get_int("PARTITION"),
        offset=get_int("OFFSET"),
        from_time_ms=get_time("FROM"),
        to_time_ms=get_time("TO"),
        limit=get_int("LIMIT") or 100,
        include_deleted=(
            flag(found["INCLUDE_DELETED"], "INCLUDE_DELETED")
            if "INCLUDE_DELETED" in found
            else False
        ),
    )
    return [message_reply(message) for message in messages]


@command("READ")
async def _read(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "READ topic partition offset [MAXBYTES n]"
    need(args, 3, usage)
    found, _ = options(args[3:], {"MAXBYTES": True}, usage)
    max_bytes = integer(found["MAXBYTES"], "MAXBYTES") if "MAXBYTES" in found else 1 << 20
    if not 1 <= max_bytes <= 64 << 20:
        raise BadArgumentError(f"MAXBYTES must be within 1..{64 << 20}, got {max_bytes}")
    return await broker.read_raw(
        text(args[0], "topic"), integer(args[1], "partition"), integer(args[2], "offset"), max_bytes
    )


@command("MSG")
async def _msg(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "MSG id")
    return message_reply(await broker.get_message(text(args[0], "message id")))


@command("TRACE")
async def _trace(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "TRACE id")
    return await broker.trace(text(args[0], "message id"))


@command("DLQ")
async def _dlq(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "DLQ topic [LIMIT n]"
    need(args, 1, usage)
    found, _ = options(args[1:], {"LIMIT": True}, usage)
    limit = integer(found["LIMIT"], "LIMIT") if "LIMIT" in found else 100
    messages = await broker.dlq_messages(text(args[0], "topic"), limit)
    return [message_reply(message) for message in messages]


@command("REDRIVE")
async def _redrive(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "REDRIVE topic [dead-letter-id ...]")
    ids = _ids(args[1:]) or None
    return await broker.redrive(text(args[0], "topic"), ids)


@command("PURGE")
async def _purge(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "PURGE topic [dead-letter-id ...]")
    return await broker.purge_dlq(text(args[0], "topic"), _ids(args[1:]) or None)


@command("REQUEUE")
async def _requeue(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "REQUEUE topic [dead-letter-id ...]")
    return await broker.requeue_dlq(text(args[0], "topic"), _ids(args[1:]) or None)


@command("STATS")
async def _stats(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    statistics: dict[str, Any] = dict(broker.stats())
    connections = session.extra.get("connections")
    if connections is not None:
        statistics.update(connections.statistics())
    if session.security is not None:
        statistics.update(session.security.authenticator.throttle.statistics())
    return statistics


@command("ARCHIVE")
async def _archive(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    """ARCHIVE [topic]: the archive's status (see docs/operations.md, tiered storage)."""
    if len(args) > 1:
        raise BadArgumentError("usage: ARCHIVE [topic]")
    return broker.archive_status(text(args[0], "topic") if args else None)


@command("ARCHIVED")
async def _archived(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    """ARCHIVED: the topics the archive holds, with their partitions."""
    if args:
        raise BadArgumentError("usage: ARCHIVED")
    return dict(await archived_topics(broker))


@command("RESTORE")
async def _restore(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    """RESTORE topic: make the topic again from the archive."""
    need(args, 1, "RESTORE topic")
    return await restore_topic(broker, text(args[0], "topic"))


# -- pushed deliveries ----------------------------------------------------------------------


@command("CONSUME")
async def _consume(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "CONSUME topic group consumer [CREDIT n] [VISIBILITY_TIMEOUT d] [SESSION_TIMEOUT d]"
    need(args, 3, usage)
    found = only_options(
        args[3:], {"CREDIT": True, "VISIBILITY_TIMEOUT": True, "SESSION_TIMEOUT": True}, usage
    )
    if session.protocol != 3 or session.push is None:
        raise BadArgumentError("CONSUME needs RESP3 pushes: send HELLO 3 first")
    if session.subscription is not None:
        raise BadArgumentError("this connection already has a subscription: STOP it first")
    topic, group, consumer = (
        text(args[0], "topic"),
        text(args[1], "group"),
        text(args[2], "consumer"),
    )
    credit = integer(found["CREDIT"], "CREDIT") if "CREDIT" in found else 1000
    await broker.join(topic, group, consumer, session_timeout_ms=session_timeout(found))
    lease = (
        parse_duration_ms(
            text(found["VISIBILITY_TIMEOUT"], "VISIBILITY_TIMEOUT"), name="VISIBILITY_TIMEOUT"
        )
        if "VISIBILITY_TIMEOUT" in found
        else None
    )
    subscription = Subscription(
        broker,
        session.push,
        writable=session.writable,
        topic=topic,
        group=group,
        consumer=consumer,
        credit=credit,
        visibility_timeout_ms=lease,
    )
    session.subscription = subscription
    subscription.start()
    return OK


@command("CREDIT")
async def _credit(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    need(args, 1, "CREDIT n")
    if session.subscription is None:
        raise BadArgumentError("no subscription on this connection: CONSUME first")
    session.subscription.add_credit(integer(args[0], "credit"))
    return OK


@command("STOP")
async def _stop(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    if session.subscription is not None:
        await session.subscription.stop()
        session.subscription = None
    return OK


# -- membership -----------------------------------------------------------------------------


def session_timeout(found: dict[str, bytes]) -> int | None:
    if "SESSION_TIMEOUT" not in found:
        return None
    value = text(found["SESSION_TIMEOUT"], "SESSION_TIMEOUT")
    return parse_duration_ms(value, name="SESSION_TIMEOUT")


def member_arguments(args: list[bytes], usage: str) -> tuple[str, str, str]:
    need(args, 3, usage)
    return text(args[0], "topic"), text(args[1], "group"), text(args[2], "consumer")


@command("JOIN")
async def _join(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    usage = "JOIN topic group consumer [SESSION_TIMEOUT d]"
    topic, group, consumer = member_arguments(args, usage)
    found = only_options(args[3:], {"SESSION_TIMEOUT": True}, usage)
    view = await broker.join(topic, group, consumer, session_timeout_ms=session_timeout(found))
    session.members.add((topic, group, consumer))
    return view


@command("HEARTBEAT")
async def _heartbeat(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    topic, group, consumer = member_arguments(args, "HEARTBEAT topic group consumer")
    if len(args) > 3:
        raise BadArgumentError("HEARTBEAT takes topic, group and consumer only")
    return broker.heartbeat(topic, group, consumer)


@command("LEAVE")
async def _leave(broker: Broker, session: Session, args: list[bytes]) -> Reply:
    topic, group, consumer = member_arguments(args, "LEAVE topic group consumer")
    if len(args) > 3:
        raise BadArgumentError("LEAVE takes topic, group and consumer only")
    session.members.discard((topic, group, consumer))
    return int(broker.leave(topic, group, consumer))
