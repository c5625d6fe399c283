"""Server configuration: defaults < YAML file < LOGQ_* environment < flags.

The YAML file has the shape people already write (see docs/operations.md):

    broker:
      nodeId: node-1
      dataDir: ./data
      fsync: always
      listeners: {native: "127.0.0.1:7070", http: "127.0.0.1:8080"}
    defaults:
      topic: {partitions: 6, retention: {hours: 168, bytes: 10737418240}}
      delivery: {visibilityTimeout: 30s, maxDeliveries: 5, dlqEnabled: true}

Every key is checked; a bad one stops the server with one message naming it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from logq.broker import BrokerConfig, TopicSettings
from logq.broker.archiving import ArchiveConfig
from logq.broker.backoff import parse_backoff
from logq.broker.settings import GroupSettings
from logq.durations import parse_duration_ms
from logq.errors import BadArgumentError
from logq.lanes import Lanes
from logq.log import FsyncPolicy, LogConfig
from logq.log.file_cache import OPEN_FILES_MIN
from logq.server.config_parsing import ConfigError, check_keys, mapping
from logq.server.faults import crash_hook
from logq.server.security_config import SecurityConfig, parse_security, tls_files

DEFAULT_HOST = "127.0.0.1"
DEFAULT_NATIVE_PORT = 7070
DEFAULT_HTTP_PORT = 8080
DEFAULT_DATA_DIR = Path("data")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    native_port: int = DEFAULT_NATIVE_PORT
    http_host: str | None = None  # None: same as host
    http_port: int = DEFAULT_HTTP_PORT
    broker: BrokerConfig = field(default_factory=lambda: BrokerConfig(data_dir=DEFAULT_DATA_DIR))
    connections_max: int = 10_000
    shutdown_timeout_s: float = 10.0
    log_json: bool = False
    # Listening beyond loopback with authentication off must be asked for.
    allow_unauthenticated_remote: bool = False
    # names a reverse proxy in front serves this broker under (server.allowedHosts)
    allowed_hosts: tuple[str, ...] = ()
    security: SecurityConfig = field(default_factory=SecurityConfig)
    # native protocol: the largest bulk string (a batch), and the most bytes
    # buffered before a frame completes; HTTP: request bodies
    frame_bytes_max: int = 64 << 20
    buffer_bytes_max: int = 128 << 20
    http_body_bytes_max: int = 1 << 20
    http_header_bytes_max: int = 64 << 10  # a request's line and headers
    http_publish_body_bytes_max: int = 64 << 20
    event_streams_max: int = 32  # open dashboard event streams
    event_streams_per_user_max: int = 4  # of those, held by one user (or address, auth off)
    # connections: from one address, and not signed in yet (at most half of
    # connections_max); before signing in a connection may send this much
    connections_per_address_max: int = 2_500  # a quarter of the default connections_max
    unauthenticated_connections_max: int = 1_000
    handshake_bytes_max: int = 16 << 10
    # how long a native connection may take to sign in, and stay silent with
    # nothing in progress; how long an HTTP request's header and body may take
    # to arrive, and an HTTP connection wait for its next request
    handshake_timeout_ms: int = 10_000
    idle_timeout_ms: int = 600_000
    http_header_timeout_ms: int = 10_000
    http_body_timeout_ms: int = 60_000
    http_idle_timeout_ms: int = 5_000
    # failed sign-ins one user, or one address, may make before each further
    # try waits (doubling, up to auth_lockout_ms_max)
    auth_failures_max: int = 5
    auth_lockout_ms_max: int = 60_000
    # /metrics sums the per-topic and per-group families over topics and
    # groups (labels dropped): its size no longer grows with them
    metrics_aggregate: bool = False

    @property
    def http_bind_host(self) -> str:
        return self.http_host or self.host


def _port(key: str, value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{key}: expected a port number 0..65535, got {value!r}")
    return value


def _listener(key: str, value: object) -> tuple[str | None, int]:
    """ "host:port", ":port" or a port number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None, _port(key, value)
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key}: expected 'host:port' or ':port', got {value!r}")
    host, _, port = value.rpartition(":")
    return (host.strip("[]") or None), _port(key, port)


