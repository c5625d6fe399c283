"""Authentication, authorization and quotas, as both listeners apply them.

Every native command's permission is its entry in the command registry
(`logq.protocol.commands`); every REST route names the native command it
performs and where that command's topic and group come from, so one table
decides both listeners, and a name or route missing from it is refused to
everyone.
With authentication off everyone is `anonymous` with every permission,
and quotas still apply per client address.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from logq.errors import AuthRequiredError, ForbiddenError, UnknownCommandError
from logq.protocol.commands import MESSAGE_ID, REGISTRY
from logq.server.auth import ANONYMOUS, Authenticator, Principal, require
from logq.server.auth_throttle import SignInThrottle
from logq.server.quotas import Quotas
from logq.server.security_config import SecurityConfig

# (method, route) -> the native command it performs (its entry in the
# command registry decides), where the topic comes from, where the group
# comes from: "path:<name>" a path parameter, "id" the topic of the message
# id in the path, "body:<field>" a field of the JSON body.
RouteRule = tuple[str, str | None, str | None]
_TOPIC = "path:topic"
_GROUP = "path:group"
ROUTES: dict[tuple[str, str], RouteRule] = {
    ("GET", "/health"): ("PING", None, None),
    ("GET", "/metrics"): ("STATS", None, None),
    ("GET", "/v1/stats"): ("STATS", None, None),
    ("GET", "/v1/archive"): ("ARCHIVE", None, None),
    ("GET", "/v1/archive/topics"): ("ARCHIVED", None, None),
    ("POST", "/v1/archive/restore"): ("RESTORE", "body:name", None),
    ("GET", "/v1/events"): ("STATS", None, None),
    ("GET", "/"): ("STATS", None, None),
    ("GET", "/assets/{name}"): ("STATS", None, None),
    ("GET", "/openapi.json"): ("COMMAND", None, None),
    ("GET", "/v1/topics"): ("TOPICS", None, None),
    ("GET", "/v1/groups"): ("GROUPS", None, None),
    ("POST", "/v1/topics"): ("CREATE", "body:name", None),
    ("GET", "/v1/topics/{topic}"): ("DESCRIBE", _TOPIC, None),
    ("PATCH", "/v1/topics/{topic}"): ("ALTER", _TOPIC, None),
    ("DELETE", "/v1/topics/{topic}"): ("DROP", _TOPIC, None),
    ("POST", "/v1/topics/{topic}/messages"): ("PUB", _TOPIC, None),
    ("GET", "/v1/topics/{topic}/messages"): ("PEEK", _TOPIC, None),
    ("GET", "/v1/topics/{topic}/dlq"): ("DLQ", _TOPIC, None),
    ("POST", "/v1/topics/{topic}/dlq/redrive"): ("REDRIVE", _TOPIC, None),
    ("DELETE", "/v1/topics/{topic}/dlq"): ("PURGE", _TOPIC, None),
    ("POST", "/v1/topics/{topic}/dlq/purge"): ("PURGE", _TOPIC, None),
    ("POST", "/v1/topics/{topic}/dlq/requeue"): ("REQUEUE", _TOPIC, None),
    ("GET", "/v1/messages/{id}"): ("MSG", "id", None),
    ("GET", "/v1/messages/{id}/trace"): ("TRACE", "id", None),
    ("POST", "/v1/topics/{topic}/replay"): ("REPLAY", _TOPIC, "body:group"),
    **{
        (method, f"/v1/topics/{{topic}}/groups/{{group}}{tail}"): (command, _TOPIC, _GROUP)
        for method, tail, command in (
            ("PUT", "", "GROUP"),
            ("GET", "", "GROUPINFO"),
            ("POST", "/receive", "RECV"),
            ("POST", "/ack", "ACK"),
            ("POST", "/nack", "NACK"),
            ("POST", "/reject", "REJECT"),
            ("POST", "/extend", "EXTEND"),
            ("POST", "/expired", "EXPIRED"),
            ("POST", "/seek", "SEEK"),
        )
    },
}


def topic_of_id(message_id: str) -> str:
    """The topic part of "topic:partition:offset" (topics may hold colons)."""
    return message_id.rsplit(":", 2)[0]


@dataclass
class Security:
    authenticator: Authenticator
    quotas: Quotas

    @classmethod
    def from_config(
        cls, config: SecurityConfig, throttle: SignInThrottle | None = None
    ) -> Security:
        authenticator = Authenticator(config.auth, throttle or SignInThrottle())
        return cls(authenticator, Quotas(config.quota, config.client_quotas))

    def __post_init__(self) -> None:
        self.auth_enabled = self.authenticator.enabled  # read per request: computed once

    def initial_principal(self) -> Principal | None:
        return None if self.auth_enabled else ANONYMOUS

    def client_key(self, principal: Principal | None, address: str) -> str:
        return principal.name if self.auth_enabled and principal is not None else address

    # -- the native protocol ------------------------------------------------------------

    def authorize_command(self, principal: Principal | None, name: str, args: list[bytes]) -> None:
        spec = REGISTRY.get(name)
        if spec is None:  # not in the table: nobody may (a name no handler serves, too)
            if principal is None:
                require(principal, "any")
            raise UnknownCommandError(f"unknown command {name[:64]!r}; see docs/protocol.md")
        if spec.permission == "open":
            return
        topic = group = None
        if spec.topic is not None:
            at = 0 if spec.topic == MESSAGE_ID else spec.topic
            topic = args[at].decode(errors="replace") if at < len(args) else ""
            if spec.topic == MESSAGE_ID:
                topic = topic_of_id(topic)
        if spec.group is not None:
            group = args[spec.group].decode(errors="replace") if spec.group < len(args) else ""
        require(principal, spec.permission, topic, group)

    # -- HTTP ------------------------------------------------------------------------------

    async def authorize_route(
        self,
        method: str,
        route: str,
        headers: Mapping[str, str],
        params: Mapping[str, Any],
        body: Callable[[], Awaitable[bytes]],
        run: Callable[[Callable[[], bool]], Awaitable[bool]],
        address: str = "local",
    ) -> Principal:
        rule = ROUTES.get((method, route))
        spec = REGISTRY.get(rule[0]) if rule is not None else None
        if rule is None or spec is None:  # not in the table: nobody may
            raise ForbiddenError(f"{method} {route} has no permission rule: refused to everyone")
        if spec.permission == "open":
            return ANONYMOUS
        principal = await self.http_principal(headers, run, address)
        _, topic_from, group_from = rule
        body_fields = await _body_fields(body) if "body:" in f"{topic_from}{group_from}" else {}
        topic = None if topic_from is None else _route_value(topic_from, params, body_fields)
        group = None if group_from is None else _route_value(group_from, params, body_fields)
        require(principal, spec.permission, topic, group)
        return principal

    async def http_principal(
        self,
        headers: Mapping[str, str],
        run: Callable[[Callable[[], bool]], Awaitable[bool]],
        address: str = "local",
    ) -> Principal:
        if not self.auth_enabled:
            return ANONYMOUS
        header = headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return await self.authenticator.login(None, credentials.strip(), run, address)
        if scheme.lower() == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise AuthRequiredError("malformed Basic credentials") from None
            username, _, password = decoded.partition(":")
            return await self.authenticator.login(username, password, run, address)
        raise AuthRequiredError(
            "authentication required: send Authorization: Bearer <token> or Basic credentials"
        )


def _route_value(source: str, params: Mapping[str, Any], body: Mapping[str, Any]) -> str:
    """A route's topic or group, from where its rule says; "" when it is not
    there (which no grant but `*` covers: a missing name allows nothing)."""
    if source == "id":
        return topic_of_id(str(params.get("id", "")))
    where, _, name = source.partition(":")
    value = params.get(name) if where == "path" else body.get(name)
    return value if isinstance(value, str) else ""


async def _body_fields(body: Callable[[], Awaitable[bytes]]) -> dict[str, Any]:
    """The JSON body's fields, for a rule that names one (the handler
    validates the rest, and refuses what is not an object)."""
    try:
        data = msgspec.json.decode(await body())
    except msgspec.DecodeError:
        return {}
    return data if isinstance(data, dict) else {}
