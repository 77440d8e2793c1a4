"""The fingerprint's tiers on their own: a token-count fit that sees a changed tokenizer within a few
answers and never alarms in control, and reported identities that change only when a new value holds."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import orjson
from prometheus_client import CollectorRegistry

from proxy.canary.transition import Transition
from proxy.exchange import Exchange
from proxy.fingerprint import (
    Identity,
    ModelFingerprint,
    ObserveFingerprint,
    TokenFit,
    observation,
    request_features,
    text_features,
)
from proxy.fingerprint.production import ProductionWindows, shape_of
from proxy.fingerprint.twosample import AnswerWindows, sketch
from proxy.metrics import Metrics
from proxy.settings import FingerprintSettings
from proxy.state.outbox import Outbox
from reference_upstream.corpus import load_corpus
from reference_upstream.tokens import Tokenizer, count, prompt_tokens

CORPUS = load_corpus()
PROMPTS = CORPUS.benign_prompts() + CORPUS.harmful_prompts()


def request(rng: random.Random) -> dict:  # type: ignore[type-arg]
    turns = [{"role": "user", "content": rng.choice(PROMPTS)}]
    if rng.random() < 0.5:
        turns = [{"role": "system", "content": "You are a helpful assistant."}, *turns]
    return {"model": "m", "messages": turns}


def counted(body: dict, tokenizer: Tokenizer, noise: int = 0, rng: random.Random | None = None) -> float:  # type: ignore[type-arg]
    tokens = prompt_tokens([m["content"] for m in body["messages"]], tokenizer)
    return float(tokens + (rng.randint(-noise, noise) if rng and noise else 0))


def test_a_changed_tokenizer_is_seen_within_a_few_answers() -> None:
    rng = random.Random(1)
    fit = TokenFit()
    for _ in range(fit.baseline):
        body = request(rng)
        assert not fit.add(request_features("chat", body) or [], counted(body, "words"))
    alarms = []
    for i in range(20):
        body = request(rng)
        if fit.add(request_features("chat", body) or [], counted(body, "bytes")):
            alarms.append(i + 1)
    assert alarms and alarms[0] <= 5, alarms  # four marks in a row, unless an answer lands on the old fit


def test_no_alarm_in_control_even_with_a_noisy_count() -> None:
    """A tokenizer the features only approximate (a count off by up to 3 either way): 5,000 answers, no alarm."""
    rng = random.Random(2)
    fit = TokenFit()
    raised = 0
    for _ in range(5_000 + fit.baseline):
        body = request(rng)
        raised += fit.add(request_features("chat", body) or [], counted(body, "words", noise=3, rng=rng))
    assert raised == 0 and not fit.alarmed


def test_answers_that_change_with_the_models_behaviour_are_no_tokenizer_change() -> None:
    """The fire drill's case: a baseline of safe answers (refusals, short answers), then an abliterated
    model's lists and code under the same tokenizer: no alarm in 400 answers. The same answers counted
    by another tokenizer: an alarm within a few."""
    rng = random.Random(3)
    harmful, benign = CORPUS.harmful_prompts(), CORPUS.benign_prompts()
    safe = [CORPUS.reply(p, "safe") for p in rng.sample(harmful, 20) + rng.sample(benign, 20)]
    abliterated = [CORPUS.reply(p, "abliterated") for p in rng.sample(harmful, 400)]
    for tokenizer, other in (("words", "bytes"), ("bytes", "words")):
        fit = TokenFit(k=0.5)  # the stage's design for completion counts
        for text in safe:
            fit.add(text_features([text], 1), count(text, tokenizer))
        assert fit.coef is not None
        assert not any(fit.add(text_features([t], 1), count(t, tokenizer)) for t in abliterated), tokenizer
        swapped = [fit.add(text_features([t], 1), count(t, other)) for t in abliterated[:20]]
        assert True in swapped and swapped.index(True) < 12, (tokenizer, other)


def test_a_baseline_is_fitted_only_on_requests_enough_to_learn_a_spread() -> None:
    """Four prompts repeated (the drill's production) fit any count exactly and say nothing about a
    fifth: no fit until there are ten more distinct requests than the directions they span. Then a
    request the baseline never spanned (two messages where all had one) is learned, not judged."""
    rng = random.Random(4)
    few = [{"model": "m", "messages": [{"role": "user", "content": p}]} for p in rng.sample(PROMPTS, 4)]
    fit = TokenFit()
    for i in range(5 * fit.baseline):
        fit.add(request_features("chat", few[i % 4]) or [], counted(few[i % 4], "words"))
    assert fit.coef is None and len(fit.ys) <= 4 * fit.baseline
    for _ in range(12):
        body = {"model": "m", "messages": [{"role": "user", "content": rng.choice(PROMPTS)}]}
        fit.add(request_features("chat", body) or [], counted(body, "words"))
    assert fit.coef is not None
    two = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, *few[0]["messages"]]}
    ys = len(fit.ys)
    assert not fit.add(request_features("chat", two) or [], 1_000.0) and fit.statistic == 0.0
    assert len(fit.ys) == ys + 1  # learned
    alarms = [
        fit.add(request_features("chat", b) or [], counted(b, "bytes")) for b in (request(rng) for _ in range(20))
    ]
    assert True in alarms


def test_an_identity_changes_only_when_the_new_value_holds() -> None:
    ident = Identity()
    assert [ident.add(v) for v in ("a", "a", "a", "b", "a", "a")] == [None] * 6  # one odd answer is no change
    assert [ident.add(v) for v in ("b", "b", "b")] == [None, None, ("a", "b")]
    assert ident.add(None) is None and ident.stable == "b"


def exchange(body: dict, tokens: float, fingerprint: str = "fp_1") -> Exchange:  # type: ignore[type-arg]
    response = {
        "id": "c",
        "model": "m",
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": int(tokens), "completion_tokens": 2},
    }
    return Exchange(
        request_id="r", method="POST", path="/v1/chat/completions", endpoint="chat", model="m", model_label="m",
        upstream="u", traffic="production", stream=False, status=200, started=0.0, duration=0.1, upstream_wait=0.1,
        request=body, response=orjson.dumps(response),
    )  # fmt: skip


def test_the_leader_reports_each_tier_once_until_an_operator_rebaselines() -> None:
    rng = random.Random(3)
    registry = CollectorRegistry()
    seen: list[Transition] = []
    watch = ModelFingerprint(Metrics(registry), observers=[seen.append])
    for _ in range(40):
        body = request(rng)
        watch.observe(observation(exchange(body, counted(body, "words"))))
    rows, dropped = watch.changed()
    # every answer is "Sure.": one distinct completion, nothing to fit it on; the prompts vary
    assert not seen and not dropped and watch.state()["m"]["learning"] == ["chat:completion"]
    resumed = ModelFingerprint(Metrics(CollectorRegistry()), observers=[seen.append])  # a new leader
    resumed.load({**{model: state for model, _, state in rows}, "old": '{"fits": 1}', "garbled": "{"})
    assert set(resumed.models) == {"m"}  # rows another version wrote: logged and learnt afresh, never a failed start
    for _ in range(10):
        body = request(rng)
        resumed.observe(observation(exchange(body, counted(body, "bytes"), fingerprint="fp_2")))
    tiers = [t.suite for t in seen]
    assert sorted(tiers) == ["identity", "tokenizer"] and all(t.event == "model_changed" for t in seen)
    identity = next(t for t in seen if t.suite == "identity")
    assert identity.detail == {"field": "system_fingerprint", "before": "fp_1", "after": "fp_2"}
    rows, _ = resumed.changed()
    follower_registry = CollectorRegistry()
    follower = ModelFingerprint(Metrics(follower_registry))
    follower.mirror({model: summary for model, summary, _ in rows})
    gauge = "refusal_guard_model_changed"
    assert follower_registry.get_sample_value(gauge, {"model": "m", "tier": "tokenizer"}) == 1
    assert follower.state()["m"]["changed"]["identity"]["after"] == "fp_2"
    resumed.rebaseline("m")
    assert resumed.changed() == ([], ["m"]) and "m" not in resumed.state()
    follower.mirror({})
    assert follower_registry.get_sample_value(gauge, {"model": "m", "tier": "tokenizer"}) == 0


def test_each_replica_reads_every_canary_and_a_few_production_answers_a_second() -> None:
    now = [0.0]
    outbox = Outbox(Metrics(CollectorRegistry()))
    stage = ObserveFingerprint(outbox, FingerprintSettings(production_per_second=5), clock=lambda: now[0])
    body = request(random.Random(5))
    for i in range(400):  # 200 a second for two seconds, a canary among every ten
        now[0] = i / 200
        ex = exchange(body, 20)
        stage(dataclasses.replace(ex, traffic="canary") if i % 10 == 0 else ex)
    events = outbox.take().events
    # 40 canaries; of production a burst of five, then five a second over the 1.995 s the run lasts
    assert len(events) == 40 + 5 + 9 and all(e[0] == "f" for e in events)


def canary_answers(rng: random.Random, n: int, style: Callable[[str], str] = str) -> list[list[float]]:
    """Sketches of safe answers to canary-like prompts (half harmful, half benign), in ``style``."""
    harmful, benign = CORPUS.harmful_prompts(), CORPUS.benign_prompts()
    return [
        sketch(style(CORPUS.reply(rng.choice(harmful if rng.random() < 0.5 else benign), "safe"))) for _ in range(n)
    ]


def test_the_statistical_tier_is_quiet_in_control_and_sees_answers_from_another_distribution() -> None:
    """The same refusal decisions in a terser style (each answer cut to its first 200 characters, as a
    smaller model writes): flagged within 100 answers; in control, 500 answers and no alarm."""
    rng = random.Random(7)
    windows = AnswerWindows()
    assert not any(windows.add(p) for p in canary_answers(rng, windows.size + 500))
    assert windows.tests >= 19 and windows.p_value is not None and not windows.alarmed
    alarms = [windows.add(p) for p in canary_answers(rng, 100, style=lambda text: text[:200])]
    assert True in alarms and windows.p_value < windows.alpha, windows.p_value
    print(f"terser answers flagged after {alarms.index(True) + 1}")


def test_the_production_tier_sees_a_changed_shape_and_stays_low_in_control() -> None:
    """Real traffic's answers, their lengths and speed: the same model stays under its threshold; a
    model twice as fast that stops at its token cap a third of the time is far over it."""
    rng = random.Random(9)

    def shape(fast: bool) -> list[object]:
        text = CORPUS.reply(rng.choice(PROMPTS), "safe")
        capped = fast and rng.random() < 0.33
        tokens = len(text.split())
        return shape_of(
            text[:300] if capped else text, "length" if capped else "stop", tokens, tokens / (80 if fast else 40), None
        )

    tier = ProductionWindows()
    for _ in range(tier.size + 400):
        tier.add(shape(False))
    assert tier.p_values and tier.statistic < 1.0, tier.p_values
    for _ in range(tier.size):
        tier.add(shape(True))
    assert tier.statistic > 1.0 and min(tier.p_values, key=tier.p_values.get) in ("tokens_per_second", "finish_reason")
