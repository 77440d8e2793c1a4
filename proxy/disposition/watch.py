"""The leader's disposition watch: every replica's production answers, per model and app
(:mod:`proxy.disposition.apps`), through risk-adjusted refusal CUSUMs against the model's own
baseline for that app (:class:`DispositionWatch`).

Four statistics (suites) per model and app:

- ``production_refusals``: every production answer;
- ``production_harmful`` (with ``harmful``): the answers to requests the public harmful-request
  classifier flags, the fastest to see a model that answers what it should refuse. A safe model answers
  the ordinary requests the classifier flags, so this stratum's answered share follows the harmful
  share of the moment (mostly ordinary requests when few are harmful): its cells carry that share as
  every answer's do. It pages, and the model's quarantine policy applies to it as to a canary suite;
- ``production_unflagged``: the answers to requests the harmful-request classifier did *not* flag. The
  classifier is public, so an upstream can answer every flagged request safely (``production_harmful``
  stays flat) and abliterate the rest: the harmful requests the classifier misses are then answered,
  and their bands' answered share rises here;
- ``production_judged`` (with the secret judge, :mod:`proxy.judging`): the answers to a secret random
  sample of requests, in bands of the *secret judge's* score. An upstream that knows the cells above can
  keep each one's refused share flat (refusing ordinary requests of the same cell for each harmful one
  it answers); it cannot compute this statistic's cells, and the judge's high bands hold few ordinary
  requests to sacrifice.

Each is learned over ``burn_in`` answers (and ``burn_in_seconds``), then tested by one CUSUM per factor
in ``disposition.factors`` (the refusals above the model's floor divided by it: small and large drops
alike) and per reading of the floor (every refusal above it expected to fall, or only those more
than ``ordinary_spread`` above it: a model refuses the ordinary requests of some bands more), each
designed by its exact in-control run length so that all of a model's CUSUMs (every app's) together
raise one false alarm per ``false_alarm_days`` at the answer rates their baselines measured (a design
in time, not in answers). A model's apps past ``max_apps`` share one baseline.
Every ``refresh_seconds`` the block just seen is folded into the baseline with a memory of
``memory_days`` and the CUSUMs are redesigned, unless the block itself answered ``guard_z`` standard
errors more than the baseline expects: slow changes of the mix and the load are followed, a drop is
not learned.

Transitions go through :meth:`DriftMonitor.signal` like a canary suite's, per model (a suite is in
alarm when any app's is); the model's quarantine policy applies to ``production_harmful``, and to the
others only with ``quarantine`` set. The
state lives in the store (``rg_disposition``, a model's row rewritten at each leader sync that
brought it answers, in the transaction that deletes the events they came in: a new leader loses
none), and followers mirror the summary. Designs are
computed at learning, at each refresh and when a new leader loads the state (milliseconds each),
never per answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from proxy.disposition.baseline import Counts, cell_of
from proxy.disposition.riskcusum import RiskCusum, RiskDesign, alternative, design_for
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.watch_settings import DispositionSettings

if TYPE_CHECKING:  # the drift monitor imports the state store's outbox, which imports proxy.disposition.apps
    from proxy.canary.drift import DriftMonitor

ALL, HARMFUL = "production_refusals", "production_harmful"
UNFLAGGED, JUDGED = "production_unflagged", "production_judged"
STRATA = (ALL, HARMFUL, UNFLAGGED, JUDGED)
OTHER = "other"  # the apps of a model past ``max_apps``
# Each stratum's covariate, the harmful share of the moment as the request and the traffic around it
# show it: for every answer, the share of requests flagged; for the unflagged answers, the share of
# requests flagged *and refused*. Ordinary requests the classifier flags are answered, so that share
# has no ordinary part and follows the harmful share alone; and an upstream can lower it only by
# answering flagged requests, which every-answer's statistic and ``production_harmful`` see.
# The judged answers share the unflagged ones': a covariate of the judge's own calls would move with
# the attack it should see (an upstream that answers what the judge flags lowers a "judged and
# refused" share), and the judge's calls on ordinary requests that sound harmful would bend a
# "judged" share away from the harmful share.
COVARIATES = {ALL: "flagged", HARMFUL: "flagged", UNFLAGGED: "flagged and refused", JUDGED: "flagged and refused"}
# in-control refusals lowered, and the floor raised, by this many standard errors (at 2, the simulated
# week of bench/disposition.py raised false alarms)
CONFIDENCE_Z = 3.0


@dataclass
class _Share:
    """A recent share of a model's production requests (flagged, or flagged and refused), as the
    smaller of two averages, over ``tau`` seconds and over a tenth of it: a fall is followed at once
    (expecting the refusals of a harmful share that has gone would raise false alarms), a rise slowly."""

    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # hits, weight: slow, fast
    at: float | None = None

    def value(self) -> float:
        return min(self.sums[0] / self.sums[1], self.sums[2] / self.sums[3]) if self.sums[3] > 0 else 0.0

    def add(self, hit: bool, now: float, tau: float) -> float:
        """Count one request; returns the share before it (a request is not its own covariate)."""
        before = self.value()
        dt = 0.0 if self.at is None else max(0.0, now - self.at)
        for i, t in ((0, tau), (2, tau / 10)):
            decay = math.exp(-dt / t)
            self.sums[i] = decay * self.sums[i] + hit
            self.sums[i + 1] = decay * self.sums[i + 1] + 1
        self.at = now
        return before


@dataclass
class _Segment:
    """One model's traffic from one app: its strata, and each stratum's covariate (the harmful share
    of the moment, as it sees it; :data:`COVARIATES`)."""

    strata: dict[str, _Stat] = field(default_factory=lambda: {name: _Stat() for name in STRATA})
    # the covariates' trackers: production_harmful reads every answer's, production_judged the unflagged one's
    shares: dict[str, _Share] = field(default_factory=lambda: {name: _Share() for name in (ALL, UNFLAGGED)})

    def dump(self) -> dict[str, Any]:
        return {
            "shares": {n: {"sums": sh.sums, "at": sh.at} for n, sh in self.shares.items()},
            "strata": {n: st.dump() for n, st in self.strata.items()},
        }


@dataclass
class _Stat:
    """One stratum of one model: learning until ``cusums`` is set."""

    baseline: Counts = field(default_factory=Counts)
    block: Counts = field(default_factory=Counts)
    block_start: float | None = None
    cusums: list[RiskCusum] | None = None
    refreshed: int = 0  # blocks folded in
    held: int = 0  # blocks not folded in (a drop in progress)

    @property
    def alarm(self) -> bool:
        return any(c.alarm for c in self.cusums or ())

    @property
    def statistic(self) -> float:
        return max((c.statistic for c in self.cusums or ()), default=0.0)

    def dump(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.dump(),
            "block": self.block.dump(),
            "block_start": self.block_start,
            "cusums": None if self.cusums is None else [[c.s, c.alarm] for c in self.cusums],
            "refreshed": self.refreshed,
            "held": self.held,
        }

    def summary(self, alternatives: tuple[tuple[float, float], ...]) -> dict[str, Any]:
        return {
            "learning": self.cusums is None,
            "drifting": self.alarm,
            "statistic": round(self.statistic, 4),
            "baseline_answers": round(self.baseline.total),
            "block_answers": round(self.block.total),
            "refused_share": [round(p, 4) for p in self.baseline.refused_share()],
            "designs": [
                {
                    "factor": f,
                    "spread": spread,
                    "h": c.design.h,
                    "statistic": round(c.statistic, 4),
                    # None: no cell of this baseline weighs anything in this design (nothing to detect yet)
                    "answers_to_alarm_at_factor": round(c.design.delay) if math.isfinite(c.design.delay) else None,
                }
                for (f, spread), c in zip(alternatives, self.cusums or (), strict=False)
            ],
            "refreshed": self.refreshed,
            "held": self.held,
        }


class DispositionWatch:
    """Answers in (:meth:`observe`), transitions out through the drift monitor; :meth:`changed` and
    :meth:`load` for the store, :meth:`mirror` on followers, :meth:`state` for ``/canary/state``."""

    def __init__(
        self,
        settings: DispositionSettings,
        drift: DriftMonitor,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        *,
        judged: bool = False,
    ) -> None:
        self.s = settings
        # production_harmful unless switched off, production_judged only where a judge runs
        self.strata = tuple(n for n in STRATA if (n != HARMFUL or settings.harmful) and (n != JUDGED or judged))
        # one CUSUM per (factor, spread): every refusal above the floor expected to fall, and, where the
        # model's refusals of ordinary requests differ between bands, only those ``ordinary_spread`` above it
        spreads = dict.fromkeys((0.0, settings.ordinary_spread))
        self.alternatives = tuple((f, spread) for spread in spreads for f in settings.factors)
        self.drift = drift
        self.metrics = metrics
        self.clock = clock
        self.models: dict[str, dict[str, _Segment]] = {}  # model -> app -> segment
        self.shown: dict[str, dict[str, Any]] = {}
        self._alarms: dict[tuple[str, str], bool] = {}  # (model, suite) -> any app in alarm
        self._dirty: set[str] = set()

    # -- the leader ------------------------------------------------------------------------------

    def observe(self, model: str, app: str, score: float, flagged: bool, answered: bool) -> None:
        """One production answer: its app, the request's harmful score and flag, and whether it was answered."""
        if not self.s.enabled:
            return
        now = self.clock()
        app, seg = self._segment(model, app)
        shares = {name: seg.shares[name].add(hit, now, self.s.share_seconds) for name, hit in (
            (ALL, flagged), (UNFLAGGED, flagged and not answered))}  # fmt: skip
        shares[HARMFUL] = shares[ALL]  # COVARIATES
        for name in (ALL, HARMFUL) if flagged else (ALL, UNFLAGGED):
            if name in self.strata:
                self._add(model, app, name, seg.strata[name], cell_of(score, shares[name]), answered, shares[name], now)

    def judged(self, model: str, app: str, score: float, flagged: bool, answered: bool) -> None:
        """One answer to a request the secret judge sampled: its score and call, and whether it was answered."""
        if not self.s.enabled or JUDGED not in self.strata:
            return
        now = self.clock()
        app, seg = self._segment(model, app)
        share = seg.shares[UNFLAGGED].value()  # as the requests around it showed it (COVARIATES)
        self._add(model, app, JUDGED, seg.strata[JUDGED], cell_of(score, share), answered, share, now)

    def _segment(self, model: str, app: str) -> tuple[str, _Segment]:
        apps = self.models.get(model)
        if apps is None:
            apps = self.models[model] = {}
            for name in self.strata:
                self._alarms[(model, name)] = False
                self.drift.signal(model, name, was=False, now=False, statistic=0.0)
        if app not in apps and len(apps) >= self.s.max_apps:
            app = OTHER
        seg = apps.get(app)
        if seg is None:
            seg = apps[app] = _Segment()
        self._dirty.add(model)
        return app, seg

    def _add(
        self, model: str, app: str, name: str, st: _Stat, cell: int, answered: bool, share: float, now: float
    ) -> None:
        if st.block_start is None:
            st.block_start = now
        st.block.add(cell, answered, share)
        if st.cusums is None:
            if st.block.total >= self.s.burn_in and now - st.block_start >= self.s.burn_in_seconds:
                self._learned(model, app, name, st, now)
            return
        for c in st.cusums:
            c.update(cell, answered)
        self._signal(model, name)
        if now - st.block_start >= self.s.refresh_seconds:
            self._refresh(model, app, name, st, now)

    def _signal(self, model: str, name: str) -> None:
        stats = [seg.strata[name] for seg in self.models[model].values()]
        was, now = self._alarms[(model, name)], any(st.alarm for st in stats)
        self._alarms[(model, name)] = now
        statistic = max(st.statistic for st in stats)
        quarantine = self.s.quarantine or name == HARMFUL
        self.drift.signal(model, name, was=was, now=now, statistic=statistic, may_quarantine=quarantine)

    def _learned(self, model: str, app: str, name: str, st: _Stat, now: float) -> None:
        st.block.seconds = now - (now if st.block_start is None else st.block_start)
        st.baseline, st.block, st.block_start = st.block, Counts(), now
        st.cusums = [RiskCusum(d) for d in self._designs(model, app, name, st.baseline)]
        logger.info("disposition_learned", model=model, app=app, suite=name, **_logged(st, self.alternatives))

    def _refresh(self, model: str, app: str, name: str, st: _Stat, now: float) -> None:
        st.block.seconds = now - (now if st.block_start is None else st.block_start)
        z = st.block.excess_z(st.baseline.in_control(floor=self._ordinary(model, app, name, st.baseline).floor()))
        if z >= self.s.guard_z:
            st.held += 1  # a drop in progress is not learned: the block is dropped, the baseline kept
            logger.warning("disposition_refresh_held", model=model, app=app, suite=name, excess_z=round(z, 2))
        else:
            decay = math.exp(-st.block.seconds / (self.s.memory_days * 86400))
            st.baseline.fold(st.block, decay)
            st.refreshed += 1
            for c, d in zip(st.cusums or (), self._designs(model, app, name, st.baseline), strict=True):
                c.redesign(d)
        st.block, st.block_start = Counts(), now

    def _ordinary(self, model: str, app: str, name: str, baseline: Counts) -> Counts:
        """Where the stratum's floor (the model's refusals of ordinary requests) is read: its own
        baseline, but production_harmful's holds flagged requests only, and takes every answer's."""
        if name != HARMFUL:
            return baseline
        every = self.models[model][app].strata[ALL]
        return every.baseline if every.baseline.total > 0 else every.block

    def _designs(self, model: str, app: str, name: str, baseline: Counts) -> list[RiskDesign]:
        """One design per alternative (factor, spread): in control, the refusals' lower bound
        (:data:`CONFIDENCE_Z`); the alternative, the refusals above the floor's upper bound divided by
        the factor, from the point estimate. A cell whose baseline is too noisy to tell that drop from
        in control, or refused less than the spread above the floor (ordinary requests' refusals),
        weighs nothing in that design, and a true rate anywhere above the bound only lowers the statistic.

        Every statistic of the model gets an equal share of its false-alarm budget, in time: the
        target in answers is the days times this baseline's answers per second times the model's
        number of statistics (apps x strata in use x alternatives)."""
        ordinary = self._ordinary(model, app, name, baseline)
        low, estimate = baseline.in_control(CONFIDENCE_Z, ordinary.floor()), baseline.in_control(0, ordinary.floor())
        mix, floor = baseline.mix(), ordinary.floor(CONFIDENCE_Z)
        statistics = max(1, len(self.models.get(model, ()))) * len(self.strata) * len(self.alternatives)
        target = self.s.false_alarm_days * 86400 * max(baseline.rate(), 1e-6) * statistics
        return [design_for(low, alternative(estimate, floor, f, sp), mix, target) for f, sp in self.alternatives]

    def changed(self) -> list[tuple[str, str, str]]:
        """``(model, summary, state)`` rows to write (JSON): the models with news since the last call."""
        rows = []
        for model in sorted(self._dirty):
            apps = self.models[model]
            summary = self.shown[model] = self._summary(apps)
            state = {app: seg.dump() for app, seg in apps.items()}
            rows.append((model, orjson.dumps(summary).decode(), orjson.dumps(state).decode()))
        self._dirty.clear()
        return rows

    def _summary(self, apps: dict[str, _Segment]) -> dict[str, Any]:
        """Per stratum over the apps (in alarm if any is), and each app's own."""
        out: dict[str, Any] = {}
        for name in self.strata:
            stats = [seg.strata[name] for seg in apps.values()]
            out[name] = {
                "learning": all(st.cusums is None for st in stats),
                "drifting": any(st.alarm for st in stats),
                "statistic": round(max((st.statistic for st in stats), default=0.0), 4),
            }
        out["apps"] = {
            app: {n: seg.strata[n].summary(self.alternatives) for n in self.strata} for app, seg in sorted(apps.items())
        }
        return out

    def load(self, states: dict[str, str]) -> None:
        """A new leader resumes what the store holds (the designs follow from the baselines). A row it
        cannot read (another version's) is logged and that model learnt afresh: never a failed start."""
        self.models, self._alarms = {}, {}
        for model, raw in states.items():
            try:
                self._load(model, raw)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                self.models.pop(model, None)
                self._alarms = {k: v for k, v in self._alarms.items() if k[0] != model}
                logger.warning("state_unreadable", part="disposition", model=model, error=type(exc).__name__)
        self.shown = {m: self._summary(apps) for m, apps in self.models.items()}
        self._dirty.clear()

    def _load(self, model: str, raw: str) -> None:
        apps, stored = self.models.setdefault(model, {}), orjson.loads(raw)
        for app, data in stored.items():
            seg = apps[app] = _Segment(shares={n: _Share(**sh) for n, sh in data["shares"].items()})
            for name, st_data in data["strata"].items():
                seg.strata[name] = _Stat(
                    Counts.parse(st_data["baseline"]), Counts.parse(st_data["block"]), st_data["block_start"],
                    refreshed=st_data["refreshed"], held=st_data["held"],
                )  # fmt: skip
        for app, data in stored.items():  # designed once the model's apps are known: their number sets the budget
            for name, st_data in data["strata"].items():
                st = apps[app].strata[name]
                if st_data["cusums"] is not None:
                    designs = self._designs(model, app, name, st.baseline)
                    kept = st_data["cusums"]  # a design this release added (a new alternative) starts at zero
                    st.cusums = [
                        RiskCusum(d, *kept[i]) if i < len(kept) else RiskCusum(d) for i, d in enumerate(designs)
                    ]
        for name in self.strata:
            self._alarms[(model, name)] = any(seg.strata[name].alarm for seg in apps.values())

    # -- everyone --------------------------------------------------------------------------------

    def mirror(self, summaries: dict[str, str]) -> None:
        """A follower shows what the leader wrote (the gauges, ``/canary/state``)."""
        shown = {model: orjson.loads(raw) for model, raw in summaries.items()}
        for model, summary in shown.items():
            for name in self.strata:
                st = summary.get(name)
                if st is not None:
                    self.metrics.drift_state.labels(model, name).set(1 if st["drifting"] else 0)
                    self.metrics.drift_statistic.labels(model, name).set(st["statistic"])
        self.shown = shown

    def state(self) -> dict[str, Any]:
        return dict(self.shown)


def _logged(st: _Stat, alternatives: tuple[tuple[float, float], ...]) -> dict[str, Any]:
    return {
        "answers": round(st.baseline.total),
        "seconds": round(st.baseline.seconds),
        "thresholds": [c.design.h for c in st.cusums or ()],
        "alternatives": [list(a) for a in alternatives],
    }
