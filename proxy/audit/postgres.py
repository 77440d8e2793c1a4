"""The PostgreSQL sink, for fleets of replicas: each replica writes its own chain into one table.

Imported only for a ``postgresql://`` audit URL; needs the ``postgres`` extra (psycopg 3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import psycopg

from proxy.audit.storage import ALL, Query, row
from proxy.background import paced


class PostgresSink:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.url, autocommit=False, connect_timeout=5)
            with conn.transaction():
                # replicas start together: serialise the schema set-up (IF NOT EXISTS alone races)
                conn.execute("SELECT pg_advisory_xact_lock(7206)")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS audit (id BIGSERIAL PRIMARY KEY, writer TEXT NOT NULL, "
                    "seq BIGINT NOT NULL, ts_start TEXT, request_id TEXT, model TEXT, traffic TEXT, verdict TEXT, "
                    "record JSONB NOT NULL, record_text TEXT NOT NULL)"
                )
                conn.execute("CREATE INDEX IF NOT EXISTS audit_writer_seq ON audit (writer, seq)")
                conn.execute("CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_start)")
                conn.execute("CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id)")
            self._conn = conn
        return self._conn

    def write(self, records: Sequence[dict[str, Any]], *, idempotent: bool = False) -> None:
        try:
            conn = self._connect()
            with conn.transaction(), conn.cursor() as cur:
                rows = [row(r) for r in paced(records)]
                if idempotent:
                    rows = [
                        row
                        for row in rows
                        if cur.execute("SELECT 1 FROM audit WHERE writer=%s AND seq=%s", row[:2]).fetchone() is None
                    ]
                cur.executemany(
                    "INSERT INTO audit (writer, seq, ts_start, request_id, model, traffic, verdict, record, record_text)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
                    [(*row, row[-1]) for row in rows],
                )
        except psycopg.Error:
            self.close()
            raise

    def read(self, query: Query = ALL) -> Iterator[dict[str, Any]]:
        where, args = query.where("%s")
        conn = self._connect()
        with conn.transaction(), conn.cursor() as cur:
            for (text,) in cur.execute("SELECT record_text FROM audit" + where + " ORDER BY id", args):
                r = orjson.loads(text)
                if query.matches(r):
                    yield r

    def delete_before(self, ts: str) -> int:
        conn = self._connect()
        with conn.transaction():
            return conn.execute("DELETE FROM audit WHERE ts_start < %s", (ts,)).rowcount

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
