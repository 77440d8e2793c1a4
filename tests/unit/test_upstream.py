"""The upstream boundary: every aiohttp exception maps onto the proxy's one upstream error tree."""

from __future__ import annotations

import inspect

import aiohttp
import pytest

from proxy.errors import (
    UpstreamBrokeOff,
    UpstreamError,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.metrics import UPSTREAM_ERROR_KINDS
from proxy.upstream import upstream_error


def aiohttp_exceptions() -> list[type[BaseException]]:
    """Every exception class aiohttp exports, and every subclass of ``ClientError`` it defines."""
    found: set[type[BaseException]] = set()
    todo: list[type[BaseException]] = [aiohttp.ClientError]
    while todo:
        cls = todo.pop()
        if cls not in found and cls.__module__.startswith("aiohttp"):
            found.add(cls)
        todo.extend(cls.__subclasses__())
    for _, obj in inspect.getmembers(aiohttp, inspect.isclass):
        if issubclass(obj, BaseException) and obj.__module__.startswith("aiohttp"):
            found.add(obj)
    return sorted(found, key=lambda c: c.__qualname__)


EXCEPTIONS = aiohttp_exceptions()


def test_the_list_is_not_empty() -> None:
    """The mapping test below covers dozens of classes, among them the ones the proxy meets most."""
    names = {c.__name__ for c in EXCEPTIONS}
    assert len(EXCEPTIONS) >= 20
    assert {"ClientConnectorError", "ServerDisconnectedError", "ClientPayloadError", "ServerTimeoutError"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__qualname__)
@pytest.mark.parametrize("answering", [False, True], ids=["before-answer", "mid-answer"])
def test_every_aiohttp_exception_maps(cls: type[BaseException], answering: bool) -> None:
    """Before the answer and in the middle of it, each class becomes an UpstreamError with a metric kind."""
    exc = cls.__new__(cls)  # constructors differ; the mapping looks at the class only
    mapped = upstream_error(exc, "u", answering=answering)
    assert isinstance(mapped, UpstreamError)
    assert mapped.kind in UPSTREAM_ERROR_KINDS
    assert mapped.status_code in (502, 504)


def test_the_mapping_is_specific() -> None:
    """Timeouts are 504s, a break after the answer began is a read error, the rest is unreachable."""
    assert isinstance(upstream_error(aiohttp.ConnectionTimeoutError(), "u"), UpstreamTimeout)
    assert isinstance(upstream_error(aiohttp.ServerTimeoutError(), "u", answering=True), UpstreamTimeout)
    assert isinstance(upstream_error(aiohttp.ClientPayloadError(), "u", answering=True), UpstreamBrokeOff)
    assert isinstance(upstream_error(aiohttp.ServerDisconnectedError(), "u"), UpstreamUnreachable)
    assert UpstreamResponseTooLarge("x").kind == "protocol"
    assert {UpstreamTimeout("x").kind, UpstreamBrokeOff("x").kind, UpstreamUnreachable("x").kind} == {
        "timeout",
        "read",
        "connect",
    }
