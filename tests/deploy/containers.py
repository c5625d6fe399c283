"""Running the image: a container on published loopback ports, its
volume, and what it printed; removed with everything it made."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from logq.bench.chaos import free_port
from tests.deploy.tools import run

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    volume: str
    native: str  # host:port on the host's loopback
    http: str  # http://host:port
    environ: dict[str, str]

    def podman(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["podman", *arguments], env=self.environ, check=check)

    def inspect(self) -> dict[str, object]:
        (found,) = json.loads(self.podman("inspect", self.name).stdout)
        assert isinstance(found, dict)
        return found

    def logs(self) -> str:
        done = self.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds until /health answers through the published port and the
        image's own HEALTHCHECK passes (run by hand: podman's timers need
        systemd, which this host lacks)."""
        started = time.monotonic()
        while True:
            try:
                # the answer, not the certificate: TLS is checked by the clients
                answer = httpx.get(f"{self.http}/health", timeout=2, verify=False)
                if answer.json() == {"status": "ok"}:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            state = self.inspect()["State"]
            assert isinstance(state, dict)
            if not state.get("Running"):
                pytest.fail(f"the container stopped: {state}\n{self.logs()[-3000:]}")
            if time.monotonic() - started > timeout_s:
                pytest.fail(f"/health did not answer in {timeout_s} s:\n{self.logs()[-3000:]}")
            time.sleep(0.1)
        seconds = time.monotonic() - started
        self.podman("healthcheck", "run", self.name)
        return seconds


@contextmanager
def broker_container(
    image: str,
    environ: dict[str, str],
    *extra: str,
    command: tuple[str, ...] = (),
    scheme: str = "http",
) -> Iterator[Container]:
    """The image run as a user runs it: ports published on 127.0.0.1 only
    (the broker inside listens on every interface of its own network), data
    on a named volume. Removed afterwards with its volume."""
    suffix = uuid.uuid4().hex[:8]
    native_port, http_port = free_port(), free_port()
    container = Container(
        name=f"logq-test-{suffix}",
        volume=f"logq-test-{suffix}",
        native=f"127.0.0.1:{native_port}",
        http=f"{scheme}://127.0.0.1:{http_port}",
        environ=environ,
    )
    try:
        container.podman(
            "run", "--detach", "--name", container.name,
            "--publish", f"127.0.0.1:{native_port}:7070",
            "--publish", f"127.0.0.1:{http_port}:8080",
            "--volume", f"{container.volume}:/var/lib/logq", *extra, image, *command,
        )  # fmt: skip
        yield container
    finally:
        container.podman("rm", "--force", "--time", "0", container.name, check=False)
        container.podman("volume", "rm", "--force", container.volume, check=False)
