"""Checkpoints read tensor by tensor, memory-mapped: Hugging Face safetensors (one file, a directory,
or shards with their ``model.safetensors.index.json``) and GGUF (the ``gguf`` package; quantised
tensors dequantised). Whatever the model's size, memory holds the tensors being compared.

safetensors through the ``safetensors`` package (numpy framework, bfloat16 through ``ml_dtypes``),
which refuses a header whose offsets disagree with its shapes and dtypes; every tensor is widened
to float32 (exactly, from bf16 and f16).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import ml_dtypes  # noqa: F401 (registers bfloat16 with numpy, which safetensors' numpy reader needs)
import numpy as np
from safetensors import SafetensorError, safe_open


class Checkpoint(Protocol):
    """Tensor names, their shapes, and each tensor as float32 on demand."""

    path: Path

    def shapes(self) -> dict[str, tuple[int, ...]]: ...

    def load(self, name: str) -> np.ndarray: ...


class SafetensorsCheckpoint:
    """One ``.safetensors`` file, a directory of them, or shards named by an index file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for file in _safetensors_files(path):
            with _opened(file) as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    self._files[name] = file
                    self._shapes[name] = tuple(f.get_slice(name).get_shape())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def load(self, name: str) -> np.ndarray:
        with _opened(self._files[name]) as f:
            return np.asarray(f.get_tensor(name), dtype=np.float32)


def _opened(file: Path) -> Any:
    """``safe_open`` with its refusal (a bad header, offsets that disagree with shapes) as a ValueError."""
    try:
        return safe_open(str(file), framework="numpy")
    except SafetensorError as exc:
        raise ValueError(f"{file}: not a valid safetensors file ({exc})") from exc


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [path / f for f in dict.fromkeys(weight_map.values())]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors file in {path}")
    return files


class GGUFCheckpoint:
    """A GGUF file: tensors in numpy's row-major shape (GGUF lists dimensions innermost first)."""

    def __init__(self, path: Path) -> None:
        try:
            from gguf import GGUFReader  # the `forensics` extra
        except ImportError:
            raise ValueError("reading GGUF needs the gguf package: pip install 'refusal-guard[forensics]'") from None

        self.path = path
        self._tensors = {t.name: t for t in GGUFReader(path).tensors}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(int(n) for n in reversed(t.shape)) for name, t in self._tensors.items()}

    def load(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[name]
        shape = tuple(int(n) for n in reversed(t.shape))
        return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The reader for ``path``: a ``.gguf`` file, else safetensors."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_file() and p.suffix == ".gguf":
        return GGUFCheckpoint(p)
    return SafetensorsCheckpoint(p)


def pairs(base: Checkpoint, candidate: Checkpoint) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Each tensor both have with the same shape, loaded one pair at a time, in the base's order."""
    theirs = candidate.shapes()
    for name, shape in base.shapes().items():
        if theirs.get(name) == shape:
            yield name, base.load(name), candidate.load(name)
