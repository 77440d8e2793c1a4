"""What every audit sink shares: the query over records, the ``Sink`` protocol, and the table row.

SQLite (:mod:`proxy.audit.sinks`) and PostgreSQL (:mod:`proxy.audit.postgres`) both store a record as
:func:`row`; the CLI and ``verify`` read records back through :class:`Query`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson


@dataclass(frozen=True)
class Query:
    since: str | None = None  # ISO timestamps, compared with ts_start
    until: str | None = None
    model: str | None = None
    verdict: str | None = None
    traffic: str | None = None
    request_id: str | None = None

    def where(self, placeholder: str) -> tuple[str, list[str]]:
        """The SQL filter for the indexed columns (``model`` is matched in Python: it may be a name or a label)."""
        clauses, args = [], []
        for column, op, value in (
            ("ts_start", ">=", self.since),
            ("ts_start", "<", self.until),
            ("traffic", "=", self.traffic),
            ("verdict", "=", self.verdict),
            ("request_id", "=", self.request_id),
        ):
            if value is not None:
                clauses.append(f"{column} {op} {placeholder}")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def matches(self, r: dict[str, Any]) -> bool:
        ts = r.get("ts_start") or ""
        return (
            (self.since is None or ts >= self.since)
            and (self.until is None or ts < self.until)
            and (self.model is None or self.model in (r.get("model"), r.get("model_label")))
            and (self.verdict is None or r.get("verdict") == self.verdict)
            and (self.traffic is None or r.get("traffic") == self.traffic)
            and (self.request_id is None or r.get("request_id") == self.request_id)
        )


ALL = Query()


class Sink(Protocol):
    def write(self, records: Sequence[dict[str, Any]], *, idempotent: bool = False) -> None:
        """Store a batch, all or nothing; ``idempotent`` skips records (writer, seq) already stored."""
        ...

    def read(self, query: Query = ALL) -> Iterator[dict[str, Any]]:
        """Records in storage order."""
        ...

    def delete_before(self, ts: str) -> int:
        """Delete records older than ``ts`` (retention); the caller keeps the chain verifiable."""
        ...

    def close(self) -> None: ...


def row(r: dict[str, Any]) -> tuple[Any, ...]:
    """A sealed record as a table row: the indexed columns, then the record as canonical JSON."""
    return (
        r["writer"],
        r["seq"],
        r.get("ts_start"),
        r.get("request_id"),
        r.get("model_label"),
        r.get("traffic"),
        r.get("verdict"),
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode(),
    )


__all__ = ["ALL", "Query", "Sink", "row"]
