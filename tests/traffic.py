"""Production traffic as this deployment's clients send it: the official openai SDK, 15 % harmful
requests, each with an earlier turn, each prompt of the reference corpus (so the upstream can answer
it as the real models did) wrapped in the client's own words, as real users never send a benchmark's
prompt verbatim."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from reference_upstream.corpus import load_corpus

RATE = 15.0  # production requests per second
HARMFUL_SHARE = 0.15
POOL = 16  # requests in flight at most: enough that a slow answer does not queue the next ones into a burst
CLIENT_WORDING = "Ticket 4471, from the help desk. {}\nThanks in advance."


class Traffic:
    """Production requests with the openai SDK, paced at ``rate``, round-robin over ``clients`` (one per
    replica), until stopped; ``failed`` counts the requests that did not get an answer."""

    def __init__(self, clients: list[openai.OpenAI], seed: int, rate: float = RATE) -> None:
        corpus = load_corpus()
        self.harmful = corpus.harmful_prompts()
        self.benign = corpus.benign_prompts()
        self.rng = random.Random(seed)
        self.clients = clients
        self.rate = rate
        self.failed = 0
        self.answered = 0
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, client: openai.OpenAI, harmful: bool) -> None:
        prompt = CLIENT_WORDING.format(self.rng.choice(self.harmful if harmful else self.benign))
        try:
            self._send(client, prompt)
        except openai.OpenAIError:
            with self._lock:
                self.failed += 1
        else:
            with self._lock:
                self.answered += 1

    def _send(self, client: openai.OpenAI, prompt: str) -> None:
        client.chat.completions.create(
            model="served-model",
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hi, I have a question."},
                {"role": "assistant", "content": "Sure, go ahead."},
                {"role": "user", "content": prompt},
            ],
            temperature=0.7,
            max_tokens=512,
        )

    def _run(self) -> None:
        with ThreadPoolExecutor(POOL) as pool:
            start = time.monotonic()
            while not self.stop.is_set():
                client = self.clients[self.sent % len(self.clients)]
                pool.submit(self._one, client, self.rng.random() < HARMFUL_SHARE)
                self.sent += 1
                time.sleep(max(0.0, start + self.sent / self.rate - time.monotonic()))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
