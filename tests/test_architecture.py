"""The import graph goes one way (docs/architecture.md): no cycles, no upward imports.

Every ``import`` in every eventbus module counts, including those inside functions and under
``TYPE_CHECKING``: a cycle hidden behind a lazy import is still a cycle in the design.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eventbus"

# The public surface: what eventbus/__init__.py exports, and the modules the documentation names
# (the API reference). Every other module is internal and says so by its leading underscore (as
# httpx does), so `eventbus._worker` cannot be mistaken for an API to build on.
PUBLIC = {"__init__", "__main__", "testing", "middleware", "middlewares"}

# Each module's layer. A module may import its own layer and any layer below it, except that the
# handler model and the engine never import a backend, and backends import only leaves.
LEAVES = {
    *("_errors", "_message", "_names", "_backoff", "_stats", "_urls", "_flow", "_logs", "_loops"),
    *("_stream_options", "_batch_options", "_metrics", "_health", "_lag"),
    "_hotpath",  # which hot path is imported: decided before any other eventbus module loads
    "_payloads",  # typed payloads: decoders, and encoding what is published
    "_children",  # child processes that die with their parent (the supervisor's, the embedded Redis)
    "_tables",  # terminal tables aligned by display width (routes, streams)
    "_settings",  # Settings and ConnectionSettings: every default, and how the CLI offers it
    "_masking",  # @payload_mask: how an application's payloads are shown outside its logs
    "_tasks",  # cancelling tasks that wait in redis-py, which can swallow a cancellation
    "_channels",  # Channel: a channel declared once, with its history
    "_history",  # recoverable channels' histories in Redis: the Lua publish, the reads, the envelope
    "_envelope",  # the wire format of requests and replies
    "_glob",  # Redis's glob rules: the memory transport, the channels a pattern recovers
}
MODEL = {
    *("_subscription", "_router", "_context", "_publisher", "_deadletter", "_deadletter_budget", "middleware"),
    "_requests",
}
ENGINE = {"_dispatch", "_worker", "_streams", "_keyed", "_parts", "_batch", "_recovery", "_replies", "_resume"}
RUNNER = {"_runner", "_heartbeat"}
TOP = {
    "_cli",
    "testing",
    "_supervisor",
    "_checks",
    "_reload",
    "__init__",
    "__main__",
    "_asyncapi",
    "_replay",
    "_deadletter_cli",
    "_dashboard",  # the dashboard: the web application, its HTML, what it reads and does
    "_dashboard_html",
    "_dashboard_state",
}
RANK = {"leaves": 0, "backends": 1, "model": 1, "engine": 2, "runner": 3, "top": 4}


def layer(module: str) -> str:
    """``module`` is dotted below the package: "_worker", "_backends.redis"."""
    if module == "_backends" or module.startswith("_backends."):
        return "backends"
    if module == "middlewares" or module.startswith("middlewares."):
        return "model"  # the shipped middleware: user-level code over the handler model
    for name, members in (("leaves", LEAVES), ("model", MODEL), ("engine", ENGINE), ("runner", RUNNER), ("top", TOP)):
        if module in members:
            return name
    raise AssertionError(f"eventbus.{module} has no layer: add it to tests/test_architecture.py and the docs")


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """The eventbus modules ``path`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.rpartition(".")[0] if path.name != "__init__.py" else name
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                prefix = ".".join(["eventbus", *[p for p in base if p]])
            else:
                prefix = node.module or ""
                base = []
            if node.level and node.module:
                prefix = f"{prefix}.{node.module}"
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "eventbus" or target.startswith("eventbus."):
                out.add(target.removeprefix("eventbus").removeprefix(".") or "__init__")
    known = modules()
    resolved = set()
    for target in out:
        # "from eventbus._backends.base import Consume" names a module and an attribute: keep modules.
        while target and target not in known and target != "__init__":
            target = target.rpartition(".")[0]
        resolved.add(target or "__init__")
    resolved.discard(name)
    return resolved


@functools.cache
def graph() -> dict[str, set[str]]:
    return {name: imports(path, name) for name, path in modules().items()}


def allowed(importer: str, imported: str) -> bool:
    a, b = layer(importer), layer(imported)
    if imported == "__init__":
        return importer in TOP
    if a == "backends":
        return b in ("leaves", "backends")
    if a in ("model", "engine") and b == "backends":
        return False
    return a == b or RANK[b] < RANK[a]


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)


def test_a_module_is_public_or_marked_internal() -> None:
    top = {name.split(".")[0] for name in modules()}
    unmarked = sorted(name for name in top if not name.startswith("_") and name not in PUBLIC)
    assert not unmarked, f"modules neither public nor marked internal (a leading underscore): {unmarked}"
    assert top >= PUBLIC, f"PUBLIC names modules that do not exist: {sorted(PUBLIC - top)}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_upward_import(name: str) -> None:
    wrong = sorted(t for t in graph()[name] if not allowed(name, t))
    assert not wrong, f"eventbus.{name} ({layer(name)}) imports " + ", ".join(
        f"eventbus.{t} ({layer(t)})" for t in wrong
    )


def test_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "def f():\n    from eventbus._worker import HandlerWorker\n    import eventbus._backends.subscriber\n"
    )
    assert imports(source, "x") == {"_worker", "_backends.subscriber"}
