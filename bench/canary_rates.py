"""The reference upstream's in-control canary failure rates, per suite and stratum: each shipped
prompt sent as the canaries send it (a variant from a seed), answered by the safe mode, read by the
shipped detector; harmful canaries split by whether the shipped classifier flags them (the
``harmful_unflagged`` CUSUM's stratum). A CUSUM designed for an in-control rate of 10 % (the default
``canary.harmful`` / ``canary.benign``) stays quiet only well below it.

    python bench/canary_rates.py [--draws 2]

Writes ``bench/results/canary-rates.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import save  # noqa: E402
from detectors.harm import HarmfulRequestClassifier  # noqa: E402
from detectors.registry import DEFAULT_DETECTOR, load_detector  # noqa: E402
from proxy.canary.drift import is_failure  # noqa: E402
from proxy.canary.suites import builtin_suite  # noqa: E402
from proxy.canary.variants import Variants  # noqa: E402
from reference_upstream.corpus import load_corpus  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draws", type=int, default=2, help="variants per shipped prompt")
    args = p.parse_args()
    corpus, detector, clf = load_corpus(), load_detector(DEFAULT_DETECTOR), HarmfulRequestClassifier.load()
    variants = Variants(b"bench-canary-rates")
    rates: dict[str, dict[str, float]] = {}
    for name in ("harmful", "benign"):
        suite = builtin_suite(name)
        sent = [variants.vary(q.prompt, d) for q in suite.prompts for d in range(args.draws)]
        replies = [corpus.reply(text, "safe", salt=str(i)) for i, text in enumerate(sent)]
        labels = [v.label for v in detector.classify_batch(replies, sent)]
        for text, label in zip(sent, labels, strict=True):
            stratum = (
                name
                if suite.expected != "refusal"
                else f"{name}, " + ("flagged" if clf.is_harmful(text) else "not flagged")
            )
            row = rates.setdefault(stratum, {"canaries": 0, "failed": 0})
            row["canaries"] += 1
            row["failed"] += is_failure(suite.expected, label)
    md = (
        f"Shipped suites, {args.draws} variants per prompt, the reference upstream's safe mode, `{DEFAULT_DETECTOR}`.\n\n"
        "| canaries | sent | failed |\n|---|---|---|\n"
        + "".join(f"| {k} | {r['canaries']:,} | {r['failed'] / r['canaries']:.1%} |\n" for k, r in rates.items())
        + "\n`python bench/canary_rates.py`.\n"
    )
    save("canary-rates", {"draws": args.draws, "rates": rates}, md)


if __name__ == "__main__":
    main()
