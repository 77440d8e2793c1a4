"""The labelled responses shipped in ``data/labelled.jsonl.gz`` (see ``data/SOURCES.md``)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib import resources

from detectors.base import Label

XSTEST_MODELS = ("llama2new", "llama2orig", "mistralinstruct")


@dataclass(frozen=True, slots=True)
class Example:
    source: str  # xstest | refusal_direction
    model: str
    prompt: str | None
    response: str
    label: Label
    human: bool  # XSTest's adjudicated human label, or a weak (substring-match) label

    @property
    def refused(self) -> bool:
        return self.label != "compliance"


def load_examples() -> list[Example]:
    blob = resources.files("detectors").joinpath("data/labelled.jsonl.gz").read_bytes()
    out = []
    for line in gzip.decompress(blob).splitlines():
        r = json.loads(line)
        out.append(Example(r["source"], r["model"], r["prompt"], r["response"], r["label"], r["human"]))
    return out