def load_file(path: Path) -> dict[str, Any]:
    # a start without a config file (and the help) does not load the YAML parser
    import yaml  # noqa: PLC0415

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return loaded


def apply_file(config: ServerConfig, data: Mapping[str, Any]) -> ServerConfig:
    check_keys(
        "config",
        data,
        {
            "broker",
            "defaults",
            "server",
            "trace",
            "groups",
            "limits",
            "auth",
            "quotas",
            "tls",
            "metrics",
            "archive",
        },
    )
    broker_data = mapping("broker", data.get("broker"))
    check_keys(
        "broker",
        broker_data,
        {
            "nodeId",
            "dataDir",
            "listeners",
            "fsync",
            "fsyncIntervalMs",
            "scrubBytesPerSecond",
            "segmentMs",
            *STORAGE_KEYS,
        },
    )
    broker = config.broker
    changes: dict[str, Any] = {}
    if "nodeId" in broker_data:
        changes["node_id"] = str(broker_data["nodeId"])
    if "dataDir" in broker_data:
        changes["data_dir"] = Path(str(broker_data["dataDir"]))
    log = broker.log
    if "fsync" in broker_data:
        try:
            log = replace(log, fsync=FsyncPolicy(broker_data["fsync"]))
        except ValueError:
            raise ConfigError(
                f"broker.fsync: expected always, interval or never, got {broker_data['fsync']!r}"
            ) from None
    if "fsyncIntervalMs" in broker_data:
        log = replace(
            log,
            fsync_interval_ms=_duration("broker.fsyncIntervalMs", broker_data["fsyncIntervalMs"]),
        )
    storage_changes: dict[str, Any] = {}
    for key, (where, name, low, high) in STORAGE_KEYS.items():
        if key in broker_data:
            value = _int(f"broker.{key}", broker_data[key], low, high)
            (storage_changes if where == "log" else changes)[name] = value
    log = replace(log, **storage_changes)
    if "segmentMs" in broker_data:
        log = replace(log, segment_ms=_duration("broker.segmentMs", broker_data["segmentMs"]))
    changes["log"] = log
    if "scrubBytesPerSecond" in broker_data:
        changes["scrub_bytes_per_second"] = _int(
            "broker.scrubBytesPerSecond", broker_data["scrubBytesPerSecond"], 0, 1 << 40
        )
    listeners = mapping("broker.listeners", broker_data.get("listeners"))
    check_keys("broker.listeners", listeners, {"native", "tcp", "http", "grpc"})
    server_changes: dict[str, Any] = {}
    for name in ("native", "tcp", "grpc"):
        if name in listeners:
            host, port = _listener(f"broker.listeners.{name}", listeners[name])
            server_changes["native_port"] = port
            if host:
                server_changes["host"] = host
    if "http" in listeners:
        host, port = _listener("broker.listeners.http", listeners["http"])
        server_changes["http_port"] = port
        if host:
            server_changes["http_host"] = host
    defaults = mapping("defaults", data.get("defaults"))
    check_keys("defaults", defaults, {"topic", "delivery", "delay", "priority"})
    changes["topic_defaults"] = _topic_defaults(defaults, broker.topic_defaults)
    lanes = mapping("defaults.priority", defaults.get("priority")).get("lanes")
    if isinstance(lanes, list):
        try:
            changes["lanes"] = Lanes(lanes).order
        except BadArgumentError as error:
            raise ConfigError(f"defaults.priority.lanes: {error}") from None
    elif lanes is not None:
        _int("defaults.priority.lanes", lanes, 3, 3)  # a count: the three default lanes
    changes["group_defaults"] = broker.group_defaults
    changes.update(_trace_and_groups(data))
    limit_changes, log_changes, server_limit_changes = _limits(data)
    changes.update(limit_changes)
    changes["log"] = replace(changes["log"], **log_changes)
    server_changes.update(server_limit_changes)
    if data.get("archive") is not None:
        changes["archive"] = _archive(mapping("archive", data.get("archive")), broker.archive)
    server = mapping("server", data.get("server"))
    check_keys(
        "server",
        server,
        {
            "connectionsMax",
            "shutdownTimeoutS",
            "logJson",
            "allowUnauthenticatedRemote",
            "allowedHosts",
            *TIMEOUT_KEYS,
        },
    )
    server_changes.update(_timeouts(server))
    if "allowedHosts" in server:
        server_changes["allowed_hosts"] = _host_names(server["allowedHosts"])
    if "allowUnauthenticatedRemote" in server:
        value = server["allowUnauthenticatedRemote"]
        if not isinstance(value, bool):
            raise ConfigError(
                f"server.allowUnauthenticatedRemote: expected true or false, got {value!r}"
            )
        server_changes["allow_unauthenticated_remote"] = value
    if "connectionsMax" in server:
        server_changes["connections_max"] = _int(
            "server.connectionsMax", server["connectionsMax"], 1, 1_000_000
        )
    if "shutdownTimeoutS" in server:
        server_changes["shutdown_timeout_s"] = float(
            _int("server.shutdownTimeoutS", server["shutdownTimeoutS"], 0, 3600)
        )
    if "logJson" in server:
        server_changes["log_json"] = bool(server["logJson"])
    server_changes["security"] = parse_security(data, config.security)
    metrics = mapping("metrics", data.get("metrics"))
    check_keys("metrics", metrics, {"aggregate"})
    if "aggregate" in metrics:
        server_changes["metrics_aggregate"] = _bool("metrics.aggregate", metrics["aggregate"])
    return replace(config, broker=replace(broker, **changes), **server_changes)


