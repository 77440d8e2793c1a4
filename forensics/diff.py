"""``refusal-guard weights diff``: how a candidate checkpoint differs from its trusted base, and
whether the difference is an abliteration.

Directional ablation ("abliteration", Arditi et al. 2024) edits every matrix that writes into the
residual stream (the token embedding, attention output and MLP down projections) by the same
projection, ``W' = W - r r^T W``: the change is rank one along ``r``, and the candidate can no longer
write along ``r``. A fine-tune leaves a diffuse change; a merged LoRA a low-rank one along unrelated
directions; a re-save in another precision only rounding. For each tensor both checkpoints have:
unchanged or changed, the relative change, whether every element moved by no more than rounding,
the share of the change's energy in its top 1..16 singular directions (randomised SVD), and for a
residual-writing matrix the directions themselves and how much the candidate still writes along
them. Across matrices: do the edited ones share their directions, and does every residual writer
of the candidate still write along the shared one.

Verdicts and exit codes (for CI): ``identical`` 0, ``precision-only`` 0, ``directional-ablation`` 10,
``low-rank-merge`` 11, ``fine-tune`` 12, ``architecture-mismatch`` 13; 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from forensics.checkpoints import Checkpoint, open_checkpoint, pairs
from forensics.spectrum import agreement, energy_shares, rank_for, shared_subspace, top_singular, writes_along

EXIT = {
    "identical": 0,
    "precision-only": 0,
    "directional-ablation": 10,
    "low-rank-merge": 11,
    "fine-tune": 12,
    "architecture-mismatch": 13,
}
TOP_K = 16
ABLATION_RANK = 3  # at most this many directions per edited matrix
ABLATION_WRITE = 0.8  # and the candidate writes along them at most this share of what the base did
_EMBEDDING = re.compile(r"(embed_tokens|wte|word_embeddings|token_embd)\.weight$")
_WRITER = re.compile(
    r"(embed_tokens|wte|word_embeddings|token_embd|o_proj|out_proj|attn_output|down_proj|ffn_down|dense_4h_to_h|c_proj)\.weight$"
)
_LAYER = re.compile(r"(?:^|\.)(?:layers|blk|h|block|blocks)\.(\d+)\.")


@dataclass
class TensorDiff:
    name: str
    shape: tuple[int, ...]
    kind: str  # residual-writer | matrix | vector
    layer: int | None
    changed: bool = False
    relative_change: float = 0.0  # |candidate - base| / |base| (Frobenius)
    rounding: bool = True  # every element moved by no more than a float or 8-bit re-save would
    shares: list[float] = field(default_factory=list)  # energy share of the top 1..k directions
    rank_90: int | None = None  # the fewest directions holding 90% of the change
    write_ratio: float | None = None  # the candidate's write along those directions / the base's
    shared_agreement: float | None = None  # agreement of its directions with the shared ones
    writes_shared: float | None = None  # the candidate's write along the shared directions / the base's
    _directions: np.ndarray | None = field(default=None, repr=False)

    @property
    def ablated(self) -> bool:
        return (
            self.kind == "residual-writer"
            and not self.rounding
            and self.rank_90 is not None
            and self.rank_90 <= ABLATION_RANK
            and self.write_ratio is not None
            and self.write_ratio <= ABLATION_WRITE
        )

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("_directions")
        out["shape"] = list(self.shape)
        if self._directions is not None:  # a residual writer's top left singular vector (residual space)
            out["direction"] = [round(float(x), 6) for x in self._directions[:, 0]]
        return out


def _kind(name: str, shape: tuple[int, ...]) -> str:
    if len(shape) != 2:
        return "vector"
    return "residual-writer" if _WRITER.search(name) else "matrix"


def _oriented(name: str, w: np.ndarray) -> np.ndarray:
    """A residual writer with the residual stream's coordinates as rows (an embedding is stored
    token by token, a projection output by output)."""
    return w.T if _EMBEDDING.search(name) else w


def _rounding_only(base: np.ndarray, delta: np.ndarray, rows: int = 4096) -> bool:
    """Every element within float rounding of its own value (fp32/fp16/bf16: half an ulp is at most
    2^-8 relative; fp16's subnormals, below 2^-14, are spaced 2^-24 apart), or within the step of an
    8-bit block quantisation (Q8_0: blocks of 32 along a row). Checked a slice of rows at a time,
    so the temporaries stay small."""
    b2, d2 = base.reshape(base.shape[0], -1), delta.reshape(delta.shape[0], -1)
    floats = blocks = True
    for i in range(0, b2.shape[0], rows):
        a, d = np.abs(b2[i : i + rows]), np.abs(d2[i : i + rows])
        floats = floats and bool(np.all(d <= a * 2.0**-7 + 2.0**-24))
        if blocks and not floats:
            if a.shape[1] % 32:
                return False
            step = a.reshape(-1, 32).max(axis=1, keepdims=True) / 127.0
            blocks = bool(np.all(d.reshape(-1, 32) <= step * 1.01 + 1e-12))
        if not (floats or blocks):
            return False
    return True


def compare_tensor(name: str, base: np.ndarray, cand: np.ndarray) -> TensorDiff:
    t = TensorDiff(name, tuple(base.shape), _kind(name, tuple(base.shape)), _layer(name))
    delta = cand - base
    t.changed = bool(np.any(delta))
    if not t.changed:
        return t
    norm = float(np.linalg.norm(base))
    t.relative_change = float(np.linalg.norm(delta)) / norm if norm else float("inf")
    t.rounding = _rounding_only(base, delta)
    if t.kind == "vector" or t.rounding:
        return t
    if t.kind == "residual-writer":
        b, c, d = _oriented(name, base), _oriented(name, cand), _oriented(name, delta)
    else:
        b, c, d = base, cand, delta
    u, s = top_singular(d, TOP_K)
    t.shares = energy_shares(s, float(np.linalg.norm(d)) ** 2)
    t.rank_90 = rank_for(t.shares)
    if t.kind == "residual-writer" and t.rank_90 is not None:
        dirs = u[:, : t.rank_90]
        before = writes_along(dirs, b)
        t.write_ratio = writes_along(dirs, c) / before if before else None
        t._directions = dirs.astype(np.float64)
    return t


def _layer(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


@dataclass
class Report:
    verdict: str
    summary: list[str]
    evidence: dict[str, Any]
    tensors: list[TensorDiff]
    shared_direction: list[float] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    def public(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "evidence": self.evidence,
            "shared_direction": self.shared_direction,
            "tensors": [t.public() for t in self.tensors],
        }


def diff(base: Checkpoint, candidate: Checkpoint) -> Report:
    """Compare two checkpoints tensor by tensor (memory: one pair at a time, twice for the residual
    writers) and name what happened."""
    ours, theirs = base.shapes(), candidate.shapes()
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    reshaped = sorted(n for n in set(ours) & set(theirs) if ours[n] != theirs[n])
    if missing or extra or reshaped:
        evidence = {"missing": missing[:50], "extra": extra[:50], "reshaped": reshaped[:50]}
        lines = [
            f"{len(missing)} tensors only in the base, {len(extra)} only in the candidate, {len(reshaped)} "
            "with other shapes: not the same architecture (a weight diff needs the candidate's own base)"
        ]
        return Report("architecture-mismatch", lines, evidence, [])
    tensors = [compare_tensor(name, b, c) for name, b, c in pairs(base, candidate)]
    return _judge(base, candidate, tensors)


def _judge(base: Checkpoint, candidate: Checkpoint, tensors: list[TensorDiff]) -> Report:
    changed = [t for t in tensors if t.changed]
    if not changed:
        return Report("identical", [f"all {len(tensors)} tensors are bit for bit the same"], {}, tensors)
    substantive = [t for t in changed if not t.rounding]
    evidence: dict[str, Any] = {
        "tensors": len(tensors),
        "changed": len(changed),
        "beyond_rounding": len(substantive),
        "max_relative_change": max(t.relative_change for t in changed),
    }
    if not substantive:
        line = (
            f"{len(changed)} of {len(tensors)} tensors changed, each element by no more than rounding "
            f"(largest relative change {evidence['max_relative_change']:.2e}): a re-save in another precision"
        )
        return Report("precision-only", [line], evidence, tensors)
    ablated = [t for t in substantive if t.ablated]
    others = [t for t in substantive if not t.ablated]
    shared = None
    lines: list[str] = []
    if ablated:
        shared = _shared(base, candidate, tensors, ablated, evidence, lines)
    if ablated and not others:
        return Report("directional-ablation", lines, evidence, tensors, shared)
    matrices = [t for t in others if t.kind != "vector"]
    low_rank = bool(matrices) and len(matrices) == len(others) and all(t.rank_90 is not None for t in matrices)
    ranks = [t.rank_90 for t in matrices if t.rank_90 is not None]
    if low_rank:
        evidence["low_rank"] = {"matrices": len(matrices), "rank_90_max": max(ranks), "names": _names(matrices)}
        lines.insert(
            0,
            f"{len(matrices)} matrices changed, each along at most {max(ranks)} directions (90% of the "
            "change's energy) and nothing else changed: a merged low-rank adapter (LoRA)",
        )
        return Report("low-rank-merge", lines, evidence, tensors)
    evidence["diffuse"] = {"tensors": len(others), "names": _names(others)}
    lines.insert(
        0,
        f"{len(others)} tensors changed beyond rounding along many directions (median relative change "
        f"{statistics.median(t.relative_change for t in others):.2e}): a fine-tune (or training after "
        "any other edit)",
    )
    return Report("fine-tune", lines, evidence, tensors)


def _shared(
    base: Checkpoint,
    candidate: Checkpoint,
    tensors: list[TensorDiff],
    ablated: list[TensorDiff],
    evidence: dict[str, Any],
    lines: list[str],
) -> list[float]:
    """The directions the ablated matrices share, how well each agrees, and whether every residual
    writer of the candidate still writes along them (a second pass over the residual writers)."""
    rank = round(statistics.median(t.rank_90 or 1 for t in ablated))
    bases = [t._directions for t in ablated if t._directions is not None]
    shared = shared_subspace(bases, rank)
    for t in ablated:
        assert t._directions is not None
        t.shared_agreement = agreement(t._directions, shared)
    writers = {t.name: t for t in tensors if t.kind == "residual-writer"}
    theirs = candidate.shapes()
    for name in writers:
        if theirs.get(name) is None:
            continue
        b, c = _oriented(name, base.load(name)), _oriented(name, candidate.load(name))
        before = writes_along(shared.astype(b.dtype), b)
        writers[name].writes_shared = writes_along(shared.astype(c.dtype), c) / before if before else None
    agreements = [t.shared_agreement or 0.0 for t in ablated]
    layers = sorted({t.layer for t in ablated if t.layer is not None})
    still = [t for t in writers.values() if t.writes_shared is not None and t.writes_shared > ABLATION_WRITE]
    by_layer = sorted((t for t in ablated if t.layer is not None), key=lambda t: (t.layer, t.name))
    adjacent = [
        agreement(a._directions, b._directions)
        for a, b in itertools.pairwise(by_layer)
        if a._directions is not None and b._directions is not None
    ]
    evidence["ablation"] = {
        "matrices": len(ablated),
        "residual_writers": len(writers),
        "directions": rank,
        "layers": layers,
        "embedding": any(_EMBEDDING.search(t.name) for t in ablated),
        "agreement_median": statistics.median(agreements),
        "agreement_min": min(agreements),
        "adjacent_agreement_median": statistics.median(adjacent) if adjacent else None,
        "write_ratio_max": max(t.write_ratio or 0.0 for t in ablated),
        "still_writing": _names(still),
    }
    consistent = statistics.median(agreements) >= 0.9
    what = "one direction" if rank == 1 else f"{rank} directions"
    lines.append(
        f"{len(ablated)} of {len(writers)} residual-writing matrices were projected off {what} "
        f"(layers {_span(layers)}{', and the token embedding' if evidence['ablation']['embedding'] else ''}); "
        f"the candidate writes along it at most {evidence['ablation']['write_ratio_max']:.1%} of what the base did"
    )
    lines.append(
        (
            f"the edited matrices share it: agreement with the shared direction median {statistics.median(agreements):.3f}, "
            f"min {min(agreements):.3f}"
        )
        if consistent
        else (
            f"the direction varies across layers: agreement with the shared one median "
            f"{statistics.median(agreements):.3f}, between neighbouring layers "
            f"{evidence['ablation']['adjacent_agreement_median'] or 0:.3f}"
        )
    )
    if still:
        lines.append(f"{len(still)} residual writers still write along it: {', '.join(_names(still)[:6])}")
    return [float(x) for x in shared[:, 0]]


def _names(ts: list[TensorDiff], limit: int = 50) -> list[str]:
    return [t.name for t in ts[:limit]]


def _span(layers: list[int]) -> str:
    if not layers:
        return "none"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ", ".join(map(str, layers))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="refusal-guard weights diff", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", required=True, help="the trusted checkpoint: .safetensors, a directory, or .gguf")
    p.add_argument("--candidate", required=True, help="the checkpoint to judge, in either format")
    p.add_argument("--json", dest="json_out", help="write the full report (every tensor) here")
    args = p.parse_args(argv)
    try:
        report = diff(open_checkpoint(args.base), open_checkpoint(args.candidate))
    except (OSError, ValueError, KeyError) as exc:
        print(f"refusal-guard weights diff: {exc}", file=sys.stderr)
        return 2
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report.public(), f, indent=1)
    print(f"verdict: {report.verdict}")
    for line in report.summary:
        print(f"  - {line}")
    return report.exit_code
