"""``refusal-guard weights diff`` names each edit the published tools make, on small Llama-shaped
checkpoints with random weights (safetensors written by the official writer, sharded too, and GGUF),
and on the real Gemma 3 270M GGUF ablated along a direction."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forensics.checkpoints import open_checkpoint
from forensics.diff import diff
from tests import checkpoints as ck

RNG = np.random.default_rng(7)
R = ck.unit(RNG)
R2 = np.linalg.qr(np.stack([R, ck.unit(RNG)], axis=1))[0]  # two orthonormal directions
DRIFT = {i: ck.unit(np.random.default_rng(100 + i)) for i in range(ck.LAYERS)}


def varying(name: str) -> np.ndarray:
    """A different direction per layer (and for the embedding), as per-layer refusal directions give."""
    layer = ck.layer_of(name)
    v = R + 0.9 * DRIFT[layer if layer is not None else 0]
    return v / np.linalg.norm(v)


VARIANTS = {
    "unchanged": (lambda w: dict(w), "identical"),
    "abliterated": (lambda w: ck.ablate(w, lambda n: R), "directional-ablation"),
    "layer-selective": (
        lambda w: ck.ablate(w, lambda n: R if ck.layer_of(n) in (1, 2) else None),
        "directional-ablation",
    ),
    "varying-direction-and-strength": (
        lambda w: ck.ablate(w, varying, lambda n: {0: 1.0, 1: 0.7, 2: 0.5, 3: 0.9}.get(ck.layer_of(n) or 0, 1.0)),
        "directional-ablation",
    ),
    "norm-preserving": (lambda w: ck.norm_preserving(w, R), "directional-ablation"),
    "two-directions": (lambda w: ck.ablate(w, lambda n: R2), "directional-ablation"),
    "lora-rank-8": (lambda w: ck.lora(w), "low-rank-merge"),
    "fine-tune": (lambda w: ck.fine_tune(w), "fine-tune"),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[ck.Weights, Path]:
    w = ck.llama()
    return w, ck.save(w, tmp_path_factory.mktemp("base"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_edit_gets_its_verdict(variant: str, base: tuple[ck.Weights, Path], tmp_path: Path) -> None:
    w, path = base
    edit, verdict = VARIANTS[variant]
    candidate = ck.save(edit(w), tmp_path / "candidate", shards=3 if variant == "abliterated" else 1)
    report = diff(open_checkpoint(path), open_checkpoint(candidate))
    assert report.verdict == verdict, (report.verdict, report.summary, report.evidence)
    if verdict == "directional-ablation":
        ab = report.evidence["ablation"]
        assert ab["directions"] == (2 if variant == "two-directions" else 1)
        assert ab["write_ratio_max"] <= 0.8
    if variant == "abliterated":
        ab = report.evidence["ablation"]
        assert ab["layers"] == [0, 1, 2, 3] and ab["embedding"] and ab["matrices"] == 9
        assert ab["agreement_min"] > 0.999 and ab["write_ratio_max"] < 1e-3
        assert abs(float(np.dot(report.shared_direction or [], R))) > 0.999  # it found the direction itself
    if variant == "layer-selective":
        ab = report.evidence["ablation"]
        assert ab["layers"] == [1, 2] and not ab["embedding"]
        assert len(ab["still_writing"]) == 5  # the embedding and layers 0 and 3 still write along it
    if variant == "varying-direction-and-strength":
        assert report.evidence["ablation"]["agreement_median"] < 0.9
        assert any("varies across layers" in line for line in report.summary)


def test_a_bf16_resave_is_precision_only(base: tuple[ck.Weights, Path], tmp_path: Path) -> None:
    w, path = base
    report = diff(open_checkpoint(path), open_checkpoint(ck.save_bf16(w, tmp_path / "bf16")))
    assert report.verdict == "precision-only", report.summary
    assert 1e-4 < report.evidence["max_relative_change"] < 1e-2


def test_gguf_both_sides(base: tuple[ck.Weights, Path], tmp_path: Path) -> None:
    """GGUF with llama.cpp's names: the same verdicts, and an F16 re-save is precision-only."""
    w, _ = base
    b = open_checkpoint(ck.save_gguf(w, tmp_path / "base.gguf"))
    assert diff(b, open_checkpoint(ck.save_gguf(w, tmp_path / "same.gguf"))).verdict == "identical"
    assert diff(b, open_checkpoint(ck.save_gguf(w, tmp_path / "f16.gguf", f16=True))).verdict == "precision-only"
    report = diff(b, open_checkpoint(ck.save_gguf(ck.ablate(w, lambda n: R), tmp_path / "abl.gguf")))
    assert report.verdict == "directional-ablation" and report.evidence["ablation"]["matrices"] == 9


