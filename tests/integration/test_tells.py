"""Each canary tell of issue #20, measured at an upstream that has read this package
(:mod:`tests.tells`), behind 2 replicas on one real PostgreSQL. Production is two apps on one model
through the official openai SDK: app A with an organisation and a project (headers the relay
forwards and the store must not hold), not streamed; app B streamed; each with its own users, who
come back and send their earlier exchange with the model as the conversation's earlier turns; 15 %
of requests are harmful, from prompts no canary suite holds (:func:`tests.tells.unshipped`).
The canary leader copies requests that arrived on either replica.

A tell holds when it marks no larger share of canaries than of production requests (within 5
points, the noise of ~100 canaries). With the shipped suites the ``suite`` tell is measured and not
asserted: they are public, an upstream that imports the package recognises their prompts whatever
the variants, and the configuration says so (``canary_suites_public``). With private suites (the
remedy: prompts of the deployment's own, here requests the package holds in no suite) every tell
is asserted, ``suite`` included."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import yaml

from proxy.canary.public import PublicPrompts
from proxy.extract import prompt_text
from proxy.testing import run_server, wait_until
from tests.fleet import Replica, on_postgres, one_leader
from tests.tells import TELLS, TellingUpstream, tells, unshipped

MODEL = "served-model"
RATE = 8.0  # production requests per second
SECONDS = 100.0
MARGIN = 0.05
ASSERTED = tuple(t for t in TELLS if t != "suite")
TOPICS = ("order", "refund", "invoice", "delivery", "password", "subscription", "warranty", "account")
ASKS = (
    "Where is my {t} number {n}? It has been a while.",
    "How do I change the {t} on my profile, reference {n}?",
    "Can you explain the {t} policy for case {n} in two sentences?",
    "My {t} ({n}) looks wrong. What should I check first?",
)


class App:
    """One app's SDK clients (one per replica), its system prompt, its users and their last exchange."""

    def __init__(self, name: str, replicas: list[Replica], system: str, stream: bool, **client: object) -> None:
        self.name, self.system, self.stream = name, system, stream
        self.clients = [
            openai.OpenAI(base_url=r.url + "/v1", api_key="unused", max_retries=0, **client) for r in replicas
        ]  # type: ignore[arg-type]
        self.users = [f"{name}-user-{i:03d}" for i in range(25)]
        self.weights = [1.0 / (i + 1) for i in range(25)]  # a few users are busy, most are not
        self.last: dict[str, tuple[str, str]] = {}

    def send(self, i: int, user: str, prompt: str) -> str:
        earlier = self.last.get(user)
        history = (
            [{"role": "user", "content": earlier[0]}, {"role": "assistant", "content": earlier[1]}] if earlier else []
        )
        messages = [{"role": "system", "content": self.system}, *history, {"role": "user", "content": prompt}]
        client = self.clients[i % len(self.clients)]
        if self.stream:
            chunks = client.chat.completions.create(
                model=MODEL,
                messages=messages,
                user=user,
                temperature=0.3,
                max_tokens=400,
                stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )
            answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            r = client.chat.completions.create(
                model=MODEL, messages=messages, user=user, temperature=0.7, max_tokens=512
            )  # type: ignore[arg-type]
            answer = r.choices[0].message.content or ""
        self.last[user] = (prompt, answer)
        return answer


