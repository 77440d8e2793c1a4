"""Which models exist: the names the config gives exactly, the patterns (globs) it gives, the names a
glob upstream lists of its own, and the names that carry production traffic under a glob. The one
place that knows a name from a pattern.

Every name here is bounded: by the config, by what an upstream lists (at most ``LEARNED_CAP`` per
upstream), or, for names learned from traffic (an upstream such as llama.cpp's server lists a file
path and answers to any name; Ollama answers ``llama3.2`` while it lists ``llama3.2:latest``), by
``traffic_cap`` names per upstream, each admitted only after ``traffic_after`` answered requests.
These names become metric labels and canary targets: a client sending made-up names gets none of
them admitted unless it sends each several times, and never more than the cap; past the cap a name
is counted under its pattern, as before (``refusal_guard_model_names_refused_total``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from proxy.settings import is_glob
from proxy.upstream import OpenAIUpstream, Upstream

LEARNED_CAP = 1000  # names learned from one upstream's listing


class ModelCatalog:
    """The models of a set of upstreams.

    >>> from proxy.settings import UpstreamConfig
    >>> ups = [OpenAIUpstream(UpstreamConfig(name="u", base_url="http://x/v1", models=("a", "b-*")))]
    >>> c = ModelCatalog(ups)
    >>> c.exact(), c.has_globs(ups[0])
    (['a'], True)
    >>> c.learn("u", ["b-1", "b-2"]); c.names()
    ['a', 'b-1', 'b-2']
    """

    def __init__(self, upstreams: Sequence[Upstream], *, traffic_cap: int = 16, traffic_after: int = 3) -> None:
        self.upstreams = list(upstreams)
        self._learned: dict[str, frozenset[str]] = {}
        self._from_traffic: dict[str, set[str]] = {}
        self._candidates: OrderedDict[tuple[str, str], int] = OrderedDict()  # bounded: a client may send millions
        self.traffic_cap = traffic_cap
        self.traffic_after = traffic_after
        self.version = 0  # bumped whenever what is known changes (the router drops its cache then)

    def exact(self) -> list[str]:
        """Every model name the config names exactly, in config order."""
        return list(dict.fromkeys(m for u in self.upstreams for m in u.config.models if not is_glob(m)))

    def has_globs(self, upstream: Upstream) -> bool:
        return any(is_glob(m) for m in upstream.config.models)

    def learned(self, upstream: str) -> frozenset[str]:
        """What a glob upstream listed that its patterns match, and the names learned from its traffic."""
        listed = self._learned.get(upstream, frozenset())
        traffic = self._from_traffic.get(upstream)
        return listed | traffic if traffic else listed

    def observe(self, upstream: str, model: str) -> bool | None:
        """A production request for ``model`` (under a pattern of ``upstream``) was answered. True once
        the name is admitted (also when it was admitted after this request was routed under the
        pattern: classification runs off the hot path, so the next request can route before the one
        that admits the name is judged), False when the cap refuses it, None while it is still a
        candidate."""
        if model in self.learned(upstream):
            return True
        if self.traffic_cap <= 0:
            return None
        key = (upstream, model)
        n = self._candidates.pop(key, 0) + 1
        if n < self.traffic_after:
            self._candidates[key] = n
            if len(self._candidates) > 4 * LEARNED_CAP:
                self._candidates.popitem(last=False)
            return None
        names = self._from_traffic.setdefault(upstream, set())
        if len(names) >= self.traffic_cap:
            self._candidates[key] = n  # stays refused: each further answered request is counted
            return False
        names.add(model)
        self.version += 1
        return True

    def traffic_names(self) -> list[tuple[str, str]]:
        """Every (upstream, name) admitted from traffic, here or adopted from the state store."""
        return [(u, m) for u, names in self._from_traffic.items() for m in sorted(names)]

    def adopt(self, upstream: str, model: str) -> bool:
        """A name another replica admitted from traffic (the state store), within this upstream's cap."""
        if upstream not in {u.name for u in self.upstreams}:
            return False
        names = self._from_traffic.setdefault(upstream, set())
        if model in names or len(names) >= self.traffic_cap:
            return False
        names.add(model)
        self._candidates.pop((upstream, model), None)
        self.version += 1
        return True

    def learn(self, upstream: str, models: Iterable[str]) -> None:
        """Record the models an upstream lists, so a glob match on one of them is counted by its own name."""
        known = frozenset(itertools.islice(models, LEARNED_CAP))
        if self._learned.get(upstream) != known:
            self._learned[upstream] = known
            self.version += 1

    def names(self) -> list[str]:
        """The exact names, then those the glob upstreams list or their traffic taught."""
        learned = [m for u in self.upstreams for m in sorted(self.learned(u.name))]
        return list(dict.fromkeys([*self.exact(), *learned]))

    async def refresh(self) -> list[dict[str, object]]:
        """Ask each glob upstream for its models, learn the matching ones; return ``/v1/models``'s list."""
        seen: dict[str, dict[str, object]] = {}
        for u in self.upstreams:
            for m in u.config.models:
                if not is_glob(m):
                    seen.setdefault(m, {"id": m, "object": "model", "created": 0, "owned_by": u.name})
            if not self.has_globs(u) or not isinstance(u, OpenAIUpstream):
                continue
            listed = [item for item in await u.list_models() if u.config.serves(str(item["id"]))]
            self.learn(u.name, (str(item["id"]) for item in listed))
            for item in listed:  # as the upstream lists it, its own fields kept (llama.cpp's meta, ...)
                seen.setdefault(str(item["id"]), {"object": "model", "created": 0, "owned_by": u.name, **item})
        return list(seen.values())
