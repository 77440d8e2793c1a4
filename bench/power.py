"""The fingerprint's power table against a real model: llama.cpp's server with Gemma 3 270M (Q4_K_M,
from its PyPI package) as the baseline, then variants of it behind the same name; how many canary
answers each tier of :mod:`proxy.fingerprint` needs to flag each, at its stated false-alarm rate.

    python bench/power.py [--answers 125] [--baseline 50]

Variants (each GGUF written here with ``gguf``; the server reports one model name for all of them, as
a host hiding a swap would):

- *the same model, another run*: no variant at all, the false-alarm row;
- *requantized to Q8_0*: every quantized tensor dequantized and written as Q8_0 (more precision);
- *requantized to Q4_0*: likewise to Q4_0 (a cheaper quantisation);
- *refusal direction ablated*: the difference of mean final-layer embeddings (llama.cpp's
  ``/embedding``, mean-pooled) between 32 harmful and 32 benign prompts, projected out of the token
  embeddings and every block's attention and MLP output projections (as abliteration tools edit the
  residual writers), written as Q8_0;
- *steered*: that direction subtracted from every token embedding, scaled to their mean length
  (inference-time steering, baked into the weights), written as Q8_0;
- *another chat template*: the same file served with llama.cpp's ``gemma`` template instead of the
  default it falls back to (the GGUF carries none: ``chatml``).

The prompts are the canary suites' base prompts (three harmful to one benign throughout), none sent
twice in a run; temperature 0.7, at most 48 tokens. Each answer goes through the same code the canary leader
runs (:func:`proxy.fingerprint.observation`, :meth:`ModelFingerprint.observe`); the baseline is
learnt once, from the first ``--baseline`` answers of the base model, and each variant is fed
``--answers`` answers against it. Writes ``bench/results/power.{json,md}``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.detector import _cpu  # noqa: E402
from bench.report import save  # noqa: E402
from detectors.registry import load_detector  # noqa: E402
from proxy.canary.suites import load_suites  # noqa: E402
from proxy.canary.transition import Transition  # noqa: E402
from proxy.fingerprint import TIERS, ModelFingerprint, observation  # noqa: E402
from proxy.metrics import Metrics  # noqa: E402
from proxy.testing import exchange  # noqa: E402
from tests.llamacpp import model_path, start  # noqa: E402

NAME = "gemma-3-270m"  # what the server reports, for every variant
CACHE = Path.home() / ".cache" / "refusal-guard" / "power"
WRITERS = ("token_embd.weight", "attn_output.weight", "ffn_down.weight")


def rewrite(src: Path, dst: Path, edit: Callable[[str, np.ndarray], np.ndarray] | None, qtype: Any) -> Path:
    """``src`` with every quantized tensor dequantized, passed through ``edit`` and written as ``qtype``."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails

    if dst.exists():
        return dst
    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(dst) + ".part", arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        details = MetadataDetails(kind, field.contents(), sub_type=sub)
        writer.add_key_value(field.name, details.value, details.type, sub_type=sub)
    for t in reader.tensors:
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(t.name, np.array(t.data))
            continue
        weights = gguf.quants.dequantize(t.data, t.tensor_type)
        if edit is not None:
            weights = edit(t.name, weights)
        writer.add_tensor(t.name, gguf.quants.quantize(weights.astype(np.float32), qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    Path(str(dst) + ".part").rename(dst)
    return dst


def refusal_direction(harmful: list[str], benign: list[str]) -> np.ndarray:
    """Difference of mean final-layer embeddings (harmful - benign), back in the residual's units."""
    import gguf

    def embed(url: str, texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            r = httpx.post(url + "/embedding", json={"content": text}, timeout=60).json()
            out.append(np.array(r[0]["embedding"], dtype=np.float64).reshape(-1, 640).mean(axis=0))
        return np.array(out)

    with start(model=model_path(), options=["--embedding"]) as url:
        diff = embed(url, harmful).mean(axis=0) - embed(url, benign).mean(axis=0)
    norm = next(t for t in gguf.GGUFReader(str(model_path())).tensors if t.name == "output_norm.weight")
    r = diff / np.maximum(np.abs(np.array(norm.data, dtype=np.float64)), 1e-3)  # undo the final norm's scale
    return np.asarray(r / np.linalg.norm(r))


def ablate(r: np.ndarray) -> Callable[[str, np.ndarray], np.ndarray]:
    def edit(name: str, w: np.ndarray) -> np.ndarray:
        if not name.endswith(WRITERS):
            return w
        if name == "token_embd.weight":  # rows are tokens, each a vector in the residual
            return w - np.outer(w @ r, r)
        return w - np.outer(r, r @ w)  # numpy rows are the output (residual) dimension

    return edit


def steer(r: np.ndarray, strength: float = 1.0) -> Callable[[str, np.ndarray], np.ndarray]:
    """The direction subtracted from every token's embedding, ``strength`` times their mean length:
    steering applied to the weights (activation addition at the input)."""

    def edit(name: str, w: np.ndarray) -> np.ndarray:
        if name != "token_embd.weight":
            return w
        return w - strength * float(np.linalg.norm(w, axis=1).mean()) * r[None, :]

    return edit


def ask(url: str, prompt: str) -> bytes:
    body = {"model": NAME, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7, "max_tokens": 48}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    r.raise_for_status()
    return r.content


def answers(url: str, prompts: list[str]) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each prompt answered, two at a time (the server's two slots), in order."""
    with ThreadPoolExecutor(2) as pool:
        for prompt, body in zip(prompts, pool.map(lambda p: ask(url, p), prompts), strict=True):
            yield {"model": NAME, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7}, body


def feed(watch: ModelFingerprint, url: str, prompts: list[str], flagged: dict[str, int]) -> list[str]:
    """Observe each answer as the leader would; ``flagged``: tier -> the answer that flagged it."""
    texts = []
    seen: list[Transition] = []
    watch.observers = (seen.append,)
    for request, body in answers(url, prompts):
        texts.append(orjson.loads(body)["choices"][0]["message"]["content"] or "")
        ex = exchange(traffic="canary", model=NAME, model_label=NAME, request=request, response=body)
        watch.observe(observation(ex))
        for t in seen:
            flagged.setdefault(t.suite, len(texts))
        seen.clear()
    return texts


def refused(texts: list[str], prompts: list[str], harmful: set[str]) -> float:
    """The share of answers to harmful prompts the proxy's refusal detector calls refusals."""
    detector = load_detector("delex-lr")
    pairs = [(t, p) for t, p in zip(texts, prompts, strict=True) if p in harmful]
    verdicts = detector.classify_batch([t for t, _ in pairs], [p for _, p in pairs])
    return round(sum(v.refused for v in verdicts) / max(len(verdicts), 1), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answers", type=int, default=125, help="answers of each variant")
    p.add_argument("--baseline", type=int, default=50, help="answers of the base model for the baseline")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    suites = {s.name: [c.prompt for c in s.prompts] for s in load_suites(("harmful", "benign"), ())}
    for prompts in suites.values():
        rng.shuffle(prompts)
    harmful, benign = suites["harmful"], suites["benign"]
    direction = refusal_direction(harmful[:32], benign[:32])
    # three harmful prompts to one benign, in that mix throughout (the benign suite is the smaller), none twice
    pool = [x for i, b in enumerate(benign[32:]) for x in (*harmful[32 + 3 * i : 35 + 3 * i], b)]
    CACHE.mkdir(parents=True, exist_ok=True)
    base = model_path()
    import gguf

    q = gguf.GGMLQuantizationType
    variants: list[tuple[str, Path, list[str]]] = [
        ("the same model, another run", base, []),
        ("requantized to Q8_0", rewrite(base, CACHE / "q8_0.gguf", None, q.Q8_0), []),
        ("requantized to Q4_0", rewrite(base, CACHE / "q4_0.gguf", None, q.Q4_0), []),
        ("refusal direction ablated (Q8_0)", rewrite(base, CACHE / "ablated.gguf", ablate(direction), q.Q8_0), []),
        ("steered against that direction (Q8_0)", rewrite(base, CACHE / "steered.gguf", steer(direction), q.Q8_0), []),
        ("another chat template (gemma)", base, ["--chat-template", "gemma"]),
    ]
    need = args.baseline + args.answers * len(variants)
    if len(pool) < need:
        raise SystemExit(f"{len(pool)} prompts, {need} needed: fewer --answers")
    watch = ModelFingerprint(Metrics(CollectorRegistry()), window=args.baseline)
    began = time.monotonic()
    with start(model=base, options=["--alias", NAME]) as url:
        texts = feed(watch, url, pool[: args.baseline], {})
    harmful_set = set(harmful)
    base_refused = refused(texts, pool[: args.baseline], harmful_set)
    rows, _ = watch.changed()
    learnt = {m: state for m, _, state in rows}
    summary = orjson.loads(rows[0][1])
    results: dict[str, Any] = {
        "cpu": _cpu(), "baseline": args.baseline, "answers": args.answers, "baseline_refused": base_refused, "rows": []
    }  # fmt: skip
    used = args.baseline
    for label, path, options in variants:
        fresh = ModelFingerprint(Metrics(CollectorRegistry()), window=args.baseline)
        fresh.load(learnt)
        flagged: dict[str, int] = {}
        started = time.monotonic()
        prompts = pool[used : used + args.answers]
        with start(model=path, options=["--alias", NAME, *options]) as url:
            texts = feed(fresh, url, prompts, flagged)
        used += args.answers
        row = {
            "variant": label,
            "answers": len(texts),
            "refused": refused(texts, prompts, harmful_set),
            "flagged": flagged,
            "seconds": round(time.monotonic() - started, 1),
        }
        results["rows"].append(row)
        print(row, flush=True)
    results["baseline_learning"] = summary["learning"]
    results["minutes"] = round((time.monotonic() - began) / 60, 1)
    save("power", results, table(results))


def table(results: dict[str, Any]) -> str:
    lines = [
        f"Gemma 3 270M (Q4_K_M) on llama.cpp; baseline {results['baseline']} canary answers; each variant "
        f"{results['answers']} answers; {results['cpu']}; `python bench/power.py` ({results['minutes']} min).",
        "Answers until each tier flagged the variant (- : not within the run). False alarms: tokenizer "
        "CUSUM (4 marks in a row for prompts, 6 for completions); statistical: alpha 0.001 per test, "
        "one test per 25 answers (one in about 25,000 answers); identity: a new reported value held 3 answers.",
        "",
        f"Harmful canaries refused (the proxy's detector): {results['baseline_refused']:.0%} in the baseline.",
        "",
        "| variant | harmful refused | " + " | ".join(TIERS) + " |",
        "|---|---|" + "---|" * len(TIERS),
    ]
    for row in results["rows"]:
        cells = [str(row["flagged"].get(t, "-")) for t in TIERS]
        lines.append(f"| {row['variant']} | {row['refused']:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
