"""What the state store holds and hands back, as plain records (:mod:`proxy.state.store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Quarantine:
    """One quarantine decision: one row a model, lifted only by recovery (``auto_release``) or an operator."""

    model: str
    id: str
    reason: str
    decided_by: str  # "leader" (drift), "operator"
    replica: str
    at: float


@dataclass(frozen=True)
class CusumRow:
    model: str
    suite: str
    s: int
    alarm: bool
    p0: float
    p1: float
    h: int
    scale: int


@dataclass
class Publication:
    """What one replica hands the store in one batch (no leadership needed)."""

    events: list[list[Any]] = field(default_factory=list)  # production outcomes, in order
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> sanitised WireRequest
    names: list[tuple[str, str]] = field(default_factory=list)  # (upstream, model) learned from traffic
    quarantines: list[Quarantine] = field(default_factory=list)
    releases: list[tuple[str, str | None]] = field(default_factory=list)  # (model, decision id; None: any)

    def __bool__(self) -> bool:
        return bool(self.events or self.shapes or self.names or self.quarantines or self.releases)


@dataclass
class LeaderWrite:
    """What the leader writes under its fencing token, in one transaction."""

    cusums: list[CusumRow] = field(default_factory=list)
    shift: list[tuple[str, float, int, int]] = field(default_factory=list)  # (model, bucket start, refused, total)
    shift_horizon: float | None = None  # buckets older than this are deleted
    consumed: list[int] = field(default_factory=list)  # rg_events ids taken
    fingerprints: list[tuple[str, str, str]] = field(default_factory=list)  # (model, summary, state), JSON
    fingerprints_dropped: list[str] = field(default_factory=list)  # models rebaselined
    dispositions: list[tuple[str, str, str]] = field(default_factory=list)  # (model, summary, state), JSON


@dataclass(frozen=True)
class LeaderState:
    cusums: list[CusumRow]
    shift: list[tuple[str, float, int, int]]
    fingerprints: dict[str, str] = field(default_factory=dict)  # model -> state (JSON)
    dispositions: dict[str, str] = field(default_factory=dict)  # model -> state (JSON)


@dataclass(frozen=True)
class Snapshot:
    """The shared state as every replica reads it each sync."""

    leader: str | None
    cusums: list[CusumRow]
    quarantines: dict[str, Quarantine]
    names: list[tuple[str, str]]
    shapes: dict[str, tuple[dict[str, Any], float]]  # model -> (sanitised WireRequest, when it arrived)
    replicas: dict[str, float]
    fingerprints: dict[str, str] = field(default_factory=dict)  # model -> summary (JSON)
    dispositions: dict[str, str] = field(default_factory=dict)  # model -> summary (JSON)
