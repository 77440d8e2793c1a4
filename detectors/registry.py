"""Detectors by name, imported only when asked for (heavy ones stay out of a light install)."""

from __future__ import annotations

from collections.abc import Callable

from detectors.base import Detector


def _pattern() -> Detector:
    from detectors.patterns import PatternDetector

    return PatternDetector()


def _delex_lr() -> Detector:
    from detectors.linear import LinearDetector

    return LinearDetector.load()


_FACTORIES: dict[str, Callable[[], Detector]] = {"pattern": _pattern, "delex-lr": _delex_lr}
DEFAULT_DETECTOR = "delex-lr"


def available() -> list[str]:
    return sorted(_FACTORIES)


def load_detector(name: str) -> Detector:
    """The detector registered as ``name``.

    >>> load_detector("pattern").name
    'pattern'
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(available())}") from None
    return factory()
