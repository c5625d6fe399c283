"""Authentication, authorization, quotas and TLS on both listeners, against a
real `logq serve` child with a config file; TLS with a throwaway CA (trustme)."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from click.testing import CliRunner

from logq.cli.main import cli
from logq.client import Client
from logq.client.connection import ConnectionLostError
from logq.errors import AuthRequiredError, ForbiddenError, ThrottledError
from logq.log.batch import encode_batch
from logq.protocol.encoder import encode_command
from logq.server.auth import (
    AuthConfig,
    Authenticator,
    Grant,
    Principal,
    User,
    hash_password,
    new_token,
    verify_password,
)
from logq.server.quotas import Quota, Quotas
from tests.harness import Running, server_process

PASSWORD = "correct horse battery staple"


# -- units ----------------------------------------------------------------------------------


def test_passwords_are_salted_pbkdf2_and_tokens_are_hashed() -> None:
    first, second = (
        hash_password(PASSWORD, iterations=1000),
        hash_password(PASSWORD, iterations=1000),
    )
    assert first != second and first.startswith("pbkdf2-sha256$1000$")
    assert verify_password(PASSWORD, first) and not verify_password("wrong", first)
    assert not verify_password(PASSWORD, "garbage")
    token, stored = new_token()
    assert stored.startswith("sha256$") and token not in stored


def test_grants_match_topic_and_group_patterns() -> None:
    worker = Principal("w", (Grant("orders*", "billing*", frozenset({"consume"})),))
    assert worker.allows("consume", "orders.eu", "billing-1")
    assert not worker.allows("consume", "orders.eu", "audit")
    assert not worker.allows("publish", "orders.eu")
    assert not worker.allows("consume", "payments", "billing")


def test_a_remembered_password_skips_the_slow_check() -> None:
    asyncio.run(_remembered())


async def _remembered() -> None:
    user = User("a", (Grant(),), password_hash=hash_password(PASSWORD, iterations=1000))
    authenticator = Authenticator(AuthConfig((user,)))
    checks: list[int] = []

    async def run(check: object) -> bool:
        checks.append(1)
        assert callable(check)
        return bool(check())

    assert (await authenticator.login("a", PASSWORD, run)).name == "a"
    assert (await authenticator.login("a", PASSWORD, run)).name == "a"
    assert len(checks) == 1
    with pytest.raises(AuthRequiredError):
        await authenticator.login("a", "nope", run)
    with pytest.raises(AuthRequiredError, match="invalid username or password"):
        await authenticator.login("nobody", PASSWORD, run)


def test_quotas_refuse_over_the_rate_and_refill_with_time() -> None:
    now = [100.0]
    quotas = Quotas(Quota(messages_per_s=100, bytes_per_s=10_000), clock=lambda: now[0])
    quotas.publish("c", 100, 1000)
    with pytest.raises(ThrottledError, match=r"100 messages/s; retry in 500 ms"):
        quotas.publish("c", 50, 10)
    quotas.publish("other", 100, 1000)  # per client
    now[0] += 0.5
    quotas.publish("c", 50, 10)
    with pytest.raises(ThrottledError, match="bytes/s"):
        quotas.publish("c", 1, 20_000)
    requests = Quotas(Quota(requests_per_s=2), clock=lambda: now[0])
    requests.request("c")
    requests.request("c")
    with pytest.raises(ThrottledError, match="requests/s"):
        requests.request("c")


# -- a server with auth, quotas and TLS -------------------------------------------------------


@pytest.fixture(scope="module")
def tokens() -> dict[str, tuple[str, str]]:
    return {name: new_token() for name in ("admin", "producer")}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, tokens: dict[str, tuple[str, str]], ca: trustme.CA
) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("secured")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    config = directory / "logq.yaml"
    config.write_text(
        f"""
auth:
  users:
    root: {{token: "{tokens["admin"][1]}", roles: [admin]}}
    shop: {{token: "{tokens["producer"][1]}", roles: [producer]}}
    alice: {{password: "{hash_password(PASSWORD, iterations=1000)}", roles: [billing]}}
  roles:
    producer: [{{topics: "orders*", allow: [publish]}}]
    billing: [{{topics: "orders*", groups: "billing*", allow: [consume]}}]
quotas:
  clients: {{shop: {{messagesPerSecond: 1000}}}}
