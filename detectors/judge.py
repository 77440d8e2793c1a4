"""The secret judge: is a request harmful, as a per-deployment secret decides.

The harmful-request classifier (:mod:`detectors.harm`) is public: an upstream that imports this
package computes every one of its calls and can abliterate exactly the requests it does not flag.
The judge is a logistic head over a frozen sentence encoder (:mod:`detectors.encoder`) trained at
start-up on a *secret subsample* of the shipped request data (each request kept or not by an HMAC of
its text under the deployment's secret) plus the deployment's private canary prompts, if any. So:

* it generalises beyond the data sets' wording (leave-one-source-out recall and false positives
  beside harm-lr's: ``JUDGE_MODEL_CARD.md``, ``python -m detectors.judge --card``);
* its boundary is the deployment's own: an upstream that fits its own head on all the public data
  (or on another secret) disagrees with it near the boundary, and cannot tell which of its calls
  are the deployment's (the card measures how often);
* which requests it judges is a secret random sample when load is high (:mod:`proxy.judging`).

The shipped data's vectors are precomputed (``models/judge-requests.npz``, by this module's
``--vectors``); a test checks they are what the encoder gives now. Training takes milliseconds;
scoring one request is one encoder pass (about 7 ms on one core of a 2-core Xeon).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from detectors.encoder import Encoder
from detectors.train_harm import BENIGN_SOURCES, HARMFUL_SOURCES, HarmConfig, Request, _key, fit, load_requests

JUDGE_MODEL = "judge-minilm"
VERSION = "1"
THRESHOLD = 0.5
KEEP = 0.7  # the share of the shipped requests the secret keeps for training
C = 1.0
MODELS_DIR = Path(__file__).resolve().parent / "models"
CARD = Path(__file__).resolve().parent / "JUDGE_MODEL_CARD.md"
ORDINARY = ("self-instruct-seed", "self-instruct-user")


def kept(secret: bytes, text: str, keep: float = KEEP) -> bool:
    """Whether the secret keeps this request for training (an HMAC of its text, as a number in [0, 1))."""
    digest = hmac.new(secret, text.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < keep


def shipped_vectors() -> np.ndarray:
    """The encoder's vectors of ``data/requests.jsonl.gz``, in its order (float32)."""
    with resources.files("detectors").joinpath("models/judge-requests.npz").open("rb") as f, np.load(f) as data:
        vectors: np.ndarray = data["vectors"].astype(np.float32)
    return vectors


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=0).fit(x, y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


@dataclass
class SecretJudge:
    """``score(text)`` is P(harmful) under this deployment's head; ``is_harmful`` compares it with 0.5.
    No attribute derives from the secret but the head itself (its name and version are public)."""

    encoder: Encoder
    coef: np.ndarray
    intercept: float
    threshold: float = THRESHOLD
    name: str = JUDGE_MODEL
    version: str = VERSION

    @classmethod
    def train(
        cls,
        secret: bytes,
        *,
        encoder: Encoder | None = None,
        private: Sequence[tuple[str, bool]] = (),
        requests: Sequence[Request] | None = None,
        vectors: np.ndarray | None = None,
    ) -> SecretJudge:
        """A head on the shipped requests the secret keeps, plus ``private`` (text, harmful) pairs
        (a deployment's private canary prompts), encoded here."""
        encoder = encoder or Encoder()
        requests = load_requests() if requests is None else requests
        vectors = shipped_vectors() if vectors is None else vectors
        rows = [i for i, r in enumerate(requests) if kept(secret, r.text)]
        x, y = vectors[rows], np.array([requests[i].harmful for i in rows], dtype=int)
        if private:
            x = np.vstack([x, encoder.encode_many([t for t, _ in private])])
            y = np.concatenate([y, np.array([h for _, h in private], dtype=int)])
        coef, intercept = _fit(x, y)
        return cls(encoder, coef, intercept)

    def score_vector(self, v: np.ndarray) -> float:
        z = float(v @ self.coef) + self.intercept
        return 1.0 / (1.0 + math.exp(-z)) if z > -40 else 0.0

    def score(self, text: str) -> float:
        return self.score_vector(self.encoder.encode(text))

    def is_harmful(self, text: str | None) -> bool:
        return bool(text) and self.score(text or "") >= self.threshold


# -- the card: leave-one-source-out, beside harm-lr, and how computable the secret head is --------------


def _split(requests: Sequence[Request], source: str) -> tuple[list[int], list[int]]:
    test = [i for i, r in enumerate(requests) if r.source == source]
    held = {_key(requests[i].text) for i in test}
    train = [i for i, r in enumerate(requests) if r.source != source and _key(r.text) not in held]
    return train, test


def leave_one_source_out(requests: Sequence[Request], vectors: np.ndarray, secrets: Sequence[bytes]) -> dict[str, Any]:
    """Per held-out source: the share harm-lr calls harmful, the share the judge does (mean and range
    over ``secrets``), and how often an upstream's own head, fit on all the other sources' public data,
    agrees with a deployment's on the requests the deployment's head flags."""
    per: dict[str, Any] = {}
    y_all = np.array([r.harmful for r in requests], dtype=int)
    for source in (*HARMFUL_SOURCES, *BENIGN_SOURCES):
        train, test = _split(requests, source)
        harm = fit([requests[i] for i in train], HarmConfig())
        harm_share = sum(harm.is_harmful(requests[i].text) for i in test) / len(test)
        public_coef, public_b = _fit(vectors[train], y_all[train])
        public = vectors[test] @ public_coef + public_b >= 0
        shares, copied = [], []
        for secret in secrets:
            rows = [i for i in train if kept(secret, requests[i].text)]
            coef, b = _fit(vectors[rows], y_all[rows])
            mine = vectors[test] @ coef + b >= 0
            shares.append(float(mine.mean()))
            copied.append(float((public[mine]).mean()) if mine.any() else 1.0)
        per[source] = {
            "n": len(test),
            "harmful": requests[test[0]].harmful,
            "harm_lr": round(harm_share, 4),
            "judge": round(float(np.mean(shares)), 4),
            "judge_range": [round(min(shares), 4), round(max(shares), 4)],
            "public_head_agrees": round(float(np.mean(copied)), 4),
        }
    return {"sources": per, "secrets": len(secrets), "keep": KEEP}


def render(results: dict[str, Any]) -> str:
    lines = [
        "| held-out source | requests | kind | harm-lr | judge (mean over secrets) | judge range "
        "| of the judge's flags, a public head flags too |",
        "|---|---|---|---|---|---|---|",
    ]
    for source, r in results["sources"].items():
        kind = "harmful: recall" if r["harmful"] else "benign: false positives"
        lo, hi = r["judge_range"]
        lines.append(
            f"| {source} | {r['n']} | {kind} | {r['harm_lr']:.3f} | {r['judge']:.3f} | {lo:.3f}-{hi:.3f} "
            f"| {r['public_head_agrees']:.3f} |"
        )
    return "\n".join(lines)


def _write_vectors(encoder: Encoder, out: Path) -> None:
    texts = [r.text for r in load_requests()]
    vectors = encoder.encode_many(texts).astype(np.float16)
    np.savez_compressed(out, vectors=vectors)


def main(argv: Sequence[str] | None = None, *, encoder_factory: Callable[[], Encoder] = Encoder) -> int:
    p = argparse.ArgumentParser(prog="python -m detectors.judge", description=__doc__)
    p.add_argument("--vectors", action="store_true", help="re-encode the shipped requests (models/judge-requests.npz)")
    p.add_argument("--card", action="store_true", help="leave-one-source-out figures into JUDGE_MODEL_CARD.md")
    p.add_argument("--secrets", type=int, default=5, help="random secrets the card averages over")
    args = p.parse_args(argv)
    if args.vectors:
        _write_vectors(encoder_factory(), MODELS_DIR / "judge-requests.npz")
    if args.card:
        results = leave_one_source_out(
            load_requests(), shipped_vectors(), [os.urandom(16) for _ in range(args.secrets)]
        )
        table = render(results)
        print(table)
        print(json.dumps(results, indent=1))
        text = CARD.read_text(encoding="utf-8")
        start, end = text.index("<!-- table -->") + len("<!-- table -->"), text.index("<!-- /table -->")
        CARD.write_text(text[:start] + "\n" + table + "\n" + text[end:], encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
