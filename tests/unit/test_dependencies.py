"""What the product imports is what it declares, and the uvicorn internals the edge builds on are
the ones it was written against."""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "detectors", "forensics", "fire_drill", "reference_upstream")


def declared() -> set[str]:
    """Every distribution in pyproject's dependencies and extras, normalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def imported() -> dict[str, set[str]]:
    """Top-level third-party modules the product imports, and where."""
    out: dict[str, set[str]] = {}
    for package in PACKAGES:
        for f in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        out.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return out


def test_every_imported_package_is_declared() -> None:
    dists = packages_distributions()
    want = declared()
    undeclared = {
        module: sorted(where)
        for module, where in imported().items()
        if not {d.lower().replace("_", "-") for d in dists.get(module, [module])} & want
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


# uvicorn's HttpToolsProtocol.data_received, which proxy/edge.py re-implements (without the warning
# on every unparsable request), as in uvicorn 0.30.6 to 0.55.0; and the methods the edge overrides or calls
DATA_RECEIVED_SHA256 = "010a7ae59a5d3b1a"
RELIED_ON = (
    "_unset_keepalive_if_required",
    "_should_upgrade",
    "handle_websocket_upgrade",
    "_unsupported_upgrade_warning",
    "send_400_response",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "connection_made",
    "connection_lost",
)


def test_the_uvicorn_internals_the_edge_relies_on_are_unchanged() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    missing = [name for name in RELIED_ON if not hasattr(HttpToolsProtocol, name)]
    assert not missing, f"uvicorn {uvicorn.__version__} lacks {missing}: proxy/edge.py needs a new look"
    digest = hashlib.sha256(inspect.getsource(HttpToolsProtocol.data_received).encode()).hexdigest()[:16]
    assert digest == DATA_RECEIVED_SHA256, (
        f"uvicorn {uvicorn.__version__} changed HttpToolsProtocol.data_received, which proxy/edge.py "
        "re-implements: compare the two, then update the copy, this digest and the pin in pyproject.toml"
    )


def test_uvicorn_is_pinned_to_the_tested_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [r for r in project["dependencies"] if r.startswith("uvicorn")]
    assert pin == "uvicorn>=0.30.6,<0.56"