# `archive:` keys that are byte counts or counts: field, least, most
ARCHIVE_NUMBERS: dict[str, tuple[str, int, int]] = {
    "cacheBytes": ("cache_bytes", 1 << 20, 1 << 50),
    "chunkBytes": ("chunk_bytes", 64 << 10, 1 << 30),
    "uploadConcurrency": ("upload_concurrency", 1, 256),
    "uploadBytesPerSecond": ("upload_bytes_per_s", 0, 1 << 40),
    "remoteReadsMax": ("remote_reads_max", 1, 1024),
}
# `archive:` durations: field, least, most (ms). orphanAge may be as short as
# a second: a broker reconciles between its own uploads, never during one, so
# the bound only has to cover another writer's put-to-record interval (a
# broker taking the partition over), and short ones let fault tests and
# small deployments see the store settle
ARCHIVE_DURATIONS: dict[str, tuple[str, int, int]] = {
    "purgeGrace": ("purge_grace_ms", 0, 30 * 86_400_000),
    "orphanAge": ("orphan_age_ms", 1_000, 30 * 86_400_000),
    "quietRoll": ("quiet_roll_ms", 1_000, 30 * 86_400_000),
    # below the clients' request timeout (30 s), so a reader hears UNAVAILABLE
    "remoteReadTimeout": ("remote_read_timeout_ms", 100, 600_000),
}


def _archive(data: Mapping[str, Any], base: ArchiveConfig | None) -> ArchiveConfig:
    """`archive: {url: s3://bucket/prefix, endpoint: ..., region: ...,
    cacheBytes: ..., uploadConcurrency: ..., ...}` (docs/operations.md)."""
    check_keys(
        "archive",
        data,
        {
            "url",
            "endpoint",
            "region",
            "cacheDir",
            "tickMs",
            "reconcileIntervalMs",
            *ARCHIVE_NUMBERS,
            *ARCHIVE_DURATIONS,
        },
    )
    url = data.get("url", base.url if base is not None else None)
    if not isinstance(url, str) or not url:
        raise ConfigError("archive.url: expected s3://bucket/prefix or file:///directory")
    archive = base or ArchiveConfig(url)
    settings = archive.settings
    for key, (name, low, high) in ARCHIVE_NUMBERS.items():
        if key in data:
            settings = replace(settings, **{name: _int(f"archive.{key}", data[key], low, high)})
    for key, (name, low, high) in ARCHIVE_DURATIONS.items():
        if key in data:
            value = _duration(f"archive.{key}", data[key])
            if not low <= value <= high:
                raise ConfigError(f"archive.{key}: {value} ms is outside {low}..{high} ms")
            settings = replace(settings, **{name: value})
    changes: dict[str, Any] = {"url": url, "settings": settings}
    for key in ("endpoint", "region"):
        if key in data:
            changes[key] = None if data[key] is None else str(data[key])
    if "cacheDir" in data:
        changes["cache_directory"] = Path(str(data["cacheDir"]))
    if "tickMs" in data:
        changes["tick_ms"] = _duration("archive.tickMs", data["tickMs"])
    if "reconcileIntervalMs" in data:
        changes["reconcile_interval_ms"] = _duration(
            "archive.reconcileIntervalMs", data["reconcileIntervalMs"]
        )
    result = replace(archive, **changes)
    _check_archive_url(result.url)
    return result


