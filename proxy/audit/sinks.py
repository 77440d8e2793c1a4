"""Where audit records go: SQLite (the embedded default), PostgreSQL (fleets), or JSON lines.

Every sink takes sealed records (with ``writer``, ``seq``, ``prev_hash`` and ``hash``), writes a
batch atomically or raises, and reads records back in storage order for the CLI and ``verify``.
Chosen by URL: ``sqlite:///var/audit.db`` (relative) or ``sqlite:////abs/path.db``,
``postgresql://user@host/db``, ``jsonl:///path/audit.jsonl``, ``jsonl://-`` (stdout, write-only).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from proxy.audit.storage import ALL, Query, Sink, row
from proxy.background import paced


class SQLiteSink:
    """One file in WAL mode; a batch is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, writer TEXT NOT NULL, "
                "seq INTEGER NOT NULL, ts_start TEXT, request_id TEXT, model TEXT, traffic TEXT, verdict TEXT, "
                "record TEXT NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS audit_writer_seq ON audit (writer, seq)")
            db.execute("CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_start)")
            db.execute("CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id)")
            self._db = db
        return self._db

    def write(self, records: Sequence[dict[str, Any]], *, idempotent: bool = False) -> None:
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = [row(r) for r in paced(records)]
                if idempotent:
                    rows = [
                        row
                        for row in rows
                        if db.execute("SELECT 1 FROM audit WHERE writer=? AND seq=?", row[:2]).fetchone() is None
                    ]
                db.executemany(
                    "INSERT INTO audit (writer, seq, ts_start, request_id, model, traffic, verdict, record)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error:
            self.close()  # reconnect on the next attempt: the file may have changed under us
            raise

    def read(self, query: Query = ALL) -> Iterator[dict[str, Any]]:
        where, args = query.where("?")
        for (text,) in self._connect().execute("SELECT record FROM audit" + where + " ORDER BY id", args):
            r = orjson.loads(text)
            if query.matches(r):
                yield r

    def delete_before(self, ts: str) -> int:
        db = self._connect()
        return db.execute("DELETE FROM audit WHERE ts_start < ?", (ts,)).rowcount

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None


class JSONLSink:
    """JSON lines appended to a file (fsynced per batch) or written to stdout."""

    def __init__(self, target: str) -> None:
        self.target = target

    def write(self, records: Sequence[dict[str, Any]], *, idempotent: bool = False) -> None:
        data = b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in records)
        if self.target == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        with open(self.target, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read(self, query: Query = ALL) -> Iterator[dict[str, Any]]:
        if self.target == "-":
            raise ValueError("jsonl://- is write-only")
        if not os.path.exists(self.target):
            return
        with open(self.target, "rb") as f:
            for line in f:
                if line.strip():
                    r = orjson.loads(line)
                    if query.matches(r):
                        yield r

    def delete_before(self, ts: str) -> int:
        if self.target == "-":
            return 0
        kept, dropped = [], 0
        with open(self.target, "rb") as f:
            for line in f:
                if line.strip() and (orjson.loads(line).get("ts_start") or "") < ts:
                    dropped += 1
                else:
                    kept.append(line)
        tmp = self.target + ".tmp"
        with open(tmp, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.target)
        return dropped

    def close(self) -> None:
        return None


def open_sink(url: str) -> Sink:
    """The sink for an audit URL."""
    if url.startswith("sqlite:///"):
        return SQLiteSink(url[len("sqlite:///") :] or "var/audit.db")
    if url.startswith(("postgresql://", "postgres://")):
        from proxy.audit.postgres import PostgresSink

        return PostgresSink(url)
    if url.startswith("jsonl://"):
        rest = url[len("jsonl://") :]
        return JSONLSink("-" if rest == "-" else rest)
    raise ValueError(f"unknown audit URL {url!r}: use sqlite:///path, postgresql://..., jsonl:///path or jsonl://-")


def default_spool(url: str) -> Path:
    """Where records wait while the sink is down: beside a SQLite or JSONL file, else under ./var."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :] + ".spool.jsonl")
    if url.startswith("jsonl://") and url != "jsonl://-":
        return Path(url[len("jsonl://") :] + ".spool.jsonl")
    return Path("var") / "audit-spool.jsonl"
