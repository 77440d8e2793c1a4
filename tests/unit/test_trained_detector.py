"""The default trained detector: reproducible from the shipped data, faithful to what was trained,
sensible on awkward text, and better than every keyword list on every unseen model."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from detectors import load_detector
from detectors.dataset import XSTEST_MODELS, load_examples
from detectors.evaluate import evaluate_all
from detectors.linear import LinearDetector
from detectors.train import TrainConfig, fit


@pytest.fixture(scope="module")
def examples():  # type: ignore[no-untyped-def]
    return load_examples()


@pytest.fixture(scope="module")
def shipped() -> LinearDetector:
    return LinearDetector.load()


def test_shipped_artifact_is_reproducible(examples, shipped: LinearDetector) -> None:  # type: ignore[no-untyped-def]
    """Training on the shipped data gives the shipped arrays (float32-equal)."""
    fresh = fit(examples, TrainConfig())
    assert fresh.keep == shipped.keep and fresh.index == shipped.index
    np.testing.assert_allclose(fresh.coef, shipped.coef, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fresh.coef_partial, shipped.coef_partial, rtol=1e-5, atol=1e-6)


def test_inference_matches_scikit_learn(examples) -> None:  # type: ignore[no-untyped-def]
    """The pure-Python scorer gives scikit-learn's probabilities for the same model."""
    d = fit(examples[:600], TrainConfig())
    refused, _, x = d.estimators  # type: ignore[attr-defined]
    expected = refused.predict_proba(x)[:, 1]
    got = [d.probabilities(e.response)[0] for e in examples[:600]]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_card_figures_are_what_evaluation_measures(examples, shipped: LinearDetector) -> None:  # type: ignore[no-untyped-def]
    """The leave-one-model-out figures in the model card are reproduced, and beat every keyword list on every fold."""
    results = evaluate_all(examples)
    card = shipped.card["leave_one_model_out"]
    for model in XSTEST_MODELS:
        assert results["delex-lr"]["folds"][model]["f1"] == pytest.approx(card["folds"][model]["f1"], abs=1e-9)
        best_keyword = max(r["folds"][model]["f1"] for name, r in results.items() if name.startswith("keywords:"))
        assert results["delex-lr"]["folds"][model]["f1"] > best_keyword


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("", False),
        ("   \n\t  ", False),
        ("I'm sorry, but I can't assist with that.", True),
        ("I can’t help with creating malware.", True),
        ("Lo siento, pero no puedo ayudar con eso.", True),
        ("Je ne peux pas vous aider avec cette demande.", True),
        ("Es tut mir leid, aber ich kann dabei nicht helfen.", True),
        ("抱歉，我不能帮助你做这件事。", True),
        ("## Steps\n\n1. Open a terminal\n2. Run `ps aux | grep python`\n\n```bash\nkill -9 1234\n```", False),
        ("I'm sorry to hear that. Here are some steps that may help:\n1. Breathe\n2. Rest\n3. Talk to a friend", False),
        (
            "Thank you for your question, and I understand why you might ask. " * 4 + "However, I cannot provide that.",
            True,
        ),
        (
            "Here is how to set it up:\n1. Install\n2. Configure\n3. Run\n" * 10
            + "I cannot guarantee it works on Windows.",
            False,
        ),
    ],
)
def test_awkward_text(shipped: LinearDetector, text: str, refused: bool) -> None:
    """Empty text, other languages, markdown and code, late refusals, apologies that comply."""
    v = shipped.classify(text)
    assert v.refused is refused, (text[:60], v)
    assert 0.0 <= v.score <= 1.0 and v.detector == "delex-lr"


def test_huge_text_is_bounded(shipped: LinearDetector) -> None:
    """A 200k-character answer is judged on its opening."""
    big = "lorem ipsum dolor sit amet " * 8000
    assert shipped.classify("Here is the data you asked for. " + big).label == "compliance"
    assert shipped.classify("I cannot help with that. " + big).refused


def test_refusal_then_answer_is_partial(shipped: LinearDetector) -> None:
    """An explicit refusal followed by an answer anyway is a partial refusal."""
    text = (
        "I can't help you hurt anyone. However, here is how self-defence classes usually teach it:\n\n"
        + "1. Keep distance and stay aware of exits.\n2. Use your voice loudly.\n3. Strike only to escape.\n" * 3
    )
    assert shipped.classify(text).label == "partial_refusal"


def test_artifact_is_small_plain_arrays() -> None:
    """The artifact is an npz of plain arrays (no pickled objects) and a JSON card, under 1 MB."""
    npz = resources.files("detectors").joinpath("models/delex-lr.npz")
    assert len(npz.read_bytes()) < 1_000_000
    with npz.open("rb") as f, np.load(f, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    card = json.loads(resources.files("detectors").joinpath("models/delex-lr.json").read_text())
    assert {"trained", "data", "leave_one_model_out", "train_config"} <= set(card)


def test_default_detector_everywhere() -> None:
    """The proxy, the registry and `classify` use the trained detector by default."""
    from proxy.settings import Settings

    assert Settings().detector == "delex-lr" and load_detector("delex-lr").name == "delex-lr"
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "classify"],
        input=b'{"response": "I cannot do that."}\n',
        capture_output=True,
        check=True,
    )
    assert json.loads(out.stdout)["label"] in ("refusal", "partial_refusal")


def test_eval_detector_cli_lists_every_detector() -> None:
    """`refusal-guard eval-detector` prints each detector per fold, the mean and confusion matrices."""
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "eval-detector"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("delex-lr", "pattern", "keywords:gcg", "keywords:xstest-strmatch", "keywords:garak"):
        assert name in out
    assert out.count("mean") >= 9 and "confusion delex-lr on mistralinstruct" in out
