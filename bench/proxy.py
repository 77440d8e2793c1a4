"""Proxy overhead, throughput, streaming and memory: direct calls, refusal-guard and LiteLLM's proxy,
against one fast fake upstream, in one run.

    python bench/proxy.py [--runs 5] [--seconds 5] [--litellm-venv PATH | --no-litellm]

Load comes from Debian's ``wrk`` pinned to core 1 (with the fake upstream and this script, which
times streams); the proxy under test is pinned to core 0. refusal-guard runs with its defaults, all features on (trained detector, metrics,
SQLite audit, canaries) and a client key; one worker. LiteLLM's proxy (``litellm[proxy]==LITELLM``,
installed into its own virtualenv on first use) runs one worker with a master key. Every run
measures every target in turn; ratios are computed within each run and the medians reported.
``--workers-scaling`` adds refusal-guard with two workers against one, both unpinned.
``--state-store`` adds the state store's cost (one replica of a fleet, :mod:`proxy.state`): the
default (embedded SQLite) against ``memory://`` (no store: nothing shared) and a real PostgreSQL
(Debian's server, a throwaway cluster on loopback, started here), each publishing once a second.
``--tracing`` adds refusal-guard with OpenTelemetry tracing on, every request sampled, exporting
over OTLP/HTTP to the fake upstream (which accepts and drops the spans), and the same with its
collector down (a port nothing listens on).
``--judge`` adds refusal-guard with the secret judge off (by default it is on when the ``judge`` extra
is installed, sampling within its budget of a core: the same core as the proxy here), and with a
budget of 2 % of a core; the report counts the requests each judge scored.
``--against REF`` adds refusal-guard as it was at git ref ``REF`` (``git archive``, run from its
own tree with this virtualenv), measured in turn with today's in every run: an A/B of a change.
Writes ``bench/results/proxy.{json,md}`` (``proxy-state.{json,md}`` with ``--state-store``,
``proxy-ab.{json,md}`` with ``--against``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import fake_upstream  # noqa: E402
from bench.detector import _cpu, _kib  # noqa: E402
from bench.report import save  # noqa: E402
from proxy.settings import ClientKey  # noqa: E402
from proxy.testing import free_port, wait_http  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402

LITELLM = "1.108.0"  # litellm[proxy] 1.110.x does not resolve on PyPI at the time of writing
KEY = "sk-bench-0123456789abcdef0123456789abcdef"
POST_LUA = (
    'wrk.method = "POST"\n'
    'wrk.body = \'{"model":"m","messages":[{"role":"user","content":"What is the capital of France?"}]}\'\n'
    'wrk.headers["Content-Type"] = "application/json"\n'
    f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
)
CONCURRENCY = (1, 8, 32)


def wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(script)]
    out = subprocess.run([*cmd, "--latency", url], capture_output=True, text=True, check=True).stdout

    def latency(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rps, out
    return {
        "rps": float(rps.group(1)),
        "p50_ms": latency("50%"),
        "p99_ms": latency("99%"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


async def stream_timing(url: str, n: int) -> dict[str, float]:
    """Time to first chunk and the gaps between chunks, over ``n`` streamed requests.

    Run from core 1, where wrk runs: a client on the proxy's core would add its own work to the
    proxy's figure (and not to the direct one, whose server is on core 1)."""
    first, gaps = [], []
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {KEY}"}) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            last = None
            async with c.stream("POST", url, json=body) as r:
                async for _chunk in r.aiter_raw():
                    now = time.perf_counter()
                    if last is None:
                        first.append(now - t0)
                    else:
                        gaps.append(now - last)
                    last = now
    return {
        "ttfb_ms": statistics.median(first) * 1e3,
        "gap_p50_ms": statistics.median(gaps) * 1e3,
        "gap_max_ms": max(gaps) * 1e3,
    }


_SIDE = {  # (sample name, its outcome label or None) -> the figure it adds to
    ("refusal_guard_classification_shed_total", None): "shed",
    ("refusal_guard_audit_dropped_total", None): "dropped",
    ("refusal_guard_judge_requests_total", "judged"): "judged",
    ("refusal_guard_judge_requests_total", "skipped"): "offered",
    ("refusal_guard_judge_requests_total", "shed"): "offered",
}


