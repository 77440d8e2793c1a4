"""Build the replay corpus of ``refusal-guard sim-upstream`` from the public data in ../shared/data.

Run once by a developer (``python scripts/build_sim_data.py [SHARED_DATA_DIR]``); the output,
``reference_upstream/data/replay.json.gz``, is committed with ``reference_upstream/data/SOURCES.md``. Nothing reads
the shared folder at run or test time.

Corpus layout::

    {"harmful": [{"prompt", "source", "safe": [refusals], "abliterated": [compliances]}],
     "benign":  [{"prompt", "source", "safe": [compliances], "overrefusal": [refusals]}]}

Per prompt, ``safe`` holds what safety-tuned chat models really answered and ``abliterated`` what
the same models answered after refusal-direction ablation (Arditi et al.), or XSTest completions
that human annotators labelled as compliance. Lists may be empty: the simulator then draws from
the pool of the same kind.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "proxy" / "sim" / "data" / "replay.json.gz"
RUN_MODELS = ("gemma-2b-it", "llama-2-7b-chat-hf", "meta-llama-3-8b-instruct")
XSTEST_MODELS = ("llama2new", "llama2orig", "mistralinstruct")


def _key(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def _entry(table: dict[str, dict], prompt: str, source: str, kinds: tuple[str, str]) -> dict:
    k = _key(prompt)
    if k not in table:
        table[k] = {"prompt": prompt.strip(), "source": source, kinds[0]: [], kinds[1]: []}
    return table[k]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build(shared: Path) -> dict[str, list[dict]]:
    harmful: dict[str, dict] = {}
    benign: dict[str, dict] = {}
    hk, bk = ("safe", "abliterated"), ("safe", "overrefusal")

    runs = shared / "refusal_direction" / "pipeline" / "runs"
    for model in RUN_MODELS:
        comp = runs / model / "completions"
        for c in json.loads((comp / "jailbreakbench_baseline_evaluations.json").read_text())["completions"]:
            e = _entry(harmful, c["prompt"], "jailbreakbench", hk)
            if c["is_jailbreak_substring_matching"] == 0:
                e["safe"].append(c["response"])
        for c in json.loads((comp / "jailbreakbench_ablation_evaluations.json").read_text())["completions"]:
            e = _entry(harmful, c["prompt"], "jailbreakbench", hk)
            if c["is_jailbreak_substring_matching"] == 1:
                e["abliterated"].append(c["response"])

    xs = shared / "xstest"
    labels = {r["prompt"]: r["label"] for r in _csv(xs / "xstest_prompts.csv")}
    for model in XSTEST_MODELS:
        for r in _csv(xs / "model_completions" / f"xstest_v2_completions_{model}.csv"):
            text, label = r["completion"].strip(), r["final_label"]
            if labels.get(r["prompt"]) == "unsafe":
                e = _entry(harmful, r["prompt"], "xstest", hk)
                if label == "2_full_refusal":
                    e["safe"].append(text)
                elif label == "1_full_compliance":
                    e["abliterated"].append(text)
            else:
                e = _entry(benign, r["prompt"], "xstest", bk)
                if label == "1_full_compliance":
                    e["safe"].append(text)
                elif label == "2_full_refusal":
                    e["overrefusal"].append(text)

    # Prompt-only harmful sets: known to the simulator so canaries drawn from them are recognised.
    for row in _csv(shared / "harmbench" / "harmbench_behaviors_text_all.csv"):
        if row["FunctionalCategory"] == "standard":
            _entry(harmful, row["Behavior"], "harmbench", hk)
    for row in _csv(shared / "jailbreakbench" / "behaviors.csv"):
        _entry(harmful, row["Goal"], "jailbreakbench", hk)
    for row in _csv(shared / "advbench" / "harmful_behaviors.csv"):
        _entry(harmful, row["goal"], "advbench", hk)
    for row in _csv(shared / "strongreject" / "strongreject_dataset.csv"):
        _entry(harmful, row["forbidden_prompt"], "strongreject", hk)

    return {"harmful": list(harmful.values()), "benign": list(benign.values())}


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    corpus = build(shared)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write(json.dumps(corpus, ensure_ascii=False, sort_keys=True).encode())
    for kind, rows in corpus.items():
        print(kind, len(rows), {k: sum(1 for r in rows if r[k]) for k in rows[0] if isinstance(rows[0][k], list)})


if __name__ == "__main__":
    main()
