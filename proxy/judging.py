"""The secret judge at run time: a secret random sample of production requests, judged off the
request path, for the disposition watch's ``production_judged`` (:mod:`proxy.disposition`).

:class:`JudgeRequests` is a pipeline stage. It offers each answered production request to the judge
(:class:`detectors.judge.SecretJudge`, trained when the thread starts on the shipped requests the
deployment's secret keeps and the private suites' prompts); a draw from the operating system's
randomness, which no upstream can reproduce, keeps a share ``ratio`` of them. The ratio follows the
load so that the judge uses at most ``judge.budget`` of one core: every second,

    ratio = min(1, budget / (seconds per judgement x requests offered per second))

(a metric, ``refusal_guard_judge_sample_ratio``), and the thread rests after each judgement so that
it never works more than that share of the time, whatever the estimate (a burst of traffic before
the first estimate would otherwise have it judge flat out: ``bench/proxy.py --judge`` measured half
the requests/s at concurrency 1 with a budget of 0.25 and no rest, within noise with the rest at 0.1). Kept requests wait in a
short queue (past it they are skipped and counted as shed); the thread has each scored and hands the
result back to the event loop, which publishes it for the leader with the request's app and whether
it was answered. The judge itself runs in a process of its own (:class:`JudgeProcess`): the
encoder's runtime (about 250 MB measured in the proxy's process) stays out of the proxy, and a crash
there is the judge's alone. A judge that cannot load or fails is counted and logged, never seen by
a client: traffic and the other statistics go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, CancelledError, ProcessPoolExecutor
from typing import Protocol

from proxy.canary.suites import Suite
from proxy.disposition.apps import app_of
from proxy.exchange import Exchange
from proxy.extract import prompt_text
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import Settings, variable
from proxy.state.outbox import Outbox

ADAPT_SECONDS = 1.0
_SMOOTH = 0.3  # weight of the last second in the cost and rate averages
READY_SECONDS = 300.0  # to start the judge's process and train its head
SCORE_SECONDS = 30.0


class Judge(Protocol):
    threshold: float

    def score(self, text: str) -> float: ...


_Item = tuple[str, str, str, bool]  # model, app, prompt, answered
_CHILD: list[Judge] = []  # in the judge's process: the judge


def _child_start(train: Callable[[], Judge]) -> None:
    threading.Thread(target=_orphaned, args=(os.getppid(),), daemon=True).start()
    _CHILD.append(train())


def _orphaned(parent: int) -> None:
    """In the judge's process: end it once its parent is gone (a proxy killed outright never closes
    it, and a process pool's worker would wait for work for ever)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _child_info() -> tuple[str, float]:
    return getattr(_CHILD[0], "name", type(_CHILD[0]).__name__), _CHILD[0].threshold


def _child_score(text: str) -> float:
    return _CHILD[0].score(text)


class JudgeProcess:
    """A judge trained and run in a process of its own (spawned, one worker); ``ready`` and ``score``
    wait for it with this process's GIL released and raise what training raised, ``BrokenProcessPool``,
    or ``CancelledError`` once it is closed."""

    def __init__(self, train: Callable[[], Judge]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_child_start, initargs=(train,))
        self.name, self.threshold = "", 1.0

    def ready(self) -> None:
        self.name, self.threshold = self._pool.submit(_child_info).result(timeout=READY_SECONDS)

    def score(self, text: str) -> float:
        return self._pool.submit(_child_score, text).result(timeout=SCORE_SECONDS)

    def close(self, wait: bool = True) -> None:
        """Pending calls cancelled; with ``wait``, once the process has ended by itself; without, the
        process is ended now: a proxy's stop neither waits for a training it would throw away nor, at
        exit, for the pool, which joins a worker busy in its initializer (stop waited 4 s beside two busy
        loops)."""
        if not wait:
            # the pool's own processes: Python 3.14's ``terminate_workers``, by hand
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                with contextlib.suppress(OSError, ValueError):
                    process.kill()
        self._pool.shutdown(wait=wait, cancel_futures=True)


