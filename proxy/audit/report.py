"""``refusal-guard audit report --model M [--since T] [--until T] --out report.html``: one page for
the person the canary page woke up, built from the audit log alone.

One self-contained HTML file (charts by plotly, its JavaScript inlined: no network needed to view
it): the refusal rate over time for production, each canary suite, and the production requests the
harmful-request classifier flags (the probe-free signal); drift transitions and quarantines on the
same time axis; counts by verdict; the canaries that failed, with prompt and answer excerpts; the
transitions as a table; and whether the audit chain verifies, for the whole log and for each record
shown. Needs the ``report`` extra (``pip install 'refusal-guard[report]'``).
"""

from __future__ import annotations

import datetime as dt
import html
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.audit.record import chain
from proxy.audit.verify import Problem
from proxy.extract import answers_from_body, prompt_text

REFUSED = frozenset({"refusal", "partial_refusal"})
_COLOURS = {"drift": "#c0392b", "quarantined": "#7b241c", "recovered": "#1e8449", "released": "#1e8449"}
_NICE = (1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400)  # bucket widths, seconds


@dataclass
class Window:
    """What the report shows: one model's records, in time order."""

    model: str
    production: list[dict[str, Any]] = field(default_factory=list)
    canaries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, model: str, records: Iterable[dict[str, Any]]) -> Window:
        w = cls(model)
        for r in records:
            if r.get("traffic") == "event":
                if (r.get("event") or {}).get("model") == model:
                    w.events.append(r)
            elif model in (r.get("model"), r.get("model_label")):
                (w.canaries if r.get("traffic") == "canary" else w.production).append(r)
        return w

    @property
    def shown(self) -> list[dict[str, Any]]:
        return [*self.production, *self.canaries, *self.events]


def when(r: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(r["ts_start"]))


def expected(suite: str) -> str:
    """What a suite's canaries should get: the shipped ``benign`` suite (and suites named so) must be
    answered, every other suite refused."""
    return "compliance" if "benign" in suite else "refusal"


def failed(r: dict[str, Any]) -> bool:
    suite = str((r.get("canary") or {}).get("suite", ""))
    verdict = r.get("verdict")
    if verdict is None:
        return False
    return (verdict in REFUSED) != (expected(suite) == "refusal")


def prompt_of(r: dict[str, Any]) -> str:
    return prompt_text(str(r.get("endpoint") or "chat"), r.get("request") or {}) or ""


def answer_of(r: dict[str, Any]) -> str:
    resp = r.get("response")
    if not isinstance(resp, dict):
        return ""
    if resp.get("stream"):
        return "".join(str(c.get("text") or "") for c in resp.get("choices") or [] if isinstance(c, dict))[:2000]
    try:
        answers = answers_from_body(str(r.get("endpoint") or "chat"), orjson.dumps(resp))
    except orjson.JSONDecodeError:
        return ""
    return answers[0].text if answers else str(resp.get("text") or "")


def alarms(w: Window) -> list[tuple[str, dt.datetime, dt.datetime | None]]:
    """Each suite's alarm intervals: from a ``drift`` transition to its ``recovered`` (or still open)."""
    out: list[tuple[str, dt.datetime, dt.datetime | None]] = []
    open_: dict[str, dt.datetime] = {}
    for e in w.events:
        ev = e.get("event") or {}
        suite, kind = str(ev.get("suite")), ev.get("transition")
        if kind == "drift":
            open_.setdefault(suite, when(e))
        elif kind == "recovered" and suite in open_:
            out.append((suite, open_.pop(suite), when(e)))
    out += [(suite, start, None) for suite, start in open_.items()]
    return out


def evidence(w: Window) -> list[dict[str, Any]]:
    """The failed canaries, those of a suite in alarm first (in time order), then the others, latest first."""
    spans = alarms(w)

    def in_alarm(r: dict[str, Any]) -> bool:
        suite, t = str((r.get("canary") or {}).get("suite")), when(r)
        return any(s == suite and a <= t and (b is None or t <= b) for s, a, b in spans)

    fails = [r for r in w.canaries if failed(r)]
    during = [r for r in fails if in_alarm(r)]
    return during + [r for r in reversed(fails) if not in_alarm(r)]


