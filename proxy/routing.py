"""Which upstream serves a model, and under which bounded label the model is counted; production
traffic to a quarantined model goes to its fallback upstream, or is refused."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.catalog import ModelCatalog
from proxy.errors import ModelNotFound, ServiceUnavailable
from proxy.upstream import Upstream

if TYPE_CHECKING:
    from proxy.canary.drift import DriftMonitor
    from proxy.settings import CanarySettings


@dataclass(frozen=True, slots=True)
class Route:
    upstream: Upstream
    label: str  # the config's model name or pattern, or a name its upstream lists: a bounded metric label


class Router:
    """Resolve a requested model name to the first upstream that lists it (by name, then by glob).

    Results are cached in a bounded LRU, so thousands of distinct names cost bounded memory.
    """

    def __init__(
        self,
        catalog: ModelCatalog,
        cache_size: int = 4096,
        *,
        drift: DriftMonitor | None = None,
        canary: CanarySettings | None = None,
    ) -> None:
        self.catalog = catalog
        self.drift = drift
        self.canary = canary
        self.upstreams = catalog.upstreams
        self._cache: OrderedDict[str, Route | None] = OrderedDict()
        self._cache_size = cache_size
        self._version = catalog.version

    def resolve(self, model: str) -> Route:
        """The route for ``model``; raises :class:`ModelNotFound` when no upstream serves it."""
        if self._version != self.catalog.version:
            self._cache.clear()
            self._version = self.catalog.version
        route = self._cache.get(model)
        if route is None and model not in self._cache:
            route = self._lookup(model)
            self._cache[model] = route
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if route is None:
            raise ModelNotFound(f"The model `{model[:200]}` does not exist or is not served here.", param="model")
        return route

    def serve(self, route: Route) -> Route:
        """Where production traffic on ``route`` goes: a quarantined model's to its fallback upstream, or a
        503. (Canaries go by :meth:`resolve` alone: they keep probing a quarantined model.)"""
        if self.drift is None or self.canary is None or not self.drift.quarantined(route.label):
            return route
        fallback = self.canary.policy(route.label).fallback_upstream
        upstream = self.by_name(fallback) if fallback else None
        if upstream is None:
            raise ServiceUnavailable(
                f"The model `{route.label}` is quarantined: its safety canaries drifted. "
                "An operator must clear it, or it is released once its canaries recover.",
                code="model_quarantined",
            )
        return Route(upstream, route.label)

    def _lookup(self, model: str) -> Route | None:
        for u in self.upstreams:  # exact names first, across all upstreams
            if model in u.config.models:
                return Route(u, model)
        for u in self.upstreams:
            pattern = u.config.serves(model)
            if pattern is not None:
                return Route(u, model if model in self.catalog.learned(u.name) else pattern)
        return None

    def default(self) -> Upstream | None:
        """The upstream for requests that name no model (pass-through endpoints)."""
        return self.upstreams[0] if self.upstreams else None

    def by_name(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)
