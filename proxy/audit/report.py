"""``refusal-guard audit report --model M [--since T] [--until T] --out report.html``: one page for
the person the canary page woke up, built from the audit log alone.

One self-contained HTML file (charts by plotly, its JavaScript inlined: no network needed to view
it): the refusal rate over time for production, each canary suite, and the production requests the
harmful-request classifier flagged (the probe-free signal); drift transitions and quarantines on the
same time axis; counts by verdict; the canaries that failed, with prompt and answer excerpts; the
transitions as a table; and whether the audit chain verifies, for the whole log and for each record
shown. Drawn from ``templates/report.html`` (Jinja2, autoescaped). Needs the ``report`` extra
(``pip install 'refusal-guard[report]'``).

It only renders: every decision comes from the records (``verdict``, ``harm``, ``canary.expected``,
:mod:`proxy.audit.record`), so it works the same under every privacy mode (prompts and answers are
blank where the mode dropped or hashed them). Records written before ``harm`` existed are never in
the harmful series; before ``canary.expected`` existed, a suite named ``benign`` is taken as
expecting compliance and any other as expecting refusal (how those proxies judged them).
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


def expected(r: dict[str, Any]) -> str:
    """What a canary should have got, as its record says (older records: by its suite's name)."""
    canary = r.get("canary") or {}
    recorded = canary.get("expected")
    if recorded in ("refusal", "compliance"):
        return str(recorded)
    return "compliance" if "benign" in str(canary.get("suite", "")) else "refusal"


def failed(r: dict[str, Any]) -> bool:
    verdict = r.get("verdict")
    if verdict is None:
        return False
    return (verdict in REFUSED) != (expected(r) == "refusal")


def prompt_of(r: dict[str, Any]) -> str:
    return prompt_text(str(r.get("endpoint") or "chat"), r.get("request") or {}) or ""


def readable(r: dict[str, Any]) -> bool:
    """Whether the record's content is text to show (not hashed or dropped by its privacy mode)."""
    return r.get("privacy") in (None, "full", "redact")


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
    """The production requests the harmful-request classifier flagged, as recorded (``harm``)."""
    return [r for r in production if (r.get("harm") or {}).get("harmful") is True]


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
    from jinja2 import Environment, PackageLoader, select_autoescape  # the `report` extra
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("proxy.audit"), autoescape=select_autoescape(default=True))
    hidden = ("kind", "transition", "model", "suite")
    return env.get_template("report.html").render(
        model=w.model,
        window=f"{since or start.isoformat(timespec='seconds')} to {until or end.isoformat(timespec='seconds')}",
        production=len(w.production),
        canaries=len(w.canaries),
        privacy=sorted({str(r["privacy"]) for r in w.shown if not readable(r)}),
        chain=chain_text,
        rate_chart=Markup(rate.to_html(full_html=False, include_plotlyjs=True, div_id="rate-chart")),
        counts_chart=Markup(counts.to_html(full_html=False, include_plotlyjs=False, div_id="counts-chart")),
        transitions=[
            {
                "time": r["ts_start"],
                "transition": ev.get("transition"),
                "suite": ev.get("suite") or "",
                "detail": orjson.dumps({k: v for k, v in ev.items() if k not in hidden}).decode()[:300],
            }
            for r in w.events
            for ev in [r.get("event") or {}]
        ],
        fails=[
            {
                "time": r["ts_start"],
                "suite": (r.get("canary") or {}).get("suite"),
                "expected": expected(r),
                "verdict": r.get("verdict"),
                "prompt": prompt_of(r)[:300] if readable(r) else "",
                "answer": answer_of(r)[:400] if readable(r) else "",
                "request_id": r.get("request_id"),
            }
            for r in fails
        ],
    )
