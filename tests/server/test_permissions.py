"""The permission matrix: every native command and every REST route, sent by
every identity on an allowed and a denied topic and group, against a real
server; what the server refuses must be exactly what the permission table
says (a simple model of the grants below decides, not the server's code)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from fnmatch import fnmatchcase

import httpx
import pytest
from starlette.routing import Route

from logq.broker import Broker, BrokerConfig
from logq.client import Client
from logq.errors import AuthRequiredError, ForbiddenError, UnknownCommandError
from logq.protocol import NEED_MORE, Parser, Push, RespError
from logq.protocol.commands import MESSAGE_ID, REGISTRY, CommandSpec
from logq.protocol.encoder import encode_command
from logq.server.auth import ADMIN_ROLE, AuthConfig, Principal, User, new_token
from logq.server.commands import HANDLERS
from logq.server.connections import ConnectionCounter
from logq.server.http_app import create_app
from logq.server.security import ROUTES, Security
from logq.server.security_config import SecurityConfig
from tests.harness import Running, server_process

IDENTITIES = ("admin", "producer", "consumer", "topic-admin", "anonymous")
TOKENS = {name: new_token() for name in IDENTITIES if name != "anonymous"}
# identity -> grants as (topic pattern, group pattern, permissions)
GRANTS: dict[str, tuple[tuple[str, str, frozenset[str]], ...]] = {
    "admin": (("*", "*", frozenset({"publish", "consume", "admin"})),),
    "producer": (("a", "*", frozenset({"publish"})),),
    "consumer": (("a", "g", frozenset({"consume"})),),
    "topic-admin": (("a", "*", frozenset({"publish", "consume", "admin"})),),
    "anonymous": (),
}
CASES = [(topic, group) for topic in ("a", "b") for group in ("g", "h")]
CONFIG = f"""
auth:
  users:
    admin: {{token: "{TOKENS["admin"][1]}", roles: [admin]}}
    producer: {{token: "{TOKENS["producer"][1]}", roles: [producer]}}
    consumer: {{token: "{TOKENS["consumer"][1]}", roles: [consumer]}}
    topic-admin: {{token: "{TOKENS["topic-admin"][1]}", roles: [topic-admin]}}
  roles:
    producer: [{{topics: "a", allow: [publish]}}]
    consumer: [{{topics: "a", groups: "g", allow: [consume]}}]
    topic-admin: [{{topics: "a", allow: [publish, consume, admin]}}]
