"""deploy/container/Containerfile: the image built offline on a Debian base,
run as users run it, reached through its published ports with logq's own
client, CLI and REST API, and stopped with a publisher running: it exits 0
and keeps every acknowledged publish."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import trustme

from logq.client import Client
from logq.errors import AuthRequiredError
from logq.server.auth import new_token
from tests.deploy import tools
from tests.deploy.containers import Container, broker_container

LOGQ = str(Path(sys.executable).parent / "logq")


def _cli(container: Container, *arguments: str) -> str:
    done = subprocess.run(
        [LOGQ, *arguments, "--server", container.native],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_image_is_configured_as_documented(image: str, podman: dict[str, str]) -> None:
    done = subprocess.run(
        ["podman", "image", "inspect", image],
        env=podman,
        capture_output=True,
        text=True,
        check=True,
    )
    (found,) = json.loads(done.stdout)
    config = found["Config"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"7070/tcp", "8080/tcp"}
    assert set(config["Volumes"]) == {"/var/lib/logq"}
    assert config["Entrypoint"] == ["logq"] and config["Cmd"] == ["serve"]
    assert "/health" in " ".join(found["Healthcheck"]["Test"])  # podman shows it here
    assert config["StopSignal"] == "SIGTERM"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    environment = dict(item.split("=", 1) for item in config["Env"])
    assert environment["LOGQ_HOST"] == "0.0.0.0"
    assert environment["LOGQ_DATA_DIR"] == "/var/lib/logq"


def test_the_image_and_the_layers_logq_adds_stay_within_their_sizes(
    image: str, podman: dict[str, str]
) -> None:
    """At most 250 MB uncompressed on a slim Python base, of which logq's
    layers (the venv and what the stages add) at most 120 MB."""

    def size(name: str) -> int:
        done = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Size}}", name],
            env=podman,
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout.strip())

    whole, base = size(image), size(tools.BASE_IMAGE)
    print(
        f"\nimage {whole / 1e6:.1f} MB, base {base / 1e6:.1f} MB, logq {(whole - base) / 1e6:.1f} MB"
    )
    assert whole <= 250_000_000, whole
    assert whole - base <= 120_000_000, whole - base


def test_publish_consume_and_metrics_through_the_published_ports(
    image: str, podman: dict[str, str]
) -> None:
    # read-only root, as the Helm chart runs it: only the volume and /tmp written
    with broker_container(image, podman, "--read-only", "--tmpfs", "/tmp") as container:
        print(f"\nhealthy {container.wait_healthy():.1f} s after podman run")
        assert "listening on 0.0.0.0" in container.logs()
        _cli(container, "topics", "create", "jobs", "--partitions", "2")
        _cli(container, "produce", "jobs", "from the cli")
        with Client(container.native) as client:
            published = client.publish("jobs", b"native", key=b"k")
            received = client.receive("jobs", "workers", max=10, wait="2s")
            assert sorted(message.value or b"" for message in received) == [
                b"from the cli",
                b"native",
            ]
            for message in received:
                message.ack().result(5)
        http = container.http
        answer = httpx.post(f"{http}/v1/topics/jobs/messages", json={"value": {"n": 1}}, timeout=5)
        assert answer.status_code in (200, 201), answer.text
        body = {"consumer": "c1", "max": 10, "wait": "2s"}
        answer = httpx.post(f"{http}/v1/topics/jobs/groups/rest/receive", json=body, timeout=10)
        messages = answer.json()["messages"]
        assert len(messages) == 3 and {"n": 1} in [message.get("value") for message in messages]
        ids = [message["id"] for message in messages]
        answer = httpx.post(f"{http}/v1/topics/jobs/groups/rest/ack", json={"ids": ids}, timeout=5)
        assert answer.status_code == 200, answer.text
        assert published.id in ids
        printed = _cli(container, "consume", "jobs", "--partition", str(published.partition))
        assert "native" in printed
        metrics = httpx.get(f"{http}/metrics", timeout=5).text
        assert "logq_" in metrics and 'topic="jobs"' in metrics


def test_podman_stop_with_a_publisher_running_loses_nothing_acknowledged(
    image: str, podman: dict[str, str]
) -> None:
    with broker_container(image, podman) as container:
        container.wait_healthy()
        acknowledged: list[bytes] = []
        failures: list[str] = []
        stop_publishing = threading.Event()
        with Client(container.native) as admin:
            admin.create_topic("orders", partitions=1)

        def publish() -> None:
            # A client that gives up quickly once the broker is gone: every
            # value it got an answer for must be there after the restart.
            with Client(container.native, delivery_timeout_s=3.0) as client:
                number = 0
                while not stop_publishing.is_set():
                    values = [f"{number}-{i}".encode() for i in range(50)]
                    number += 1
                    try:
                        client.publish_many("orders", values)
                    except Exception as error:  # whatever the client raises, it was not acked
                        failures.append(repr(error))
                        return
                    acknowledged.extend(values)

        publisher = threading.Thread(target=publish)
        publisher.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 2_000 and time.monotonic() < deadline and publisher.is_alive():
            time.sleep(0.05)
        assert len(acknowledged) >= 2_000, failures
        container.podman("stop", "--time", "30", container.name)
        stop_publishing.set()
        publisher.join(30)
        assert not publisher.is_alive()
        state = container.inspect()["State"]
        assert isinstance(state, dict)
        assert state["ExitCode"] == 0, container.logs()[-3000:]
        assert "stopped" in container.logs()
        container.podman("start", container.name)
        container.wait_healthy()
        stored: set[bytes] = set()
        with Client(container.native) as client:
            offset = 0
            while True:
                page = client.peek("orders", partition=0, offset=offset, limit=1000)
                if not page:
                    break
                stored.update(message.value or b"" for message in page)
                offset = page[-1].offset + 1
        missing = set(acknowledged) - stored
        print(f"\n{len(acknowledged)} acknowledged before the stop, {len(stored)} stored after")
        assert not missing, f"{len(missing)} acknowledged publishes lost"


def test_tokens_and_tls_from_a_mounted_config(
    image: str, podman: dict[str, str], tmp_path: Path
) -> None:
    """What README and docs/operations.md say to do past a laptop: a config
    with users and TLS mounted read-only, remote exposure without auth
    turned off; the image's HEALTHCHECK then speaks HTTPS."""
    token, stored = new_token()
    authority = trustme.CA()
    authority.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    (tmp_path / "logq.yaml").write_text(
        f'auth:\n  users:\n    ci: {{token: "{stored}", roles: [admin]}}\n'
        "tls: {certFile: /etc/logq/server.pem, keyFile: /etc/logq/server.pem}\n"
    )
    for path in tmp_path.iterdir():
        path.chmod(0o644)  # readable by the image's user
    tmp_path.chmod(0o755)
    tls = ssl.create_default_context()
    authority.configure_trust(tls)
    extra = [
        "--volume", f"{tmp_path}:/etc/logq:ro",
        "--env", "LOGQ_ALLOW_UNAUTHENTICATED_REMOTE=false",
        "--env", "LOGQ_HEALTH_SCHEME=https",
    ]  # fmt: skip
    with broker_container(
        image,
        podman,
        *extra,
        command=("serve", "--config", "/etc/logq/logq.yaml"),
        scheme="https",
    ) as container:
        container.wait_healthy()
        assert "tls, auth" in container.logs()
        with pytest.raises(AuthRequiredError), Client(container.native, tls=tls) as anonymous:
            anonymous.create_topic("secret", partitions=1)
        with Client(container.native, token=token, tls=tls) as client:
            client.create_topic("secret", partitions=1)
            client.publish("secret", b"over tls")
        answer = httpx.get(f"{container.http}/v1/topics", verify=tls, timeout=5)
        assert answer.status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        answer = httpx.get(f"{container.http}/v1/topics", verify=tls, headers=headers, timeout=5)
        assert answer.status_code == 200 and "secret" in answer.text
