"""``refusal-guard``: the command line.

refusal-guard serve --upstream http://127.0.0.1:8000/v1 --port 8080
refusal-guard serve --config guard.yaml
refusal-guard sim-upstream --port 9000 --mode abliterated
echo '{"response": "I cannot help with that."}' | refusal-guard classify
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

import orjson

from proxy.version import version


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.logs import configure_logging
    from proxy.server import options
    from proxy.settings import load_settings
    from proxy.state.location import with_state_default

    try:
        settings = load_settings(
            args.config,
            overrides={
                "upstream": args.upstream,
                "upstream_api_key_env": args.upstream_api_key_env,
                "host": args.host,
                "port": args.port,
                "workers": args.workers,
                "detector": args.detector,
                "audit": args.audit,
                "state": args.state,
            },
        )
    except (OSError, ValueError) as exc:
        print(f"refusal-guard: bad configuration: {exc}", file=sys.stderr)
        return 2
    if not settings.upstreams:
        print("refusal-guard: no upstream configured; pass --upstream URL or --config FILE", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    settings = with_state_default(settings)  # the embedded store every worker shares, and restarts resume
    if settings.workers > 1:
        from proxy.workers import serve

        return serve(settings, settings.workers)
    try:
        app = create_app(settings)  # reads what the settings name: suite files, the detector
    except (OSError, ValueError) as exc:
        print(f"refusal-guard: bad configuration: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, **options(settings.edge))
    return 0


def _sim(args: argparse.Namespace) -> int:
    import uvicorn

    from reference_upstream.app import create_sim_app

    app = create_sim_app(args.mode, chunk_delay=args.chunk_delay, models=tuple(args.model or ["sim-model"]))
    print(f"sim-upstream: mode={args.mode} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _classify(args: argparse.Namespace) -> int:
    """JSONL in (``response`` required, ``prompt`` optional), one JSONL verdict out per line, in order."""
    from detectors import load_detector

    detector = load_detector(args.detector)
    out = sys.stdout.buffer
    for n, line in enumerate(sys.stdin.buffer, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("response"), str):
                raise ValueError("each line must be a JSON object with a string `response`")
            prompt = item.get("prompt")
            v = detector.classify(item["response"], prompt if isinstance(prompt, str) else None)
            row: dict[str, object] = {"label": v.label, "refused": v.refused, "score": round(v.score, 4)}
        except (orjson.JSONDecodeError, ValueError) as exc:
            row = {"error": {"line": n, "message": str(exc)}}
        out.write(orjson.dumps(row) + b"\n")
        out.flush()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="refusal-guard", description="Refusal-monitoring proxy for OpenAI-compatible model servers."
    )
    p.add_argument("--version", action="version", version=f"refusal-guard {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the proxy")
    s.add_argument("--config", help="YAML config file (default: $REFUSAL_GUARD_CONFIG)")
    s.add_argument("--upstream", help="one OpenAI-compatible upstream base URL, e.g. http://127.0.0.1:8000/v1")
    s.add_argument("--upstream-api-key-env", help="name of the env var that holds that upstream's API key")
    s.add_argument("--host", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default 8080)")
    s.add_argument("--workers", type=int, help="worker processes (default 1); metrics are summed across them")
    s.add_argument("--detector", help="refusal detector: delex-lr (default) or pattern")
    s.add_argument(
        "--audit", help="audit log URL: sqlite:///var/audit.db (default), postgresql://..., jsonl:///path, jsonl://-"
    )
    s.add_argument(
        "--state",
        help="state store shared by replicas and workers: postgresql://..., sqlite:///path (default: beside "
        "a SQLite audit log, else var/state.db), memory://",
    )
    s.set_defaults(func=_serve)

    for name, (help_text, _) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)

    m = sub.add_parser("sim-upstream", help="run the reference upstream that replays real model answers")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=9000)
    m.add_argument("--mode", choices=["safe", "abliterated", "overrefusal"], default="safe")
    m.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    m.add_argument("--model", action="append", help="model id to list in /v1/models (repeatable)")
    m.set_defaults(func=_sim)

    c = sub.add_parser("classify", help="classify JSONL responses from stdin")
    c.add_argument("--detector", default="delex-lr")
    c.set_defaults(func=_classify)

    return p


def _delegate(module: str) -> Callable[[list[str]], int]:
    """A command whose module parses its own options; imported only when the command runs."""

    def run(argv: list[str]) -> int:
        return int(importlib.import_module(module).main(argv))

    return run


def _weights(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(
            "usage: refusal-guard weights diff --base PATH --candidate PATH [--json OUT]\n"
            "  name how a candidate checkpoint differs from its base; `weights diff --help` for its options"
        )
        return 0
    if argv[:1] != ["diff"]:
        print("usage: refusal-guard weights diff --base PATH --candidate PATH [--json OUT]", file=sys.stderr)
        return 2
    try:
        diff = importlib.import_module("forensics.diff")
    except ImportError as exc:  # numpy is always there; gguf comes with the extra
        print(f"refusal-guard weights: {exc}; pip install 'refusal-guard[forensics]'", file=sys.stderr)
        return 2
    return int(diff.main(argv[1:]))


# The commands that parse their own options (name: help, run); serve, sim-upstream and classify are
# parsed in build_parser. Every command named in the package, the README or docs/ is one of the two,
# and answers --help (tests/unit/test_cli_registry.py).
DELEGATED: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "eval": ("pre-deploy gate: run the canary suites against a candidate server", _delegate("proxy.canary.gate")),
    "canary-suite": (
        "canary-suite build: a private suite of variants from a secret seed",
        _delegate("proxy.canary.build"),
    ),
    "drill": ("fire drill: prove the page path end to end (needs prometheus)", _delegate("fire_drill")),
    "audit": ("read and verify the audit log: tail, show, export, verify, report", _delegate("proxy.audit.cli")),
    "weights": ("weights diff: name how a candidate checkpoint differs from its base", _weights),
    "train": ("train the default detector on the shipped labelled data", _delegate("detectors.retrain")),
    "train-harm": (
        "refit the harmful-request classifier and measure it leave-one-source-out",
        _delegate("detectors.train_harm"),
    ),
    "eval-detector": ("compare detectors leave-one-model-out on XSTest", _delegate("detectors.evaluate")),
}


def commands() -> list[str]:
    """Every command's name."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return DELEGATED[argv[0]][1](argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
