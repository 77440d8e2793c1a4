"""Ids in a canary's body that recur as production's do.

A production ``user`` id (or ``safety_identifier``, ``metadata``, a session id ...) names one of the
app's users, and users come back: a fresh id on every canary, seen on no other request, marks it. So
for each model and app, :class:`RecurringIds` keeps the ids of its recent production requests, and a
canary takes the id of one of them at random: ids then recur on canaries as often as on production,
the more active users the more often, and never cross from one app to another.

>>> ids = RecurringIds()
>>> for user in ["u-1", "u-2", "u-1", "u-1"]:
...     ids.observe("m", {"user": user, "model": "m"}, ("user",))
>>> r = random.Random(0)
>>> drawn = [ids.draw("m", "user", "like", r) for _ in range(400)]
>>> sorted(set(drawn)), 0.65 < drawn.count("u-1") / 400 < 0.85
(['u-1', 'u-2'], True)
>>> ids.draw("other", "user", "u-9", r, fresh=lambda like, rng: like + "-new")  # no production ids yet
'u-9-new'
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

RECENT = 256  # production requests whose ids are kept, per model and app
KEYS = 64  # models and apps kept (the least recently seen go first)
LARGEST = 512  # characters of an id's JSON kept (a larger one is drawn fresh in its format)


class RecurringIds:
    """Per model and app (a key the caller forms): the ids of its recent production requests."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, dict[str, deque[Any]]] = OrderedDict()

    def observe(self, owner: str, body: dict[str, Any], keys: Iterable[str]) -> None:
        """A production request of ``owner``: the values of its body's id ``keys``."""
        per = self._recent.setdefault(owner, {})
        self._recent.move_to_end(owner)
        while len(self._recent) > KEYS:
            self._recent.popitem(last=False)
        for k in keys:
            if k in body and _small(body[k]):
                per.setdefault(k, deque(maxlen=RECENT)).append(body[k])

    def draw(
        self,
        owner: str,
        key: str,
        like: Any,
        rng: random.Random,
        fresh: Callable[[Any, random.Random], Any] | None = None,
    ) -> Any:
        """A value for a canary's ``key``: that of a random recent production request of ``owner``; with
        none yet, ``fresh(like, rng)`` (a new value in ``like``'s format), else ``like`` itself."""
        recent = self._recent.get(owner, {}).get(key)
        if recent:
            return rng.choice(recent)
        return fresh(like, rng) if fresh is not None else like


def _small(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= LARGEST
    return isinstance(value, int | float | bool) or len(json.dumps(value)) <= LARGEST
