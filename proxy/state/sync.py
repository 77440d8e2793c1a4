"""One watch for the fleet: every replica and worker runs this loop against the shared state store.

Each ``sync_seconds`` (1 s), in one background task:

1. **Publish** this replica's batch (:class:`~proxy.state.outbox.Outbox`): production outcomes, the
   latest request shape of each model, names learned from traffic, quarantine decisions. One
   transaction; a failure keeps the batch for the next try.
2. **Lease**: take or renew the canary leader's lease (``lease_seconds``, 6 s). Exactly one replica
   holds it; its fencing token grows at each change of holder. The leader runs the canary scheduler,
   and stops it (in-flight canaries cancelled) when the lease was not renewed by
   ``lease_seconds - 1`` after the renewal began, before any other replica can take it over.
3. **Lead** (the leader only): consume every replica's published outcomes into one production
   shift test, one served-model fingerprint (:mod:`proxy.fingerprint`) and one disposition watch
   (:mod:`proxy.disposition`: ``production_harmful`` among its statistics) per model, then write the
   statistics (canaries' too) and the consumed batches' deletion in one transaction that checks the
   fencing token. A new leader first loads what is stored, so drift resumes, not restarts.
4. **Read** the shared state: followers mirror the stored statistics (metrics and ``/canary/state``),
   everyone enforces the stored quarantines, adopts the learned names and the production shapes.

The store down: requests flow, quarantines in force stay, batches wait in the outbox, the lease
lapses (no canaries: a leader that cannot write must not decide), errors are counted
(``refusal_guard_state_store_errors_total``) and logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from proxy.canary.drift import DriftMonitor
from proxy.canary.scheduler import CanaryScheduler
from proxy.canary.shape import TrafficShape
from proxy.catalog import ModelCatalog
from proxy.disposition import DispositionWatch
from proxy.fingerprint import ModelFingerprint
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import StateSettings
from proxy.shift import ProductionShift
from proxy.state.outbox import (
    ANSWERS,
    DISPOSITION,
    FINGERPRINT,
    JUDGED,
    REBASELINE,
    Outbox,
    restored,
    sanitised,
)
from proxy.state.records import LeaderWrite, Snapshot
from proxy.state.store import StateStore, StoreError, redacted

T = TypeVar("T")
MARGIN = 1.0  # seconds: a leader stops this long before its lease can be taken over
YIELD_EVERY = 128  # events the leader consumes between turns of the event loop


def replica_id() -> str:
    """This process's id in the fleet: the host (a pod's name under Kubernetes) and the pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class StateSync:
    """The loop above; ``state()`` is ``/canary/state``."""

    def __init__(
        self,
        url: str,
        settings: StateSettings,
        *,
        replica: str,
        drift: DriftMonitor,
        shift: ProductionShift,
        fingerprint: ModelFingerprint,
        disposition: DispositionWatch,
        shape: TrafficShape,
        catalog: ModelCatalog,
        outbox: Outbox,
        scheduler: CanaryScheduler | None,
        metrics: Metrics,
        privacy: str,
    ) -> None:
        self.url = url
        self.settings = settings
        self.replica = replica
        self.drift = drift
        self.shift = shift
        self.fingerprint = fingerprint
        self.disposition = disposition
        self.shape = shape
        self.catalog = catalog
        self.outbox = outbox
        self.scheduler = scheduler
        self.metrics = metrics
        self.privacy = privacy
        self.token: int | None = None  # the fencing token while this replica leads
        self.leader: str | None = None
        self.replicas: dict[str, float] = {}
        self.ok = False  # the last sync reached the store
        self._store: StateStore | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="refusal-guard-state")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._names_sent: set[tuple[str, str]] = set()
        self._outage = False
        self._stopping = False
        metrics.canary_leader.set(0)
        for op in ("publish", "lease", "lead", "read", "dropped", "malformed"):
            metrics.state_store_errors.labels(op)

    @property
    def leading(self) -> bool:
        return self.token is not None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """One sync at once (a lone process leads from its first second), then the loop."""
        await self.sync()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="refusal-guard-state")

    async def stop(self) -> None:
        self._stopping = True  # as well as the cancel: Python 3.11's wait_for can swallow a cancellation
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2 * self.settings.timeout_seconds + self.settings.sync_seconds)
        await self._demote("shutting down", resign=True)
        try:
            pub = self._collect()
            if pub:
                await self._call(lambda s: s.publish(self.replica, pub))
        except (StoreError, TimeoutError) as exc:
            logger.warning("state_store_unflushed", error=str(exc)[:200])
        with contextlib.suppress(StoreError, TimeoutError):  # a store call still hung is not waited for
            await self._call(lambda s: s.close())
        self._pool.shutdown(wait=False)

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.sync_seconds)
            if self._stopping:
                return
            try:
                await self.sync()
            except Exception:  # the loop must outlive any one failure
                logger.exception("state_sync_failed_unexpectedly")

    # -- one sync --------------------------------------------------------------------------------

    async def sync(self) -> bool:
        """Publish, lease, lead, read (the module docstring); True if the store was reached throughout."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            began = loop.time()
            pub = self._collect()
            try:
                if pub:
                    await self._call(lambda s: s.publish(self.replica, pub))
            except (StoreError, TimeoutError) as exc:
                self.outbox.put_back(pub)
                return self._failed("publish", exc)
            try:
                token = await self._call(lambda s: s.lease(self.replica, self.settings.lease_seconds))
            except (StoreError, TimeoutError) as exc:
                return self._failed("lease", exc)
            if token is None:
                await self._demote("the lease is held by another replica")
            else:
                self._renewed(began + self.settings.lease_seconds - MARGIN)
                if token != self.token:
                    await self._become_leader(token)
            if self.leading:
                try:
                    await self._lead()
                except (StoreError, TimeoutError) as exc:
                    await self._demote("the leader's write failed")  # the next leader resumes from the store
                    return self._failed("lead", exc)
            try:
                snap = await self._call(lambda s: s.snapshot(replica_ttl=3 * self.settings.lease_seconds))
            except (StoreError, TimeoutError) as exc:
                return self._failed("read", exc)
            self._apply(snap)
            if self._outage:
                logger.info("state_store_recovered", store=redacted(self.url))
                self._outage = False
            self.ok = True
            return True

    def _collect(self) -> Any:
        for model, req in self.shape.take_fresh().items():
            self.outbox.shape(model, sanitised(req, self.privacy))
        for name in self.catalog.traffic_names():
            if name not in self._names_sent:
                self._names_sent.add(name)
                self.outbox.name(*name)
        return self.outbox.take()

    async def _lead(self) -> None:
        batches = await self._call(lambda s: s.take_events())
        malformed = done = 0
        for _, events in batches:
            for ev in events:
                try:
                    self._consume(ev)
                except Exception:  # one unreadable event (another version's, say) must not stop the watch
                    malformed += 1
                done += 1
                if done % YIELD_EVERY == 0:  # a second of the fleet's answers is tens of ms of work:
                    await asyncio.sleep(0)  # requests go on meanwhile (a stall was the p99 at c1)
        if malformed:
            self.metrics.state_store_errors.labels("malformed").inc(malformed)
            logger.warning("state_events_malformed", count=malformed)
        fingerprints, dropped = self.fingerprint.changed()
        write = LeaderWrite(
            self.drift.changed(), self.shift.changed(), self.shift.horizon, [i for i, _ in batches],
            fingerprints, dropped, self.disposition.changed(),
        )  # fmt: skip
        pub = self.outbox.take()  # decisions made just now (a quarantine on drift) go in the same transaction
        token = self.token
        assert token is not None
        try:
            fenced_in = await self._call(lambda s: s.commit_leader(self.replica, token, pub, write))
        except BaseException:
            self.outbox.put_back(pub)
            raise
        if not fenced_in:
            self.outbox.put_back(pub)  # a quarantine may be written by anyone: it goes with the next batch
            await self._demote("fenced off: another replica holds the lease")

    def _consume(self, ev: list[Any]) -> None:
        if ev[0] == ANSWERS:  # an earlier release's kinds (a rolling upgrade) fall through
            self.shift.add(ev[1], ev[3], ev[4], at=ev[2])
        elif ev[0] == FINGERPRINT:
            self.fingerprint.observe(ev)
        elif ev[0] == REBASELINE:
            self.fingerprint.rebaseline(ev[1])
        elif ev[0] == DISPOSITION:
            self.disposition.observe(ev[1], str(ev[2]), float(ev[3]), bool(ev[4]), bool(ev[5]))
        elif ev[0] == JUDGED:
            self.disposition.judged(ev[1], str(ev[2]), float(ev[3]), bool(ev[4]), bool(ev[5]))

    def _apply(self, snap: Snapshot) -> None:
        self.leader = snap.leader
        self.replicas = snap.replicas
        if not self.leading:
            self.drift.load(snap.cusums)
            self.fingerprint.mirror(snap.fingerprints)
            self.disposition.mirror(snap.dispositions)
        self.drift.adopt(snap.quarantines)
        for upstream, model in snap.names:
            if self.catalog.adopt(upstream, model):
                self._names_sent.add((upstream, model))
        if self.leading:  # only the leader sends canaries, so only it needs their shapes
            for model, (data, at) in snap.shapes.items():
                self.shape.adopt(model, restored(data), at, prefer_local=self.privacy != "full")

    # -- leadership ------------------------------------------------------------------------------

    async def _become_leader(self, token: int) -> None:
        if self.leading:  # the token moved under us (a takeover and back): resume from the store again
            await self._demote("the lease changed hands")
        try:
            state = await self._call(lambda s: s.leader_state())
        except (StoreError, TimeoutError) as exc:
            self._failed("lead", exc)
            return
        self.drift.load(state.cusums)
        self.shift.load(state.shift)
        self.fingerprint.load(state.fingerprints)
        self.disposition.load(state.dispositions)
        self.token = token
        self.leader = self.replica
        self.metrics.canary_leader.set(1)
        logger.info("canary_leader", replica=self.replica, token=token, resumed=len(state.cusums))
        if self.scheduler is not None:
            self.scheduler.start()

    def _renewed(self, until: float) -> None:
        """The lease runs until ``until`` (loop time): past it, stop leading unless renewed meanwhile."""
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(until, lambda: loop.create_task(self._demote("the lease expired")))

    async def _demote(self, why: str, *, resign: bool = False) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.leading:
            self.token = None
            self.metrics.canary_leader.set(0)
            if self.scheduler is not None:
                await self.scheduler.stop()  # in-flight canaries cancelled: no overlap with the next leader
            logger.info("canary_leader_stepped_down", replica=self.replica, why=why)
            if resign:
                with contextlib.suppress(StoreError, TimeoutError):  # else the lease lapses by itself
                    await self._call(lambda s: s.resign(self.replica))

    # -- the store, in its own thread ------------------------------------------------------------

    async def _call(self, fn: Callable[[StateStore], T]) -> T:
        def run() -> T:
            if self._store is None:
                self._store = StateStore(self.url, timeout=self.settings.timeout_seconds)
            return fn(self._store)

        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._pool, run), self.settings.timeout_seconds * 2)

    def _failed(self, op: str, exc: BaseException) -> bool:
        self.ok = False
        self.metrics.state_store_errors.labels(op).inc()
        if not self._outage:  # once per outage, not once a second
            logger.warning("state_store_unreachable", op=op, store=redacted(self.url), error=str(exc)[:200])
            self._outage = True
        return False

    def state(self) -> dict[str, Any]:
        """``/canary/state``: the shared state as this replica holds it, who it is and who leads."""
        return {
            **self.drift.state(),
            "replica": self.replica,
            "leader": self.leader,
            "replicas": sorted(self.replicas),
            "store": {"url": redacted(self.url), "reachable": self.ok},
        }
