"""Dependencies point one way (DESIGN.md section 2); this test enforces it.

Each package of logq may import only the packages listed for it. The
storage engine and the protocol codecs import nothing else of logq, and
never asyncio: they are plain code that any caller drives.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "logq"

# package -> logq packages it may import ("root" is logq/__init__ and top-level modules)
ALLOWED: dict[str, set[str]] = {
    "log": {"log"},
    "protocol": {"protocol"},
    "state": {"state", "log"},
    "broker": {"broker", "state", "log", "root"},
    "server": {"server", "broker", "state", "log", "protocol", "root"},
    "client": {"client", "protocol", "root"},
    "bench": {"bench", "client", "log", "root"},
    "cli": {"cli", "client", "bench", "log", "server", "root"},
    "embedded": {"embedded", "server", "client", "broker", "log", "protocol", "root"},
    "root": {"root"},
}
NO_ASYNCIO = {"log", "protocol"}
# Named modules that may reach further than their package, and why.
EXCEPTIONS: dict[str, set[str]] = {
    # the package facade re-exports Client, AsyncClient and Broker (lazily)
    "logq": {"client", "embedded"},
    # `python -m logq` is the command line
    "logq.__main__": {"cli"},
    # producers build, and consumers decode, the stored batch format: one codec
    "logq.client.producer": {"log"},
    "logq.client.records": {"log"},
    "logq.client.messages": {"log"},
    # the fuzz targets drive the RESP codec and the native commands directly
    "logq.bench.fuzz_targets": {"protocol", "broker", "server"},
    # the power-cut bench opens embedded brokers on the disks a cut leaves
    "logq.bench.powercut": {"broker"},
    "logq.bench.powercut_workload": {"broker"},
}


def _package_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    candidate = parts[1]
    return candidate if (PACKAGE_ROOT / candidate).is_dir() else "root"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _modules() -> list[tuple[str, Path]]:
    result = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
        name = ".".join(part for part in relative.parts if part != "__init__")
        result.append((name, path))
    return result


@pytest.mark.parametrize(("module", "path"), _modules(), ids=str)
def test_imports_follow_the_layers(module: str, path: Path) -> None:
    package = _package_of(module)
    assert package in ALLOWED, f"{module}: package {package!r} has no layering rule"
    for imported in _imports(path):
        top = imported.split(".")[0]
        if top == "asyncio" or imported.startswith("asyncio."):
            assert package not in NO_ASYNCIO, f"{module} imports asyncio"
        if top != "logq":
            continue
        target = _package_of(imported)
        allowed = ALLOWED[package] | EXCEPTIONS.get(module, set())
        assert target in allowed, f"{module} may not import {imported}"


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from logq.cli.main import cli\nimport asyncio\n")
    assert _imports(bad) == ["logq.cli.main", "asyncio"]
    assert _package_of("logq.cli.main") not in ALLOWED["log"]
