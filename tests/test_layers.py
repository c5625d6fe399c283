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
    "archive": {"archive", "log"},
    "protocol": {"protocol"},
    "state": {"state", "log"},
    "broker": {"broker", "state", "log", "archive", "root"},
    "server": {"server", "broker", "state", "log", "archive", "protocol", "root"},
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
    # the dedup restart bench fills its data directory through an embedded
    # broker (a million single-message batches: far quicker than a socket)
    "logq.bench.dedup_restart_bench": {"broker"},
}


def _package_of(module: str, root: Path = PACKAGE_ROOT) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    candidate = parts[1]
    return candidate if (root / candidate).is_dir() else "root"


def _imports(path: Path, module: str) -> list[str]:
    """Every module `path` (the module named `module`) imports, relative
    imports resolved against its package; `from X import name` also counts
    X.name, which may be a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            if node.module is not None:
                found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` in `module`."""
    if level == 0:
        assert name is not None
        return name
    package = module.split(".") if is_package else module.split(".")[:-1]
    assert level - 1 < len(package), f"{module}: relative import beyond the top package"
    parts = package[: len(package) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


def _violations(module: str, path: Path, root: Path = PACKAGE_ROOT) -> list[str]:
    """What in `module` breaks the layering rule (empty when nothing does)."""
    package = _package_of(module, root)
    if package not in ALLOWED:
        return [f"{module}: package {package!r} has no layering rule"]
    found: list[str] = []
    for imported in _imports(path, module):
        top = imported.split(".")[0]
        if top == "asyncio" and package in NO_ASYNCIO:
            found.append(f"{module} imports asyncio")
        if top != "logq":
            continue
        target = _package_of(imported, root)
        allowed = ALLOWED[package] | EXCEPTIONS.get(module, set())
        if target not in allowed:
            found.append(f"{module} may not import {imported}")
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
    assert _violations(module, path) == []


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    """A synthetic logq whose storage engine reaches up into the server, each
    way Python allows: every one is caught, the legal imports are not."""
    root = tmp_path / "logq"
    for package in ("log", "server"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "server" / "app.py").write_text("")
    modules = {
        "absolute": "from logq.server.app import serve\n",
        "plain": "import logq.server.app\n",
        "relative": "from ..server.app import serve\n",
        "relative_package": "from .. import server\n",
        "asynchronous": "import asyncio\n",
        "fine": "from . import segment\nfrom .segment import Segment\nfrom logq.log import x\n",
    }
    found: dict[str, list[str]] = {}
    for name, text in modules.items():
        path = root / "log" / f"{name}.py"
        path.write_text(text)
        found[name] = _violations(f"logq.log.{name}", path, root)
    assert found == {
        "absolute": [
            "logq.log.absolute may not import logq.server.app",
            "logq.log.absolute may not import logq.server.app.serve",
        ],
        "plain": ["logq.log.plain may not import logq.server.app"],
        "relative": [
            "logq.log.relative may not import logq.server.app",
            "logq.log.relative may not import logq.server.app.serve",
        ],
        "relative_package": ["logq.log.relative_package may not import logq.server"],
        "asynchronous": ["logq.log.asynchronous imports asyncio"],
        "fine": [],
    }
    # inside a package's __init__, one dot is the package itself
    init = root / "log" / "__init__.py"
    init.write_text("from .segment import Segment\nfrom ..server import app\n")
    assert _violations("logq.log", init, root) == [
        "logq.log may not import logq.server",
        "logq.log may not import logq.server.app",
    ]
