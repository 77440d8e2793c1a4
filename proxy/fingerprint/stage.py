"""The pipeline stage on every replica: the answers the fingerprint reads, into the outbox.

Every canary's answer, and of production at most ``fingerprint.production_per_second`` per model
on this replica (a token bucket): the tokenizer tier needs a handful of answers, not all of them, and
an answer not taken costs a dictionary lookup. The leader fits the union (:mod:`proxy.fingerprint.watch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.exchange import Exchange
from proxy.fingerprint.features import observation
from proxy.state.outbox import Outbox
from proxy.watch_settings import FingerprintSettings


class ObserveFingerprint:
    def __init__(
        self, outbox: Outbox, settings: FingerprintSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.outbox = outbox
        self.rate = settings.production_per_second
        self.burst = max(1.0, self.rate)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # model -> (tokens, when)

    def __call__(self, ex: Exchange) -> None:
        if ex.status >= 400 or not ex.response or ex.endpoint is None or not ex.model_label:
            return
        if ex.traffic == "production" and not self._take(ex.model_label):
            return
        self.outbox.fingerprint(observation(ex))

    def _take(self, model: str) -> bool:
        now = self.clock()
        tokens, then = self._buckets.get(model, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[model] = (tokens, now)
            return False
        self._buckets[model] = (tokens - 1.0, now)
        return True