def bucket_seconds(start: dt.datetime, end: dt.datetime, buckets: int = 60) -> int:
    """A round bucket width giving about ``buckets`` points over the window.

    >>> t = dt.datetime(2026, 1, 1)
    >>> bucket_seconds(t, t + dt.timedelta(hours=1)), bucket_seconds(t, t + dt.timedelta(days=7))
    (60, 10800)
    >>> bucket_seconds(t, t + dt.timedelta(seconds=30))
    1
    """
    span = (end - start).total_seconds() / buckets
    return next((s for s in _NICE if s >= span), _NICE[-1])


def rates(records: list[dict[str, Any]], width: int) -> tuple[list[dt.datetime], list[float], list[int]]:
    """Refusal rate per bucket: bucket starts, rates, and how many judged answers each holds."""
    refused: dict[int, int] = defaultdict(int)
    judged: dict[int, int] = defaultdict(int)
    for r in records:
        if r.get("verdict") is None:
            continue
        k = int(when(r).timestamp()) // width
        judged[k] += 1
        refused[k] += r["verdict"] in REFUSED
    keys = sorted(judged)
    return (
        [dt.datetime.fromtimestamp(k * width, dt.UTC) for k in keys],
        [refused[k] / judged[k] for k in keys],
        [judged[k] for k in keys],
    )


def series(w: Window, harmful: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The lines of the rate chart: production, each canary suite, production flagged harmful."""
    out: dict[str, list[dict[str, Any]]] = {"production": w.production}
    for r in w.canaries:
        out.setdefault(f"canary: {(r.get('canary') or {}).get('suite', '?')}", []).append(r)
    if harmful:
        out["production, flagged harmful"] = harmful
    return out


def flagged_harmful(production: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The production requests the shipped harmful-request classifier flags (as the proxy's own
    production-harmful test does at run time)."""
    from detectors.harm import HarmfulRequestClassifier

    clf = HarmfulRequestClassifier.load()
    return [r for r in production if clf.is_harmful(prompt_of(r))]


def chain_status(all_records: list[dict[str, Any]], problems: list[Problem], shown: list[dict[str, Any]]) -> str:
    own = sum(chain(r, str(r.get("prev_hash", ""))) == r.get("hash") for r in shown)
    whole = (
        f"The whole log verifies: {len(all_records)} records in {len({r.get('writer') for r in all_records})} chain(s)."
        if not problems
        else f"The log does NOT verify: {problems[0]}"
        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    )
    return f"{whole} Records shown here whose own hash checks: {own} of {len(shown)}."


def render(
    w: Window, all_records: list[dict[str, Any]], problems: list[Problem], since: str | None, until: str | None
) -> str:
    """The report as one HTML page."""
    import plotly.graph_objects as go  # the `report` extra

    shown = w.shown
    times = [when(r) for r in shown]
    if not times:
        raise ValueError(f"no audit records for model {w.model!r} in this window")
    start, end = min(times), max(times)
    width = bucket_seconds(start, end)
    harmful = flagged_harmful(w.production)
    rate = go.Figure()
    for name, records in series(w, harmful).items():
        x, y, n = rates(records, width)
        if x:
            rate.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=name,
                    customdata=n,
                    hovertemplate="%{y:.0%} of %{customdata}<extra>" + html.escape(name) + "</extra>",
                )
            )
    for i, e in enumerate(w.events):
        kind = str((e.get("event") or {}).get("transition", "event"))
        suite = (e.get("event") or {}).get("suite")
        at = when(e)
        rate.add_shape(
            type="line",
            x0=at,
            x1=at,
            y0=0,
            y1=1,
            yref="paper",
            line={"color": _COLOURS.get(kind, "#555"), "dash": "dash"},
        )
        rate.add_annotation(
            x=at,
            y=1.03 + 0.07 * (i % 3),  # staggered: transitions come in bursts (drift, then quarantined)
            yref="paper",
            text=f"{kind}{' ' + suite if suite else ''}",
            showarrow=False,
            font={"color": _COLOURS.get(kind, "#555")},
            textangle=-30,
        )
    rate.update_layout(
        title=f"Refusal rate per {width} s",
        yaxis={"tickformat": ".0%", "range": [0, 1.05]},
        height=440,
        margin={"t": 110},
        legend={"orientation": "h"},
    )
    counts = go.Figure()
    verdicts = ("refusal", "partial_refusal", "compliance")
    groups = {"production": w.production, **{k: v for k, v in series(w, []).items() if k != "production"}}
    for v in verdicts:
        counts.add_trace(
            go.Bar(name=v, x=list(groups), y=[Counter(r.get("verdict") for r in g)[v] for g in groups.values()])
        )
    counts.update_layout(title="Answers by verdict", barmode="group", height=320)
    fails = evidence(w)
    return _page(w, rate, counts, fails, chain_status(all_records, problems, shown), since, until, start, end)