def _check_archive_url(url: str) -> None:
    if not url.startswith(("s3://", "file://", "memory://")):
        raise ConfigError(
            f"archive url {url!r}: expected s3://bucket/prefix, file:///directory or memory://"
        )


# `server:` durations ("250ms", "10s" or ms): field, least, most (ms)
TIMEOUT_KEYS: dict[str, tuple[str, int, int]] = {
    "handshakeTimeoutMs": ("handshake_timeout_ms", 50, 3_600_000),
    "idleTimeoutMs": ("idle_timeout_ms", 50, 7 * 86_400_000),
    "httpHeaderTimeoutMs": ("http_header_timeout_ms", 50, 3_600_000),
    "httpBodyTimeoutMs": ("http_body_timeout_ms", 50, 3_600_000),
    "httpIdleTimeoutMs": ("http_idle_timeout_ms", 50, 3_600_000),
    "authLockoutMaxMs": ("auth_lockout_ms_max", 0, 86_400_000),
}


def _timeouts(server: Mapping[str, Any]) -> dict[str, int]:
    found: dict[str, int] = {}
    for key, (name, low, high) in TIMEOUT_KEYS.items():
        if key in server:
            value = _duration(f"server.{key}", server[key])
            if not low <= value <= high:
                raise ConfigError(f"server.{key}: {value} ms is not within {low}..{high} ms")
            found[name] = value
    return found


_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")


def _host_names(value: object) -> tuple[str, ...]:
    """`server.allowedHosts`: the names (no port) a proxy serves the broker under."""
    if not isinstance(value, list) or len(value) > 100:
        raise ConfigError(f"server.allowedHosts: expected a list of host names, got {value!r}")
    names = []
    for item in value:
        name = item.lower() if isinstance(item, str) else ""
        if not _HOST_NAME.fullmatch(name):
            raise ConfigError(f"server.allowedHosts: {item!r} is not a host name (no port)")
        names.append(name)
    return tuple(names)


def _trace_and_groups(data: Mapping[str, Any]) -> dict[str, Any]:
    """`trace: {retention: 7d, retentionBytes: n, fsyncInterval: 1s}` and
    `groups: {sessionTimeout: 30s}`."""
    changes: dict[str, Any] = {}
    trace = mapping("trace", data.get("trace"))
    check_keys("trace", trace, {"retention", "retentionBytes", "fsyncInterval"})
    if "retention" in trace:
        changes["trace_retention_ms"] = _duration("trace.retention", trace["retention"])
    if "retentionBytes" in trace:
        changes["trace_retention_bytes"] = _int(
            "trace.retentionBytes", trace["retentionBytes"], 1 << 20, 2**62
        )
    if "fsyncInterval" in trace:
        changes["trace_fsync_interval_ms"] = _duration(
            "trace.fsyncInterval", trace["fsyncInterval"]
        )
    groups = mapping("groups", data.get("groups"))
    check_keys("groups", groups, {"sessionTimeout"})
    if "sessionTimeout" in groups:
        session = _duration("groups.sessionTimeout", groups["sessionTimeout"])
        if not 100 <= session <= 3_600_000:
            raise ConfigError(f"groups.sessionTimeout: {session} ms is not within 100 ms..1h")
        changes["session_timeout_ms"] = session
    return changes


# the most `limits.partitions` may say: past what any descriptor limit allows today
PARTITIONS_MAX_HIGHEST = 10_000_000