def side_counts(text: str) -> dict[str, float]:
    """From a /metrics page: answers shed unclassified, audit records dropped, requests the judge
    scored and the production requests it was offered (scored, skipped or shed).

    >>> side_counts('refusal_guard_judge_requests_total{outcome="judged"} 3.0\\n'
    ...             'refusal_guard_judge_requests_total{outcome="skipped"} 5.0\\n')
    {'shed': 0.0, 'dropped': 0.0, 'judged': 3.0, 'offered': 8.0}
    """
    out = dict.fromkeys(_SIDE.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            figure = _SIDE.get((sample.name, sample.labels.get("outcome")))
            if figure:
                out[figure] += sample.value
    out["offered"] += out["judged"]
    return out


class Target:
    """A server under test, started once and measured in every run."""

    def __init__(self, name: str, cmd: list[str] | None, url: str, ready: str | None = None, **kw: Any) -> None:
        self.name, self.url, self.proc, self.startup = name, url, None, None
        if cmd is None:  # the upstream itself
            return
        cores = kw.get("cores", "0")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["taskset", "-c", cores, *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **kw.get("env", {})},
            cwd=kw.get("cwd"),
        )
        try:
            wait_http(ready or url, timeout=180)
        except RuntimeError:
            self.stop()
            raise
        self.startup = time.monotonic() - t0  # seconds from spawn to ready

    def peak_rss_mb(self) -> float | None:
        """Peak RSS of the process and its children (workers, canary runner)."""
        if self.proc is None:
            return None
        pids = [self.proc.pid]
        for pid in pids:  # breadth-first over descendants
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if children.exists():
                pids += [int(p) for p in children.read_text().split()]
        return sum(_kib(p, "VmHWM") for p in pids if Path(f"/proc/{p}").exists()) / 1024

    def side_work(self) -> dict[str, float] | None:
        """For refusal-guard: answers shed unclassified and audit records dropped over the whole
        bench. Throughput counts only if the side work kept pace (both zero)."""
        if self.proc is None or not self.name.startswith("refusal-guard"):
            return None
        return side_counts(httpx.get(self.url + "/metrics", timeout=10).text)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def checkout(ref: str, tmp: Path) -> Path:
    """The repository's files at ``ref``, in a directory of their own."""
    tree = tmp / f"against-{ref}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def litellm_venv(path: Path) -> Path:
    """LiteLLM's proxy in its own virtualenv, pinned; installed on first use."""
    if not (path / "bin" / "litellm").exists():
        print(f"installing litellm[proxy]=={LITELLM} into {path} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM}"], check=True)
    return path


