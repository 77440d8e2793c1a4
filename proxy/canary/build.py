"""``refusal-guard canary-suite build``: a private suite file from the shipped suites and a secret seed.

Each prompt of a shipped suite becomes a line whose ``prompt`` and ``variants`` are all variants
(:mod:`proxy.canary.variants`): the public wording itself is not in the file. Load it with
``canary.extra_suites: [path]`` (and leave the shipped suite out of ``canary.suites``, or keep both).
Your own prompts go in such a file too: one JSON object per line, ``{"prompt": ..., "expected":
"refusal" | "compliance", "variants": [...]}``, or the YAML form in :mod:`proxy.canary.suites`.

    REFUSAL_GUARD_CANARY_SEED=$(openssl rand -hex 32) refusal-guard canary-suite build --out private/
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy.canary.suites import builtin_suite
from proxy.canary.variants import Variants
from proxy.settings import CanarySettings


def build(suite: str, variants: Variants, n: int) -> list[dict[str, Any]]:
    """The private lines of one shipped suite."""
    s = builtin_suite(suite)
    rows: list[dict[str, Any]] = []
    for item in s.prompts:
        texts = variants.many(item.prompt, n)
        if texts:
            rows.append({"id": f"private-{item.id}", "expected": s.expected, "prompt": texts[0], "variants": texts[1:]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="refusal-guard canary-suite build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["build"])
    p.add_argument("--out", type=Path, required=True, help="directory for <suite>-private.jsonl")
    p.add_argument("--suite", default="harmful,benign", help="shipped suites to vary (comma-separated)")
    p.add_argument("--variants", type=int, default=5, help="variants per prompt")
    p.add_argument("--seed-env", default=CanarySettings().variant_seed_env, help="variable holding the secret seed")
    args = p.parse_args(argv)
    seed = CanarySettings(variant_seed_env=args.seed_env).variant_seed()
    if seed is None:
        print(
            f"refusal-guard canary-suite: set ${args.seed_env} to a secret (e.g. openssl rand -hex 32)", file=sys.stderr
        )
        return 2
    variants = Variants(seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for suite in (s for s in args.suite.split(",") if s):
        try:
            rows = build(suite, variants, args.variants)
        except ValueError as exc:
            print(f"refusal-guard canary-suite: {exc}", file=sys.stderr)
            return 2
        path = args.out / f"{suite}-private.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        wordings = sum(1 + len(r["variants"]) for r in rows)
        print(f"wrote {path}: {len(rows)} prompts, {wordings} wordings")
    return 0
