"""deploy/: the Grafana dashboard and the Prometheus example name only
series the server really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from logq.client import Client
from tests.harness import server_thread

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_every_series_the_grafana_dashboard_reads_is_exported(tmp_path: Path) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "logq-dashboard.json").read_text())
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\blogq_[a-z_]+", target["expr"])
    }
    assert len(wanted) >= 15
    with server_thread(tmp_path / "data") as running, Client(running.native) as client:
        client.create_topic("jobs", partitions=1)
        client.publish("jobs", b"x")
        (message,) = client.receive("jobs", "g", max=1, wait="1s")
        message.ack().result(5)
        httpx.get(f"{running.http}/health")
        text = httpx.get(f"{running.http}/metrics").text
    exported = set(re.findall(r"^(logq_[a-z_]+)", text, re.MULTILINE))
    assert wanted <= exported, sorted(wanted - exported)


def test_the_prometheus_example_scrapes_metrics() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]
