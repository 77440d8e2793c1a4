"""The detector interface: ``Detector.classify(response, prompt=None) -> Verdict``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Label = Literal["refusal", "partial_refusal", "compliance"]
LABELS: tuple[Label, ...] = ("refusal", "partial_refusal", "compliance")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One judgement of one response.

    ``score`` is the detector's confidence that the response refuses, in [0, 1];
    ``refused`` is true for ``refusal`` and ``partial_refusal``.
    """

    label: Label
    refused: bool
    score: float
    detector: str
    version: str

    @classmethod
    def of(cls, label: Label, score: float, detector: str, version: str) -> Verdict:
        """Build a verdict whose ``refused`` flag follows from its label."""
        return cls(label, label != "compliance", min(1.0, max(0.0, score)), detector, version)

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "refused": self.refused,
            "score": round(self.score, 4),
            "detector": self.detector,
            "version": self.version,
        }


@runtime_checkable
class Detector(Protocol):
    """Classifies assistant text. Implementations must be thread-safe and never mutate inputs."""

    name: str
    version: str

    def classify(self, response: str, prompt: str | None = None) -> Verdict:
        """Judge one response, optionally in the light of the prompt that produced it."""
        ...

    def classify_batch(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[Verdict]:
        """Judge many responses at once; the result is in input order."""
        ...


def provider_refusal(name: str = "provider", version: str = "1") -> Verdict:
    """The verdict for a provider's own refusal signal (OpenAI ``refusal``, Anthropic ``stop_reason``)."""
    return Verdict.of("refusal", 1.0, name, version)
