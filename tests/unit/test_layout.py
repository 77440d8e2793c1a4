"""The architecture stays visible: no import cycles, the product package holds only the product,
``detectors/`` never imports ``proxy/``, one module imports litellm, one reads the environment."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "detectors", "reference_upstream", "fire_drill", "forensics")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for d in PACKAGES for p in (ROOT / d).rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
    return names


def import_graph() -> dict[str, set[str]]:
    return {m: {n for n in imported_modules(p) if n in MODULES and n != m} for m, p in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a two-module loop through a function-level import is found."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles() -> None:
    """No two modules need each other, not even through an import inside a function."""
    assert cycles(import_graph()) == []


def test_detectors_never_import_proxy() -> None:
    """detectors/ is usable on its own."""
    offenders = [
        p.name
        for p in (ROOT / "detectors").rglob("*.py")
        if any(m == "proxy" or m.startswith("proxy.") for m in imported_modules(p))
    ]
    assert offenders == []


def test_product_never_imports_tools_or_test_helpers() -> None:
    """proxy/ imports neither the reference upstream, nor the drill, nor proxy.testing, nor tests
    (the CLI's ``sim-upstream`` and ``drill`` commands are the one door to the tools)."""
    tools = ("reference_upstream", "fire_drill", "proxy.testing", "tests")
    offenders = sorted(
        f"{_module(p)} -> {m}"
        for p in (ROOT / "proxy").rglob("*.py")
        if p.name != "testing.py"
        for m in imported_modules(p)
        if any(m == t or m.startswith(t + ".") for t in tools)
    )
    assert offenders == ["proxy.cli -> reference_upstream.app"]  # drill: by name, in proxy.cli.DELEGATED


def test_only_the_adapter_imports_litellm() -> None:
    """litellm stays behind one adapter module."""
    users = sorted(
        str(p.relative_to(ROOT))
        for d in ("proxy", "detectors")
        for p in (ROOT / d).rglob("*.py")
        if any(m == "litellm" or m.startswith("litellm.") for m in imported_modules(p))
    )
    assert users == ["proxy/litellm_upstream.py"]


def test_settings_is_the_only_reader_of_the_environment() -> None:
    """Configuration is read once, at the edge: no ``os.environ`` / ``getenv`` outside proxy/settings.py."""
    pattern = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import .*\b(environ|getenv)\b")
    readers = sorted(
        str(p.relative_to(ROOT))
        for d in PACKAGES
        for p in (ROOT / d).rglob("*.py")
        if pattern.search(p.read_text(encoding="utf-8"))
    )
    assert readers == ["proxy/settings.py"]


def test_modules_stay_small() -> None:
    """No module in proxy/ or detectors/ over 400 lines."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for d in ("proxy", "detectors")
        for p in (ROOT / d).rglob("*.py")
    }
    assert {k: v for k, v in sizes.items() if v > 400} == {}


def test_create_app_is_wiring() -> None:
    """create_app stays under 100 lines: composition, not logic."""
    tree = ast.parse((ROOT / "proxy" / "app.py").read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "create_app")
    assert fn.end_lineno is not None and fn.end_lineno - fn.lineno + 1 < 100


def test_example_config_is_valid() -> None:
    """The example config in deploy/ loads."""
    from proxy.settings import load_settings

    s = load_settings(ROOT / "deploy" / "guard.example.yaml", environ={})
    assert [u.name for u in s.upstreams] == ["vllm", "ollama", "claude"]
