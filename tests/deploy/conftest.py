"""Session fixtures of the deployment tests: podman set up for this host and
the image built once (offline, from cached wheels)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy import tools


@pytest.fixture(scope="session")
def podman() -> dict[str, str]:
    """The environment podman runs with (its containers.conf)."""
    return tools.podman_environment()


@pytest.fixture(scope="session")
def image(podman: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    build = tools.build_image(podman, tmp_path_factory.mktemp("context"))
    print(f"\nimage {build.image} built in {build.seconds:.1f} s")
    yield build.image