# `limits:` keys: (where the value goes, its field, low, high)
LIMIT_KEYS: dict[str, tuple[str, str, int, int]] = {
    "messageBytes": ("broker", "message_bytes_max", 1, 256 << 20),
    "keyBytes": ("broker", "key_bytes_max", 1, 256 << 20),
    "headerCount": ("broker", "header_count_max", 0, 65_535),
    "headerBytes": ("broker", "header_bytes_max", 2, 256 << 20),
    "topicNameLength": ("broker", "topic_name_length_max", 1, 200),
    "partitionsPerTopic": ("broker", "partitions_per_topic_max", 1, 1024),
    "partitions": ("broker", "partitions_max", 1, PARTITIONS_MAX_HIGHEST),
    "openFiles": ("broker", "open_files_max", OPEN_FILES_MIN, 10_000_000),
    "frameBytes": ("server", "frame_bytes_max", 1 << 10, 1 << 30),
    "bufferBytes": ("server", "buffer_bytes_max", 1 << 10, 1 << 31),
    "httpBodyBytes": ("server", "http_body_bytes_max", 1 << 10, 1 << 30),
    "httpHeaderBytes": ("server", "http_header_bytes_max", 1 << 10, 16 << 20),
    "httpPublishBodyBytes": ("server", "http_publish_body_bytes_max", 1 << 10, 1 << 31),
    "eventStreams": ("server", "event_streams_max", 1, 10_000),
    "eventStreamsPerUser": ("server", "event_streams_per_user_max", 1, 10_000),
    "connectionsPerAddress": ("server", "connections_per_address_max", 1, 1_000_000),
    "unauthenticatedConnections": ("server", "unauthenticated_connections_max", 1, 1_000_000),
    "handshakeBytes": ("server", "handshake_bytes_max", 1 << 10, 1 << 20),
    "authFailures": ("server", "auth_failures_max", 1, 1_000),
    "batchBytes": ("log", "batch_bytes_max", 1 << 10, 256 << 20),
    "batchMessages": ("log", "batch_records_max", 1, 1_000_000),
    "publishMessages": ("broker", "publish_messages_max", 1, 1_000_000),
    "receiveMessages": ("broker", "receive_messages_max", 1, 1_000_000),
    "connections": ("server", "connections_max", 1, 1_000_000),
    "diskFreeMinBytes": ("broker", "disk_free_min_bytes", 0, 2**62),
}


# `broker.<key>`: how the files on disk are cut (small values make a short
# run roll segments, write checkpoints, rotate the commit journal and take
# state snapshots, as `logq bench corrupt` needs).
STORAGE_KEYS: dict[str, tuple[str, str, int, int]] = {
    "segmentBytes": ("log", "segment_bytes", 4 << 10, 4 << 30),
    "indexIntervalBytes": ("log", "index_interval_bytes", 64, 64 << 20),
    "checkpointIntervalBytes": ("log", "checkpoint_interval_bytes", 1, 1 << 40),
    "snapshotBytes": ("broker", "snapshot_bytes", 1, 1 << 40),
    "commitFlushBytes": ("broker", "commit_flush_bytes", 1, 1 << 40),
    "commitFlushIntervalMs": ("broker", "commit_flush_interval_ms", 10, 3_600_000),
}