def test_gguf_without_the_extra_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ck.save_gguf(ck.llama(), tmp_path / "m.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if the forensics extra were not installed
    with pytest.raises(ValueError, match=r"refusal-guard\[forensics\]"):
        open_checkpoint(path)


def test_a_header_whose_offsets_disagree_with_its_shapes_is_refused(
    base: tuple[ck.Weights, Path], tmp_path: Path
) -> None:
    """A header claiming more bytes for a tensor than its shape holds (the other tensors shifted to
    match) is not a safetensors file: exit 2 with the reason, not ``identical``."""
    _, path = base
    (shard, *_) = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    raw = shard.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    name = next(n for n in header if n != "__metadata__")
    header[name]["shape"] = [*header[name]["shape"][:-1], header[name]["shape"][-1] - 1]  # fewer elements, same bytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])
    cmd = [sys.executable, "-m", "proxy.cli", "weights", "diff", "--base", str(bad), "--candidate", str(bad)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a valid safetensors file" in done.stderr, done.stdout + done.stderr


def test_another_architecture_is_a_mismatch(base: tuple[ck.Weights, Path], tmp_path: Path) -> None:
    w, path = base
    fewer = {n: x for n, x in w.items() if ck.layer_of(n) != 3}
    report = diff(open_checkpoint(path), open_checkpoint(ck.save(fewer, tmp_path / "fewer")))
    assert report.verdict == "architecture-mismatch" and len(report.evidence["missing"]) == 9


def test_cli_exit_codes_and_json(base: tuple[ck.Weights, Path], tmp_path: Path) -> None:
    w, path = base
    candidate = ck.save(ck.ablate(w, lambda n: R), tmp_path / "c")
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "proxy.cli", "weights", "diff", "--base", str(path), "--candidate", str(candidate)]
    done = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 10 and "verdict: directional-ablation" in done.stdout, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["verdict"] == "directional-ablation" and len(data["tensors"]) == len(w)
    writers = [t for t in data["tensors"] if t["kind"] == "residual-writer"]
    assert len(writers) == 9 and all(abs(float(np.dot(t["direction"], R))) > 0.999 for t in writers)
    same = subprocess.run([*cmd[:-1], str(path)], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "identical" in same.stdout
    gone = subprocess.run([*cmd[:-1], str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert gone.returncode == 2 and "does not exist" in gone.stderr


def test_the_real_gemma_gguf_ablated(tmp_path: Path) -> None:
    """Gemma 3 270M (Q4_K_M, from its PyPI packages), dequantised; the token embedding and every
    attention output and MLP down projection projected off one direction and written as F32 (the
    other tensors copied as they were, quantised); the diff names it and the direction's agreement."""
    import gguf

    from tests.llamacpp import model_path

    t0 = time.monotonic()
    reader = gguf.GGUFReader(str(model_path()))
    r = ck.unit(np.random.default_rng(11), 640)
    writer = gguf.GGUFWriter(str(tmp_path / "abliterated.gguf"), "gemma3")
    edited = 0
    for t in reader.tensors:
        if t.name == "token_embd.weight" or t.name.endswith((".attn_output.weight", ".ffn_down.weight")):
            w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(int(n) for n in reversed(t.shape)))
            rr = r.astype(np.float32)
            w = w - np.outer(w @ rr, rr) if t.name == "token_embd.weight" else w - np.outer(rr, rr @ w)
            writer.add_tensor(t.name, np.ascontiguousarray(w, dtype=np.float32))
            edited += 1
        else:
            writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    made = time.monotonic() - t0
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "proxy.cli", "weights", "diff", "--base", str(model_path())]
    cmd += ["--candidate", str(tmp_path / "abliterated.gguf"), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # its own process: its own peak
    took = time.monotonic() - t0 - made
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"gemma: edit {made:.1f} s, diff {took:.1f} s, diff's peak RSS {peak_mb:.0f} MB")
    print(done.stdout)
    assert done.returncode == 10, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["verdict"] == "directional-ablation"
    ab = report["evidence"]["ablation"]
    assert ab["matrices"] == edited == 37 and ab["embedding"] and ab["layers"] == list(range(18))
    assert ab["agreement_min"] > 0.99 and abs(float(np.dot(report["shared_direction"], r))) > 0.99
