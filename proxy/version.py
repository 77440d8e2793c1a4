"""The installed version of refusal-guard (``unknown`` in a source tree that was never installed)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed


def version() -> str:
    try:
        return _installed("refusal-guard")
    except PackageNotFoundError:
        return "unknown"