def _limits(
    data: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """`limits: {messageBytes: n, ...}`: broker, log and server changes."""
    limits = mapping("limits", data.get("limits"))
    check_keys("limits", limits, {*LIMIT_KEYS, "inFlightPerPartition"})
    found: dict[str, dict[str, Any]] = {"broker": {}, "log": {}, "server": {}}
    for key, value in limits.items():
        if key == "inFlightPerPartition":  # the default of every group's max_in_flight
            found["broker"]["group_defaults"] = replace(
                GroupSettings(),
                max_in_flight=_int("limits.inFlightPerPartition", value, 1, 10_000_000),
            )
            continue
        where, name, low, high = LIMIT_KEYS[key]
        found[where][name] = _int(f"limits.{key}", value, low, high)
    return found["broker"], found["log"], found["server"]


def _duration(key: str, value: object) -> int:
    try:
        return parse_duration_ms(value, name=key)
    except BadArgumentError as error:
        raise ConfigError(str(error)) from None


def _bool(key: str, value: object) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _int(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}: expected an integer within {low}..{high}, got {value!r}")
    return value


def _topic_defaults(defaults: Mapping[str, Any], base: TopicSettings) -> TopicSettings:
    topic = mapping("defaults.topic", defaults.get("topic"))
    check_keys("defaults.topic", topic, {"partitions", "replicationFactor", "retention"})
    changes: dict[str, Any] = {}
    if "partitions" in topic:
        changes["partitions"] = _int("defaults.topic.partitions", topic["partitions"], 1, 1024)
    if "replicationFactor" in topic:
        # One broker today: a factor of 1 is all there is; accept 1 only.
        factor = _int("defaults.topic.replicationFactor", topic["replicationFactor"], 1, 1)
        del factor
    retention = mapping("defaults.topic.retention", topic.get("retention"))
    check_keys("defaults.topic.retention", retention, {"hours", "ms", "time", "bytes"})
    if "hours" in retention:
        changes["retention_ms"] = (
            _int("defaults.topic.retention.hours", retention["hours"], 0, 10 * 365 * 24) * 3_600_000
        )
    if "ms" in retention:
        changes["retention_ms"] = _int("defaults.topic.retention.ms", retention["ms"], 0, 2**62)
    if "time" in retention:
        changes["retention_ms"] = _duration("defaults.topic.retention.time", retention["time"])
    if "bytes" in retention:
        changes["retention_bytes"] = _int(
            "defaults.topic.retention.bytes", retention["bytes"], 0, 2**62
        )
    delivery = mapping("defaults.delivery", defaults.get("delivery"))
    check_keys(
        "defaults.delivery",
        delivery,
        {"visibilityTimeout", "maxRetries", "maxDeliveries", "dlqEnabled", "backoff"},
    )
    if "backoff" in delivery:
        try:
            changes["backoff"] = parse_backoff("defaults.delivery.backoff", delivery["backoff"])
        except BadArgumentError as error:
            raise ConfigError(str(error)) from None
    if "visibilityTimeout" in delivery:
        changes["visibility_timeout_ms"] = _duration(
            "defaults.delivery.visibilityTimeout", delivery["visibilityTimeout"]
        )
    if "maxRetries" in delivery:
        changes["max_deliveries"] = (
            _int("defaults.delivery.maxRetries", delivery["maxRetries"], 0, 999) + 1
        )
    if "maxDeliveries" in delivery:
        changes["max_deliveries"] = _int(
            "defaults.delivery.maxDeliveries", delivery["maxDeliveries"], 1, 1000
        )
    if "dlqEnabled" in delivery and delivery["dlqEnabled"] is not True:
        raise ConfigError(
            "defaults.delivery.dlqEnabled: logq always keeps dead letters; only true is accepted"
        )
    # Priority lanes: checked here so a config file written for them is
    # accepted as it will be used.
    delay = mapping("defaults.delay", defaults.get("delay"))
    check_keys("defaults.delay", delay, {"enabled", "maxDelay"})
    if "maxDelay" in delay:
        changes["max_delay_ms"] = _duration("defaults.delay.maxDelay", delay["maxDelay"])
    priority = mapping("defaults.priority", defaults.get("priority"))
    check_keys("defaults.priority", priority, {"lanes"})

    return replace(base, **changes)


# a broker's name from the environment: a pod's name (a DNS label) fits
_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,253}")


