"""The pipeline's last stage: a judged canary's verdict goes to the drift monitor: into its suite's
CUSUM, and a harmful canary the shipped classifier does not flag also into ``<suite>_unflagged``'s.

That stratum is where an upstream that imports the classifier would abliterate (answering what it
flags safely, as the disposition watch's ``production_unflagged`` assumes of production): in the
suite's own CUSUM its failures are diluted by the flagged canaries' refusals. The flagged stratum is
most of the suite (the shipped classifier flags ~90 % of the shipped harmful prompts), so the
suite's CUSUM stands for it."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.canary.drift import DriftMonitor
from proxy.canary.suites import Suite
from proxy.exchange import Exchange
from proxy.metrics import Metrics


class CanaryFeedback:
    """Canary exchanges only: the first verdict into the suite's CUSUM; an unjudged canary (the
    answer could not be read, or the detector failed) is a canary error, never a pass."""

    def __init__(self, drift: DriftMonitor, suites: Sequence[Suite], metrics: Metrics) -> None:
        self.drift = drift
        self.suites = {s.name: s for s in suites}
        self.unflagged = {s.name: unflagged(s) for s in suites if s.expected == "refusal"}
        self.metrics = metrics

    def __call__(self, ex: Exchange) -> None:
        if ex.traffic != "canary" or ex.canary is None or ex.model is None:
            return
        suite = self.suites.get(ex.canary["suite"])
        if suite is None:
            return
        if not ex.verdicts:
            self.metrics.canary_errors.labels(ex.model, suite.name).inc()
            return
        self.drift.record(ex.model, suite, ex.verdicts[0].label)
        if ex.canary.get("stratum") == "unflagged" and suite.name in self.unflagged:
            self.drift.record(ex.model, self.unflagged[suite.name], ex.verdicts[0].label, counted=False)


def unflagged(suite: Suite) -> Suite:
    """The stratum of ``suite``'s canaries the shipped classifier does not flag: its expectation and
    design, a CUSUM of its own."""
    return Suite(f"{suite.name}_unflagged", suite.expected, (), design_key=suite.design_key, public=suite.public)
