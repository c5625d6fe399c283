"""deploy/compose: the one-broker compose file brought up with podman-compose
on loopback ports, healthy, publishing and consuming, and taken down with
its volume; the Prometheus configs pass promtool."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from logq.bench.chaos import free_port
from logq.client import Client
from tests.deploy.tools import ROOT, run

COMPOSE = ROOT / "deploy" / "compose"
READY_TIMEOUT_S = 60.0


def _left(project: str, environ: dict[str, str], kind: str) -> list[str]:
    label = f"label=io.podman.compose.project={project}"
    command = {
        "container": ["podman", "ps", "--all", "--filter", label, "--format", "{{.Names}}"],
        "volume": ["podman", "volume", "ls", "--filter", label, "--format", "{{.Name}}"],
        "network": ["podman", "network", "ls", "--filter", label, "--format", "{{.Name}}"],
    }[kind]
    return run(command, env=environ).stdout.split()


def _publish_when_ready(native: str, http: str, started: float) -> float:
    """Seconds from `up` until a durable publish is acknowledged."""
    while True:
        try:
            with Client(native, connect_timeout_s=1, delivery_timeout_s=2) as client:
                client.create_topic("ready", partitions=1)
                client.publish("ready", b"first")
                return time.monotonic() - started
        except Exception:  # not up yet: refused, reset or timed out
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise
            time.sleep(0.1)


def test_compose_up_serves_and_down_leaves_nothing(image: str, podman: dict[str, str]) -> None:
    project = f"logq-test-{uuid.uuid4().hex[:8]}"
    native_port, http_port = free_port(), free_port()
    environ = {
        **podman,
        "LOGQ_IMAGE": image,
        "LOGQ_NATIVE_PORT": str(native_port),
        "LOGQ_HTTP_PORT": str(http_port),
    }
    compose = ["podman-compose", "--project-name", project, "--file", str(COMPOSE / "compose.yaml")]
    native, http = f"127.0.0.1:{native_port}", f"http://127.0.0.1:{http_port}"
    try:
        started = time.monotonic()
        run([*compose, "up", "-d"], env=environ, cwd=COMPOSE)
        ready_s = _publish_when_ready(native, http, started)
        print(f"\ncompose up to the first acknowledged publish: {ready_s:.1f} s")
        (container,) = _left(project, environ, "container")
        run(["podman", "healthcheck", "run", container], env=environ)
        (found,) = json.loads(run(["podman", "inspect", container], env=environ).stdout)
        assert found["Config"]["Env"].count("LOGQ_NODE_ID=logq-1") == 1
        assert httpx.get(f"{http}/health", timeout=5).json() == {"status": "ok"}
        with Client(native) as client:
            client.publish("ready", b"second")
            received = client.receive("ready", "g", max=10, wait="2s")
            assert [message.value for message in received] == [b"first", b"second"]
            for message in received:
                message.ack().result(5)
        assert "logq_" in httpx.get(f"{http}/metrics", timeout=5).text
    finally:
        run([*compose, "down", "-v"], env=environ, cwd=COMPOSE, check=False)
        containers, volumes = (
            _left(project, environ, "container"),
            _left(project, environ, "volume"),
        )
        # podman-compose 1.0 (Debian 12's) leaves the project's network
        # behind on `down`; docker compose and later podman-compose remove it
        networks = _left(project, environ, "network")
        for network in networks:
            run(["podman", "network", "rm", network], env=environ, check=False)
    assert containers == [] and volumes == [], (containers, volumes)
    assert networks in ([], [f"{project}_default"])


def test_the_monitoring_overlay_scrapes_the_broker_and_provisions_the_dashboard() -> None:
    overlay = yaml.safe_load((COMPOSE / "compose.monitoring.yaml").read_text())
    base = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert set(overlay["services"]) == {"prometheus", "grafana"}
    assert "logq" in base["services"]
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["logq:8080"]
    for volume in overlay["services"]["grafana"]["volumes"]:
        source = (COMPOSE / volume.split(":")[0]).resolve()
        assert source.exists(), source
    assert (ROOT / "deploy" / "grafana" / "logq-dashboard.json").exists()


@pytest.mark.parametrize("config", ["deploy/prometheus.yml", "deploy/compose/prometheus.yml"])
def test_prometheus_configs_pass_promtool(config: str, podman: dict[str, str]) -> None:
    run(["promtool", "check", "config", str(ROOT / config)], env=podman)


def test_the_compose_file_publishes_on_loopback_by_default() -> None:
    service = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["logq"]
    assert all(port.startswith("${LOGQ_BIND:-127.0.0.1}:") for port in service["ports"])
    assert Path(ROOT / service["build"]["dockerfile"]).exists()
