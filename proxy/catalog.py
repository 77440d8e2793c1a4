"""Which models exist: the names the config gives exactly, the patterns (globs) it gives, and the
names a glob upstream lists of its own. The one place that knows a name from a pattern.

Every name here is bounded by the config or by what an upstream lists (at most ``LEARNED_CAP`` per
upstream), never by what clients send: these names become metric labels and canary targets.
"""

from __future__ import annotations

import itertools
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

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self.upstreams = list(upstreams)
        self._learned: dict[str, frozenset[str]] = {}
        self.version = 0  # bumped whenever what is known changes (the router drops its cache then)

    def exact(self) -> list[str]:
        """Every model name the config names exactly, in config order."""
        return list(dict.fromkeys(m for u in self.upstreams for m in u.config.models if not is_glob(m)))

    def has_globs(self, upstream: Upstream) -> bool:
        return any(is_glob(m) for m in upstream.config.models)

    def learned(self, upstream: str) -> frozenset[str]:
        """What a glob upstream listed that its patterns match."""
        return self._learned.get(upstream, frozenset())

    def learn(self, upstream: str, models: Iterable[str]) -> None:
        """Record the models an upstream lists, so a glob match on one of them is counted by its own name."""
        known = frozenset(itertools.islice(models, LEARNED_CAP))
        if self._learned.get(upstream) != known:
            self._learned[upstream] = known
            self.version += 1

    def names(self) -> list[str]:
        """The exact names, then those the glob upstreams list."""
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
            for item in listed:
                mid = str(item["id"])
                seen.setdefault(
                    mid,
                    {
                        "id": mid,
                        "object": "model",
                        "created": item.get("created", 0),
                        "owned_by": item.get("owned_by", u.name),
                    },
                )
        return list(seen.values())
