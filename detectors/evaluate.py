"""``refusal-guard eval-detector``: every detector side by side, leave-one-model-out on XSTest.

For the trained detector each fold trains on two XSTest models' human-labelled answers (plus the
weakly-labelled refusal_direction text, which holds none of the three) and tests on the third.
Fixed detectors (patterns, keyword lists) are simply scored on each model. Partial refusals count
as refusals for the binary figures; "agreement" is exact 3-way label agreement.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from detectors.base import LABELS, Detector
from detectors.dataset import XSTEST_MODELS, Example, load_examples
from detectors.train import TrainConfig, fit

Metrics = dict[str, Any]


def score(gold: Sequence[Example], predicted: Sequence[str]) -> Metrics:
    """Binary refusal F1/precision/recall/accuracy, 3-way agreement and the confusion matrix."""
    tp = sum(g.refused and p != "compliance" for g, p in zip(gold, predicted, strict=True))
    fp = sum(not g.refused and p != "compliance" for g, p in zip(gold, predicted, strict=True))
    fn = sum(g.refused and p == "compliance" for g, p in zip(gold, predicted, strict=True))
    n = len(gold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    confusion: dict[str, dict[str, int]] = {g: {p: 0 for p in LABELS} for g in LABELS}
    for e, p in zip(gold, predicted, strict=True):
        confusion[e.label][p] += 1
    return {
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "precision": precision,
        "recall": recall,
        "accuracy": (n - fp - fn) / n,
        "agreement": sum(e.label == p for e, p in zip(gold, predicted, strict=True)) / n,
        "n": n,
        "confusion": confusion,
    }


def _with_mean(folds: dict[str, Metrics]) -> dict[str, Any]:
    keys = ("f1", "precision", "recall", "accuracy", "agreement")
    mean = {k: sum(f[k] for f in folds.values()) / len(folds) for k in keys}
    return {"folds": folds, "mean": mean, "min_f1": min(f["f1"] for f in folds.values())}


def evaluate_fixed(detector: Detector, examples: Sequence[Example]) -> dict[str, Any]:
    folds = {}
    for model in XSTEST_MODELS:
        test = [e for e in examples if e.human and e.model == model]
        folds[model] = score(test, [v.label for v in detector.classify_batch([e.response for e in test])])
    return _with_mean(folds)


def evaluate_trained(examples: Sequence[Example], cfg: Any) -> dict[str, Any]:
    folds = {}
    for model in XSTEST_MODELS:
        train = [e for e in examples if not (e.human and e.model == model)]
        test = [e for e in examples if e.human and e.model == model]
        detector = fit(train, cfg)
        folds[model] = score(test, [detector.classify(e.response).label for e in test])
    return _with_mean(folds)


def evaluate_all(examples: Sequence[Example], cfg: Any = None, only: Sequence[str] | None = None) -> dict[str, Any]:
    from detectors.keywords import keyword_baselines
    from detectors.patterns import PatternDetector

    results: dict[str, Any] = {}
    if only is None or "delex-lr" in only:
        results["delex-lr"] = evaluate_trained(examples, cfg or TrainConfig())
    if only is None or "pattern" in only:
        results["pattern"] = evaluate_fixed(PatternDetector(), examples)
    if only is None or "keywords" in only:
        for kd in keyword_baselines():
            results[kd.name] = evaluate_fixed(kd, examples)
    return results


def render(results: dict[str, Any], confusion_for: Sequence[str] = ("delex-lr",)) -> str:
    """A plain-text table: one row per detector and fold, then the mean; confusion matrices after."""
    lines = [f"{'detector':<30} {'fold (test model)':<17} {'F1':>6} {'prec':>6} {'recall':>6} {'acc':>6} {'agree':>6}"]
    for name, r in results.items():
        for fold, m in r["folds"].items():
            lines.append(
                f"{name:<30} {fold:<17} {m['f1']:>6.3f} {m['precision']:>6.3f} {m['recall']:>6.3f} "
                f"{m['accuracy']:>6.3f} {m['agreement']:>6.3f}"
            )
        m = r["mean"]
        lines.append(
            f"{name:<30} {'mean':<17} {m['f1']:>6.3f} {m['precision']:>6.3f} {m['recall']:>6.3f} "
            f"{m['accuracy']:>6.3f} {m['agreement']:>6.3f}"
        )
    for name in confusion_for:
        if name not in results:
            continue
        for fold, m in results[name]["folds"].items():
            lines.append(f"\nconfusion {name} on {fold} (rows gold, columns predicted: refusal, partial, compliance)")
            for g in LABELS:
                row = m["confusion"][g]
                lines.append(f"  {g:<16} " + " ".join(f"{row[p]:>6}" for p in LABELS))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="refusal-guard eval-detector", description=__doc__)
    p.add_argument("--only", help="comma-separated: delex-lr,pattern,keywords (default: all)")
    p.add_argument("--json", help="also write the full results as JSON to this file")
    args = p.parse_args(argv)
    results = evaluate_all(load_examples(), only=args.only.split(",") if args.only else None)
    print(render(results, confusion_for=("delex-lr", "pattern")))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
