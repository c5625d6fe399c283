"""`logq serve --archive s3://...` against moto's S3 server: a topic whose
disk keeps a tail, read whole through the native client after a restart,
audit reads, `logq archive status`."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from logq.cli.main import cli
from logq.client import Client
from tests.harness import start_process, stop_process


def test_a_server_archives_to_s3_and_reads_back_after_a_restart(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    urllib.request.urlopen(
        urllib.request.Request(f"{s3_endpoint}/served", method="PUT"), timeout=10
    ).close()
    env = {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_REGION": "us-east-1",
    }
    config = tmp_path / "logq.yaml"
    config.write_text(
        "broker: {segmentBytes: 65536}\n"
        f"archive: {{url: 's3://served/logq', endpoint: '{s3_endpoint}', region: us-east-1,"
        " tickMs: 100}\n"
    )
    data = tmp_path / "data"
    running = start_process(data, "--config", str(config), env=env)
    values = [f"order-{n:05d}-".encode() * 30 for n in range(4000)]
    try:
        with Client(running.native) as client:
            client.create_topic(
                "orders", partitions=1, archive=True, local_retention_bytes=128 * 1024
            )
            with client.producer() as producer:
                for value in values:
                    producer.send("orders", value)
            deadline = time.monotonic() + 60
            while True:  # the archive's own task uploads and trims the disk
                status = client.archive_status("orders")
                part = status["partitions"][0]
                if part["local_from"] > 0 and part["upload_lag_bytes"] == 0:
                    break
                assert time.monotonic() < deadline, status
                time.sleep(0.1)
            assert status["archive"] == "s3://served/logq"
            assert part["archived_from"] == 0 and part["start_offset"] == 0
            with urllib.request.urlopen(f"{running.http}/metrics", timeout=10) as answer:
                metrics = answer.read().decode()
            uploaded = next(
                line
                for line in metrics.splitlines()
                if line.startswith("logq_archive_uploaded_bytes_total ")
            )
            assert float(uploaded.split()[1]) > 0
            assert 'logq_archive_upload_lag_bytes{topic="orders"} 0.0' in metrics
    finally:
        stop_process(running)
    running = start_process(data, "--config", str(config), env=env)
    try:
        with Client(running.native) as client:
            found: list[bytes] = []
            while len(found) < len(values):
                page = client.peek("orders", partition=0, offset=len(found), limit=1000)
                assert page
                found.extend(m.value or b"" for m in page)
            assert found == values
        monkeypatch.setenv("LOGQ_SERVER", running.native)
        result = CliRunner().invoke(cli, ["archive", "status", "orders"])
        assert result.exit_code == 0, result.output
        assert "s3://served/logq" in result.output
    finally:
        stop_process(running)
