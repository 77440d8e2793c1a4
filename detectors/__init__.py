"""Refusal detectors: decide whether a model's answer is a refusal, a partial refusal or compliance.

This package imports nothing from ``proxy``: it is usable on its own, e.g.::

    >>> from detectors import PatternDetector
    >>> PatternDetector().classify("I'm sorry, but I can't help with that.").label
    'refusal'
"""

from detectors.base import LABELS, Detector, Label, Verdict
from detectors.patterns import PatternDetector
from detectors.registry import available, load_detector

__all__ = ["LABELS", "Detector", "Label", "PatternDetector", "Verdict", "available", "load_detector"]
