"""``refusal-guard train``: retrain the shipped detector from the shipped data, deterministically, and
write its model card with the leave-one-model-out figures :mod:`detectors.evaluate` measures."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from detectors.dataset import load_examples
from detectors.evaluate import evaluate_all, render
from detectors.linear import DEFAULT_MODEL
from detectors.train import MODELS_DIR, TrainConfig, fit, save


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="refusal-guard train", description=__doc__)
    p.add_argument("--out", type=Path, default=MODELS_DIR / DEFAULT_MODEL, help="artifact path without suffix")
    args = p.parse_args(argv)
    cfg = TrainConfig()
    examples = load_examples()
    detector = fit(examples, cfg)
    results = evaluate_all(examples, cfg, only=["delex-lr"])
    card = {
        "name": DEFAULT_MODEL,
        "version": cfg.version,
        "trained": dt.date.today().isoformat(),
        "threshold": cfg.threshold,
        "features": {"head": cfg.head, "max_n": cfg.max_n},
        "train_config": asdict(cfg),
        "data": {
            "human": sum(e.human for e in examples),
            "weak": sum(not e.human for e in examples),
            "vocabulary": len(detector.keep),
            "ngrams": len(detector.index),
        },
        "leave_one_model_out": results["delex-lr"],
    }
    save(detector, args.out, card)
    print(render({"delex-lr": results["delex-lr"]}))
    print(f"wrote {args.out.with_suffix('.npz')} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
