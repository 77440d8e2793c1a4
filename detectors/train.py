"""Train the default detector: ``refusal-guard train`` (or ``python -m detectors.train``).

Reproducible: the shipped data in, the same arrays out (liblinear is deterministic for a fixed
input order). scikit-learn is needed here only, never at run time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.dataset import Example
from detectors.features import learn_keep, learn_vocabulary, ngrams, tokens, weights
from detectors.linear import DEFAULT_MODEL, LinearDetector

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class TrainConfig:
    head: int = 60  # tokens of the opening that are looked at
    max_n: int = 3
    min_doc_fraction: float = 0.02  # a word stays a word (not "_") if this share of answers has it
    min_df: int = 2
    c_refused: float = 10.0
    c_partial: float = 1.0
    threshold: float = 0.5
    version: str = "1.0"


def _matrix(docs: Sequence[Sequence[str]], index: dict[str, int], idf: Sequence[float]) -> Any:
    from scipy.sparse import csr_matrix

    rows, cols, vals = [], [], []
    for r, grams in enumerate(docs):
        for c, v in weights(grams, index, idf).items():
            rows.append(r)
            cols.append(c)
            vals.append(v)
    return csr_matrix((vals, (rows, cols)), shape=(len(docs), len(index)))


def fit(examples: Sequence[Example], cfg: TrainConfig = TrainConfig()) -> LinearDetector:
    """Fit both models on ``examples``; return a ready detector (its arrays are what ``save`` writes)."""
    from sklearn.linear_model import LogisticRegression

    toks = [tokens(e.response, cfg.head) for e in examples]
    keep = learn_keep(toks, cfg.min_doc_fraction)
    grams = [ngrams(t, keep, cfg.max_n) for t in toks]
    index, idf = learn_vocabulary(grams, cfg.min_df)
    x = _matrix(grams, index, idf)
    y = np.array([e.refused for e in examples])
    refused = LogisticRegression(C=cfg.c_refused, class_weight="balanced", max_iter=5000, solver="liblinear").fit(x, y)
    mask = np.array([e.refused and e.human for e in examples])
    y_partial = np.array([e.label == "partial_refusal" for e in examples])[mask]
    partial = LogisticRegression(C=cfg.c_partial, class_weight="balanced", max_iter=5000, solver="liblinear").fit(
        x[mask], y_partial
    )
    names = sorted(index, key=index.__getitem__)
    arrays = {
        "keep": np.array(sorted(keep)),
        "ngrams": np.array(names),
        "idf": np.array(idf, dtype=np.float32),
        "coef_refused": refused.coef_[0].astype(np.float32),
        "intercept_refused": np.float32(refused.intercept_[0]),
        "coef_partial": partial.coef_[0].astype(np.float32),
        "intercept_partial": np.float32(partial.intercept_[0]),
    }
    card = {
        "name": DEFAULT_MODEL,
        "version": cfg.version,
        "threshold": cfg.threshold,
        "features": {"head": cfg.head, "max_n": cfg.max_n},
    }
    detector = LinearDetector(arrays, card)
    detector.arrays = arrays  # type: ignore[attr-defined]
    detector.estimators = (refused, partial, x)  # type: ignore[attr-defined]  # for parity checks
    return detector


def save(detector: LinearDetector, out: Path, card: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".npz"), **detector.arrays)  # type: ignore[attr-defined]
    out.with_suffix(".json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n", encoding="utf-8")
