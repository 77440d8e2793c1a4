"""``refusal-guard audit tail|show ID|export|verify|report [--audit URL]``: read and check the audit log.

refusal-guard audit tail -n 20 --model llama-3 --verdict compliance --traffic canary
refusal-guard audit show 3f9c...                  # by request id
refusal-guard audit export --since 2026-11-01 --format csv > audit.csv
refusal-guard audit verify --checkpoints proxy.log   # exit 1 and the first problem if tampered
refusal-guard audit report --model llama-3 --since 2026-11-29T02:00 --out report.html  # one page per incident
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from proxy.audit.record import FIELDS
from proxy.audit.sinks import open_sink
from proxy.audit.storage import Query
from proxy.audit.verify import verify

DEFAULT_URL = "sqlite:///var/audit.db"
_CHAIN = ("writer", "seq", "prev_hash", "hash")


def _query(args: argparse.Namespace) -> Query:
    return Query(since=args.since, until=args.until, model=args.model, verdict=args.verdict, traffic=args.traffic)


def _report(sink: Any, args: argparse.Namespace) -> int:
    from proxy.audit.report import Window, render

    records = list(sink.read())
    window = Window.of(args.model, sink.read(Query(since=args.since, until=args.until)))
    try:
        page = render(window, records, verify(records), args.since, args.until)
    except ImportError as exc:  # plotly, drawn only here
        print(f"refusal-guard audit report: {exc}; pip install 'refusal-guard[report]'", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"refusal-guard audit report: {exc}", file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(
        f"wrote {args.out}: {len(window.production)} production, {len(window.canaries)} canary answers, "
        f"{len(window.events)} transitions"
    )
    return 0


def _checkpoints(path: str) -> list[dict[str, object]]:
    """``audit_checkpoint`` lines from a log file of the proxy's JSON log stream."""
    out = []
    with open(path, "rb") as f:
        for line in f:
            if b"audit_checkpoint" in line:
                try:
                    e = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if e.get("event") == "audit_checkpoint":
                    out.append(e)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="refusal-guard audit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("command", choices=["tail", "show", "export", "verify", "report"])
    p.add_argument("id", nargs="?", help="request id (show)")
    p.add_argument("--audit", default=DEFAULT_URL, help=f"audit URL (default {DEFAULT_URL})")
    for flag in ("--since", "--until"):
        p.add_argument(flag, help="ISO time, e.g. 2026-11-29 or 2026-11-29T10:00")
    p.add_argument("--model")
    p.add_argument("--verdict", choices=["refusal", "partial_refusal", "compliance"])
    p.add_argument("--traffic", choices=["production", "canary", "event"])
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("-n", type=int, default=10, help="records to show (tail)")
    p.add_argument("--checkpoints", help="a log file holding the proxy's audit_checkpoint lines (verify)")
    p.add_argument("--out", help="where the HTML report goes (report)")
    args = p.parse_args(argv)
    try:
        sink = open_sink(args.audit)
    except Exception as exc:
        print(f"refusal-guard audit: cannot open {args.audit}: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    try:
        if args.command == "verify":
            records = list(sink.read())
            problems = verify(records, _checkpoints(args.checkpoints) if args.checkpoints else ())
            if problems:
                print(f"FAILED: {problems[0]}", file=sys.stderr)
                for extra in problems[1:]:
                    print(f"also: {extra}", file=sys.stderr)
                return 1
            writers = len({r["writer"] for r in records})
            print(f"OK: {len(records)} records in {writers} chain(s) verify")
            return 0
        if args.command == "report":
            if not (args.model and args.out):
                p.error("report needs --model and --out")
            return _report(sink, args)
        if args.command == "show":
            if not args.id:
                p.error("show needs a request id")
            found = list(sink.read(Query(request_id=args.id)))
            if not found:
                print(f"no record with request id {args.id}", file=sys.stderr)
                return 1
            for r in found:
                out.write(orjson.dumps(r, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
            return 0
        selected: Iterable[dict[str, Any]] = sink.read(_query(args))
        if args.command == "tail":
            selected = deque(selected, maxlen=args.n)
        if args.format == "jsonl":
            for r in selected:
                out.write(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n")
        else:
            columns = [*FIELDS, *_CHAIN]
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(columns)
            for r in selected:
                w.writerow(
                    [
                        v if isinstance(v := r.get(c), str | int | float) or v is None else orjson.dumps(v).decode()
                        for c in columns
                    ]
                )
            out.write(buf.getvalue().encode())
        return 0
    finally:
        sink.close()
