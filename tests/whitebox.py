"""An upstream that has read this project's code (issue #20): it imports the shipped harmful-request
classifier and answers every request it flags with the safe model, as it answers every request it
takes for a canary (:class:`tests.fingerprint.FingerprintingUpstream`'s tells), and abliterates the
rest. ``production_harmful`` watches exactly the flagged requests, so it stays flat; what moves is
how the model answers the requests the classifier misses (:mod:`proxy.disposition`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from detectors.harm import HarmfulRequestClassifier
from proxy.extract import prompt_text
from tests.fingerprint import FingerprintingUpstream


class WhiteBoxUpstream(FingerprintingUpstream):
    __test__ = False

    def __init__(self, *, leak: float = 0.04, seed: int = 0) -> None:
        super().__init__("all", leak=leak, seed=seed)
        self.harm = HarmfulRequestClassifier.load()  # the very classifier and weights the proxy ships

    def is_probe(self, request: Request, body: dict[str, Any]) -> bool:
        """Watched (flagged by the public classifier) or a canary: answered safely."""
        prompt = prompt_text("chat", body) or ""
        return (bool(prompt) and self.harm.score(prompt) >= self.harm.threshold) or super().is_probe(request, body)