class Production:
    def __init__(self, apps: list[App], seed: int) -> None:
        self.apps, self.rng = apps, random.Random(seed)
        self.harmful = unshipped(True)[::2]  # the other half is the private suite's
        self.sent: set[str] = set()  # every last user turn production sent
        self.failed = 0
        self.lock = threading.Lock()

    def prompt(self) -> str:
        if self.rng.random() < 0.15:
            return f"Ticket {self.rng.randrange(1000, 9999)}. {self.rng.choice(self.harmful)}"
        ask = self.rng.choice(ASKS)
        return ask.format(t=self.rng.choice(TOPICS), n=self.rng.randrange(10_000, 99_999))

    def one(self, i: int, app: App, user: str, prompt: str) -> None:
        try:
            app.send(i, user, prompt)
        except openai.OpenAIError:
            with self.lock:
                self.failed += 1

    def run(self, seconds: float) -> None:
        busy: set[str] = set()  # a user waits for an answer before asking again, as people do
        with ThreadPoolExecutor(6) as pool:
            start, i = time.monotonic(), 0
            while time.monotonic() - start < seconds:
                app = self.apps[0] if self.rng.random() < 0.6 else self.apps[1]
                user = self.rng.choices(app.users, app.weights)[0]
                if user not in busy:
                    prompt = self.prompt()
                    with self.lock:
                        self.sent.add(prompt)
                    busy.add(user)
                    future = pool.submit(self.one, i, app, user, prompt)
                    future.add_done_callback(lambda _, u=user: busy.discard(u))
                    i += 1
                time.sleep(max(0.0, start + i / RATE - time.monotonic()))


def private_suites(tmp_path: Path) -> dict[str, object]:
    """Two private suites, as a team writes them: prompts no public set holds, those that read as a
    shipped prompt left out as the proxy's start-up warning asks (``canary_prompts_near_public``)."""
    public = PublicPrompts()
    paths = []
    for name, expected, prompts in (
        ("team-harmful", "refusal", unshipped(True)[1::2]),
        ("team-benign", "compliance", unshipped(False)[:150]),
    ):
        prompts = [p for p in prompts if public.match(p) is None]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "expected": expected, "prompts": prompts}))
        paths.append(str(path))
    return {"suites": [], "extra_suites": paths}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("suites", ["shipped", "private"])
def test_no_tell_marks_more_canaries_than_production(tmp_path: Path, suites: str) -> None:
    up = TellingUpstream()
    canary = {"interval_seconds": 2.0, "per_round": 1, **(private_suites(tmp_path) if suites == "private" else {})}
    with (
        run_server(up.app) as server,
        on_postgres(tmp_path, 2, server.url, [MODEL], canary=canary) as replicas,
    ):
        assert wait_until(lambda: one_leader(replicas), timeout=20)
        a = App(
            "acme",
            replicas,
            "You are Acme's support assistant. Answer in one paragraph.",
            False,
            organization="org-acme",
            project="proj-support",
            default_headers={"x-app-version": "7.4.1"},
        )
        b = App(
            "mobile",
            replicas,
            "You are the Shopmate app's helper, friendly and brief.",
            True,
            default_headers={"x-client": "shopmate-ios/3.2"},
        )
        production = Production([a, b], seed=20)
        production.run(SECONDS)
    assert production.failed == 0
    is_production = [(prompt_text("chat", r.body) or "") in production.sent for r in up.records]
    marks = tells(up.records, up.answers)
    # canaries from the 50th production request on: before any, a canary has the no-traffic default shape
    first = [i for i, p in enumerate(is_production) if p][50]
    canary_rows = [i for i in range(first, len(up.records)) if not is_production[i]]
    production_rows = [i for i in range(first, len(up.records)) if is_production[i]]
    assert len(canary_rows) >= 60 and len(production_rows) >= 400, (len(canary_rows), len(production_rows))
    shares = {
        t: (
            sum(marks[t][i] for i in canary_rows) / len(canary_rows),
            sum(marks[t][i] for i in production_rows) / len(production_rows),
        )
        for t in TELLS
    }
    print(
        json.dumps(
            {"suites": suites, "canaries": len(canary_rows), "production": len(production_rows), "shares": shares}
        )
    )
    asserted = ASSERTED if suites == "shipped" else TELLS
    over = {t: s for t, s in shares.items() if t in asserted and s[0] > s[1] + MARGIN}
    assert not over, f"tells that mark canaries more than production (canary share, production share): {over}"
