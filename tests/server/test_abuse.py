"""Hostile peers on loopback against a broker with authentication on: what a
connection may send before it signs in, how long it may wait, and that
sockets which never sign in cannot lock signed-in clients out. Real servers
with small timeouts (a short real wait against them is the test)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from logq.client import Client
from logq.errors import BadArgumentError
from logq.log import encode_batch
from logq.protocol.encoder import encode_command
from logq.server.auth import new_token
from logq.server.config import build_config
from logq.server.config_parsing import ConfigError
from logq.server.connections import ConnectionCounter
from tests.harness import Running, server_process, server_thread

ADMIN_TOKEN, ADMIN_HASH = new_token()
SHOP_TOKEN, SHOP_HASH = new_token()
CONFIG = f"""
auth:
  users:
    root: {{token: "{ADMIN_HASH}", roles: [admin]}}
    shop: {{token: "{SHOP_HASH}", roles: [producer]}}
  roles:
    producer: [{{topics: "a", allow: [publish]}}]
limits:
  connections: 50
  eventStreams: 3
  eventStreamsPerUser: 2
  handshakeBytes: 4096
server:
  handshakeTimeoutMs: 400ms
  idleTimeoutMs: 600ms
  httpHeaderTimeoutMs: 400ms
  httpBodyTimeoutMs: 400ms
  httpIdleTimeoutMs: 400ms
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("abuse")
    config = directory / "logq.yaml"
    config.write_text(CONFIG)
    with server_process(directory / "data", "--config", str(config)) as running:
        yield running


def _connect(running: Running) -> socket.socket:
    host, port = running.native.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _until_closed(sock: socket.socket, timeout_s: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout_s)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _send_quietly(sock: socket.socket, data: bytes) -> int:
    """Send what the server takes before it hangs up; how much that was."""
    sent = 0
    sock.settimeout(5)
    try:
        while sent < len(data):
            sent += sock.send(data[sent : sent + 65536])
    except OSError:
        pass
    return sent


def test_an_anonymous_connection_may_send_only_a_handshake(guarded: Running) -> None:
    with _connect(guarded) as sock:
        # an unfinished PING of 8 MB: it used to be buffered up to the frame limit
        _send_quietly(sock, b"*2\r\n$4\r\nPING\r\n$8000000\r\n" + b"x" * (8 << 20))
        reply = _until_closed(sock)
    assert reply.startswith(b"-TOOBIG more than 4096 bytes sent before signing in")
    # once signed in, the frame limit is the usual one
    big = b"y" * (1 << 20)
    with _connect(guarded) as sock:
        sock.sendall(encode_command(["AUTH", ADMIN_TOKEN]))
        assert sock.recv(100) == b"+OK\r\n"
        sock.sendall(encode_command([b"PING", big]) + encode_command(["QUIT"]))
        assert _until_closed(sock) == b"$%d\r\n%s\r\n+OK\r\n" % (len(big), big)


def test_a_connection_must_sign_in_within_the_handshake_timeout(guarded: Running) -> None:
    with _connect(guarded) as sock:
        started = time.monotonic()
        sock.sendall(encode_command(["PING"]))
        reply = _until_closed(sock)
    assert reply == b"+PONG\r\n-TIMEOUT not signed in within 400 ms\r\n"
    assert time.monotonic() - started < 5


def test_a_signed_in_connection_that_idles_is_closed(guarded: Running) -> None:
    with _connect(guarded) as sock:
        sock.sendall(encode_command(["AUTH", ADMIN_TOKEN]))
        reply = _until_closed(sock)
    assert reply == b"+OK\r\n-TIMEOUT nothing received for 600 ms\r\n"
    with Client(guarded.native, token=ADMIN_TOKEN) as admin:
        stats = admin.stats()
    assert stats["connections_timed_out_handshake"] >= 1
    assert stats["connections_timed_out_idle"] >= 1
    assert stats["connections_closed_oversize"] >= 1


