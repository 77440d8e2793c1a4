"""Where every benchmark leaves its figures: ``bench/results/<name>.json`` and ``<name>.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results"


def save(name: str, results: dict[str, Any], md: str) -> None:
    """Write the figures as JSON and the table as markdown, and print the table."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (OUT / f"{name}.md").write_text(md)
    print(md)
