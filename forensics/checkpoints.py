"""Checkpoints read tensor by tensor, memory-mapped: Hugging Face safetensors (one file, a directory,
or shards with their ``model.safetensors.index.json``) and GGUF (the ``gguf`` package; quantised
tensors dequantised). Whatever the model's size, memory holds the tensors being compared.

safetensors is read here from its documented layout (an 8-byte little-endian header length, a JSON
header of ``{name: {dtype, shape, data_offsets}}``, then the bytes) with ``numpy.memmap``, because
numpy has no bfloat16 and most checkpoints are bf16: bf16 is widened to float32 exactly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class Checkpoint(Protocol):
    """Tensor names, their shapes, and each tensor as float32 on demand."""

    path: Path

    def shapes(self) -> dict[str, tuple[int, ...]]: ...

    def load(self, name: str) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class SafetensorsCheckpoint:
    """One ``.safetensors`` file, a directory of them, or shards named by an index file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, _Entry] = {}
        for file in _safetensors_files(path):
            for name, entry in _header(file).items():
                self._entries[name] = entry

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: e.shape for name, e in self._entries.items()}

    def load(self, name: str) -> np.ndarray:
        e = self._entries[name]
        count = int(np.prod(e.shape)) if e.shape else 1
        if e.dtype == "BF16":
            raw = np.memmap(e.file, dtype=np.uint16, mode="r", offset=e.start, shape=(count,))
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(e.shape)
        if e.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {e.dtype} is not supported")
        data = np.memmap(e.file, dtype=_DTYPES[e.dtype], mode="r", offset=e.start, shape=(count,))
        return np.asarray(data, dtype=np.float32).reshape(e.shape)


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


def _header(file: Path) -> dict[str, _Entry]:
    with file.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100 * 1024 * 1024:
            raise ValueError(f"{file}: not a safetensors file (header of {size} bytes)")
        header: dict[str, Any] = json.loads(f.read(size))
    base = 8 + size
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[name] = _Entry(file, meta["dtype"], tuple(meta["shape"]), base + start, base + end)
    return out


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
