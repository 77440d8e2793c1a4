"""One spool per audit writer: replicas, workers and in-process writers that share a spool path (the
default ``./var/audit-spool.jsonl``, or one ``spool_path`` in a shared config) each claim their own
slot with ``flock``, so none replays, or deletes, a file another is still appending to.

Slot 0 is the path itself, slot ``n`` is ``<path>.<n>``; a process takes the lowest free slot, so a
restarted one replays what its predecessor in that slot spooled. Where no lock file can be made (a
read-only or full directory) the path is used unclaimed: the spool may fail later, and that is
counted (``refusal_guard_audit_dropped_total``), but the proxy starts.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from proxy.logs import logger

SLOTS = 256


def claim(spool: Path) -> tuple[Path, IO[bytes] | None]:
    """The first free slot of ``spool`` and the open lock file that holds it (close it to give it up)."""
    for n in range(SLOTS):
        path = spool if n == 0 else spool.with_name(f"{spool.name}.{n}")
        try:
            spool.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_name(path.name + ".lock"), "wb")  # noqa: SIM115 (held while the writer runs)
        except OSError as exc:
            logger.warning("audit_spool_unclaimed", spool=str(spool), error=str(exc)[:200])
            return spool, None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return path, lock
    raise RuntimeError(f"no free audit spool slot beside {spool}")
