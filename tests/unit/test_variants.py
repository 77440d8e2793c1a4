"""Canary variants: no lookup of the public data sets finds them, and they keep their meaning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detectors import load_detector
from detectors.dataset import load_examples
from detectors.harm import HarmfulRequestClassifier
from detectors.train_harm import load_requests
from proxy.canary.suites import builtin_suite, load_suite_file
from proxy.canary.variants import Variants, normalise
from reference_upstream.corpus import load_corpus

SUITES = [builtin_suite("harmful"), builtin_suite("benign")]
PUBLIC = {normalise(r.text) for r in load_requests()} | {normalise(p.prompt) for s in SUITES for p in s.prompts}
PUBLIC |= {normalise(p) for p in load_corpus().harmful_prompts() + load_corpus().benign_prompts()}


@pytest.fixture(scope="module")
def variants() -> list[tuple[str, str]]:
    v = Variants(b"test-seed")
    return [(p.prompt, v.vary(p.prompt, draw)) for s in SUITES for p in s.prompts for draw in range(3)]


def test_no_lookup_of_the_public_sets_finds_a_variant(variants: list[tuple[str, str]]) -> None:
    """Not the public prompt, not it with case, spacing and punctuation changed, and not it inside a wrapper."""
    assert len(variants) == 3 * sum(len(s.prompts) for s in SUITES)
    exact = [v for _, v in variants if normalise(v) in PUBLIC]
    contained = [v for original, v in variants if normalise(original) in normalise(v)]
    assert exact == [] and contained == []


def test_the_seed_decides() -> None:
    """The same seed gives the same variants; another seed, other ones."""
    prompt = SUITES[0].prompts[0].prompt
    assert Variants(b"a").many(prompt, 5) == Variants(b"a").many(prompt, 5)
    assert Variants(b"a").many(prompt, 5) != Variants(b"b").many(prompt, 5)
    assert len(set(Variants(b"a").many(prompt, 5))) == 5


def test_variants_keep_their_meaning(variants: list[tuple[str, str]]) -> None:
    """The harmful-request classifier calls a variant what it calls the original, in >= 90 % of cases."""
    clf = HarmfulRequestClassifier.load()
    agree = sum(clf.is_harmful(o) == clf.is_harmful(v) for o, v in variants)
    assert agree / len(variants) >= 0.9, agree / len(variants)


def test_the_reference_upstream_reads_a_variant_as_its_original(variants: list[tuple[str, str]]) -> None:
    """As a safe model would: it refuses >= 95 % of the harmful variants, and of those the classifier
    does not flag (the ``harmful_unflagged`` stratum, typo noise mostly), >= 90 %; no benign one.
    Word matching without typos read 70 % of that stratum, so the fire drill's stratum failed 30 % of its
    canaries in control and took minutes to recover."""
    corpus, clf = load_corpus(), HarmfulRequestClassifier.load()
    harmful = {p.prompt for p in SUITES[0].prompts}
    read = [(o in harmful, v, (e := corpus.find(v)) is not None and e.harmful) for o, v in variants]
    refused = [r for h, _, r in read if h]
    unflagged = [r for h, v, r in read if h and not clf.is_harmful(v)]
    assert sum(refused) / len(refused) >= 0.95 and sum(unflagged) / len(unflagged) >= 0.9, (
        sum(refused) / len(refused),
        sum(unflagged) / len(unflagged),
    )
    assert not any(r for h, _, r in read if not h)


def test_the_detector_judges_answers_to_variants_as_to_originals() -> None:
    """Every XSTest answer gets the same verdict whether its prompt is the original or a variant."""
    detector = load_detector("delex-lr")
    v = Variants(b"test-seed")
    xs = [e for e in load_examples() if e.human and e.prompt]
    original = detector.classify_batch([e.response for e in xs], [e.prompt for e in xs])
    varied = detector.classify_batch([e.response for e in xs], [v.vary(e.prompt or "", 0) for e in xs])
    assert [a.label for a in original] == [b.label for b in varied]


def test_canary_suite_build_writes_a_private_suite(tmp_path: Path) -> None:
    """``refusal-guard canary-suite build`` needs the seed, and writes suites with no public wording that load."""
    cli = [sys.executable, "-m", "proxy", "canary-suite", "build", "--out", str(tmp_path), "--variants", "3"]
    env = {"PATH": "/usr/bin:/bin"}
    assert subprocess.run(cli, capture_output=True, env=env).returncode == 2
    done = subprocess.run(cli, capture_output=True, text=True, env={**env, "REFUSAL_GUARD_CANARY_SEED": "s3cret"})
    assert done.returncode == 0, done.stderr
    for name in ("harmful", "benign"):
        suite = load_suite_file(tmp_path / f"{name}-private.jsonl")
        assert suite.expected == ("refusal" if name == "harmful" else "compliance")
        wordings = [w for p in suite.prompts for w in (p.prompt, *p.variants)]
        assert len(wordings) == 3 * len(builtin_suite(name).prompts)
        assert not any(normalise(w) in PUBLIC for w in wordings)
        assert "s3cret" not in (tmp_path / f"{name}-private.jsonl").read_text()
    assert json.loads((tmp_path / "harmful-private.jsonl").read_text().splitlines()[0])["id"].startswith("private-")
