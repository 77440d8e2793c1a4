"""Several uvicorn workers on one port, one state store, metrics summed across them.

``refusal-guard serve --workers N`` (``N > 1``) runs:

* ``N`` uvicorn workers built by :func:`worker_app` from the same settings, each a replica of the
  fleet design (:mod:`proxy.state`): they share the embedded state store (a SQLite file beside the
  audit log unless ``state.url`` says otherwise), one of them holds the canary leader's lease and
  sends the canaries, and a quarantine made in any of them holds in all;
* prometheus-client's multiprocess mode: every process writes its samples to one directory and
  ``/metrics`` on any worker reports the sums (gauges use ``livemax``/``livesum``);
* one audit chain per process (chains are per writer by design) and one spool per process
  (:mod:`proxy.audit.spool`), so a restarted worker replays what its predecessor spooled.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import uvicorn

from proxy.app import create_app
from proxy.edge import EdgeProtocol
from proxy.logs import configure_logging
from proxy.server import options
from proxy.settings import Settings, export_worker_env, multiproc_dir, worker_settings
from proxy.state.location import with_state_default


def serve(settings: Settings, workers: int) -> int:
    """Run ``workers`` uvicorn workers until interrupted."""
    given = multiproc_dir()
    metrics_dir = Path(given or tempfile.mkdtemp(prefix="refusal-guard-metrics-"))
    for stale in metrics_dir.glob("*.db"):  # samples of an earlier run must not be summed in
        stale.unlink()
    settings = with_state_default(settings).model_copy(update={"metrics_dir": str(metrics_dir)})
    work = Path(tempfile.mkdtemp(prefix="refusal-guard-workers-"))
    worker_file = work / "worker.json"
    export_worker_env(worker_file, metrics_dir)  # every worker inherits both
    try:
        worker_file.write_text(settings.model_dump_json())
        uvicorn.run(
            "proxy.workers:worker_app",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            **options(settings.edge, workers=True),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not given:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def worker_app() -> object:
    """uvicorn's factory in each worker process."""
    settings = worker_settings()
    configure_logging(settings.log_level)
    EdgeProtocol.limits = settings.edge  # uvicorn imported the protocol by name, with the default limits
    return create_app(settings)
