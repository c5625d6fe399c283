"""Configuration: defaults < YAML file < LOGQ_* environment < flags, each key checked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from logq.cli.main import cli
from logq.log import FsyncPolicy
from logq.server.config import build_config
from logq.server.config_parsing import ConfigError

SEEDS_SHAPE = """
broker:
  nodeId: node-7
  dataDir: /var/lib/logq
  fsync: interval
  listeners:
    native: "127.0.0.1:7171"
    http: ":8181"
defaults:
  topic:
    partitions: 12
    retention: {hours: 24, bytes: 1073741824}
  delivery: {visibilityTimeout: 45s, maxRetries: 4, dlqEnabled: true}
  delay: {enabled: true, maxDelay: 7d}
  priority: {lanes: 3}
server: {connectionsMax: 500, shutdownTimeoutS: 5}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "logq.yaml"
    path.write_text(text)
    return path


def test_defaults_listen_on_loopback_with_data_in_dot_data() -> None:
    config = build_config(config_file=None, environ={})
    assert (config.host, config.native_port, config.http_bind_host, config.http_port) == (
        "127.0.0.1",
        7070,
        "127.0.0.1",
        8080,
    )
    assert config.broker.data_dir == Path("data")
    assert config.broker.log.fsync is FsyncPolicy.ALWAYS


def test_the_seeds_file_shape_is_read(tmp_path: Path) -> None:
    config = build_config(config_file=write(tmp_path, SEEDS_SHAPE), environ={})
    assert config.broker.node_id == "node-7"
    assert config.broker.data_dir == Path("/var/lib/logq")
    assert config.broker.log.fsync is FsyncPolicy.INTERVAL
    assert (config.host, config.native_port, config.http_port) == ("127.0.0.1", 7171, 8181)
    topic = config.broker.topic_defaults
    assert topic.partitions == 12
    assert topic.retention_ms == 24 * 3_600_000
    assert topic.retention_bytes == 1 << 30
    assert topic.visibility_timeout_ms == 45_000
    assert topic.max_deliveries == 5
    assert config.connections_max == 500


def test_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    path = write(tmp_path, SEEDS_SHAPE)
    environ = {
        "LOGQ_PORT": "7272",
        "LOGQ_DATA_DIR": str(tmp_path / "env"),
        "LOGQ_HOST": "127.0.0.2",
    }
    config = build_config(config_file=path, environ=environ)
    assert (config.host, config.native_port) == ("127.0.0.2", 7272)
    assert config.broker.data_dir == tmp_path / "env"
    config = build_config(
        config_file=path, environ=environ, port=0, data_dir=tmp_path / "flag", http_port=0
    )
    assert (config.native_port, config.http_port) == (0, 0)
    assert config.broker.data_dir == tmp_path / "flag"
    assert build_config(config_file=path, environ=environ, memory=True).broker.data_dir is None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("broker: {fsync: sometimes}", "broker.fsync"),
        ("broker: {listeners: {native: 'nowhere'}}", "broker.listeners.native"),
        ("broker: {listeners: {http: ':99999'}}", "broker.listeners.http"),
        ("defaults: {topic: {partitions: 0}}", "defaults.topic.partitions"),
        ("defaults: {delivery: {visibilityTimeout: soon}}", "defaults.delivery.visibilityTimeout"),
        ("brokr: {}", "config.brokr"),
        ("defaults: {topic: {partitons: 3}}", "defaults.topic.partitons"),
        ("- just\n- a list", "top level"),
        ("trace: {retention: forever}", "trace.retention"),
        ("groups: {sessionTimeout: 1ms}", "groups.sessionTimeout"),
        ("broker: [unclosed", "not valid YAML"),
        ("limits: {messageBytes: 0}", "limits.messageBytes"),
        ("limits: {diskFree: 1}", "limits.diskFree"),
        ("server: {allowUnauthenticatedRemote: 'yes'}", "server.allowUnauthenticatedRemote"),
        ("limits: {partitions: 0}", "limits.partitions"),
        ("metrics: {aggregate: sometimes}", "metrics.aggregate"),
        ("metrics: {aggregated: true}", "metrics.aggregated"),
    ],
)
def test_a_bad_value_is_one_message_naming_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        build_config(config_file=write(tmp_path, text), environ={})


