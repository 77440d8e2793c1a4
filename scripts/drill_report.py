"""The README's incident-report screenshot, from a real fire drill:

    python scripts/drill_report.py [--out docs/report.png]

Starts a throwaway Alertmanager (Debian's ``prometheus-alertmanager``, a receiver that pages no one),
runs ``refusal-guard drill --audit`` against it, builds ``refusal-guard audit report`` from the drill's
audit log, and takes a screenshot of it in headless Chromium (``tests/browser.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fire_drill import DRILL_MODEL, run_drill  # noqa: E402
from fire_drill.prometheus import alertmanager  # noqa: E402
from tests import browser  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = {"route": {"receiver": "nobody", "group_wait": "1s"}, "receivers": [{"name": "nobody"}]}
        audit = f"sqlite:///{work}/drill.db"
        with alertmanager(config, work) as url:
            print(run_drill(url, rules=ROOT / "deploy" / "prometheus" / "rules.yml", audit=audit))
        report = work / "incident.html"
        cmd = [sys.executable, "-m", "proxy.cli", "audit", "report", "--audit", audit, "--model", DRILL_MODEL]
        subprocess.run([*cmd, "--out", str(report)], check=True, cwd=ROOT)
        browser.screenshot(report, args.out, size=(1300, 1500))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
