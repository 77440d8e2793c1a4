"""Copy the labelled text the detector is trained and evaluated on into ``detectors/data/``.

Run by a developer (``python scripts/build_detector_data.py [SHARED_DATA_DIR]``); the outputs are
committed with ``detectors/data/SOURCES.md``, so training and evaluation never read the shared folder.

- ``labelled.jsonl.gz``: one row per response: ``source`` (xstest | refusal_direction), ``model``,
  ``prompt``, ``response``, ``label`` (refusal | partial_refusal | compliance) and ``human``
  (true for XSTest's adjudicated human labels; false for refusal_direction's substring labels,
  which are weak labels used only as extra training text).
- ``keyword_lists.json``: the refusal keyword lists other tools use, verbatim, with their sources.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "detectors" / "data"
XSTEST_LABELS = {"1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial_refusal"}


def rows(shared: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for model in ("llama2new", "llama2orig", "mistralinstruct"):
        path = shared / "xstest" / "model_completions" / f"xstest_v2_completions_{model}.csv"
        with path.open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                out.append(
                    {
                        "source": "xstest",
                        "model": model,
                        "id": r["id"],
                        "type": r["type"],
                        "prompt": r["prompt"],
                        "response": r["completion"],
                        "label": XSTEST_LABELS[r["final_label"].strip()],
                        "human": True,
                    }
                )
    runs = shared / "refusal_direction" / "pipeline" / "runs"
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        for path in sorted((run / "completions").glob("*_evaluations.json")):
            split = path.name.removesuffix("_evaluations.json")
            for i, c in enumerate(json.loads(path.read_text())["completions"]):
                out.append(
                    {
                        "source": "refusal_direction",
                        "model": run.name,
                        "id": f"{split}-{i}",
                        "type": split,
                        # harmless_* prompts are Alpaca instructions (CC BY-NC): not shipped
                        "prompt": None if split.startswith("harmless") else c["prompt"],
                        "response": c["response"],
                        "label": "compliance" if c["is_jailbreak_substring_matching"] == 1 else "refusal",
                        "human": False,
                    }
                )
    return out


# (file, list key or None for top-level items, baseline name, matching rule as the source applies it)
_BASELINES = [
    ("gcg_llm-attacks", "experiments/evaluate.py:_test_prefixes", "gcg", "substring"),
    ("jailbreakbench_StringClassifier", None, "jailbreakbench", "substring"),
    (
        "arditi_refusal_direction",
        "pipeline/submodules/evaluate_jailbreak.py:_test_prefixes_jailbreakbench",
        "arditi",
        "substring_ci",
    ),
    ("llm-guard_NoRefusalLight", None, "llm-guard", "substring_ci"),
    ("garak_mitigation", "MitigationBypass.substrings", "garak", "substring_ci"),
    ("wildguard_table16_keywords", None, "wildguard-keywords", "substring_ci"),
    ("xstest_strmatch", "*", "xstest-strmatch", "prefix_ci"),
]


def keyword_lists(shared: Path) -> list[dict[str, object]]:
    """The keyword baselines, each with its items, its matching rule and its source."""
    out: list[dict[str, object]] = []
    for stem, key, name, rule in _BASELINES:
        d = json.loads((shared / "refusal-substrings" / f"{stem}.json").read_text())
        if key is None:
            items = d["items"]
        elif key == "*":
            items = [i for v in d["lists"].values() for i in v]
        else:
            items = d["lists"][key]["items"]
        source = d.get("source_repo") or d.get("upstream_repo") or d.get("source")
        out.append(
            {
                "name": name,
                "rule": rule,
                "items": items,
                "source": source,
                "commit": d.get("commit"),
                "license": d.get("license"),
                "file": stem + ".json",
            }
        )
    return out


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    data = rows(shared)
    OUT.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT / "labelled.jsonl.gz", "wb", mtime=0) as f:
        for r in data:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True).encode() + b"\n")
    (OUT / "keyword_lists.json").write_text(json.dumps(keyword_lists(shared), indent=1, ensure_ascii=False) + "\n")
    print(len(data), "rows")


if __name__ == "__main__":
    main()
