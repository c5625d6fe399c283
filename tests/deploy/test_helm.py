"""deploy/helm/logq: the chart linted (--strict), rendered for several value
sets and checked by kubernetes-validate (--strict) and yamllint; the config
it gives logq (merged with the auth Secret as its init container merges it)
accepted by logq's own config loader; bad values refused with a message
saying why. There is no Kubernetes here: nothing is installed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from logq.bench.chaos import free_port
from logq.client import Client
from logq.errors import LogqError
from logq.server.auth import new_token
from logq.server.config import build_config
from tests.deploy import tools

CHART = tools.ROOT / "deploy" / "helm" / "logq"
RELEASE = "orders"
YAMLLINT_CONFIG = """\
extends: default
rules:
  document-start: disable
  line-length: {max: 160}
  comments: {min-spaces-from-content: 1}
  indentation: {indent-sequences: whatever}
"""

TLS_AND_AUTH: dict[str, Any] = {
    "image": {"repository": "registry.example.com/logq", "tag": "0.1.0"},
    "auth": {"enabled": True, "existingSecret": "logq-auth"},
    "tls": {"enabled": True, "existingSecret": "logq-tls"},
    "serviceMonitor": {
        "enabled": True,
        "labels": {"release": "prometheus"},
        "bearerTokenSecret": {"name": "logq-metrics", "key": "token"},
    },
    "config": {
        "broker": {"fsync": "always"},
        "defaults": {
            "topic": {"partitions": 12, "retention": {"hours": 72, "bytes": 1 << 30}},
            "delivery": {"visibilityTimeout": "45s", "maxDeliveries": 8},
        },
        "limits": {"connections": 20000},
        "server": {"shutdownTimeoutS": 20},
    },
    "terminationGracePeriodSeconds": 45,
}
PRODUCTION_STORAGE: dict[str, Any] = {
    "persistence": {"size": "200Gi", "storageClass": "fast-ssd"},
    "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
    "podDisruptionBudget": {"enabled": False},
    "nodeSelector": {"disk": "ssd"},
}
VALID = {"defaults": {}, "tls-and-auth": TLS_AND_AUTH, "production-storage": PRODUCTION_STORAGE}


@pytest.fixture(scope="module")
def helm() -> Path:
    return tools.helm()


def _values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _helm(helm: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def _render(helm: Path, values: Path) -> list[dict[str, Any]]:
    done = _helm(helm, "template", RELEASE, str(CHART), "--values", str(values))
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def _one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        document
        for document in documents
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)
    ]
    return found


@pytest.mark.parametrize("name", sorted(VALID))
def test_the_chart_lints_renders_and_validates(helm: Path, tmp_path: Path, name: str) -> None:
    values = _values(tmp_path, VALID[name])
    done = _helm(helm, "lint", "--strict", str(CHART), "--values", str(values))
    assert done.returncode == 0, done.stdout + done.stderr
    rendered = _helm(helm, "template", RELEASE, str(CHART), "--values", str(values))
    assert rendered.returncode == 0, rendered.stderr
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(rendered.stdout)
    validate = [str(tools.tool("kubernetes-validate")), "--strict", "--kubernetes-version"]
    for version in ("1.25.0", "1.31.0"):
        tools.run([*validate, version, str(manifests)])
    lint_config = tmp_path / "yamllint.yaml"
    lint_config.write_text(YAMLLINT_CONFIG)
    tools.run([str(tools.tool("yamllint")), "--strict", "-c", str(lint_config), str(manifests)])


def test_one_broker_as_a_statefulset_with_its_own_volume(helm: Path, tmp_path: Path) -> None:
    documents = _render(helm, _values(tmp_path, {}))
    statefulset = _one(documents, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 1
    assert spec["serviceName"] == f"{RELEASE}-logq-brokers"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/var/lib/logq", "/tmp"} <= mounts
    environment = {item["name"]: item for item in container["env"]}
    assert environment["LOGQ_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert environment["LOGQ_ALLOW_UNAUTHENTICATED_REMOTE"]["value"] == "true"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http", "scheme": "HTTP"}
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    headless = _one(documents, "Service", f"{RELEASE}-logq-brokers")
    assert headless["spec"]["clusterIP"] == "None"
    client = _one(documents, "Service", f"{RELEASE}-logq")
    assert {port["port"] for port in client["spec"]["ports"]} == {7070, 8080}
    assert _one(documents, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not [document for document in documents if document["kind"] == "ServiceMonitor"]


def _environment(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    found = {}
    for item in container["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            found[item["name"]] = pod_name
        else:
            found[item["name"]] = item["value"]
    return found


def test_logq_accepts_the_config_the_chart_gives_it(helm: Path, tmp_path: Path) -> None:
    """The ConfigMap's file, with the auth Secret's laid over it by the init
    container's own script, through logq's config loader with the env of
    the pod (TLS files made for the test where the Secret is mounted)."""
    documents = _render(helm, _values(tmp_path, TLS_AND_AUTH))
    base = tmp_path / "base.yaml"
    base.write_text(_one(documents, "ConfigMap")["data"]["logq.yaml"])
    token, stored = new_token()
    del token
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        yaml.safe_dump({"auth": {"users": {"ci": {"token": stored, "roles": ["admin"]}}}})
    )
    pod = _one(documents, "StatefulSet")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    script = init["command"][2]
    merged = tmp_path / "logq.yaml"
    subprocess.run([sys.executable, "-c", script, str(merged), str(base), str(auth)], check=True)
    authority = trustme.CA()
    certificate = authority.issue_cert(f"{RELEASE}-logq")
    tls_directory = tmp_path / "tls"
    tls_directory.mkdir()
    certificate.cert_chain_pems[0].write_to_path(str(tls_directory / "tls.crt"))
    certificate.private_key_pem.write_to_path(str(tls_directory / "tls.key"))
    merged.write_text(merged.read_text().replace("/etc/logq/tls", str(tls_directory)))
    (container,) = pod["containers"]
    assert container["args"] == ["serve", "--config", "/etc/logq/run/logq.yaml"]
    environment = _environment(container, f"{RELEASE}-logq-0")
    assert environment["LOGQ_ALLOW_UNAUTHENTICATED_REMOTE"] == "false"
    config = build_config(config_file=merged, environ=environment)
    assert config.host == "0.0.0.0" and config.security.auth.enabled
    assert config.security.tls is not None
    assert config.broker.node_id == f"{RELEASE}-logq-0"
    assert config.broker.data_dir == Path("/var/lib/logq")
    assert config.broker.topic_defaults.partitions == 12
    assert config.shutdown_timeout_s == 20
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    monitor = _one(documents, "ServiceMonitor")  # a CRD: kubernetes-validate has no schema
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "logq-metrics", "key": "token"}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    plain = _render(helm, _values(tmp_path, {}))
    (plain_container,) = _one(plain, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    defaults = build_config(
        config_file=_write(tmp_path, plain),
        environ=_environment(plain_container, f"{RELEASE}-logq-0"),
    )
    assert defaults.allow_unauthenticated_remote and not defaults.security.auth.enabled


def _write(tmp_path: Path, documents: list[dict[str, Any]]) -> Path:
    path = tmp_path / "defaults.yaml"
    path.write_text(_one(documents, "ConfigMap")["data"]["logq.yaml"])
    return path


REFUSED = [
    # five brokers with an external etcd: what a cluster will take; refused
    # until logq replicates
    ({"replicaCount": 5}, "logq has no replication yet"),
    ({"replicaCount": 5, "etcd": {"endpoints": ["http://etcd:2379"]}}, "etcd is not allowed"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"auth": {"enabled": True}}, "auth.existingSecret"),
    ({"tls": {"enabled": True}}, "tls.existingSecret"),
    ({"auth": {"allowUnauthenticated": False}}, "refuse to listen"),
    ({"config": {"broker": {"dataDir": "/data"}}}, "set by the chart"),
    ({"config": {"tls": {"certFile": "x"}}}, "tls"),
    ({"config": {"defaults": {"topic": {"partitions": 0}}}}, "partitions"),
    ({"config": {"defaults": {"topic": {"replicationFactor": 3}}}}, "replicationFactor"),
    ({"persistence": {"size": "lots"}}, "persistence.size"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"serviceMonitor": {"enabled": True}, "auth": {"enabled": True, "existingSecret": "a"}},
     "bearerTokenSecret"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_bad_values_are_refused_with_a_reason(
    helm: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    done = _helm(helm, "template", RELEASE, str(CHART), "--values", str(_values(tmp_path, values)))
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_the_charts_pod_runs_the_image(
    helm: Path, tmp_path: Path, image: str, podman: dict[str, str]
) -> None:
    """No Kubernetes here, but podman plays Pods: the StatefulSet's pod
    template, as the first broker's pod (its volume claim, its name), runs
    the image with the chart's security context, ConfigMap and env."""
    repository, tag = image.rsplit(":", 1)
    values = {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}}
    documents = _render(helm, _values(tmp_path, values))
    statefulset = _one(documents, "StatefulSet")
    name = f"{statefulset['metadata']['name']}-0"
    template = statefulset["spec"]["template"]
    spec = dict(template["spec"])
    spec["volumes"] = [
        *spec["volumes"],
        {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}"}},
    ]
    (container,) = spec["containers"]
    native_port, http_port = free_port(), free_port()
    published = {"native": native_port, "http": http_port}
    container["ports"] = [
        {**port, "hostIP": "127.0.0.1", "hostPort": published[port["name"]]}
        for port in container["ports"]
    ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump_all([_one(documents, "ConfigMap"), pod]))
    configmap_volume = _one(documents, "ConfigMap")["metadata"]["name"]
    try:
        tools.run(["podman", "kube", "play", str(manifest)], env=podman)
        inspected = tools.run(["podman", "inspect", f"{name}-logq"], env=podman).stdout
        (found,) = yaml.safe_load(inspected)
        assert found["HostConfig"]["ReadonlyRootfs"] is True
        assert found["Config"]["User"] == "10001:10001"
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(f"127.0.0.1:{native_port}", connect_timeout_s=1) as client:
                    hello = client.call("HELLO", 3)
                    client.create_topic("jobs", partitions=1)
                    client.publish("jobs", b"from the pod")
                    (message,) = client.receive("jobs", "g", max=1, wait="2s")
                    message.ack().result(5)
                break
            except (OSError, LogqError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert hello[b"node"] == name.encode()  # the broker's id is its pod's name
        assert message.value == b"from the pod"
    finally:
        tools.run(["podman", "kube", "down", str(manifest)], env=podman, check=False)
        for volume in (f"data-{name}", configmap_volume):
            tools.run(["podman", "volume", "rm", "--force", volume], env=podman, check=False)
