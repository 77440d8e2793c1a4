"""Small Llama-shaped checkpoints with random weights, and the edits published tools make to them
(for ``forensics.diff``): abliteration in its variants, a merged LoRA, a dense fine-tune, re-saves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

D, FFN, VOCAB, LAYERS = 128, 344, 1000, 4
Weights = dict[str, np.ndarray]


def llama(seed: int = 0) -> Weights:
    rng = np.random.default_rng(seed)

    def m(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    w: Weights = {"model.embed_tokens.weight": m(VOCAB, D), "model.norm.weight": np.ones(D, np.float32)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            w[p + f"self_attn.{proj}_proj.weight"] = m(D, D)
        w[p + "mlp.gate_proj.weight"] = m(FFN, D)
        w[p + "mlp.up_proj.weight"] = m(FFN, D)
        w[p + "mlp.down_proj.weight"] = m(D, FFN)
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    w["lm_head.weight"] = m(VOCAB, D)
    return w


def unit(rng: np.random.Generator, d: int = D) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


def is_writer(name: str) -> bool:
    return name.endswith(("embed_tokens.weight", "o_proj.weight", "down_proj.weight"))


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if parts[1] == "layers" else None


def project(name: str, w: np.ndarray, r: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``W - strength * R R^T W`` on the residual side (an embedding's rows are tokens); ``r``: d or d x k."""
    rr = r.reshape(D, -1)
    if name.endswith("embed_tokens.weight"):
        return (w - strength * (w @ rr) @ rr.T).astype(np.float32)
    return (w - strength * rr @ (rr.T @ w)).astype(np.float32)


def ablate(
    w: Weights, direction: Callable[[str], np.ndarray | None], strength: Callable[[str], float] = lambda n: 1.0
) -> Weights:
    out = dict(w)
    for name, x in w.items():
        r = direction(name) if is_writer(name) else None
        if r is not None:
            out[name] = project(name, x, r, strength(name))
    return out


def norm_preserving(base: Weights, r: np.ndarray) -> Weights:
    """Projected, then each residual-space vector rescaled to its old norm (norm-preserving abliteration)."""
    out = ablate(base, lambda n: r)
    for name in out:
        if is_writer(name):
            axis = 1 if name.endswith("embed_tokens.weight") else 0
            old = np.linalg.norm(base[name], axis=axis, keepdims=True)
            new = np.linalg.norm(out[name], axis=axis, keepdims=True)
            out[name] = (out[name] * old / np.maximum(new, 1e-12)).astype(np.float32)
    return out


def lora(base: Weights, rank: int = 8, seed: int = 3) -> Weights:
    rng = np.random.default_rng(seed)
    out = dict(base)
    for name, x in base.items():
        if name.endswith(("q_proj.weight", "v_proj.weight", "o_proj.weight", "down_proj.weight")):
            b = rng.standard_normal((x.shape[0], rank)) * 0.05
            a = rng.standard_normal((rank, x.shape[1])) / np.sqrt(x.shape[1])
            out[name] = (x + b @ a).astype(np.float32)
    return out


def fine_tune(base: Weights, seed: int = 4, scale: float = 0.02) -> Weights:
    rng = np.random.default_rng(seed)
    return {n: (x + scale * x.std() * rng.standard_normal(x.shape)).astype(np.float32) for n, x in base.items()}


def bf16(x: np.ndarray) -> np.ndarray:
    """Round to the nearest bfloat16 (as uint16 bits), ties to even."""
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def save(w: Weights, path: Path, *, shards: int = 1) -> Path:
    """Safetensors with the official writer: one file, or ``shards`` files and their index."""
    path.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        save_file(w, str(path / "model.safetensors"))
        return path
    names = list(w)
    weight_map = {}
    for s in range(shards):
        part = {n: w[n] for n in names[s::shards]}
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(path / file))
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def save_bf16(w: Weights, path: Path) -> Path:
    """A bf16 re-save (safetensors' own serialiser: numpy has no bfloat16)."""
    from safetensors import TensorSpec, serialize_file

    path.mkdir(parents=True, exist_ok=True)
    raw = {n: np.ascontiguousarray(bf16(x)) for n, x in w.items()}  # alive while the specs point at them
    specs = {
        n: TensorSpec(dtype="bfloat16", shape=list(x.shape), data_ptr=x.ctypes.data, data_len=x.nbytes)
        for n, x in raw.items()
    }
    serialize_file(specs, str(path / "model.safetensors"))
    return path


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def gguf_name(name: str) -> str:
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, _, i, rest = name.split(".", 3)
    return f"blk.{i}.{GGUF_NAMES[rest]}"


def save_gguf(w: Weights, path: Path, *, f16: bool = False) -> Path:
    """A GGUF file with llama.cpp's tensor names (F32, or F16 for a re-save)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for name, x in w.items():
        writer.add_tensor(gguf_name(name), x.astype(np.float16 if f16 and x.ndim == 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
