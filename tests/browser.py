"""Debian's Chromium, headless, as the tests' browser: the DOM of a page once its scripts ran, and a
screenshot. The flags are those that keep it off the network (this machine has none)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",  # let the page's scripts run (plotly draws after load)
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("Debian's chromium is not installed (.ci/run installs it)")
    return found


def dom(page: Path) -> str:
    """The page's DOM after its scripts ran."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed: {done.stderr[-2000:]}")
    return done.stdout


def screenshot(page: Path | str, out: Path, size: tuple[int, int] = (1300, 1900), wait_ms: int = 5000) -> Path:
    """A PNG of a file, or of a URL on loopback, once its scripts had ``wait_ms`` of virtual time."""
    target = page if isinstance(page, str) else page.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                "--hide-scrollbars",
                f"--screenshot={out.resolve()}",
                f"--virtual-time-budget={wait_ms}",
                target,
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    return out
