"""The default trained detector: logistic regression over delexicalised opening n-grams.

Loaded from plain arrays (``.npz`` read with ``allow_pickle=False`` and a JSON card), never from a
pickle. Scoring is pure Python over a dict lookup per n-gram: no scikit-learn at run time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detectors.artifacts import load_artifact
from detectors.base import Verdict
from detectors.features import ngrams, tokens, weights
from detectors.patterns import PatternDetector, explicit_refusal

DEFAULT_MODEL = "delex-lr"
_RULE_SCORE = 0.8
_MIN_PARTIAL_CHARS = 200


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -40 else 0.0


class LinearDetector:
    """Two logistic models on one feature space: *refused?* and, if so, *partial or full?*.

    ``score`` is P(refused). The label is ``compliance`` below ``threshold``, else
    ``partial_refusal`` when P(partial | refused) > 0.5, else ``refusal``. A rule tier lifts the
    score of unmistakable first-person refusals (:func:`~detectors.patterns.explicit_refusal`),
    which short answers and languages absent from the training text would otherwise slip past.
    """

    name = DEFAULT_MODEL

    def __init__(self, arrays: dict[str, Any], card: dict[str, Any]) -> None:
        self.version = str(card["version"])
        self.card = card
        self.head = int(card["features"]["head"])
        self.max_n = int(card["features"]["max_n"])
        self.threshold = float(card.get("threshold", 0.5))
        self.keep = frozenset(str(w) for w in arrays["keep"])
        names = [str(g) for g in arrays["ngrams"]]
        self.index = {g: i for i, g in enumerate(names)}
        self.idf = arrays["idf"].astype(float).tolist()
        self.coef = arrays["coef_refused"].astype(float).tolist()
        self.intercept = float(arrays["intercept_refused"])
        self.coef_partial = arrays["coef_partial"].astype(float).tolist()
        self.intercept_partial = float(arrays["intercept_partial"])
        self._patterns = PatternDetector()

    @classmethod
    def load(cls, path: str | Path | None = None) -> LinearDetector:
        """Load ``<path>.npz`` and ``<path>.json``; by default the model shipped in the package."""
        return cls(*load_artifact(DEFAULT_MODEL, path))

    def probabilities(self, response: str) -> tuple[float, float]:
        """P(refused) and P(partial | refused)."""
        w = weights(ngrams(tokens(response, self.head), self.keep, self.max_n), self.index, self.idf)
        z = self.intercept + sum(self.coef[i] * v for i, v in w.items())
        zp = self.intercept_partial + sum(self.coef_partial[i] * v for i, v in w.items())
        return _sigmoid(z), _sigmoid(zp)

    def classify(self, response: str, prompt: str | None = None) -> Verdict:
        if not response.strip():
            return Verdict.of("compliance", 0.0, self.name, self.version)
        p, partial = self.probabilities(response)
        if p < self.threshold and explicit_refusal(response):
            # the rule tier: unmistakable refusals the n-grams under-weigh; the pattern detector,
            # which looks for an answer after the refusal, tells partial from full
            label = self._patterns.classify(response).label
            return Verdict.of("refusal" if label == "compliance" else label, _RULE_SCORE, self.name, self.version)
        if p < self.threshold:
            return Verdict.of("compliance", p, self.name, self.version)
        # a partial refusal answers something after refusing; a short text has no room for that
        is_partial = partial > 0.5 and len(response.strip()) >= _MIN_PARTIAL_CHARS
        return Verdict.of("partial_refusal" if is_partial else "refusal", p, self.name, self.version)

    def classify_batch(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[Verdict]:
        return [self.classify(r) for r in responses]
