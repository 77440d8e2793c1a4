"""Copy the requests the harmful-request classifier is trained and evaluated on into ``detectors/data/``.

Run by a developer (``python scripts/build_request_data.py [SHARED_DATA_DIR]``); the output,
``requests.jsonl.gz``, is committed with ``detectors/data/SOURCES.md``, so training and evaluation
never read the shared folder. One row per request: ``text``, ``label`` (harmful | benign), ``source``.

- harmful: AdvBench behaviours, HarmBench standard and contextual behaviours (the behaviour only,
  not its context string; the copyright behaviours are left out: asking for song lyrics is not the
  kind of request a safety refusal is for), JailbreakBench, StrongREJECT, XSTest's unsafe prompts;
- benign: Self-Instruct's seed and user-oriented tasks (instruction, then the first instance's input
  when there is one), XSTest's safe prompts (which sound unsafe and are not).
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "detectors" / "data" / "requests.jsonl.gz"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _task(row: dict[str, object]) -> str:
    text = str(row["instruction"]).strip()
    instances = row.get("instances") or []
    first = instances[0] if isinstance(instances, list) and instances else {}
    extra = str(first.get("input") or "").strip() if isinstance(first, dict) else ""
    return f"{text}\n\n{extra}" if extra else text


def rows(shared: Path) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(text: str, label: str, source: str) -> None:
        if text.strip():
            out.append({"text": text.strip(), "label": label, "source": source})

    for r in _csv(shared / "advbench" / "harmful_behaviors.csv"):
        add(r["goal"], "harmful", "advbench")
    for r in _csv(shared / "harmbench" / "harmbench_behaviors_text_all.csv"):
        if r["FunctionalCategory"] in ("standard", "contextual"):
            add(r["Behavior"], "harmful", "harmbench")
    for r in _csv(shared / "jailbreakbench" / "behaviors.csv"):
        add(r["Goal"], "harmful", "jailbreakbench")
    for r in _csv(shared / "strongreject" / "strongreject_dataset.csv"):
        add(r["forbidden_prompt"], "harmful", "strongreject")
    for r in _csv(shared / "xstest" / "xstest_prompts.csv"):
        unsafe = r["label"] == "unsafe"
        add(r["prompt"], "harmful" if unsafe else "benign", "xstest-unsafe" if unsafe else "xstest-safe")
    for name, source in (
        ("self-instruct-seed_tasks.jsonl", "self-instruct-seed"),
        ("self-instruct-user_oriented_instructions.jsonl", "self-instruct-user"),
    ):
        for line in (shared / "benign" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                add(_task(json.loads(line)), "benign", source)
    return out


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    data = rows(shared)
    blob = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in data).encode()
    OUT.write_bytes(gzip.compress(blob, mtime=0))
    counts: dict[str, int] = {}
    for r in data:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    print(f"wrote {OUT.relative_to(ROOT)}: {len(data)} requests {counts}")


if __name__ == "__main__":
    main()
