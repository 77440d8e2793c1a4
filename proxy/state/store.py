"""The deployment's state store: what every replica and worker shares, in one SQL database.

PostgreSQL for fleets (``postgresql://...``, the ``postgres`` extra), an embedded SQLite file in WAL
mode on one machine (``sqlite:///var/state.db``; ``serve`` and ``serve --workers N`` use one beside
the audit log when nothing is configured), and ``memory://`` (SQLite in memory: one process, as a
library or a test builds it). The same SQL runs on both engines.

What it holds: :mod:`proxy.state.schema`.

Every method is blocking and runs in the state sync's own thread (:mod:`proxy.state.sync`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import orjson

from proxy.state.records import (
    CusumRow,
    LeaderState,
    LeaderWrite,
    Publication,
    Quarantine,
    Snapshot,
)
from proxy.state.schema import EVENTS, SCHEMA_VERSION, TABLES

LEASE = "canary-leader"


class StoreError(Exception):
    """The store could not be reached or refused a statement (the caller keeps its state and retries)."""


class _Cursor(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ...) -> Any: ...


class StateStore:
    """The shared state on SQLite or PostgreSQL; ``url`` as in the module docstring."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self.engine = "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        self._conn: Any = None
        self._lock = threading.RLock()  # one connection, one thread at a time (the schema set-up nests)
        self.kind = "memory" if url.startswith("memory:") else self.engine
        if self.engine == "sqlite":
            self._path = ":memory:" if self.kind == "memory" else _sqlite_path(url)
        self._connect()  # the schema is made at once: a bad URL is a configuration error at start

    # -- connection and transactions -------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        conn: Any
        try:
            if self.engine == "postgresql":
                import psycopg

                conn = psycopg.connect(self.url, autocommit=False, connect_timeout=max(1, int(self.timeout)))
            else:
                if self._path != ":memory:":
                    Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=self.timeout)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
        except Exception as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        self._conn = conn
        try:
            with self._tx() as cur:
                if self.engine == "postgresql":
                    cur.execute("SELECT pg_advisory_xact_lock(7207)")  # replicas start together
                for ddl in (*TABLES, EVENTS[self.engine]):
                    cur.execute(ddl)
                row = cur.execute("SELECT version FROM rg_schema").fetchone()
                if row is None:
                    cur.execute("INSERT INTO rg_schema (version) VALUES (?)", (SCHEMA_VERSION,))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(f"state schema version {row[0]} is newer than this proxy's {SCHEMA_VERSION}")
                cur.execute(
                    "INSERT INTO rg_lease (name, holder, token, expires) VALUES (?, '', 0, 0) "
                    "ON CONFLICT (name) DO NOTHING",
                    (LEASE,),
                )
        except BaseException:
            self.close()
            raise
        return conn

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        """One transaction; any driver error becomes a :class:`StoreError` and drops the connection."""
        with self._lock:
            try:
                conn = self._connect()
                if self.engine == "postgresql":
                    with conn.transaction(), conn.cursor() as cur:
                        yield _PgCursor(cur)
                else:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
            except StoreError:
                self._drop()
                raise
            except (sqlite3.Error, OSError) as exc:
                self._drop()
                raise StoreError(f"{type(exc).__name__}: {exc}") from exc
            except Exception as exc:
                if type(exc).__module__.startswith("psycopg"):
                    self._drop()
                    raise StoreError(f"{type(exc).__name__}: {exc}") from exc
                raise

    def _drop(self) -> None:
        if self.kind == "memory":
            return  # the memory database is the connection: never thrown away
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _now(self, cur: _Cursor) -> float:
        """The store's clock (PostgreSQL's, so replicas on machines whose clocks differ agree on a lease)."""
        if self.engine == "postgresql":
            return float(cur.execute("SELECT extract(epoch from clock_timestamp())").fetchone()[0])
        return time.time()

    # -- leadership ------------------------------------------------------------------------------

    def lease(self, replica: str, seconds: float) -> int | None:
        """Take or renew the canary leader's lease; the fencing token while this replica holds it, else None."""
        with self._tx() as cur:
            now = self._now(cur)
            cur.execute(
                "UPDATE rg_lease SET token = CASE WHEN holder = ? THEN token ELSE token + 1 END, holder = ?, "
                "expires = ? WHERE name = ? AND (holder = ? OR expires < ?)",
                (replica, replica, now + seconds, LEASE, replica, now),
            )
            row = cur.execute("SELECT holder, token FROM rg_lease WHERE name = ?", (LEASE,)).fetchone()
            cur.execute(
                "INSERT INTO rg_replicas (replica, seen) VALUES (?, ?) ON CONFLICT (replica) DO UPDATE SET seen = ?",
                (replica, now, now),
            )
        return int(row[1]) if row and row[0] == replica else None

    def resign(self, replica: str) -> None:
        """Give the lease up at once (a clean shutdown), so another replica need not wait for it to expire."""
        with self._tx() as cur:
            cur.execute("UPDATE rg_lease SET expires = 0 WHERE name = ? AND holder = ?", (LEASE, replica))
            cur.execute("DELETE FROM rg_replicas WHERE replica = ?", (replica,))

    # -- writes ----------------------------------------------------------------------------------

    def publish(self, replica: str, pub: Publication) -> None:
        """One replica's batch: production outcomes, shapes, learned names and quarantine decisions."""
        with self._tx() as cur:
            now = self._now(cur)
            self._publish(cur, replica, pub, now)

    def _publish(self, cur: _Cursor, replica: str, pub: Publication, now: float) -> None:
        if pub.events:
            cur.execute(
                "INSERT INTO rg_events (replica, at, events) VALUES (?, ?, ?)",
                (replica, now, orjson.dumps(pub.events).decode()),
            )
        for model, request in pub.shapes.items():
            cur.execute(
                "INSERT INTO rg_shape (model, request, replica, at) VALUES (?, ?, ?, ?) ON CONFLICT (model) "
                "DO UPDATE SET request = excluded.request, replica = excluded.replica, at = excluded.at",
                (model, orjson.dumps(request).decode(), replica, now),
            )
        for upstream, model in pub.names:
            cur.execute(
                "INSERT INTO rg_names (upstream, model, at) VALUES (?, ?, ?) ON CONFLICT (upstream, model) DO NOTHING",
                (upstream, model, now),
            )
        for model, decision in pub.releases:  # before quarantines: a release then a new decision keeps the new one
            if decision is None:
                cur.execute("DELETE FROM rg_quarantine WHERE model = ?", (model,))
            else:
                cur.execute("DELETE FROM rg_quarantine WHERE model = ? AND id = ?", (model, decision))
        for q in pub.quarantines:
            cur.execute(
                "INSERT INTO rg_quarantine (model, id, reason, decided_by, replica, at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (model) DO NOTHING",  # a model already held stays held by the first decision
                (q.model, q.id, q.reason, q.decided_by, q.replica, q.at),
            )

    def take_events(self, limit: int = 1000) -> list[tuple[int, list[list[Any]]]]:
        """The oldest published outcome batches (the leader consumes them; :meth:`commit_leader` deletes them)."""
        with self._tx() as cur:
            rows = cur.execute("SELECT id, events FROM rg_events ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [(int(i), orjson.loads(e)) for i, e in rows]

    def commit_leader(self, replica: str, token: int, pub: Publication, write: LeaderWrite) -> bool:
        """The leader's writes, all or none, only while ``token`` is still the lease's. False: fenced off."""
        with self._tx() as cur:
            now = self._now(cur)
            fenced = cur.execute(
                "UPDATE rg_lease SET expires = expires WHERE name = ? AND holder = ? AND token = ?",
                (LEASE, replica, token),
            ).rowcount
            if fenced != 1:
                return False
            for c in write.cusums:
                cur.execute(
                    "INSERT INTO rg_drift (model, suite, s, alarm, p0, p1, h, scale, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, suite) DO UPDATE SET s = excluded.s, "
                    "alarm = excluded.alarm, p0 = excluded.p0, p1 = excluded.p1, h = excluded.h, "
                    "scale = excluded.scale, updated = excluded.updated",
                    (c.model, c.suite, c.s, int(c.alarm), c.p0, c.p1, c.h, c.scale, now),
                )
            for model, start, refused, total in write.shift:
                cur.execute(
                    "INSERT INTO rg_shift (model, start, refused, total) VALUES (?, ?, ?, ?) ON CONFLICT (model, start) "
                    "DO UPDATE SET refused = excluded.refused, total = excluded.total",
                    (model, start, refused, total),
                )
            if write.shift_horizon is not None:
                cur.execute("DELETE FROM rg_shift WHERE start < ?", (write.shift_horizon,))
            for table, rows in (("rg_fingerprint", write.fingerprints), ("rg_disposition", write.dispositions)):
                for model, summary, state in rows:
                    cur.execute(
                        f"INSERT INTO {table} (model, summary, state, updated) VALUES (?, ?, ?, ?) ON CONFLICT (model) "
                        "DO UPDATE SET summary = excluded.summary, state = excluded.state, updated = excluded.updated",
                        (model, summary, state, now),
                    )
            for model in write.fingerprints_dropped:
                cur.execute("DELETE FROM rg_fingerprint WHERE model = ?", (model,))
            for event_id in write.consumed:
                cur.execute("DELETE FROM rg_events WHERE id = ?", (event_id,))
            self._publish(cur, replica, pub, now)
        return True

    # -- reads -----------------------------------------------------------------------------------

    def leader_state(self) -> LeaderState:
        """What a new leader resumes from."""
        with self._tx() as cur:
            cusums = _cusums(cur)
            shift = [
                (m, float(st), int(r), int(t))
                for m, st, r, t in cur.execute(
                    "SELECT model, start, refused, total FROM rg_shift ORDER BY model, start"
                ).fetchall()
            ]
            fingerprints = dict(cur.execute("SELECT model, state FROM rg_fingerprint").fetchall())
            dispositions = dict(cur.execute("SELECT model, state FROM rg_disposition").fetchall())
        return LeaderState(cusums, shift, fingerprints, dispositions)

    def snapshot(self, replica_ttl: float) -> Snapshot:
        with self._tx() as cur:
            now = self._now(cur)
            holder, expires = cur.execute("SELECT holder, expires FROM rg_lease WHERE name = ?", (LEASE,)).fetchone()
            quarantines = {
                r[0]: Quarantine(r[0], r[1], r[2], r[3], r[4], float(r[5]))
                for r in cur.execute(
                    "SELECT model, id, reason, decided_by, replica, at FROM rg_quarantine ORDER BY model"
                ).fetchall()
            }
            names = [(u, m) for u, m in cur.execute("SELECT upstream, model FROM rg_names ORDER BY at").fetchall()]
            shapes = {
                m: (orjson.loads(r), float(at))
                for m, r, at in cur.execute("SELECT model, request, at FROM rg_shape").fetchall()
            }
            replicas = {
                r: float(seen)
                for r, seen in cur.execute(
                    "SELECT replica, seen FROM rg_replicas WHERE seen >= ? ORDER BY replica", (now - replica_ttl,)
                ).fetchall()
            }
            cusums = _cusums(cur)
            fingerprints = dict(cur.execute("SELECT model, summary FROM rg_fingerprint").fetchall())
            dispositions = dict(cur.execute("SELECT model, summary FROM rg_disposition").fetchall())
        leader = holder if holder and float(expires) >= now else None
        return Snapshot(leader, cusums, quarantines, names, shapes, replicas, fingerprints, dispositions)


def _cusums(cur: _Cursor) -> list[CusumRow]:
    return [
        CusumRow(m, s, int(v), bool(a), float(p0), float(p1), int(h), int(sc))
        for m, s, v, a, p0, p1, h, sc in cur.execute(
            "SELECT model, suite, s, alarm, p0, p1, h, scale FROM rg_drift ORDER BY model, suite"
        ).fetchall()
    ]


class _PgCursor:
    """psycopg's cursor with SQLite's ``?`` placeholders, so one SQL text serves both engines."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._cur.execute(sql.replace("?", "%s"), tuple(args))


def _sqlite_path(url: str) -> str:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (as the audit log's URLs)."""
    if not url.startswith("sqlite:///"):
        raise StoreError(f"unsupported state URL {url.split(':', 1)[0]!r}: use postgresql://, sqlite:/// or memory://")
    return url[len("sqlite:///") :]


def redacted(url: str) -> str:
    """The URL without its credentials, for logs and ``/canary/state``.

    >>> redacted("postgresql://guard:secret@db:5432/guard")
    'postgresql://db:5432/guard'
    """
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2] if sep else url
