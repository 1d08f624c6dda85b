"""The tree keeps the architecture's rules (docs/architecture.md), read from the imports.

Packages under `gateway/` are named by role; dependencies go one way, so no package may
import a package that imports it. The domain imports no framework, and observability, which
every layer uses, imports nothing above the domain.
"""

from __future__ import annotations

import ast
import functools
import pickle
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "gateway"
TOP_MODULES = {"__init__", "app", "cli", "collectors", "config", "runtime"}
FRAMEWORKS = {"strawberry", "grpc", "starlette", "aiohttp", "uvicorn", "redis", "graphql"}


@functools.cache
def _imports(path: Path) -> frozenset[str]:
    """The absolute module names a file imports (relative imports resolved); read once."""
    module_parts = path.relative_to(ROOT.parent).with_suffix("").parts
    package = module_parts if path.name == "__init__.py" else module_parts[:-1]
    return frozenset(_imports_in(path.read_text(), package))


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SystemError:
        # CPython 3.11 before 3.11.8 (gh-106905): once a parse or compile anywhere in this
        # process ran out of recursion, ast.parse can fail with "AST constructor recursion
        # depth mismatch". A fresh interpreter parses the same source.
        parsed = subprocess.run(
            [sys.executable, "-c", _PARSE_IN_CHILD], input=source.encode(), capture_output=True,
            check=True,
        )  # fmt: skip
        module: ast.Module = pickle.loads(parsed.stdout)
        return module


_PARSE_IN_CHILD = (
    "import ast, pickle, sys; sys.stdout.buffer.write(pickle.dumps(ast.parse(sys.stdin.read())))"
)


def _imports_in(source: str, package: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(_parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _unit(module: str) -> str | None:
    """The package (or top-level module) of `gateway` that a module name belongs to."""
    parts = module.split(".")
    if parts[0] != "gateway" or len(parts) < 2:
        return None
    candidate = parts[1]
    if (ROOT / candidate).is_dir() or (ROOT / f"{candidate}.py").is_file():
        return candidate
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        source = _unit(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        if source is None:
            continue
        for target in map(_unit, _imports(path)):
            if target is not None and target != source and target != "__init__":
                graph[source].add(target)
    return graph


def test_the_top_of_the_package_holds_only_the_entry_points_and_the_composition_root() -> None:
    modules = {path.stem for path in ROOT.glob("*.py")}
    assert modules <= TOP_MODULES
    assert len(modules) <= 8


def test_no_package_imports_a_package_that_imports_it() -> None:
    graph = _graph()

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(unit for unit in graph if unit in reachable(unit))
    assert cycles == []


@pytest.mark.parametrize(
    ("package", "may_import"),
    [
        ("domain", set()),
        ("observability", {"domain"}),
        ("infra", {"domain"}),
        ("upstreams", {"domain", "infra"}),
        ("cache", {"domain", "infra"}),
        ("service", {"domain", "infra", "cache"}),
    ],
)
def test_the_lower_layers_import_only_what_lies_below_them(
    package: str, may_import: set[str]
) -> None:
    assert _graph().get(package, set()) <= may_import


def test_the_domain_and_the_service_import_no_framework() -> None:
    for package in ("domain", "service"):
        for path in (ROOT / package).rglob("*.py"):
            roots = {name.split(".")[0] for name in _imports(path)}
            assert not roots & FRAMEWORKS, f"{path.relative_to(ROOT.parent)} imports a framework"


def test_only_the_simulator_imports_aiohttp() -> None:
    # Upstream calls go through the gateway's own HTTP/1.1 pool (gateway/upstreams/wire.py);
    # aiohttp serves the simulator. Imported anywhere else, it would cost every gateway
    # process and worker ~0.1 s of CPU at start for nothing.
    importers = sorted(
        str(path.relative_to(ROOT.parent))
        for path in ROOT.rglob("*.py")
        if path.relative_to(ROOT).parts[0] != "simulator"
        and any(name.split(".")[0] == "aiohttp" for name in _imports(path))
    )
    assert importers == []


def test_the_check_sees_imports_that_would_break_a_rule() -> None:
    # The reader of imports must see all three forms used in the tree, or the rules above
    # could pass on a tree that breaks them.
    text = "from gateway.http import pages\nimport strawberry\nfrom ..graphql import view\n"
    found = _imports_in(text, ("gateway", "domain"))
    assert {"gateway.http.pages", "strawberry", "gateway.graphql.view"} <= found
    assert {_unit(name) for name in found} >= {"http", "graphql"}
