"""Production disposition: how each model answers all of its production traffic, against its own
baseline, with no probe and no watched set the upstream can compute.

Every production answer counts, risk-adjusted by the band of the public harmful-request classifier's
score it falls in and by the harmful share of the moment (so the traffic's mix can move), per model
and app, in suites: all answers; the answers to requests the classifier flags (``production_harmful``,
the fastest to see a model that answers what it should refuse); the answers to requests it did not
flag (an upstream that imports the classifier can answer exactly the flagged ones safely: its
abliterated answers land here); and, where the secret judge runs (:mod:`proxy.judging`), a secret
sample of answers in bands of a score the upstream cannot compute. docs/disposition.md has the
figures and the limits.

- :mod:`~proxy.disposition.apps`: which app a request came from;
- :mod:`~proxy.disposition.baseline`: the cells and the model's counts per cell;
- :mod:`~proxy.disposition.riskcusum`: the risk-adjusted CUSUM and its exact run lengths;
- :mod:`~proxy.disposition.watch`: the leader's statistics per model, their refresh and the store's rows.
"""

from proxy.disposition.watch import ALL, HARMFUL, JUDGED, STRATA, UNFLAGGED, DispositionWatch

__all__ = ["ALL", "HARMFUL", "JUDGED", "STRATA", "UNFLAGGED", "DispositionWatch"]
