"""Keyword baselines: the refusal phrase lists other tools use, matched the way each source does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Literal

from detectors.base import Verdict

Rule = Literal["substring", "substring_ci", "prefix_ci"]
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})


class KeywordDetector:
    """Refusal when any phrase matches: ``substring`` (case-sensitive, anywhere), ``substring_ci``
    (any case, anywhere, apostrophes normalised) or ``prefix_ci`` (the stripped, lower-cased text
    starts with one). Binary only: it never says ``partial_refusal``."""

    version = "1"

    def __init__(self, name: str, items: Sequence[str], rule: Rule) -> None:
        self.name = f"keywords:{name}"
        self.rule = rule
        fold = rule != "substring"
        self.items = tuple(dict.fromkeys((i.translate(_APOSTROPHES).lower() if fold else i) for i in items if i))

    def classify(self, response: str, prompt: str | None = None) -> Verdict:
        if self.rule == "substring":
            hit = any(i in response for i in self.items)
        elif self.rule == "substring_ci":
            text = response.translate(_APOSTROPHES).lower()
            hit = any(i in text for i in self.items)
        else:
            hit = response.strip().translate(_APOSTROPHES).lower().startswith(self.items)
        return Verdict.of("refusal" if hit else "compliance", 1.0 if hit else 0.0, self.name, self.version)

    def classify_batch(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[Verdict]:
        return [self.classify(r) for r in responses]


def keyword_baselines() -> list[KeywordDetector]:
    """Every shipped baseline list (see ``data/SOURCES.md``)."""
    raw = json.loads(resources.files("detectors").joinpath("data/keyword_lists.json").read_text(encoding="utf-8"))
    return [KeywordDetector(b["name"], b["items"], b["rule"]) for b in raw]
