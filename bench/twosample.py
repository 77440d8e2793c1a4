"""The statistical tier's false-alarm calibration (:mod:`proxy.fingerprint.twosample`): in-control
two-sample tests on replayed safe answers (half harmful, half benign prompts), and the share of
p-values below each level, which a valid test keeps at that level.

    python bench/twosample.py [--tests 1000] [--permutations 500]

Writes ``bench/results/twosample.{json,md}``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import save  # noqa: E402
from proxy.fingerprint.twosample import mmd_test, sketch  # noqa: E402
from reference_upstream.corpus import load_corpus  # noqa: E402

LEVELS = (0.005, 0.01, 0.05, 0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tests", type=int, default=1000)
    p.add_argument("--permutations", type=int, default=500)
    p.add_argument("--window", type=int, default=50)
    args = p.parse_args()
    corpus, rng = load_corpus(), random.Random(1)
    harmful = [sketch(corpus.reply(q, "safe")) for q in rng.sample(corpus.harmful_prompts(), 600)]
    benign = [sketch(corpus.reply(q, "safe")) for q in corpus.benign_prompts()]

    def window() -> np.ndarray:
        return np.array([rng.choice(harmful) if rng.random() < 0.5 else rng.choice(benign) for _ in range(args.window)])

    ps = np.array(
        [mmd_test(window(), window(), args.permutations, np.random.default_rng(i))[1] for i in range(args.tests)]
    )
    shares = {str(a): float(np.mean(ps < a)) for a in LEVELS}
    md = (
        f"{args.tests} in-control tests, windows of {args.window}, {args.permutations} permutations each: "
        "the share of p-values below each level (a valid test: at most the level).\n\n"
        "| level | share below |\n|---|---|\n" + "".join(f"| {a} | {shares[str(a)]:.3f} |\n" for a in LEVELS)
    )
    save("twosample", {"tests": args.tests, "permutations": args.permutations, "shares": shares}, md)


if __name__ == "__main__":
    main()
