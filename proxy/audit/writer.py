"""The audit writer: a bounded queue, one thread that seals records into a hash chain and writes
them in batches, and a spool that keeps them, in order, while the sink is down.

The request path only enqueues (never blocks, never raises; a full queue is counted as dropped).
In ``strict`` durability the relay waits on a future that resolves once the record is durable:
committed to the sink, or appended and fsynced to the spool. Graceful shutdown drains the queue.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from proxy.audit import record as rec
from proxy.audit.privacy import Privacy
from proxy.audit.sinks import default_spool, open_sink
from proxy.audit.spool import claim
from proxy.audit.storage import Sink
from proxy.background import GATHER, paced, take_batch
from proxy.canary.transition import Transition
from proxy.exchange import Exchange
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import AuditSettings

_STOP = object()


def _awaited(item: Any) -> bool:
    return item is _STOP or item[1] is not None


Item = tuple[Any, "Future[None] | None"]  # an Exchange or a ready record dict, and an optional durability future


class AuditWriter:
    def __init__(
        self,
        settings: AuditSettings,
        metrics: Metrics,
        *,
        sink_factory: Callable[[], Sink] | None = None,
        writer_id: str | None = None,
        clock: Callable[[], float] = time.time,
        progress: threading.Condition | None = None,
    ) -> None:
        self.settings = settings
        self.progress = progress if progress is not None else threading.Condition()  # notified per batch written
        self.metrics = metrics
        self.writer_id = writer_id or uuid.uuid4().hex[:16]
        self.clock = clock
        self._sink_factory = sink_factory or (lambda: open_sink(settings.url))
        self._sink: Sink | None = None
        self.privacy = Privacy(settings.privacy, settings.redact_patterns, settings.hash_salt())
        self.spool, self._spool_lock = claim(
            Path(settings.spool_path) if settings.spool_path else default_spool(settings.url)
        )
        # SimpleQueue: a put never waits on a lock the writer thread may hold (queue.Queue's mutex)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="refusal-guard-audit", daemon=True)
        self.seq = 0
        self.head = rec.GENESIS
        self._last_checkpoint = (0.0, -1)
        self._next_retry = 0.0
        self._next_prune = 0.0

    # -- the request side --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, ex: Exchange) -> None:
        """Enqueue an exchange; never blocks, never raises."""
        if self._queue.qsize() >= self.settings.queue_size:
            self.metrics.audit_dropped.inc()
            logger.error("audit_dropped", request_id=ex.request_id)
            return
        self._queue.put((ex, None))

    def commit(self, ex: Exchange) -> Future[None]:
        """Strict durability: a future that resolves once the exchange's record is durable."""
        fut: Future[None] = Future()
        self._queue.put((ex, fut))  # strict mode is bounded by the requests it holds, not by queue_size
        return fut

    def event(self, kind: str, body: dict[str, Any]) -> None:
        """A non-exchange record (drift transitions, quarantines) in the same chain."""
        if self._queue.qsize() >= self.settings.queue_size:
            self.metrics.audit_dropped.inc()
            return
        self._queue.put((rec.event(kind, body, self.clock()), None))

    def transition(self, t: Transition) -> None:
        """A drift transition, as an event record in the chain."""
        self.event("drift_transition", {"transition": t.event, "model": t.model, "suite": t.suite, **t.detail})

    def stop(self, timeout: float = 30.0) -> None:
        """Drain the queue, write a last checkpoint, close the sink."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._spool_lock is not None and not self._thread.is_alive():
            self._spool_lock.close()  # the slot is free for the next writer, which replays what is left in it

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._replay()
        s = self.settings
        gather = 0.0 if s.durability == "strict" else min(GATHER, s.flush_seconds)
        stopping = False
        while not stopping:
            # group commit: a waiting response (strict) takes what is queued now, no gathering
            batch = take_batch(self._queue, s.batch_size, timeout=s.flush_seconds, gather=gather, urgent=_awaited)
            stopping = any(item is _STOP for item in batch)
            if stopping:
                batch = [item for item in batch if item is not _STOP]
            self.metrics.audit_queue_depth.set(self._queue.qsize())
            if batch:
                self._write(batch)
            elif self.spool.exists() and time.monotonic() >= self._next_retry:
                self._replay()
            self._maybe_checkpoint(force=stopping)
            self._maybe_prune()
        if self._sink is not None:
            self._sink.close()

    def _seal(self, item: Any) -> dict[str, Any]:
        r = item if isinstance(item, dict) else self.privacy.apply(rec.build(item))
        self.seq += 1
        r["writer"], r["seq"], r["prev_hash"] = self.writer_id, self.seq, self.head
        r["hash"] = rec.chain(r, self.head)
        self.head = r["hash"]
        return r

    def _sink_or_none(self) -> Sink | None:
        if self._sink is None:
            try:
                self._sink = self._sink_factory()
            except Exception as exc:
                logger.warning("audit_sink_unavailable", error=type(exc).__name__)
                return None
        return self._sink

    def _write(self, batch: list[Item]) -> None:
        records = []
        for item, _ in paced(batch):
            try:
                records.append(self._seal(item))
            except Exception:  # a record that cannot be built is an error, not a crash
                self.metrics.audit_write_errors.inc()
                logger.exception("audit_record_failed")
        durable = False
        if not self.spool.exists():
            sink = self._sink_or_none()
            if sink is not None:
                try:
                    sink.write(records)
                    self.metrics.audit_records.inc(len(records))
                    durable = True
                except Exception as exc:
                    self.metrics.audit_write_errors.inc()
                    logger.warning(
                        "audit_write_failed", error=f"{type(exc).__name__}: {exc}"[:200], spooling=len(records)
                    )
                    self._sink = None
                    self._next_retry = time.monotonic() + self.settings.retry_seconds
        if not durable:
            durable = self._to_spool(records)
        for _, fut in batch:
            if fut is not None and not fut.done():
                fut.set_result(None) if durable else fut.set_exception(OSError("audit record not durable"))
        with self.progress:
            self.progress.notify_all()

    def _to_spool(self, records: list[dict[str, Any]]) -> bool:
        try:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spool, "ab") as f:
                f.write(b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in records))
                f.flush()
                os.fsync(f.fileno())
            self.metrics.audit_spooled.inc(len(records))
            return True
        except OSError as exc:
            self.metrics.audit_dropped.inc(len(records))
            logger.error("audit_spool_failed", error=str(exc), dropped=len(records))
            return False

    def _replay(self) -> None:
        """Write spooled records to the sink, in order; on success the spool is removed."""
        if not self.spool.exists():
            return
        self._next_retry = time.monotonic() + self.settings.retry_seconds
        sink = self._sink_or_none()
        if sink is None:
            return
        try:
            with open(self.spool, "rb") as f:
                records = [orjson.loads(line) for line in f if line.strip()]
            for i in range(0, len(records), 1000):
                sink.write(records[i : i + 1000], idempotent=True)
            self.spool.unlink()
            self.metrics.audit_records.inc(len(records))
            logger.info("audit_spool_replayed", records=len(records))
        except Exception as exc:
            self.metrics.audit_write_errors.inc()
            self._sink = None
            logger.warning("audit_replay_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    def _maybe_checkpoint(self, force: bool = False) -> None:
        """Log the chain head now and then: truncation of the log is detectable against these lines."""
        at, seq = self._last_checkpoint
        now = time.monotonic()
        if self.seq != seq and (force or now - at >= self.settings.checkpoint_seconds):
            logger.info("audit_checkpoint", writer=self.writer_id, seq=self.seq, hash=self.head)
            self._last_checkpoint = (now, self.seq)

    def _maybe_prune(self) -> None:
        days = self.settings.retention_days
        if days is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + 3600
        sink = self._sink_or_none()
        if sink is None:
            return
        before = rec.event("prune", {}, self.clock() - days * 86400)["ts_start"]
        try:
            deleted = sink.delete_before(before)
        except Exception as exc:
            logger.warning("audit_prune_failed", error=type(exc).__name__)
            return
        if deleted:
            logger.info("audit_pruned", before=before, deleted=deleted)
            self._write([(rec.event("prune", {"before": before, "deleted": deleted}, self.clock()), None)])