def apply_environment(config: ServerConfig, environ: Mapping[str, str]) -> ServerConfig:
    changes: dict[str, Any] = {}
    if "LOGQ_HOST" in environ:
        changes["host"] = environ["LOGQ_HOST"]
    if "LOGQ_PORT" in environ:
        changes["native_port"] = _port("LOGQ_PORT", environ["LOGQ_PORT"])
    if "LOGQ_HTTP_PORT" in environ:
        changes["http_port"] = _port("LOGQ_HTTP_PORT", environ["LOGQ_HTTP_PORT"])
    if "LOGQ_ALLOW_UNAUTHENTICATED_REMOTE" in environ:
        changes["allow_unauthenticated_remote"] = _bool(
            "LOGQ_ALLOW_UNAUTHENTICATED_REMOTE", environ["LOGQ_ALLOW_UNAUTHENTICATED_REMOTE"]
        )
    if "LOGQ_METRICS_AGGREGATE" in environ:
        changes["metrics_aggregate"] = _bool(
            "LOGQ_METRICS_AGGREGATE", environ["LOGQ_METRICS_AGGREGATE"]
        )
    config = replace(config, **changes)
    if "LOGQ_LIMITS_PARTITIONS" in environ:
        text = environ["LOGQ_LIMITS_PARTITIONS"]
        value = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else text
        partitions = _int("LOGQ_LIMITS_PARTITIONS", value, 1, PARTITIONS_MAX_HIGHEST)
        config = replace(config, broker=replace(config.broker, partitions_max=partitions))
    if "LOGQ_NODE_ID" in environ:
        node_id = environ["LOGQ_NODE_ID"]
        if not _NODE_ID.fullmatch(node_id):
            raise ConfigError(
                f"LOGQ_NODE_ID: expected 1..253 letters, digits, '.', '_' or '-', got {node_id!r}"
            )
        config = replace(config, broker=replace(config.broker, node_id=node_id))
    if environ.get("LOGQ_ARCHIVE"):
        url = environ["LOGQ_ARCHIVE"]
        _check_archive_url(url)
        base = config.broker.archive
        archive = replace(base, url=url) if base is not None else ArchiveConfig(url)
        config = replace(config, broker=replace(config.broker, archive=archive))
    if "LOGQ_DATA_DIR" in environ:
        config = replace(
            config, broker=replace(config.broker, data_dir=Path(environ["LOGQ_DATA_DIR"]))
        )
    hook = crash_hook(environ)
    if hook is not None:
        config = replace(config, broker=replace(config.broker, fault_hook=hook))
    return config


def build_config(
    *,
    config_file: Path | None,
    environ: Mapping[str, str],
    host: str | None = None,
    port: int | None = None,
    http_port: int | None = None,
    data_dir: Path | None = None,
    memory: bool = False,
    fsync: str | None = None,
    allow_unauthenticated_remote: bool = False,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    archive: str | None = None,
) -> ServerConfig:
    """Defaults < file < environment < flags; refuses to listen beyond this
    machine with authentication off unless that was asked for."""
    config = ServerConfig()
    if config_file is not None:
        config = apply_file(config, load_file(config_file))
    config = apply_environment(config, environ)
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["native_port"] = _port("--port", port)
    if http_port is not None:
        changes["http_port"] = _port("--http-port", http_port)
    config = replace(config, **changes)
    broker = config.broker
    if data_dir is not None:
        broker = replace(broker, data_dir=data_dir)
    if memory:
        broker = replace(broker, data_dir=None)
    if fsync is not None:
        broker = replace(broker, log=replace(broker.log, fsync=FsyncPolicy(fsync)))
    if archive is not None:
        _check_archive_url(archive)
        base = broker.archive
        broker = replace(
            broker,
            archive=replace(base, url=archive) if base is not None else ArchiveConfig(archive),
        )
    if (
        broker.archive is not None
        and broker.data_dir is None
        and broker.archive.cache_directory is None
    ):
        raise ConfigError("an archive needs a data directory (not --memory) for its read cache")
    if allow_unauthenticated_remote:
        config = replace(config, allow_unauthenticated_remote=True)
    if tls_cert is not None or tls_key is not None:
        config = replace(
            config, security=replace(config.security, tls=tls_files(tls_cert, tls_key))
        )
    check_exposure(config)
    return replace(
        config, broker=replace(broker, group_defaults=broker.group_defaults or GroupSettings())
    )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def remote_hosts(config: ServerConfig) -> list[str]:
    """The listen addresses that reach beyond this machine."""
    return sorted({h for h in (config.host, config.http_bind_host) if not is_loopback(h)})


def check_exposure(config: ServerConfig) -> None:
    remote = remote_hosts(config)
    if remote and not config.allow_unauthenticated_remote and not config.security.auth.enabled:
        raise ConfigError(
            f"listening on {', '.join(remote)} reaches beyond this machine and authentication "
            "is off: pass --allow-unauthenticated-remote (or set "
            "server.allowUnauthenticatedRemote: true) to do it anyway"
        )


def log_config_summary(config: LogConfig) -> str:
    return f"fsync {config.fsync.value}"