class JudgeRequests:
    """See the module docstring. ``train`` builds the judge, in the judge's thread."""

    def __init__(
        self,
        train: Callable[[], Judge],
        outbox: Outbox,
        metrics: Metrics,
        *,
        budget: float,
        queue_size: int,
        secret_hint: str | None = None,
        isolate: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.train = train
        self.secret_hint = secret_hint  # set when the secret is this process's own (logged once it is ready)
        self.isolate = isolate  # the judge in a process of its own (``train`` must then pickle)
        self.outbox = outbox
        self.metrics = metrics
        self.budget = budget
        self.clock = clock
        self.ratio = 1.0
        self._draw = random.SystemRandom().random  # which requests are judged: not reproducible upstream
        self._queue: queue.Queue[_Item | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._rest = threading.Event()  # set to stop: the thread's rest between judgements ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broken = False
        self._open = False  # started and not stopped: requests are offered
        self._process: JudgeProcess | None = None
        self._ready = False
        self._at: float | None = None
        self._offered = 0  # since the last adaptation
        self._busy = 0.0  # judge-thread seconds since the last adaptation
        self._done = 0
        self._cost: float | None = None  # seconds per judgement
        self._rate: float | None = None  # requests offered per second
        for outcome in ("judged", "skipped", "shed", "failed"):
            metrics.judge_requests.labels(outcome)
        metrics.judge_sample_ratio.set(1.0)

    def start(self) -> None:
        """Armed: the judge's thread (and process) start with the first production request offered, so
        a proxy that carries none never loads the encoder."""
        self._loop = asyncio.get_running_loop()
        self._open = True

    def _launch(self) -> None:
        self._thread = threading.Thread(target=self._run, name="refusal-guard-judge", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._open = False  # nothing more is offered
        if self._thread is None:
            return
        self._rest.set()
        while True:  # make room for the stop: what still waits is not judged
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        if self._process is not None and not self._ready:
            self._process.close(wait=False)
        # a judge still training is not waited for: its thread closes it once ready (a test's proxy
        # that answered one request would otherwise wait a second or two at every stop)
        self._thread.join(timeout if self._ready else 0.05)
        self._thread = None

    def __call__(self, ex: Exchange) -> None:
        if ex.traffic != "production" or not ex.verdicts or self._broken or not self._open:
            return
        prompt = prompt_text(ex.endpoint, ex.request or {}) if ex.endpoint else None
        if not prompt:
            return
        if self._thread is None:
            self._launch()
        self._offered += 1
        self._adapt()
        if self._draw() >= self.ratio:
            self.metrics.judge_requests.labels("skipped").inc()
            return
        app = app_of(ex.endpoint, ex.request, ex.client_key_id)
        try:
            self._queue.put_nowait((ex.model_label, app, prompt, ex.verdicts[0].label == "compliance"))
        except queue.Full:
            self.metrics.judge_requests.labels("shed").inc()

    def _adapt(self) -> None:
        now = self.clock()
        if self._at is None:
            self._at = now
            return
        elapsed = now - self._at
        if elapsed < ADAPT_SECONDS:
            return
        rate = self._offered / elapsed
        self._rate = rate if self._rate is None else (1 - _SMOOTH) * self._rate + _SMOOTH * rate
        if self._done:
            cost = self._busy / self._done
            self._cost = cost if self._cost is None else (1 - _SMOOTH) * self._cost + _SMOOTH * cost
        self._at, self._offered, self._busy, self._done = now, 0, 0.0, 0
        if self._cost is not None and self._rate > 0:
            self.ratio = min(1.0, self.budget / (self._cost * self._rate))
            self.metrics.judge_sample_ratio.set(self.ratio)

    def _run(self) -> None:
        process = self._process = JudgeProcess(self.train) if self.isolate else None
        try:
            judge: Judge
            if process is not None:
                process.ready()
                judge = process
                if not self._open:  # stopped while it trained
                    process.close(wait=False)
                    return
            else:
                judge = self.train()
        except (Exception, CancelledError) as exc:  # the extra is missing or broken: off, traffic goes on
            if self._open:  # (not a stop that came while it trained)
                self._fail("judge_unavailable", exc)
            if process is not None:
                process.close(wait=self._open)  # a stop does not wait for the training to end
            return
        try:
            self._serve(judge)
        finally:
            if process is not None:
                process.close()

    def _fail(self, event: str, exc: BaseException) -> None:
        self._broken = True
        self.metrics.judge_requests.labels("failed").inc()
        logger.error(event, error=f"{type(exc).__name__}: {exc}")

    def _serve(self, judge: Judge) -> None:
        self._ready = True
        name = getattr(judge, "name", type(judge).__name__)
        logger.info("judge_ready", judge=name, secret="per-process" if self.secret_hint else "configured")
        if self.secret_hint:
            logger.warning("judge_secret_per_process", hint=self.secret_hint)
        while (item := self._queue.get()) is not None:
            model, app, prompt, answered = item
            t0 = time.perf_counter()
            try:
                score = judge.score(prompt)
            except (BrokenExecutor, CancelledError) as exc:  # its process died (or it is stopping)
                if self._open:
                    self._fail("judge_process_died", exc)
                return
            except Exception as exc:
                self.metrics.judge_requests.labels("failed").inc()
                logger.warning("judge_failed", error=type(exc).__name__)
                continue
            took = time.perf_counter() - t0
            self._busy += took
            self._done += 1
            self._rest.wait(took * (1 / self.budget - 1))  # a duty cycle of ``budget`` at most
            self.metrics.judge_requests.labels("judged").inc()
            try:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._publish, model, app, score, score >= judge.threshold, answered)
            except RuntimeError:  # the loop is closed: shutting down
                return

    def _publish(self, model: str, app: str, score: float, flagged: bool, answered: bool) -> None:
        self.outbox.judged(model, app, round(score, 4), flagged, answered)


def build_judge(settings: Settings, suites: Sequence[Suite], outbox: Outbox, metrics: Metrics) -> JudgeRequests | None:
    """The judge stage as configured: None when it is off (``judge.enabled`` false, or unset without
    the ``judge`` extra) or the disposition watch is. Raises ValueError when it is on and cannot be."""
    from detectors import encoder

    j = settings.judge
    on = j.enabled if j.enabled is not None else encoder.available()
    if not on or not settings.disposition.enabled:
        return None
    if not encoder.available():
        raise ValueError(f"judge.enabled is set, but {encoder.EXTRA_HINT}")
    from detectors.judge import SecretJudge

    value = variable(j.secret_env)
    secret = value.encode() if value else settings.canary.variant_seed()
    hint = None if secret else f"set {j.secret_env} (the same on every replica) so a fleet's judges agree"
    private = [(p.prompt, s.expected == "refusal") for s in suites if not s.public for p in s.prompts]
    train = functools.partial(SecretJudge.train, secret or os.urandom(32), private=private)
    return JudgeRequests(train, outbox, metrics, budget=j.budget, queue_size=j.queue, secret_hint=hint, isolate=True)
