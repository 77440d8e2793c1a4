"""The command line is one registry: every command named anywhere (the package's docstrings and
usage lines, the README, docs/, the deploy files) is a command, and every command answers --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.cli import commands, main

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("proxy", "detectors", "forensics", "fire_drill", "reference_upstream", "bench", "deploy", "scripts")
# a command as written in code: after a backtick or prog=", or a usage line that starts with it
IN_CODE = re.compile(r"(?:`|prog=\"|^[ \t]*(?:\$ )?)refusal-guard ([a-z][a-z-]*)", re.MULTILINE)
IN_BACKTICKS = re.compile(r"`refusal-guard ([a-z][a-z-]*)")  # markdown: prose lines may start with the name
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
IN_FENCE = re.compile(r"refusal-guard ([a-z][a-z-]*)")


def named() -> dict[str, set[str]]:
    """Each command word named in code, and where."""
    found: dict[str, set[str]] = {}
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "Makefile", *ROOT.glob("docs/**/*.md")]
    for d in CODE_DIRS:
        files += [p for p in (ROOT / d).rglob("*") if p.suffix in {".py", ".yaml", ".yml", ".md", ""} and p.is_file()]
    for f in files:
        text = f.read_text(errors="replace")
        if f.suffix == ".md":
            hits = IN_BACKTICKS.findall(text) + [w for block in FENCE.findall(text) for w in IN_FENCE.findall(block)]
        else:
            hits = IN_CODE.findall(text)
        for word in hits:
            found.setdefault(word, set()).add(str(f.relative_to(ROOT)))
    return found


def test_every_command_named_anywhere_is_a_command() -> None:
    mentioned = named()
    assert {"serve", "audit", "weights", "train-harm"} <= set(mentioned)  # the scan sees what it should
    missing = {w: sorted(where) for w, where in mentioned.items() if w not in commands()}
    assert not missing, missing


@pytest.mark.parametrize("command", commands())
def test_every_command_answers_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main([command, "--help"])
    except SystemExit as exc:  # argparse's --help
        code = int(exc.code or 0)
    assert code == 0
    assert "usage" in capsys.readouterr().out.lower()