tls: {{certFile: {directory / "server.pem"}, keyFile: {directory / "server.pem"}}}
"""
    )
    with server_process(directory / "data", "--config", str(config)) as running:
        yield running


def _tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_native_sign_in_and_permissions(
    secured: Running, tokens: dict[str, tuple[str, str]], ca: trustme.CA
) -> None:
    tls = _tls(ca)
    with Client(secured.native, token=tokens["admin"][0], tls=tls) as admin:
        admin.create_topic("orders", partitions=1)
        admin.create_topic("payments", partitions=1)
    with Client(secured.native, token=tokens["producer"][0], tls=tls) as shop:
        assert shop.publish("orders", b"o1").offset == 0
        with pytest.raises(ForbiddenError, match=r"may not (use|publish) topic 'payments'"):
            shop.publish("payments", b"p1")
        with pytest.raises(ForbiddenError):
            shop.receive("orders", "billing", max=1)
    with Client(secured.native, username="alice", password=PASSWORD, tls=tls) as alice:
        (message,) = alice.receive("orders", "billing-eu", max=1, wait="1s")
        message.ack().result(5)
        with pytest.raises(ForbiddenError):
            alice.receive("orders", "audit", max=1)
        with pytest.raises(ForbiddenError):
            alice.publish("orders", b"no")
    with pytest.raises(AuthRequiredError), Client(secured.native, token="wrong", tls=tls) as bad:
        bad.ping()


def test_nothing_but_hello_auth_ping_and_quit_before_signing_in(
    secured: Running, ca: trustme.CA
) -> None:
    host, port = secured.native.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as plain,
        _tls(ca).wrap_socket(plain, server_hostname=host) as sock,
    ):
        sock.sendall(encode_command(["PING"]) + encode_command(["TOPICS"]))
        reply = b""
        while b"NOAUTH" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(b"+PONG\r\n-NOAUTH authentication required")


def test_plain_tcp_is_refused_by_a_tls_listener(secured: Running) -> None:
    with (
        pytest.raises((ConnectionLostError, TimeoutError)),
        Client(secured.native, request_timeout_s=2, connect_timeout_s=2, token="x") as client,
    ):
        client.ping()


def test_http_sign_in_permissions_and_the_open_health_route(
    secured: Running, tokens: dict[str, tuple[str, str]], ca: trustme.CA
) -> None:
    with ca.cert_pem.tempfile() as ca_file:
        verify = ssl.create_default_context(cafile=ca_file)
        with httpx.Client(base_url=secured.http, verify=verify) as http:
            assert secured.http.startswith("https://")
            assert http.get("/health").json() == {"status": "ok"}
            refused = http.get("/v1/topics")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "NOAUTH"
            assert refused.headers["www-authenticate"] == 'Basic realm="logq"'
            assert http.get("/").status_code == 401  # the dashboard too
            shop = {"Authorization": f"Bearer {tokens['producer'][0]}"}
            sent = http.post(
                "/v1/topics/orders/messages", json={"messages": [{"value": "x"}]}, headers=shop
            )
            assert sent.status_code == 200, sent.text
            forbidden = http.get("/v1/topics/orders/messages", headers=shop)
            assert forbidden.status_code == 403
            assert forbidden.json()["error"]["code"] == "FORBIDDEN"
            basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
            alice = {"Authorization": f"Basic {basic}"}
            assert http.get("/v1/topics/orders/messages", headers=alice).status_code == 200
            created = http.post("/v1/topics", json={"name": "orders.x"}, headers=alice)
            assert created.status_code == 403
            root = {"Authorization": f"Bearer {tokens['admin'][0]}"}
            assert http.get("/metrics", headers=root).status_code == 200


def test_a_publish_over_the_quota_is_throttled(
    secured: Running, tokens: dict[str, tuple[str, str]], ca: trustme.CA
) -> None:
    # THROTTLED is retriable: a publish over the quota waits it out (within its
    # delivery timeout) rather than failing; a single command shows the error
    with Client(secured.native, token=tokens["producer"][0], tls=_tls(ca)) as shop:
        stored = [shop.publish_many("orders", [b"m"] * 200) for _ in range(10)]
        assert len({result.id for results in stored for result in results}) == 2000
    with (
        Client(secured.native, token=tokens["producer"][0], tls=_tls(ca)) as shop,
        pytest.raises(ThrottledError, match=r"'shop' is over its quota of 1000 messages/s"),
    ):
        shop.call("PUBBATCH", "orders", 0, encode_batch([b"m"] * 2000))


def test_secrets_never_reach_the_log(secured: Running, tokens: dict[str, tuple[str, str]]) -> None:
    output = b"".join(secured.output).decode(errors="replace")
    assert "logq ready" in output and "(fsync always, tls, auth)" in output
    for token, _ in tokens.values():
        assert token not in output
    assert PASSWORD not in output


def test_the_auth_commands_make_what_the_config_takes() -> None:
    made = CliRunner().invoke(cli, ["auth", "hash-password", "--stdin"], input="s3cret\n")
    assert made.exit_code == 0 and verify_password("s3cret", made.output.strip())
    token = CliRunner().invoke(cli, ["auth", "new-token"])
    assert token.exit_code == 0 and "config: sha256$" in token.output


def test_a_remote_listener_is_allowed_once_auth_is_on(tmp_path: Path) -> None:
    from logq.server.config import build_config  # noqa: PLC0415

    _, stored = new_token()
    config = tmp_path / "c.yaml"
    config.write_text(f'auth: {{users: {{ops: {{token: "{stored}", roles: [admin]}}}}}}\n')
    assert build_config(config_file=config, environ={}, host="0.0.0.0").host == "0.0.0.0"
