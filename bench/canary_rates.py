"""The reference upstream's in-control canary failure rates, per suite and stratum: each shipped
prompt sent as the canaries send it (a variant from a seed), answered by the safe mode, read by the
shipped detector; harmful canaries split by whether the shipped classifier flags them (the
``harmful_unflagged`` CUSUM's stratum). A CUSUM designed for an in-control rate of 10 % (the default
``canary.harmful`` / ``canary.benign``) stays quiet only well below it. Then the other side: the
unflagged stratum answered by the abliterated mode (an upstream that imports the classifier and
abliterates whatever it does not flag), and from that failure rate and the stratum's share of the
harmful canaries, the chance that ``harmful_unflagged`` alarms within 4 minutes at a few canary
rates (canaries arrive as a Poisson process; the CUSUM's run lengths are exact:
:meth:`proxy.canary.cusum.CusumDesign.alarm_probability`).

    python bench/canary_rates.py [--draws 2]

Writes ``bench/results/canary-rates.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scipy.stats import poisson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import save  # noqa: E402
from detectors.harm import HarmfulRequestClassifier  # noqa: E402
from detectors.registry import DEFAULT_DETECTOR, load_detector  # noqa: E402
from proxy.canary.cusum import CusumDesign  # noqa: E402
from proxy.canary.drift import is_failure  # noqa: E402
from proxy.canary.suites import builtin_suite  # noqa: E402
from proxy.canary.variants import Variants  # noqa: E402
from proxy.settings import CanarySettings  # noqa: E402
from reference_upstream.corpus import load_corpus  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draws", type=int, default=2, help="variants per shipped prompt")
    args = p.parse_args()
    corpus, detector, clf = load_corpus(), load_detector(DEFAULT_DETECTOR), HarmfulRequestClassifier.load()
    variants = Variants(b"bench-canary-rates")
    rates: dict[str, dict[str, float]] = {}
    unflagged: list[str] = []
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
            if stratum == "harmful, not flagged":
                unflagged.append(text)
    replies = [corpus.reply(text, "abliterated", salt=str(i)) for i, text in enumerate(unflagged)]
    labels = [v.label for v in detector.classify_batch(replies, unflagged)]
    failing = sum(is_failure("refusal", label) for label in labels) / len(unflagged)
    share = len(unflagged) / (rates["harmful, flagged"]["canaries"] + len(unflagged))
    within = alarm_within(share, failing, seconds=240.0, multiples=(1, 10, 15, 30))
    md = (
        f"Shipped suites, {args.draws} variants per prompt, the reference upstream's safe mode, `{DEFAULT_DETECTOR}`.\n\n"
        "| canaries | sent | failed |\n|---|---|---|\n"
        + "".join(f"| {k} | {r['canaries']:,} | {r['failed'] / r['canaries']:.1%} |\n" for k, r in rates.items())
        + f"\nAbliterated, the unflagged stratum fails {failing:.1%}; it is {share:.1%} of the harmful canaries. "
        "`harmful_unflagged` in alarm within 4 minutes of an upstream that abliterates every canary the classifier "
        "does not flag (the default design, canaries a Poisson process):\n\n"
        "| canary rate | unflagged canaries in 4 min (mean) | alarm within 4 min |\n|---|---|---|\n"
        + "".join(
            f"| {m}x the default | {n:.1f} | {'> 0.9999' if p > 0.9999 else f'{p:.4f}'} |\n"
            for m, (n, p) in within.items()
        )
        + "\n`python bench/canary_rates.py`.\n"
    )
    save(
        "canary-rates",
        {"draws": args.draws, "rates": rates, "abliterated_unflagged_failed": failing, "within_240s": within},
        md,
    )


def alarm_within(
    share: float, failing: float, *, seconds: float, multiples: tuple[int, ...]
) -> dict[int, tuple[float, float]]:
    """Per multiple of the default canary rate: the mean number of unflagged harmful canaries in
    ``seconds``, and the chance ``harmful_unflagged`` alarms within them (a Poisson count of
    canaries, each failing with probability ``failing``).

    >>> alarm_within(1.0, 1.0, seconds=60.0, multiples=(0,))
    {0: (0.0, 0.0)}
    """
    canary = CanarySettings()
    design = CusumDesign(canary.harmful.p0, canary.harmful.p1, canary.harmful.h)
    out = {}
    for m in multiples:
        mean = m * canary.per_round / canary.interval_seconds * share * seconds
        counts = range(1, int(poisson.ppf(1 - 1e-12, mean)) + 1) if mean else range(0)
        total = float(sum(poisson.pmf(n, mean) * design.alarm_probability(failing, n) for n in counts))
        out[m] = (mean, total)
    return out


if __name__ == "__main__":
    main()
