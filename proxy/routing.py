"""Which upstream serves a model, and under which bounded label the model is counted."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proxy.errors import ModelNotFound
from proxy.upstream import Upstream


@dataclass(frozen=True, slots=True)
class Route:
    upstream: Upstream
    label: str  # the config's model name or pattern: a bounded metric label


class Router:
    """Resolve a requested model name to the first upstream that lists it (by name, then by glob).

    Results are cached in a bounded LRU, so thousands of distinct names cost bounded memory.
    """

    def __init__(self, upstreams: Sequence[Upstream], cache_size: int = 4096) -> None:
        self.upstreams = list(upstreams)
        self._cache: OrderedDict[str, Route | None] = OrderedDict()
        self._cache_size = cache_size
        self._known: dict[str, frozenset[str]] = {}

    def learn(self, upstream: str, models: Iterable[str]) -> None:
        """Record the models an upstream lists, so a glob match on one of them is counted by its own name.

        The label set stays bounded: it is what the upstream lists, not what clients send.
        """
        known = frozenset(itertools.islice(models, 1000))
        if self._known.get(upstream) != known:
            self._known[upstream] = known
            self._cache.clear()

    def resolve(self, model: str) -> Route:
        """The route for ``model``; raises :class:`ModelNotFound` when no upstream serves it."""
        route = self._cache.get(model)
        if route is None and model not in self._cache:
            route = self._lookup(model)
            self._cache[model] = route
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if route is None:
            raise ModelNotFound(f"The model `{model[:200]}` does not exist or is not served here.", param="model")
        return route

    def _lookup(self, model: str) -> Route | None:
        for u in self.upstreams:  # exact names first, across all upstreams
            if model in u.config.models:
                return Route(u, model)
        for u in self.upstreams:
            pattern = u.config.serves(model)
            if pattern is not None:
                return Route(u, model if model in self._known.get(u.name, ()) else pattern)
        return None

    def models(self) -> list[str]:
        """Every model name the config names exactly, then those the glob upstreams list."""
        names = [m for u in self.upstreams for m in u.config.models if not any(c in m for c in "*?[")]
        names += [m for u in self.upstreams for m in sorted(self._known.get(u.name, ()))]
        return list(dict.fromkeys(names))

    def default(self) -> Upstream | None:
        """The upstream for requests that name no model (pass-through endpoints)."""
        return self.upstreams[0] if self.upstreams else None

    def by_name(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)