def test_idle_anonymous_sockets_cannot_lock_out_a_signed_in_client(guarded: Running) -> None:
    host, port = guarded.http.removeprefix("http://").rsplit(":", 1)
    hostile: list[socket.socket] = []
    try:
        for index in range(75):  # half-sent native requests and HTTP headers
            if index < 55:
                native = _connect(guarded)
                native.sendall(b"*2\r\n$4\r\nPING\r\n")
                hostile.append(native)
            else:
                web = socket.create_connection((host, int(port)), timeout=10)
                web.sendall(b"GET /v1/topics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                hostile.append(web)
        with Client(guarded.native, token=ADMIN_TOKEN) as admin:
            assert admin.ping()
            stats = admin.stats()
        assert stats["unauthenticated_connections"] <= 25  # half the 50 connections
        assert stats["connections_evicted"] >= 50
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        answer = httpx.get(f"{guarded.http}/v1/topics", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
    finally:
        for sock in hostile:
            sock.close()


def _http(running: Running) -> socket.socket:
    host, port = running.http.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_an_http_request_must_arrive_within_its_timeouts(guarded: Running) -> None:
    with _http(guarded) as trickle:
        trickle.sendall(b"GET /v1/topics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = _until_closed(trickle)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'"code":"TIMEOUT","message":"the request header did not arrive within 400 ms"' in answer
    with _http(guarded) as silent:  # not a byte
        assert _until_closed(silent).startswith(b"HTTP/1.1 408 ")
    with _http(guarded) as slow_body:
        slow_body.sendall(
            b"POST /v1/topics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = _until_closed(slow_body)
    assert b"the request body did not arrive within 400 ms" in answer
    time.sleep(0.2)  # the handler that waited for the body has ended
    assert b"ClientDisconnect" not in b"".join(guarded.output)  # not an error
    with _http(guarded) as kept:  # a whole request, then nothing: keep-alive ends
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _until_closed(kept).startswith(b"HTTP/1.1 200 OK")


def test_request_headers_are_bounded(guarded: Running) -> None:
    # httptools keeps every header line it is given: 50 MB of them were held
    with _http(guarded) as sock:
        padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + padding)
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
    assert b"the limit httpHeaderBytes is 65536" in answer


def test_a_body_is_refused_at_its_limit_before_it_is_read_whole(guarded: Running) -> None:
    headers = (
        b"Host: 127.0.0.1\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
    )
    with _http(guarded) as declared:
        declared.sendall(
            b"POST /v1/topics HTTP/1.1\r\n" + headers + b"Content-Length: 40000000\r\n\r\n{"
        )
        declared.settimeout(10)
        assert declared.recv(65536).startswith(b"HTTP/1.1 413 ")
    with _http(guarded) as chunked:
        chunked.sendall(
            b"POST /v1/topics HTTP/1.1\r\n" + headers + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        sent = 0
        chunked.setblocking(False)
        answer = pending = b""
        while not answer and sent < 16 << 20:  # 16 MiB of a body whose limit is 1 MiB
            readable, writable, _ = select.select([chunked], [chunked], [], 10)
            if readable:
                answer = chunked.recv(65536)
            elif writable:
                taken = chunked.send(pending or chunk)
                pending = (pending or chunk)[taken:]
                sent += taken
        assert answer.startswith(b"HTTP/1.1 413 "), sent
        assert sent < 16 << 20


def test_one_user_cannot_take_every_dashboard_stream(guarded: Running) -> None:
    url = f"{guarded.http}/v1/events"
    shop = {"Authorization": f"Bearer {SHOP_TOKEN}"}
    root = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", url, headers=shop) as first,
        http.stream("GET", url, headers=shop) as second,
    ):
        lines = [stream.iter_lines() for stream in (first, second)]  # held open
        for line in lines:
            assert next(line).startswith("data: {")
        third = http.get(url, headers=shop)
        assert third.status_code == 429
        assert "2 event streams open for 'shop', the limit eventStreamsPerUser is 2" in third.text
        with http.stream("GET", url, headers=root) as admin:
            assert admin.status_code == 200


# -- the admission rules, without sockets -----------------------------------------------------


class _Member:
    def __init__(self, counter: ConnectionCounter) -> None:
        self.counter = counter
        self.evicted: str | None = None

    def evict(self, reason: str) -> None:
        self.evicted = reason


def test_the_oldest_unauthenticated_connection_makes_room() -> None:
    counter = ConnectionCounter(limit=4, per_address_limit=3, unauthenticated_limit=2)
    first, second, third = (_Member(counter) for _ in range(3))
    assert counter.admit(first, "a", signed_in=False, http=False) is None
    assert counter.admit(second, "a", signed_in=False, http=True) is None
    assert counter.admit(third, "b", signed_in=False, http=False) is None  # over 2: first goes
    assert first.evicted is not None and second.evicted is None
    assert counter.statistics()["unauthenticated_connections"] == 2
    assert (counter.native, counter.http_sockets) == (1, 1)
    fourth = _Member(counter)
    assert counter.admit(fourth, "b", signed_in=False, http=False) is None  # second (HTTP) goes
    assert second.evicted is not None
    assert (counter.native, counter.http_sockets) == (2, 0)
    second = fourth
    counter.signed_in(second)
    counter.signed_in(third)
    signed = [_Member(counter) for _ in range(2)]
    for member in signed:
        assert counter.admit(member, "a", signed_in=True, http=False) is None
    # four open, all signed in: nobody to make room, the newcomer is refused
    late = _Member(counter)
    refusal = counter.admit(late, "c", signed_in=False, http=False)
    assert refusal == "LIMIT 4 connections open, the limit is 4"
    counter.release(signed[0])
    counter.release(signed[0])  # twice is harmless
    assert counter.active == 3


def test_one_address_is_capped_and_gives_way_first() -> None:
    counter = ConnectionCounter(limit=100, per_address_limit=2, unauthenticated_limit=50)
    mine, theirs = _Member(counter), _Member(counter)
    assert counter.admit(theirs, "b", signed_in=False, http=False) is None
    assert counter.admit(mine, "a", signed_in=False, http=False) is None
    assert counter.admit(_Member(counter), "a", signed_in=True, http=False) is None
    newcomer = _Member(counter)
    assert counter.admit(newcomer, "a", signed_in=False, http=False) is None
    assert mine.evicted is not None and theirs.evicted is None  # the same address gives way
    refusal = counter.admit(_Member(counter), "a", signed_in=True, http=False)
    assert refusal is None  # newcomer (not signed in) gave way in turn
    assert newcomer.evicted is not None
    assert counter.admit(_Member(counter), "a", signed_in=True, http=False) == (
        "LIMIT 2 connections open from a, the limit is 2"
    )


def test_unauthenticated_connections_never_take_more_than_half() -> None:
    assert ConnectionCounter(limit=50, unauthenticated_limit=1_000).unauthenticated_limit == 25


# -- headers under logq- are the broker's --------------------------------------------------------


def test_a_client_cannot_write_the_brokers_headers(tmp_path: Path) -> None:
    with server_thread(tmp_path / "data") as running, Client(running.native) as client:
        client.create_topic("t", partitions=1)
        for name in ("logq-expires-at", "logq-dedup-id", "logq-origin-id"):
            with pytest.raises(BadArgumentError, match=f"header '{name}': headers under logq-"):
                client.publish("t", b"forged", headers={name: "1"})
            answer = httpx.post(
                f"{running.http}/v1/topics/t/messages",
                json={"value": "forged", "headers": {name: "1"}},
            )
            assert answer.status_code == 400 and "written by the broker only" in answer.text
        host, port = running.native.rsplit(":", 1)
        forged = [
            encode_batch([b"forged"], headers=[{"logq-expires-at": "1"}]),  # not marked expiring
            encode_batch([b"forged"], headers=[{"logq-expires-at": "soon"}], expiring=True),
            encode_batch([b"forged"], headers=[{"logq-dedup-id": "d"}]),  # not marked for dedup
            encode_batch([b"ok", b"forged"], headers=[{}, {"logq-origin-id": "t:0:0"}]),
        ]
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for batch in forged:
                sock.sendall(encode_command(["PUBBATCH", "t", 0, batch]))
                reply = sock.recv(4096)
                assert reply.startswith(b"-BADARG a record has the header 'logq-"), reply
        # what a producer writes for a ttl and a dedup id is still taken
        client.publish("t", b"kept", ttl="1h", dedup_id="once")
        (message,) = client.peek("t")
        assert message.value == b"kept"
        assert set(message.headers) == {"logq-expires-at", "logq-dedup-id"}


def test_the_timeouts_and_connection_limits_are_validated_settings(tmp_path: Path) -> None:
    path = tmp_path / "logq.yaml"
    path.write_text(
        "server: {handshakeTimeoutMs: 250ms, idleTimeoutMs: 5m, httpHeaderTimeoutMs: 2000}\n"
        "limits: {connectionsPerAddress: 7, unauthenticatedConnections: 3, handshakeBytes: 2048}\n"
    )
    config = build_config(config_file=path, environ={})
    assert (config.handshake_timeout_ms, config.idle_timeout_ms) == (250, 300_000)
    assert config.http_header_timeout_ms == 2000
    assert (config.connections_per_address_max, config.unauthenticated_connections_max) == (7, 3)
    assert config.handshake_bytes_max == 2048
    for bad, key in (
        ("server: {handshakeTimeoutMs: 10ms}", r"server\.handshakeTimeoutMs: 10 ms is not within"),
        ("server: {idleTimeoutMs: soon}", r"server\.idleTimeoutMs"),
        ("limits: {handshakeBytes: 10}", r"limits\.handshakeBytes"),
        ("limits: {connectionsPerAddress: 0}", r"limits\.connectionsPerAddress"),
    ):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=key):
            build_config(config_file=path, environ={})
