"""Train the harmful-request classifier and measure it leave-one-source-out.

``python -m detectors.train_harm`` (or ``refusal-guard train-harm``) refits the shipped artifact from
``detectors/data/requests.jsonl.gz`` (deterministically) and rewrites the figures in its card and in
``detectors/HARM_MODEL_CARD.md``. Leave-one-source-out: for each source, train on every other
source (minus any request whose text also occurs in the held-out one) and score the held-out one,
so each figure says how the classifier does on a data set it never saw.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.features import weights
from detectors.harm import HARM_MODEL, HarmfulRequestClassifier, grams, words

DATA = Path(__file__).resolve().parent / "data" / "requests.jsonl.gz"
MODELS_DIR = Path(__file__).resolve().parent / "models"
HARMFUL_SOURCES = ("advbench", "harmbench", "jailbreakbench", "strongreject", "xstest-unsafe")
BENIGN_SOURCES = ("self-instruct-seed", "self-instruct-user", "xstest-safe")


@dataclass(frozen=True)
class HarmConfig:
    version: str = "1"
    c: float = 1.0  # inverse regularisation strength
    min_df: int = 1
    threshold: float = 0.5


@dataclass(frozen=True)
class Request:
    text: str
    harmful: bool
    source: str


def load_requests(path: Path = DATA) -> list[Request]:
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines() if line]
    return [Request(r["text"], r["label"] == "harmful", r["source"]) for r in rows]


def _key(text: str) -> str:
    return " ".join(words(text))


def fit(train: Sequence[Request], cfg: HarmConfig) -> HarmfulRequestClassifier:
    """Fit on ``train``: vocabulary, smooth idf as scikit-learn computes it, balanced logistic regression."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    docs = [grams(words(r.text)) for r in train]
    df: dict[str, int] = {}
    for d in docs:
        for g in set(d):
            df[g] = df.get(g, 0) + 1
    names = sorted(g for g, c in df.items() if c >= cfg.min_df)
    n = len(docs)
    idf = np.log((1 + n) / (1 + np.array([df[g] for g in names], dtype=float))) + 1.0
    arrays = {"ngrams": np.array(names), "idf": idf, "coef": np.zeros(len(names)), "intercept": np.array(0.0)}
    card = {"name": HARM_MODEL, "version": cfg.version, "threshold": cfg.threshold}
    probe = HarmfulRequestClassifier(arrays, card)  # the inference code computes the training features
    rows, cols, vals = [], [], []
    for r, d in enumerate(docs):
        for i, v in weights(d, probe.index, probe.idf).items():
            rows.append(r)
            cols.append(i)
            vals.append(v)
    x = csr_matrix((vals, (rows, cols)), shape=(n, len(names)))
    y = np.array([r.harmful for r in train], dtype=int)
    model = LogisticRegression(C=cfg.c, class_weight="balanced", max_iter=5000, solver="liblinear", random_state=0)
    model.fit(x, y)
    arrays["coef"] = model.coef_[0].astype(np.float64)
    arrays["intercept"] = np.array(float(model.intercept_[0]))
    return HarmfulRequestClassifier(arrays, card)


def leave_one_source_out(requests: Sequence[Request], cfg: HarmConfig) -> dict[str, Any]:
    """Per held-out source: how many it has, and the share called harmful (recall for a harmful
    source, false-positive rate for a benign one); then precision at several harmful shares of traffic."""
    per: dict[str, dict[str, Any]] = {}
    for source in (*HARMFUL_SOURCES, *BENIGN_SOURCES):
        test = [r for r in requests if r.source == source]
        held = {_key(r.text) for r in test}
        train = [r for r in requests if r.source != source and _key(r.text) not in held]
        clf = fit(train, cfg)
        flagged = sum(clf.is_harmful(r.text) for r in test)
        per[source] = {
            "n": len(test),
            "harmful": test[0].harmful,
            "flagged": flagged,
            "recall" if test[0].harmful else "false_positive_rate": round(flagged / len(test), 4),
        }
    recall = sum(per[s]["flagged"] for s in HARMFUL_SOURCES) / sum(per[s]["n"] for s in HARMFUL_SOURCES)
    fpr = sum(per[s]["flagged"] for s in BENIGN_SOURCES) / sum(per[s]["n"] for s in BENIGN_SOURCES)
    ordinary = (
        "self-instruct-seed",
        "self-instruct-user",
    )  # ordinary requests; XSTest's safe ones are built to mislead
    fpr_ordinary = sum(per[s]["flagged"] for s in ordinary) / sum(per[s]["n"] for s in ordinary)
    precision = {
        f"{share:.0%}": round(recall * share / (recall * share + fpr_ordinary * (1 - share)), 4) for share in SHARES
    }
    return {
        "sources": per,
        "recall": round(recall, 4),
        "false_positive_rate": round(fpr, 4),
        "false_positive_rate_ordinary": round(fpr_ordinary, 4),
        "precision_at": precision,
    }


SHARES = (0.01, 0.05, 0.15)


def render(results: dict[str, Any]) -> str:
    """The model card's table."""
    lines = [
        "| held-out source | requests | kind | called harmful | recall / false-positive rate |",
        "|---|---|---|---|---|",
    ]
    for source, r in results["sources"].items():
        kind = "harmful" if r["harmful"] else "benign"
        rate = r.get("recall", r.get("false_positive_rate"))
        label = "recall" if r["harmful"] else "false-positive rate"
        lines.append(f"| {source} | {r['n']} | {kind} | {r['flagged']} | {label} {rate:.3f} |")
    lines.append("")
    lines.append(
        f"Pooled over held-out sources: recall {results['recall']:.3f}, false-positive rate "
        f"{results['false_positive_rate']:.3f} ({results['false_positive_rate_ordinary']:.3f} on the ordinary "
        "requests, Self-Instruct); precision against ordinary requests when harmful requests are "
        + ", ".join(f"{k} of traffic: {v:.3f}" for k, v in results["precision_at"].items())
        + "."
    )
    return "\n".join(lines)


def save(clf: HarmfulRequestClassifier, out: Path, card: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "ngrams": np.array(sorted(clf.index, key=clf.index.__getitem__)),
        "idf": np.array(clf.idf),
        "coef": np.array(clf.coef),
        "intercept": np.array(clf.intercept),
    }
    np.savez_compressed(out.with_suffix(".npz"), **arrays)  # type: ignore[arg-type]
    out.with_suffix(".json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="refusal-guard train-harm", description=__doc__)
    p.add_argument("--out", type=Path, default=MODELS_DIR / HARM_MODEL, help="artifact path without suffix")
    args = p.parse_args(argv)
    cfg = HarmConfig()
    requests = load_requests()
    results = leave_one_source_out(requests, cfg)
    clf = fit(requests, cfg)
    card = {
        "name": HARM_MODEL,
        "version": cfg.version,
        "threshold": cfg.threshold,
        "config": asdict(cfg),
        "data": {s: sum(r.source == s for r in requests) for s in (*HARMFUL_SOURCES, *BENIGN_SOURCES)},
        "ngrams": len(clf.index),
        "leave_one_source_out": results,
    }
    save(clf, args.out, card)
    print(render(results))
    print(f"wrote {args.out.with_suffix('.npz')} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