def _page(
    w: Window,
    rate: Any,
    counts: Any,
    fails: list[dict[str, Any]],
    chain_text: str,
    since: str | None,
    until: str | None,
    start: dt.datetime,
    end: dt.datetime,
) -> str:
    e = html.escape
    transitions = (
        "".join(
            f"<tr><td>{e(str(r['ts_start']))}</td><td>{e(str(ev.get('transition')))}</td><td>{e(str(ev.get('suite') or ''))}</td>"
            f"<td>{e(orjson.dumps({k: v for k, v in ev.items() if k not in ('kind', 'transition', 'model', 'suite')}).decode()[:300])}</td></tr>"
            for r in w.events
            for ev in [r.get("event") or {}]
        )
        or '<tr><td colspan="4">none in this window</td></tr>'
    )
    failures = (
        "".join(
            f"<tr><td>{e(str(r['ts_start']))}</td><td>{e(str((r.get('canary') or {}).get('suite')))}</td>"
            f"<td>{e(str(r.get('verdict')))}</td><td class='text'>{e(prompt_of(r)[:300])}</td>"
            f"<td class='text'>{e(answer_of(r)[:400])}</td><td><code>{e(str(r.get('request_id')))}</code></td></tr>"
            for r in fails[:50]
        )
        or '<tr><td colspan="6">no canary failed in this window</td></tr>'
    )
    window = f"{since or start.isoformat(timespec='seconds')} to {until or end.isoformat(timespec='seconds')}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>refusal-guard report: {e(w.model)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1300px}} table{{border-collapse:collapse;width:100%;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}} td.text{{max-width:380px}}
.chain{{padding:8px;border-left:4px solid #888;background:#f6f6f6}}</style></head><body>
<h1>refusal-guard incident report: <code>{e(w.model)}</code></h1>
<p>Window: {e(window)}. Production answers: {len(w.production)}; canary answers: {len(w.canaries)}
({len(fails)} failed); drift transitions and quarantines: {len(w.events)}.</p>
<h2 id="chain">Audit chain</h2><p class="chain" id="chain-status">{e(chain_text)}</p>
<h2>Refusal rate</h2>{rate.to_html(full_html=False, include_plotlyjs=True, div_id="rate-chart")}
<h2>Drift transitions and quarantines</h2>
<table id="transitions"><tr><th>time</th><th>transition</th><th>suite</th><th>detail</th></tr>{transitions}</table>
<h2>Failed canaries</h2><p>A harmful-suite canary that was answered, or a benign-suite canary that was refused (50 at most: first those of a suite while it was in alarm, then the latest others).</p>
<table id="failed-canaries"><tr><th>time</th><th>suite</th><th>verdict</th><th>prompt</th><th>answer</th><th>request id</th></tr>{failures}</table>
<h2>Counts</h2>{counts.to_html(full_html=False, include_plotlyjs=False, div_id="counts-chart")}
<p><small>Built by <code>refusal-guard audit report</code> from the audit log; times in UTC.</small></p>
</body></html>
"""
