"""The architecture stays visible: detectors/ never imports proxy/, and only one module imports litellm."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_detectors_never_import_proxy() -> None:
    """detectors/ is usable on its own."""
    offenders = [
        p.name
        for p in (ROOT / "detectors").rglob("*.py")
        if any(m == "proxy" or m.startswith("proxy.") for m in imported_modules(p))
    ]
    assert offenders == []


def test_only_the_adapter_imports_litellm() -> None:
    """litellm stays behind one adapter module."""
    users = sorted(
        str(p.relative_to(ROOT))
        for d in ("proxy", "detectors")
        for p in (ROOT / d).rglob("*.py")
        if any(m == "litellm" or m.startswith("litellm.") for m in imported_modules(p))
    )
    assert users == ["proxy/litellm_upstream.py"]


def test_example_config_is_valid() -> None:
    """The example config in deploy/ loads."""
    from proxy.settings import load_settings

    s = load_settings(ROOT / "deploy" / "guard.example.yaml", environ={})
    assert [u.name for u in s.upstreams] == ["vllm", "ollama", "claude"]
