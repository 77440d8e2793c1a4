"""The one dispatch table: which handler answers a method and a path (normalised by :mod:`proxy.paths`).

Patterns are literal paths, or a literal prefix and suffix around one ``{name}`` parameter that may
span slashes (``/v1/models/{model}``, ``/admin/quarantine/{model}/clear``). Exact paths win, then
patterns in the order they were added. A GET route answers HEAD too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from starlette.responses import Response

from proxy.errors import MethodNotAllowed, NotFound

Handler = Callable[..., Awaitable[Response]]  # (request, **path params) -> response


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    methods: tuple[str, ...]
    handler: Handler


@dataclass(frozen=True, slots=True)
class _Pattern:
    prefix: str
    suffix: str
    name: str
    handlers: dict[str, Handler]

    def match(self, path: str) -> str | None:
        if (
            len(path) > len(self.prefix) + len(self.suffix)
            and path.startswith(self.prefix)
            and path.endswith(self.suffix)
        ):
            return path[len(self.prefix) : len(path) - len(self.suffix)]
        return None


class RouteTable:
    """``match(method, path)`` -> the handler and its path parameters; raises 404 / 405 in the envelope."""

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[_Pattern] = []
        for e in endpoints:
            self.add(e)

    def add(self, e: Endpoint) -> None:
        methods = {*e.methods, *(("HEAD",) if "GET" in e.methods else ())}
        if "{" not in e.path:
            table = self._exact.setdefault(e.path, {})
        else:
            prefix, rest = e.path.split("{", 1)
            name, suffix = rest.split("}", 1)
            pattern = next((p for p in self._patterns if (p.prefix, p.suffix) == (prefix, suffix)), None)
            if pattern is None:
                pattern = _Pattern(prefix, suffix, name, {})
                self._patterns.append(pattern)
            table = pattern.handlers
        for m in methods:
            table[m] = e.handler

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The first route whose path and method match; a path matched only with other methods is a 405."""
        allow: set[str] = set()
        exact = self._exact.get(path)
        if exact is not None:
            if method in exact:
                return exact[method], {}
            allow.update(exact)
        for p in self._patterns:
            value = p.match(path)
            if value is not None:
                if method in p.handlers:
                    return p.handlers[method], {p.name: value}
                allow.update(p.handlers)
        if allow:
            raise MethodNotAllowed(f"Method {method[:20]} is not allowed on {path[:200]}.", allow=allow)
        raise NotFound(f"No route for {path[:200]}.")
