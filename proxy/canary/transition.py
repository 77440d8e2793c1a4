"""A change in a model's drift state: what the drift monitor tells the notifier and the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Transition:
    event: str  # drift | recovered | quarantined | released
    model: str
    suite: str | None
    at: float
    detail: dict[str, Any]