@pytest.mark.parametrize("port", ["seventy", "\u00b2", "70\u00b2"])
def test_a_bad_environment_value_names_the_variable(port: str) -> None:
    with pytest.raises(ConfigError, match="LOGQ_PORT"):
        build_config(config_file=None, environ={"LOGQ_PORT": port})


def test_logq_serve_exits_non_zero_on_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, "broker: {fsync: sometimes}")
    result = CliRunner().invoke(cli, ["serve", "--config", str(path)])
    assert result.exit_code != 0
    assert "broker.fsync" in result.output
    result = CliRunner().invoke(cli, ["serve", "--memory"], env={"LOGQ_HTTP_PORT": "-1"})
    assert result.exit_code != 0 and "LOGQ_HTTP_PORT" in result.output


def test_priority_lanes_are_named_in_the_file(tmp_path: Path) -> None:
    text = "defaults: {priority: {lanes: [urgent, high, normal, low]}}"
    config = build_config(config_file=write(tmp_path, text), environ={})
    assert config.broker.lanes == ("urgent", "high", "normal", "low")
    with pytest.raises(ConfigError, match=r"defaults\.priority\.lanes"):
        build_config(
            config_file=write(tmp_path, "defaults: {priority: {lanes: [high, low]}}"), environ={}
        )


def test_trace_and_group_sessions_are_set_in_the_file(tmp_path: Path) -> None:
    text = "trace: {retention: 2d, retentionBytes: 1048576}\ngroups: {sessionTimeout: 10s}"
    config = build_config(config_file=write(tmp_path, text), environ={})
    assert config.broker.trace_retention_ms == 2 * 86_400_000
    assert config.broker.trace_retention_bytes == 1 << 20
    assert config.broker.session_timeout_ms == 10_000


def test_the_partition_cap_and_aggregated_metrics_come_from_file_or_environment(
    tmp_path: Path,
) -> None:
    default = build_config(config_file=None, environ={})
    assert default.broker.partitions_max is None  # no cap
    assert default.metrics_aggregate is False
    path = write(tmp_path, "limits: {partitions: 30000}\nmetrics: {aggregate: true}")
    config = build_config(config_file=path, environ={})
    assert (config.broker.partitions_max, config.metrics_aggregate) == (30_000, True)
    environ = {"LOGQ_LIMITS_PARTITIONS": "500", "LOGQ_METRICS_AGGREGATE": "false"}
    config = build_config(config_file=path, environ=environ)
    assert (config.broker.partitions_max, config.metrics_aggregate) == (500, False)
    for bad in ("0", "many", "-3"):
        with pytest.raises(ConfigError, match="LOGQ_LIMITS_PARTITIONS"):
            build_config(config_file=None, environ={"LOGQ_LIMITS_PARTITIONS": bad})
    with pytest.raises(ConfigError, match="LOGQ_METRICS_AGGREGATE"):
        build_config(config_file=None, environ={"LOGQ_METRICS_AGGREGATE": "yes"})


def test_the_descriptor_cache_size_comes_from_the_file(tmp_path: Path) -> None:
    assert build_config(config_file=None, environ={}).broker.open_files_max is None
    config = build_config(config_file=write(tmp_path, "limits: {openFiles: 300}"), environ={})
    assert config.broker.open_files_max == 300
    with pytest.raises(ConfigError, match="openFiles"):
        build_config(config_file=write(tmp_path, "limits: {openFiles: 1}"), environ={})


