"""An upstream that has read this package and measures every canary tell issue #20 lists.

It records each chat request as it arrives (header names in order, the raw body, whether a stream
was read to its end) and answers as a safe model (the reference corpus's answers). After the run,
:func:`tells` marks, per tell, each request the upstream would take for a canary, from everything it
saw, as an upstream that keeps its own logs can (so more than one deciding online could):

- ``headers``: header names, in order, not the usual ones of requests with that system prompt;
- ``json``: serialised otherwise than those requests usually are (compact or spaced, escaped or not);
- ``cut``: a stream the client left before its end;
- ``turns``: an earlier assistant turn that is not an answer this upstream gave;
- ``repeats``: the same request (a shipped suite's prompt reversed from its variants, else the text)
  as one within the last 300 s;
- ``ids``: a ``user`` id seen on no other request, or with another system prompt too;
- ``system``: a system prompt on under 5 % of requests;
- ``suite``: the last user turn is a variant of a shipped canary prompt (the variants' synonyms
  mapped back, then most of the prompt's words present).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from detectors.train_harm import load_requests
from proxy.canary.public import PublicPrompts, words
from proxy.canary.suites import builtin_suite
from proxy.extract import prompt_text, system_text
from reference_upstream.corpus import load_corpus

TELLS = ("headers", "json", "cut", "turns", "repeats", "ids", "system", "suite")
REPEAT_SECONDS = 300.0


@dataclass
class Seen:
    at: float
    names: tuple[str, ...]
    raw: bytes
    body: dict[str, Any]
    stream: bool
    read_to_end: bool = True


@dataclass
class TellingUpstream:
    records: list[Seen] = field(default_factory=list)
    answers: set[str] = field(default_factory=set)  # every text this upstream answered

    def __post_init__(self) -> None:
        self.corpus = load_corpus()
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        raw = await request.body()
        body = orjson.loads(raw)
        seen = Seen(
            time.time(), tuple(k.decode() for k, _ in request.scope["headers"]), raw, body, body.get("stream") is True
        )
        text = self.corpus.reply(prompt_text("chat", body) or "", "safe", salt=uuid.uuid4().hex)
        with self.lock:
            self.records.append(seen)
            self.answers.add(text)
        if not seen.stream:
            message = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            out = {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion", "created": int(time.time())}
            return Response(
                orjson.dumps({**out, "model": body.get("model"), "choices": [message]}), media_type="application/json"
            )
        words = text.split(" ")

        async def events() -> Any:
            sent = 0
            try:
                for i in range(0, len(words), 8):
                    piece = " ".join(words[i : i + 8]) + (" " if i + 8 < len(words) else "")
                    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": body.get("model")}
                    chunk["choices"] = [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                    sent += 1
                yield b"data: [DONE]\n\n"
                sent += 1
            finally:
                seen.read_to_end = sent > (len(words) + 7) // 8

        return StreamingResponse(events(), media_type="text/event-stream")


def unshipped(harmful: bool) -> list[str]:
    """Requests no canary suite holds, from the harmful-request classifier's data: harmful, HarmBench's
    contextual behaviours (100); ordinary, Self-Instruct's tasks. For production traffic (real users'
    harmful requests are not a public benchmark's: production drawn from the canaries' own pool made
    canaries "repeat" what production had just sent, a collision of the test's, not a tell an upstream
    sees in real traffic) and for a deployment's private suites."""
    shipped = {p.prompt for s in ("harmful", "benign") for p in builtin_suite(s).prompts}
    return [r.text for r in load_requests() if r.harmful == harmful and r.text not in shipped]


def _compact(raw: bytes) -> tuple[bool, bool]:
    """Whether ``raw`` is what the openai SDK writes (compact, UTF-8), and whether it escapes non-ASCII."""
    return raw == orjson.dumps(orjson.loads(raw)), b"\\u" in raw


def tells(records: list[Seen], answers: set[str]) -> dict[str, list[bool]]:
    """Per tell, whether each record would be taken for a canary."""
    systems = [system_text("chat", r.body) or "" for r in records]
    by_system: dict[str, Counter[Any]] = defaultdict(Counter)
    styles: dict[str, Counter[Any]] = defaultdict(Counter)
    users: dict[str, set[str]] = defaultdict(set)
    user_count: Counter[str] = Counter()
    for r, s in zip(records, systems, strict=True):
        by_system[s][r.names] += 1
        styles[s][_compact(r.raw)] += 1
        if isinstance(r.body.get("user"), str):
            users[r.body["user"]].add(s)
            user_count[r.body["user"]] += 1
    system_share = Counter(systems)
    matcher = PublicPrompts()  # the shipped prompt a text reads as: the package's own check
    out: dict[str, list[bool]] = {t: [] for t in TELLS}
    last: dict[str, float] = {}
    for r, s in zip(records, systems, strict=True):
        text = prompt_text("chat", r.body) or ""
        suite = matcher.match(text)
        out["headers"].append(r.names != by_system[s].most_common(1)[0][0])
        out["json"].append(_compact(r.raw) != styles[s].most_common(1)[0][0])
        out["cut"].append(r.stream and not r.read_to_end)
        turns = [m for m in r.body.get("messages") or [] if isinstance(m, dict)]
        earlier = [m.get("content") for m in turns[:-1] if m.get("role") == "assistant"]
        out["turns"].append(any(c not in answers for c in earlier))
        key = suite or " ".join(words(text))
        out["repeats"].append(key in last and r.at - last[key] < REPEAT_SECONDS)
        last[key] = r.at
        user = r.body.get("user")
        out["ids"].append(isinstance(user, str) and (user_count[user] == 1 or len(users[user]) > 1))
        out["system"].append(system_share[s] < 0.05 * len(records))
        out["suite"].append(suite is not None)
    return out
