"""Each audit writer claims its own spool slot: two on one path never share a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from proxy.audit.spool import claim


def test_writers_on_one_path_get_their_own_slots_and_a_freed_slot_is_taken_again(tmp_path: Path) -> None:
    spool = tmp_path / "audit-spool.jsonl"
    first, lock1 = claim(spool)
    second, lock2 = claim(spool)
    assert (first, second) == (spool, tmp_path / "audit-spool.jsonl.1")
    # another process sees both slots taken
    code = f"from pathlib import Path; from proxy.audit.spool import claim; print(claim(Path({str(spool)!r}))[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(tmp_path / "audit-spool.jsonl.2")
    assert lock1 is not None and lock2 is not None
    lock1.close()
    again, lock3 = claim(spool)
    assert again == spool  # the lowest free slot: a restarted writer replays what its predecessor left
    for lock in (lock2, lock3):
        assert lock is not None
        lock.close()


def test_a_directory_without_room_for_a_lock_still_gives_a_path(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    path, lock = claim(blocked / "spool.jsonl")
    assert path == blocked / "spool.jsonl" and lock is None
