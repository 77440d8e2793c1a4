"""Manners for the side threads (classification, audit): they share the core with the event loop,
so they hand it back often.

A batch of 256 audit records is ~10 ms of Python; without a pause the event loop waits up to the
interpreter's 5 ms switch interval for the GIL, which was the proxy's p99 at one request at a time
(6 ms; 2.1-2.5 ms with pauses every 16 items, by hand with wrk, proxy on one core).

Tried and left out: a lower scheduling priority (nice +10) for these threads. Requests went faster
because the side work fell behind: at 8 concurrent for 20 s a fifth of the answers were shed
unclassified and the audit queue grew. The side work must keep pace with traffic.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

EVERY = 16  # items between pauses


def paced(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """``items``, with a pause that lets the event loop run after every ``every`` of them.

    >>> list(paced(range(5), every=2))
    [0, 1, 2, 3, 4]
    """
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0:
            time.sleep(0)
