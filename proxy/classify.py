"""Judge one exchange: find each choice's answer, short-circuit what the provider already said, ask
the detector about the rest. Runs in the pipeline's classify thread, never on the request's path.
"""

from __future__ import annotations

import orjson

from detectors import Detector, Verdict
from detectors.base import provider_refusal
from detectors.harm import HarmfulRequestClassifier
from proxy.exchange import Exchange
from proxy.extract import Answer, answers_from_body, answers_from_stream, prompt_text
from proxy.metrics import Metrics


class Classifier:
    """Verdicts for each answer of an exchange (one per choice): tool calls count as compliance,
    a provider's own refusal signal as refusal, everything else goes to the detector in one batch.
    With ``harm``, a production request's last user turn is also judged harmful or not
    (``Exchange.harmful`` and its score, for :mod:`proxy.disposition` and the audit record)."""

    def __init__(self, detector: Detector, metrics: Metrics, harm: HarmfulRequestClassifier | None = None) -> None:
        self.detector = detector
        self.metrics = metrics
        self.harm = harm

    def __call__(self, ex: Exchange) -> list[Verdict]:
        assert ex.endpoint is not None
        prompt = prompt_text(ex.endpoint, ex.request or {})
        if self.harm is not None and ex.traffic == "production":
            score = self.harm.score(prompt) if prompt else 0.0
            ex.harmful, ex.harm_score = bool(prompt) and score >= self.harm.threshold, round(score, 4)
            ex.harm_by = (self.harm.name, self.harm.version)
        answers: list[Answer]
        if ex.stream:
            answers = answers_from_stream(ex.endpoint, ex.response)
        else:
            try:
                answers = answers_from_body(ex.endpoint, ex.response)
            except orjson.JSONDecodeError:
                answers = []
        if not answers:  # a 2xx the proxy cannot read an answer from: counted, relayed unchanged all the same
            self.metrics.unparseable.labels(ex.upstream).inc()
            return []
        verdicts: list[Verdict | None] = [None] * len(answers)
        todo = []
        for i, a in enumerate(answers):
            if a.provider_refusal:
                verdicts[i] = provider_refusal()
            elif a.tool_call and not a.text.strip():
                verdicts[i] = Verdict.of("compliance", 0.0, "tool_call", "1")
            else:
                todo.append(i)
        if todo:
            judged = self.detector.classify_batch([answers[i].text for i in todo], [prompt] * len(todo))
            for i, v in zip(todo, judged, strict=True):
                verdicts[i] = v
        return [v for v in verdicts if v is not None]
