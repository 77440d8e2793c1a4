"""Check an audit log's hash chains: name the first modified, deleted, inserted or reordered record,
and a truncated tail when checkpoints from the log stream are given."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from proxy.audit.record import GENESIS, chain


@dataclass(frozen=True)
class Problem:
    kind: str  # modified | deleted | inserted | reordered | truncated
    writer: str
    seq: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: writer {self.writer} record seq {self.seq}: {self.detail}"


def verify(records: Iterable[dict[str, Any]], checkpoints: Iterable[dict[str, Any]] = ()) -> list[Problem]:
    """Problems found, in storage order (empty when the log verifies).

    A writer's chain may start after seq 1 only if a ``prune`` event says records were deleted by
    retention; a checkpoint (writer, seq, hash) proves the chain reached at least that far.
    """
    by_writer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    pruned = False
    for r in records:
        by_writer[str(r.get("writer"))].append(r)
        pruned |= (r.get("event") or {}).get("kind") == "prune"
    problems: list[Problem] = []
    for writer, rows in by_writer.items():
        seqs = [int(r["seq"]) for r in rows]
        seen: set[int] = set()
        prev: dict[str, Any] | None = None
        for i, r in enumerate(rows):
            seq = int(r["seq"])
            if chain(r, r.get("prev_hash", "")) != r.get("hash"):
                problems.append(Problem("modified", writer, seq, "its content does not match its hash"))
                break
            if seq in seen:
                problems.append(Problem("inserted", writer, seq, "a second record with this seq"))
                break
            seen.add(seq)
            if prev is None:
                if r["prev_hash"] != GENESIS and not pruned:
                    problems.append(Problem("deleted", writer, seq, f"records before seq {seq} are missing"))
                    break
            else:
                expected = int(prev["seq"]) + 1
                if seq < expected:
                    problems.append(Problem("reordered", writer, seq, f"comes after seq {prev['seq']}"))
                    break
                if seq > expected:
                    later = set(seqs[i + 1 :])
                    missing = range(expected, seq)
                    kind = "reordered" if any(m in later for m in missing) else "deleted"
                    detail = (
                        f"comes before seq {expected}"
                        if kind == "reordered"
                        else f"seq {expected}" + (f"..{seq - 1}" if seq - 1 > expected else "") + " missing"
                    )
                    problems.append(Problem(kind, writer, seq if kind == "reordered" else expected, detail))
                    break
                if r["prev_hash"] != prev["hash"]:
                    problems.append(
                        Problem(
                            "inserted",
                            writer,
                            seq,
                            f"does not chain to seq {prev['seq']} (that record was replaced or this one forged)",
                        )
                    )
                    break
            prev = r
    heads = {w: rows[-1] for w, rows in by_writer.items()}
    latest: dict[str, dict[str, Any]] = {}
    for cp in checkpoints:
        w = str(cp["writer"])
        if w not in latest or int(cp["seq"]) > int(latest[w]["seq"]):
            latest[w] = cp
    for w, cp in latest.items():
        if any(p.writer == w for p in problems):
            continue
        head = heads.get(w)
        if head is None or int(head["seq"]) < int(cp["seq"]):
            last = int(head["seq"]) if head else 0
            problems.append(
                Problem(
                    "truncated", w, last + 1, f"records seq {last + 1}..{cp['seq']} are missing (a checkpoint saw them)"
                )
            )
        else:
            at = next((r for r in by_writer[w] if int(r["seq"]) == int(cp["seq"])), None)
            if at is not None and at["hash"] != cp["hash"]:
                problems.append(Problem("modified", w, int(cp["seq"]), "differs from the checkpointed chain head"))
    return problems