def test_limits_are_named_in_the_file(tmp_path: Path) -> None:
    text = (
        "limits: {messageBytes: 1000, batchBytes: 65536, batchMessages: 50, publishMessages: 70,"
        " receiveMessages: 80, connections: 90, diskFreeMinBytes: 0}"
    )
    config = build_config(config_file=write(tmp_path, text), environ={})
    broker = config.broker
    assert (broker.message_bytes_max, broker.publish_messages_max) == (1000, 70)
    assert (broker.log.batch_bytes_max, broker.log.batch_records_max) == (65536, 50)
    assert (broker.receive_messages_max, broker.disk_free_min_bytes) == (80, 0)
    assert config.connections_max == 90


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "example.org"])
def test_listening_beyond_loopback_without_auth_must_be_asked_for(
    tmp_path: Path, host: str
) -> None:
    with pytest.raises(ConfigError, match="--allow-unauthenticated-remote"):
        build_config(config_file=None, environ={}, host=host)
    with pytest.raises(ConfigError, match="beyond this machine"):
        build_config(config_file=None, environ={"LOGQ_HOST": host})
    allowed = build_config(
        config_file=None, environ={}, host=host, allow_unauthenticated_remote=True
    )
    assert allowed.host == host
    text = "server: {allowUnauthenticatedRemote: true}\nbroker: {listeners: {http: '0.0.0.0:0'}}"
    assert build_config(config_file=write(tmp_path, text), environ={}).http_bind_host == "0.0.0.0"
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert build_config(config_file=None, environ={}, host=loopback).host == loopback


def test_logq_serve_refuses_a_remote_host_without_the_flag() -> None:
    result = CliRunner().invoke(cli, ["serve", "--memory", "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "--allow-unauthenticated-remote" in result.output


def documented_example() -> str:
    """The first YAML block of docs/operations.md: the file it says writes out the defaults."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    start = text.index("```yaml\nbroker:\n") + len("```yaml\n")
    return text[start : text.index("```\n", start)]


def test_the_documented_example_file_loads_to_the_defaults(tmp_path: Path) -> None:
    example = documented_example()
    assert "delivery:" in example and "backoff:" in example and "limits:" in example
    loaded = build_config(config_file=write(tmp_path, example), environ={})
    defaults = build_config(config_file=None, environ={})
    # the file names the HTTP listener's host; by default it is the native one's
    assert loaded.http_bind_host == defaults.http_bind_host
    assert replace(loaded, http_host=defaults.http_host) == defaults


def test_node_id_and_remote_exposure_come_from_the_environment(tmp_path: Path) -> None:
    # What a container image or a StatefulSet sets: the broker's name from the
    # pod's, and listening on every interface as the image's documented default.
    environ = {"LOGQ_NODE_ID": "logq-2", "LOGQ_HOST": "0.0.0.0"}
    with pytest.raises(ConfigError, match="--allow-unauthenticated-remote"):
        build_config(config_file=None, environ=environ)
    config = build_config(
        config_file=None, environ={**environ, "LOGQ_ALLOW_UNAUTHENTICATED_REMOTE": "true"}
    )
    assert config.broker.node_id == "logq-2"
    assert config.allow_unauthenticated_remote
    path = write(tmp_path, "server: {allowUnauthenticatedRemote: true}")
    closed = {**environ, "LOGQ_ALLOW_UNAUTHENTICATED_REMOTE": "false"}
    with pytest.raises(ConfigError, match="--allow-unauthenticated-remote"):
        build_config(config_file=path, environ=closed)
    assert build_config(config_file=path, environ=closed, allow_unauthenticated_remote=True).host


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOGQ_ALLOW_UNAUTHENTICATED_REMOTE", "yes"), ("LOGQ_NODE_ID", ""), ("LOGQ_NODE_ID", "a b")],
)
def test_a_bad_node_id_or_exposure_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        build_config(config_file=None, environ={name: value})


def test_archive_orphan_age_goes_down_to_a_second(tmp_path: Path) -> None:
    config = build_config(
        config_file=write(tmp_path, "archive: {url: 'file:///tmp/a', orphanAge: 1s}\n"),
        environ={},
    )
    assert config.broker.archive is not None
    assert config.broker.archive.settings.orphan_age_ms == 1000
    with pytest.raises(ConfigError, match=r"archive\.orphanAge: 500 ms is outside 1000\.\."):
        build_config(
            config_file=write(tmp_path, "archive: {url: 'file:///tmp/a', orphanAge: 500ms}\n"),
            environ={},
        )
