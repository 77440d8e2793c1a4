"""Every command the README and the docs show works: each ``refusal-guard`` command in a code span or
block (README.md, CONTRIBUTING.md, docs/*.md) names a real subcommand and only options that
subcommand has, each ``make`` target exists, and the quick start runs for real (``make run``, then
the README's own curl lines and Python snippet, whose printed output must match what the README says
they print). The README fits a screen or so (at most 200 lines), every page of docs/ is linked from
it, and every relative link resolves."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.server import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI = [sys.executable, "-m", "proxy.cli"]
SUBCOMMANDS = (
    "serve",
    "eval",
    "canary-suite",
    "drill",
    "audit",
    "train",
    "eval-detector",
    "sim-upstream",
    "classify",
    "weights",
)


def code(text: str = README) -> list[str]:
    """A page's code: fenced blocks, then inline code spans outside them."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.S | re.M)
    return blocks + re.findall(r"`([^`\n]+)`", prose)


def all_code() -> list[str]:
    return [c for page in PAGES for c in code(page.read_text(encoding="utf-8"))]


def commands() -> list[str]:
    """Each ``refusal-guard ...`` command line in the code of the README and the docs."""
    found = []
    for text in all_code():
        for line in text.replace("\\\n", " ").splitlines():
            for m in re.finditer(r"refusal-guard (\S.*)", line):
                found.append(m.group(1).split(" #", 1)[0].split("`", 1)[0].strip())  # no trailing comment
    return list(dict.fromkeys(found))


@functools.cache
def help_of(*words: str) -> str:
    r = subprocess.run([*CLI, *words, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, (words, r.stderr)
    return r.stdout


def test_the_readme_shows_commands() -> None:
    assert len(commands()) >= 10, commands()


@pytest.mark.parametrize("command", commands())
def test_each_refusal_guard_command_has_its_options(command: str) -> None:
    sub, *rest = command.split()
    if sub.startswith("--"):  # an option of the program itself
        assert sub in help_of(), f"`refusal-guard {sub}` is not an option"
        return
    assert sub in SUBCOMMANDS, f"the README shows `refusal-guard {sub}`, which is not a subcommand"
    nested = [w for w in rest[:1] if re.fullmatch(r"[a-z][a-z-]*", w) and w in ("build", "diff")]
    text = help_of(sub, *nested)
    for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", command):
        assert flag in text, f"`refusal-guard {command}`: {flag} is not an option of `{sub}`"


def test_each_make_target_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    command = r"^\s*(?:[A-Z_]+=\S+\s+)*make ([a-z][a-z-]*)"  # at a line's start, after any VAR=value
    shown = {m for text in all_code() for m in re.findall(command, text, flags=re.M)}
    assert shown and shown <= targets, shown - targets


def test_the_readme_fits_a_screen_and_reaches_every_page() -> None:
    assert len(README.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[^)#\s]+\.md)", README))
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked
    assert "CONTRIBUTING.md" in README and "docs/security.md" in README


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"(https?:|mailto:|#)", target):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name}: {target}"


def test_each_docs_page_says_what_a_reader_comes_for() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        head = page.read_text(encoding="utf-8").split("\n\n", 2)
        assert head[0].startswith("# ") and "come" in head[1], page.name


def test_quick_start_for_real() -> None:
    """``make run`` with no upstream (the sim behind it), then the README's curl lines and its Python
    snippet against it: the harmful prompt is refused, the metric line the README shows is there."""
    port, sim_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "SIM_PORT": str(sim_port)}
    env.pop("UPSTREAM_BASE_URL", None)
    env.pop("REFUSAL_GUARD_CONFIG", None)
    run = subprocess.Popen(
        ["make", "run"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
        block = next(b for b in code() if b.startswith("curl -s http://127.0.0.1:8080/v1/chat"))
        shell = block.replace(":8080", f":{port}")
        expected = [line[2:] for line in shell.splitlines() if line.startswith("# refusal_guard")]
        commands_only = "\n".join(line for line in shell.splitlines() if not line.startswith("#"))
        out = ""
        for _ in range(100):  # classification is off the hot path: the count lands a moment later
            out = subprocess.run(["bash", "-c", commands_only], capture_output=True, text=True, timeout=60).stdout
            if all(e in out for e in expected):
                break
            commands_only = commands_only.split("\n", 3)[-1]  # after the first try, only re-read the metrics
        assert expected and all(e in out for e in expected), out
        snippet = next(b for b in code() if b.startswith("from openai import OpenAI")).replace(":8080", f":{port}")
        printed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
        assert printed.returncode == 0 and "process" in printed.stdout.lower(), printed.stdout + printed.stderr
    finally:
        os.killpg(run.pid, signal.SIGTERM)  # make and what it started, by the group of the pid we started
        run.wait(30)
