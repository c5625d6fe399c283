"""Failed sign-ins are throttled per user and per address, logged and
counted: units on a fake clock, and a real server with a short lockout."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest

from logq.errors import AuthRequiredError, ThrottledError
from logq.protocol.encoder import encode_command
from logq.server.auth import AuthConfig, Authenticator, Grant, User, hash_password, new_token
from logq.server.auth_throttle import FORGET_AFTER_S, SignInThrottle
from tests.harness import server_process

PASSWORD = "correct horse battery staple"


def test_failures_past_the_free_ones_make_the_next_try_wait() -> None:
    now = [1000.0]
    throttle = SignInThrottle(failures_max=3, lockout_ms_max=4_000, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("alice", "10.0.0.1")
        throttle.check("alice", "10.0.0.1")
    throttle.failed("alice", "10.0.0.1")  # the third: waits begin
    with pytest.raises(ThrottledError, match=r"for user 'alice': retry in 1001 ms"):
        throttle.check("alice", "10.0.0.9")  # from anywhere
    with pytest.raises(ThrottledError, match=r"for address 10\.0\.0\.1"):
        throttle.check("bob", "10.0.0.1")  # and anyone from there
    throttle.check("bob", "10.0.0.2")
    now[0] += 1.0
    throttle.check("alice", "10.0.0.1")
    throttle.failed("alice", "10.0.0.1")  # doubling
    with pytest.raises(ThrottledError, match="retry in 2001 ms"):
        throttle.check("alice", "10.0.0.1")
    for _ in range(5):
        now[0] += 10
        throttle.failed("alice", "10.0.0.1")
    with pytest.raises(ThrottledError, match="retry in 4001 ms"):  # capped
        throttle.check("alice", "10.0.0.1")
    assert throttle.statistics()["sign_in_failures"] == 9
    assert throttle.statistics()["sign_in_throttled"] == 4
    now[0] += 5
    throttle.succeeded("alice")
    throttle.failed(None, "10.0.0.1")
    with pytest.raises(ThrottledError):  # the address's count stays: it waits again
        throttle.check(None, "10.0.0.1")
    throttle.check("alice", "10.0.0.9")  # the user's count is gone
    now[0] += FORGET_AFTER_S + 10
    throttle.failed(None, "10.0.0.1")  # counted from zero again: no wait
    throttle.check(None, "10.0.0.1")


def test_a_throttled_sign_in_is_refused_before_the_password_is_checked() -> None:
    asyncio.run(_throttled_login())


async def _throttled_login() -> None:
    now = [0.0]
    user = User("a", (Grant(),), password_hash=hash_password(PASSWORD, iterations=1000))
    throttle = SignInThrottle(failures_max=2, clock=lambda: now[0])
    authenticator = Authenticator(AuthConfig((user,)), throttle)
    checks: list[int] = []

    async def run(check: object) -> bool:
        checks.append(1)
        assert callable(check)
        return bool(check())

    for _ in range(2):
        with pytest.raises(AuthRequiredError):
            await authenticator.login("a", "guess", run, "10.0.0.1")
    with pytest.raises(ThrottledError):
        await authenticator.login("a", PASSWORD, run, "10.0.0.2")
    assert len(checks) == 2  # the third try cost nothing
    now[0] += 1.0
    assert (await authenticator.login("a", PASSWORD, run, "10.0.0.2")).name == "a"


def test_guessing_over_fresh_connections_is_throttled_logged_and_counted(tmp_path: Path) -> None:
    token, stored = new_token()
    config = tmp_path / "logq.yaml"
    config.write_text(
        f"""
auth:
  users:
    root: {{token: "{stored}", roles: [admin]}}
    alice: {{password: "{hash_password(PASSWORD, iterations=1000)}", roles: [admin]}}
limits: {{authFailures: 3}}
server: {{authLockoutMaxMs: 500ms}}
"""
    )
    with server_process(tmp_path / "data", "--config", str(config)) as running:
        host, port = running.native.rsplit(":", 1)
        replies = []
        for attempt in range(5):  # a new connection each time: nothing resets
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(encode_command(["AUTH", "alice", f"guess-{attempt}"]))
                replies.append(sock.recv(4096))
        assert [r.split(b" ")[0] for r in replies] == [b"-NOAUTH"] * 3 + [b"-THROTTLED"] * 2
        time.sleep(0.6)  # the lockout (500 ms at most) passes
        headers = {"Authorization": f"Bearer {token}"}
        metrics = httpx.get(f"{running.http}/metrics", headers=headers, timeout=10).text
        assert "logq_sign_in_failures_total 3.0" in metrics
        assert "logq_sign_in_throttled_total 2.0" in metrics
    log = b"".join(running.output).decode(errors="replace")
    assert "sign-in failed: user 'alice' from 127.0.0.1" in log
    assert "guess-" not in log