"""


def expected(identity: str, spec: CommandSpec, topic: str, group: str) -> bool:
    if spec.permission == "open":
        return True
    grants = GRANTS[identity]
    if identity == "anonymous":
        return False
    if spec.permission == "any":
        return spec.topic is None or any(fnmatchcase(topic, t) for t, _, _ in grants)
    return any(
        spec.permission in allow
        and fnmatchcase(topic, t)
        and (spec.group is None or fnmatchcase(group, g))
        for t, g, allow in grants
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("permissions")
    config = directory / "logq.yaml"
    config.write_text(CONFIG)
    with server_process(directory / "data", "--config", str(config)) as running:
        with Client(running.native, token=TOKENS["admin"][0]) as admin:
            for topic in ("a", "b"):
                admin.create_topic(topic, partitions=1)
        yield running


# -- every entry in the table ----------------------------------------------------------------


def test_every_command_and_route_has_an_entry_and_nothing_else_does() -> None:
    assert set(HANDLERS) == set(REGISTRY)
    asyncio.run(_served_routes_have_entries())
    for command, topic_from, group_from in ROUTES.values():
        spec = REGISTRY[command]
        assert (topic_from is None) == (spec.topic is None), command
        assert (group_from is None) == (spec.group is None), command


async def _served_routes_have_entries() -> None:
    broker = await Broker.open(BrokerConfig())
    try:
        app = create_app(broker, ConnectionCounter())  # refuses a route without an entry
    finally:
        await broker.close()
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    assert {(method, path) for method, path in served if method != "HEAD"} == set(ROUTES)


# -- the native protocol -----------------------------------------------------------------------


def _arguments(spec: CommandSpec, topic: str, group: str) -> list[str]:
    args = ["x", "x", "x"]
    if spec.topic == MESSAGE_ID:
        args[0] = f"{topic}:0:0"
    elif spec.topic is not None:
        args[spec.topic] = topic
    if spec.group is not None:
        args[spec.group] = group
    return args


class _Native:
    def __init__(self, running: Running, identity: str) -> None:
        host, port = running.native.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.parser = Parser()
        if identity != "anonymous":
            assert self.call(["AUTH", TOKENS[identity][0]]) == "OK"

    def call(self, command: list[str]) -> object:
        self.sock.sendall(encode_command(command))
        while True:
            value = self.parser.next_value()
            if value is NEED_MORE:
                data = self.sock.recv(65536)
                if not data:
                    return RespError("CLOSED")
                self.parser.feed(data)
                continue
            if isinstance(value, Push):
                continue
            return value

    def close(self) -> None:
        self.sock.close()


def _denied(reply: object) -> bool:
    if not isinstance(reply, RespError):
        return False
    text = str(reply)
    return text.startswith("FORBIDDEN") or text.startswith("NOAUTH authentication required")


def test_the_native_protocol_follows_the_table(server: Running) -> None:
    wrong: list[str] = []
    checked = 0
    for identity in IDENTITIES:
        for name, spec in sorted(REGISTRY.items()):
            for topic, group in CASES:
                connection = _Native(server, identity)
                try:
                    reply = connection.call([name, *_arguments(spec, topic, group)])
                finally:
                    connection.close()
                checked += 1
                if _denied(reply) == expected(identity, spec, topic, group):
                    wrong.append(f"{identity} {name} {topic}/{group}: {reply!r}")
    assert checked == len(REGISTRY) * len(IDENTITIES) * len(CASES)
    assert wrong == []


# -- the REST API --------------------------------------------------------------------------------


def _request(method: str, path: str, topic: str, group: str) -> tuple[str, dict[str, object]]:
    url = (
        path.replace("{topic}", topic)
        .replace("{group}", group)
        .replace("{id}", f"{topic}:0:0")
        .replace("{name}", "app.js")
    )
    body: dict[str, object] = {
        "name": topic,
        "group": group,
        "consumer": "c",
        "ids": [f"{topic}:0:0"],
    }
    return url, body


def test_the_rest_api_follows_the_table(server: Running) -> None:
    wrong: list[str] = []
    checked = 0
    with httpx.Client(base_url=server.http, timeout=10) as http:
        for identity in IDENTITIES:
            headers = (
                {}
                if identity == "anonymous"
                else {"Authorization": f"Bearer {TOKENS[identity][0]}"}
            )
            for (method, path), (command, _, _) in sorted(ROUTES.items()):
                spec = REGISTRY[command]
                for topic, group in CASES:
                    url, body = _request(method, path, topic, group)
                    json = body if method in ("POST", "PUT", "PATCH") else None
                    # a stream (/v1/events) answers its status first: no more is read
                    with http.stream(method, url, json=json, headers=headers) as answer:
                        status = answer.status_code
                    checked += 1
                    denied = status in (401, 403)
                    if denied == expected(identity, spec, topic, group):
                        wrong.append(f"{identity} {method} {url}: {status}")
    assert checked == len(ROUTES) * len(IDENTITIES) * len(CASES)
    assert wrong == []


def test_rest_replay_checks_the_group_named_in_its_body(server: Running) -> None:
    consumer = {"Authorization": f"Bearer {TOKENS['consumer'][0]}"}
    with httpx.Client(base_url=server.http, timeout=10, headers=consumer) as http:
        stolen = http.post("/v1/topics/a/replay", json={"group": "stolen"})
        assert stolen.status_code == 403, stolen.text
        assert "may not consume topic 'a' group 'stolen'" in stolen.json()["error"]["message"]
        assert http.post("/v1/topics/a/replay", json={}).status_code == 403  # no group: no pass


def test_a_name_missing_from_the_table_is_refused_to_everyone() -> None:
    security = Security.from_config(SecurityConfig(auth=AuthConfig((User("root", ADMIN_ROLE),))))
    root = Principal("root", ADMIN_ROLE)
    with pytest.raises(UnknownCommandError):
        security.authorize_command(root, "FLUSHALL", [])
    with pytest.raises(AuthRequiredError):
        security.authorize_command(None, "FLUSHALL", [])

    async def nothing() -> bytes:
        return b""

    async def run(check: object) -> bool:
        return True

    with pytest.raises(ForbiddenError, match="has no permission rule"):
        asyncio.run(security.authorize_route("POST", "/v1/flush", {}, {}, nothing, run))
