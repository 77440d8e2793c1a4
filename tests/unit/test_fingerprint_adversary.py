"""The fingerprint against a host that has read this package: it swaps the model for a terser one,
reports ``usage`` as the old tokenizer would count it, keeps the reported ``model`` and
``system_fingerprint``, and of several answers of the new model returns the one whose sketch
(:func:`proxy.fingerprint.twosample.sketch`, imported) is nearest to what the old model would have
said. The tokenizer and identity tiers are the host's to forge and stay silent (a limit, stated in
docs/fingerprint.md); the statistical tier over the answers still flags the swap."""

from __future__ import annotations

import random

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from proxy.canary.transition import Transition
from proxy.fingerprint import ModelFingerprint, observation
from proxy.fingerprint.twosample import sketch
from proxy.metrics import Metrics
from proxy.testing import exchange
from reference_upstream.corpus import load_corpus
from reference_upstream.tokens import count, prompt_tokens

CORPUS = load_corpus()


def answer(prompt: str, text: str) -> bytes:
    """A chat answer whose usage the old tokenizer (``words``) counted, whatever produced ``text``."""
    usage = {"prompt_tokens": prompt_tokens([prompt], "words"), "completion_tokens": count(text, "words")}
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    body = {"id": "c", "model": "m", "system_fingerprint": "fp_1", "choices": [choice], "usage": usage}
    return orjson.dumps(body)


def evasive(prompt: str, candidates: int = 8) -> str:
    """The new model's answer nearest, in the monitor's own sketch space, to the old model's."""
    old = np.array(sketch(CORPUS.reply(prompt, "safe")))
    new = [CORPUS.reply(prompt, "safe", salt=f"new-{i}")[:200] for i in range(candidates)]  # terser
    return min(new, key=lambda t: float(np.sum((np.array(sketch(t)) - old) ** 2)))


def test_a_host_forging_usage_and_identity_and_matching_sketches_is_still_seen() -> None:
    rng = random.Random(8)
    harmful, benign = CORPUS.harmful_prompts(), CORPUS.benign_prompts()
    seen: list[Transition] = []
    watch = ModelFingerprint(Metrics(CollectorRegistry()), observers=[seen.append])

    def canary(text_of: object) -> None:
        prompt = rng.choice(harmful if rng.random() < 0.5 else benign)
        text = text_of(prompt)  # type: ignore[operator]
        request = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
        watch.observe(observation(exchange(traffic="canary", request=request, response=answer(prompt, text))))

    for _ in range(60):  # the baseline: the old model
        canary(lambda p: CORPUS.reply(p, "safe"))
    assert not seen and watch.models["m"].windows
    flagged = None
    for i in range(100):
        canary(evasive)
        if seen and flagged is None:
            flagged = i + 1
    assert [t.suite for t in seen] == ["statistical"], [(t.suite, t.detail) for t in seen]
    assert flagged is not None and flagged <= 75, flagged