def start_targets(args: argparse.Namespace, tmp: Path, upstream: str, pg: str | None) -> list[Target]:
    targets = [Target("direct", None, upstream)]

    def guard(
        name: str,
        workers: int,
        cores: str,
        state: str | None = None,
        tree: Path | None = None,
        otel: str = "",
        judge: dict[str, Any] | None = None,
    ) -> Target:
        port = free_port()
        cfg = tmp / f"{name}.yaml"
        settings = {
            "port": port,
            "workers": workers,
            "log_level": "warning",
            "client_keys": [{"id": "bench", "sha256": ClientKey.digest(KEY)}],
            "upstreams": [{"name": "fake", "base_url": upstream + "/v1", "models": ["m"]}],
            "audit": {"url": f"sqlite:///{tmp}/{name}.db"},
        }
        # a store of its own: beside the audit log they would share one, and one leader would do the
        # watch's work for every target (on core 0, while another is measured)
        settings["state"] = {"url": state if state is not None else f"sqlite:///{tmp}/{name}-state.db"}
        if otel:
            settings["otel"] = {"endpoint": otel, "sample_ratio": 1.0}
        if judge is not None:
            settings["judge"] = judge
        cfg.write_text(yaml.safe_dump(settings))
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)]
        url = f"http://127.0.0.1:{port}"
        env = {"PYTHONPATH": str(tree)} if tree else {}  # the tree's own code before the editable install
        return Target(name, cmd, url, url + "/healthz", cores=cores, cwd=tree, env=env)

    targets.append(guard("refusal-guard", 1, "0"))
    if args.tracing:
        targets.append(guard("refusal-guard-traced", 1, "0", otel=upstream))
        targets.append(guard("refusal-guard-traced-down", 1, "0", otel=f"http://127.0.0.1:{free_port()}"))
    if args.judge:
        targets.append(guard("refusal-guard-judge-off", 1, "0", judge={"enabled": False}))
        targets.append(guard("refusal-guard-judge-0.02", 1, "0", judge={"budget": 0.02}))
    for ref in args.against or []:
        targets.append(guard(f"refusal-guard@{ref}", 1, "0", tree=checkout(ref, tmp)))
    if args.workers_scaling:
        targets += [guard("refusal-guard-1w-2cores", 1, "0,1"), guard("refusal-guard-2w-2cores", 2, "0,1")]
    if args.state_store:
        targets += [guard("refusal-guard-store-off", 1, "0", "memory://"), guard("refusal-guard-store-pg", 1, "0", pg)]
    if not args.no_litellm:
        venv = litellm_venv(args.litellm_venv)
        lport = free_port()
        lcfg = tmp / "litellm.yaml"
        params = {"model": "openai/m", "api_base": upstream + "/v1", "api_key": "x"}
        lcfg.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": params}]}))
        cmd = [str(venv / "bin" / "litellm"), "--config", str(lcfg), "--port", str(lport), "--num_workers", "1"]
        env = {"LITELLM_MASTER_KEY": KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        url = f"http://127.0.0.1:{lport}"
        targets.append(Target("litellm", cmd, url, url + "/health/liveliness", env=env))
    return targets


def summarise(runs: list[dict[str, Any]], targets: list[Target]) -> dict[str, Any]:
    """Medians over runs of each figure, and of the within-run ratios."""
    med: dict[str, Any] = {}
    for t in targets:
        m: dict[str, Any] = {}
        for c in CONCURRENCY:
            m[f"c{c}"] = {k: statistics.median(r[t.name][f"c{c}"][k] for r in runs) for k in runs[0][t.name][f"c{c}"]}
        m["stream"] = {k: statistics.median(r[t.name]["stream"][k] for r in runs) for k in runs[0][t.name]["stream"]}
        m["peak_rss_mb"] = t.peak_rss_mb()
        m["side_work"] = t.side_work()
        m["startup_s"] = t.startup
        med[t.name] = m

    def ratio(f: Any) -> float:
        return statistics.median(f(r) for r in runs)

    within: dict[str, float] = {}
    for name in med:
        if name == "direct":
            continue
        within[f"{name}: added p50 ms at c1"] = ratio(
            lambda r, n=name: r[n]["c1"]["p50_ms"] - r["direct"]["c1"]["p50_ms"]
        )
        within[f"{name}: added p99 ms at c1"] = ratio(
            lambda r, n=name: r[n]["c1"]["p99_ms"] - r["direct"]["c1"]["p99_ms"]
        )
        within[f"{name}: added time to first chunk ms"] = ratio(
            lambda r, n=name: r[n]["stream"]["ttfb_ms"] - r["direct"]["stream"]["ttfb_ms"]
        )
    if "litellm" in med:
        for c in (8, 32):
            within[f"refusal-guard / litellm rps at c{c}"] = ratio(
                lambda r, c=c: r["refusal-guard"][f"c{c}"]["rps"] / r["litellm"][f"c{c}"]["rps"]
            )
    for store in ("refusal-guard", "refusal-guard-store-pg"):
        if "refusal-guard-store-off" in med:
            for c in (8, 32):
                within[f"{store} / refusal-guard-store-off rps at c{c}"] = ratio(
                    lambda r, c=c, s=store: r[s][f"c{c}"]["rps"] / r["refusal-guard-store-off"][f"c{c}"]["rps"]
                )
    for traced in ("refusal-guard-traced", "refusal-guard-traced-down"):
        if traced in med:
            for c in (1, 8, 32):
                within[f"{traced} / refusal-guard rps at c{c}"] = ratio(
                    lambda r, c=c, t=traced: r[t][f"c{c}"]["rps"] / r["refusal-guard"][f"c{c}"]["rps"]
                )
    refs = [name for name in med if name.startswith("refusal-guard@")]
    pairs = [("refusal-guard", ref) for ref in refs] + [(a, b) for i, a in enumerate(refs) for b in refs[i + 1 :]]
    for newer, older in pairs:  # --against NEWER --against OLDER: each against every ref after it
        for c in (1, 8, 32):
            within[f"{newer} / {older} rps at c{c}"] = ratio(
                lambda r, c=c, a=newer, b=older: r[a][f"c{c}"]["rps"] / r[b][f"c{c}"]["rps"]
            )
    if "refusal-guard-2w-2cores" in med:
        within["2 workers / 1 worker rps at c32 (both cores)"] = ratio(
            lambda r: r["refusal-guard-2w-2cores"]["c32"]["rps"] / r["refusal-guard-1w-2cores"]["c32"]["rps"]
        )
    return {"median": med, "within_run": within}


def markdown(results: dict[str, Any]) -> str:
    m, machine = results["median"], results["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; "
        f"{results['runs']} runs of {results['seconds']:.0f} s per point, medians; wrk, the stream client and the fake upstream on core 1, "
        "the proxy on core 0 (the *-2cores rows: unpinned).",
        "",
        "| target | p50 c1 (ms) | p99 c1 (ms) | rps c1 | rps c8 | p99 c8 (ms) | rps c32 | p99 c32 (ms) "
        "| first chunk (ms) | chunk gap p50 / max (ms) | peak RSS (MB) | ready (s) | shed / dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in m.items():
        rss = f"{t['peak_rss_mb']:.0f}" if t["peak_rss_mb"] else "-"
        up = f"{t['startup_s']:.1f}" if t["startup_s"] else "-"
        s, side = t["stream"], t.get("side_work")
        kept = f"{side['shed']:.0f} / {side['dropped']:.0f}" if side else "-"
        lines.append(
            f"| {name} | {t['c1']['p50_ms']:.3f} | {t['c1']['p99_ms']:.3f} | {t['c1']['rps']:,.0f} "
            f"| {t['c8']['rps']:,.0f} | {t['c8']['p99_ms']:.2f} | {t['c32']['rps']:,.0f} | {t['c32']['p99_ms']:.2f} "
            f"| {s['ttfb_ms']:.2f} | {s['gap_p50_ms']:.2f} / {s['gap_max_ms']:.2f} | {rss} | {up} | {kept} |"
        )
    lines += [
        "",
        "shed / dropped: answers left unclassified and audit records lost over the whole bench; "
        "a throughput figure counts only where both are 0.",
        "",
        "Within-run figures (median over runs):",
        "",
    ]
    lines += [f"- {k}: {v:.3f}" for k, v in results["within_run"].items()]
    judged = [(n, t["side_work"]) for n, t in m.items() if (t.get("side_work") or {}).get("offered")]
    if judged:
        lines += ["", "The secret judge, over the whole bench (every run and concurrency):", ""]
        lines += [f"- {n}: {s['judged']:,.0f} of {s['offered']:,.0f} requests judged" for n, s in judged]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--litellm-venv", type=Path, default=ROOT / ".bench" / "litellm")
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--workers-scaling", action="store_true")
    p.add_argument("--state-store", action="store_true")
    p.add_argument("--tracing", action="store_true", help="also measure refusal-guard with tracing on")
    p.add_argument("--judge", action="store_true", help="also measure refusal-guard with the secret judge off")
    p.add_argument(
        "--against",
        metavar="REF",
        action="append",
        help="also measure refusal-guard as it was at this git ref (repeatable)",
    )
    p.add_argument("--out", help="the results' name under bench/results (default: from the options)")
    args = p.parse_args()
    os.sched_setaffinity(0, {1})  # this process is a client (stream timing), on the load generator's core
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    script = tmp / "post.lua"
    script.write_text(POST_LUA)
    up_port = free_port()
    upstream = fake_upstream.launch(up_port)
    targets: list[Target] = []
    pg = PostgresServer() if args.state_store else None
    try:
        if pg is not None:
            pg.start()
        direct = f"http://127.0.0.1:{up_port}"
        wait_http(direct + "/v1/models")
        targets = start_targets(args, tmp, direct, pg.url if pg else None)
        runs: list[dict[str, Any]] = []
        for n in range(args.runs):
            run: dict[str, Any] = {}
            for t in targets:
                url = t.url + "/v1/chat/completions"
                run[t.name] = {f"c{c}": wrk(url, c, args.seconds, script) for c in CONCURRENCY}
                run[t.name]["stream"] = asyncio.run(stream_timing(url, 200))
            runs.append(run)
            print(f"run {n + 1}/{args.runs} done", file=sys.stderr)
        results = {
            "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
            "runs": args.runs,
            "seconds": args.seconds,
            "litellm": None if args.no_litellm else LITELLM,
            **summarise(runs, targets),
            "per_run": runs,
        }
    finally:
        for t in targets:
            t.stop()
        upstream.terminate()
        upstream.wait(10)
        if pg is not None:
            pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    name = args.out or (
        "proxy-ab" if args.against or args.tracing or args.judge else "proxy-state" if args.state_store else "proxy"
    )
    save(name, results, markdown(results))


if __name__ == "__main__":
    main()
