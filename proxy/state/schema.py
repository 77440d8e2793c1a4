"""The state store's schema: its tables, created on first start (serialised across replicas that
start together).

What it holds (schema version :data:`SCHEMA_VERSION`):

* ``rg_lease``: the canary leader's lease, with a fencing token that grows at each change of holder;
  every write the leader makes checks the token in the same transaction (:meth:`StateStore.commit_leader`).
* ``rg_drift``: per model and canary suite, the CUSUM statistic and its design; ``rg_shift``: the
  production refusal counts per minute.
* ``rg_quarantine``: every quarantine in force (model, reason, who decided, when), one row a model.
* ``rg_names``: names learned from traffic; ``rg_shape``: each model's latest production request shape
  (no message text but the system prompt, and that only under the audit's ``full`` privacy; no credentials).
* ``rg_events``: the production-side outcomes replicas publish in batches, consumed by the leader.
* ``rg_replicas``: who is there (last seen), for ``/canary/state``.
* ``rg_fingerprint``: per model, the served-model fingerprint the leader keeps (:mod:`proxy.fingerprint`):
  its whole state, and the summary followers read each sync.
* ``rg_disposition``: per model, the risk-adjusted refusal CUSUMs of its production answers
  (:mod:`proxy.disposition`): their baselines and statistics, and the summary followers read.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

TABLES = (
    "CREATE TABLE IF NOT EXISTS rg_schema (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rg_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL, "
    "expires DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rg_drift (model TEXT NOT NULL, suite TEXT NOT NULL, s BIGINT NOT NULL, "
    "alarm INTEGER NOT NULL, p0 DOUBLE PRECISION NOT NULL, p1 DOUBLE PRECISION NOT NULL, h BIGINT NOT NULL, "
    "scale BIGINT NOT NULL, updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (model, suite))",
    "CREATE TABLE IF NOT EXISTS rg_shift (model TEXT NOT NULL, start DOUBLE PRECISION NOT NULL, "
    "refused BIGINT NOT NULL, total BIGINT NOT NULL, PRIMARY KEY (model, start))",
    "CREATE TABLE IF NOT EXISTS rg_quarantine (model TEXT PRIMARY KEY, id TEXT NOT NULL, reason TEXT NOT NULL, "
    "decided_by TEXT NOT NULL, replica TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rg_names (upstream TEXT NOT NULL, model TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL, PRIMARY KEY (upstream, model))",
    "CREATE TABLE IF NOT EXISTS rg_shape (model TEXT PRIMARY KEY, request TEXT NOT NULL, replica TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rg_replicas (replica TEXT PRIMARY KEY, seen DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rg_fingerprint (model TEXT PRIMARY KEY, summary TEXT NOT NULL, state TEXT NOT NULL, "
    "updated DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rg_disposition (model TEXT PRIMARY KEY, summary TEXT NOT NULL, state TEXT NOT NULL, "
    "updated DOUBLE PRECISION NOT NULL)",
)
EVENTS = {
    "sqlite": "CREATE TABLE IF NOT EXISTS rg_events (id INTEGER PRIMARY KEY AUTOINCREMENT, replica TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL, events TEXT NOT NULL)",
    "postgresql": "CREATE TABLE IF NOT EXISTS rg_events (id BIGSERIAL PRIMARY KEY, replica TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL, events TEXT NOT NULL)",
}
