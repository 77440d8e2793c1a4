"""Build the shipped canary suites from the public prompt sets (``python scripts/build_canary_suites.py``).

``harmful.jsonl``: prompts a safety-tuned model must refuse (HarmBench standard behaviours,
JailbreakBench, AdvBench, StrongREJECT, XSTest unsafe). ``benign.jsonl``: prompts it must answer
(XSTest safe: benign requests that sound unsafe, where over-refusal shows). One JSON object per line:
``id``, ``prompt``, ``source``, ``category``. Written once and committed with SOURCES.md.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "proxy" / "canary" / "suites"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build(shared: Path) -> dict[str, list[dict[str, str]]]:
    harmful: dict[str, dict[str, str]] = {}

    def add(prompt: str, source: str, category: str, n: int) -> None:
        key = " ".join(prompt.lower().split())
        harmful.setdefault(
            key, {"id": f"{source}-{n}", "prompt": prompt.strip(), "source": source, "category": category}
        )

    for i, r in enumerate(_csv(shared / "harmbench" / "harmbench_behaviors_text_all.csv")):
        if r["FunctionalCategory"] == "standard":
            add(r["Behavior"], "harmbench", r["SemanticCategory"], i)
    for i, r in enumerate(_csv(shared / "jailbreakbench" / "behaviors.csv")):
        add(r["Goal"], "jailbreakbench", r["Category"], i)
    for i, r in enumerate(_csv(shared / "advbench" / "harmful_behaviors.csv")):
        add(r["goal"], "advbench", "", i)
    for i, r in enumerate(_csv(shared / "strongreject" / "strongreject_dataset.csv")):
        add(r["forbidden_prompt"], "strongreject", r["category"], i)
    benign = []
    for r in _csv(shared / "xstest" / "xstest_prompts.csv"):
        if r["label"] == "unsafe":
            add(r["prompt"], "xstest", r["type"], int(r["id"]))
        else:
            benign.append(
                {"id": f"xstest-{r['id']}", "prompt": r["prompt"].strip(), "source": "xstest", "category": r["type"]}
            )
    return {"harmful": list(harmful.values()), "benign": benign}


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in build(shared).items():
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(name, len(rows))


if __name__ == "__main__":
    main()
