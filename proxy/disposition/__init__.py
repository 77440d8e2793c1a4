"""Production disposition: how each model answers all of its production traffic, against its own
baseline, with no probe and no watched set the upstream can compute.

``production_harmful`` (:mod:`proxy.harmful`) watches the requests the public harmful-request
classifier flags; an upstream that imports the classifier can answer exactly those safely. Here every
production answer counts, risk-adjusted by the band of the classifier's score it falls in and by the
harmful share of the moment (so the traffic's mix can move), per model and app, in two suites: all
answers, and the answers to requests the classifier did not flag (where such an upstream's
abliterated answers land); and, where the secret judge runs (:mod:`proxy.judging`), a third: a secret
sample of answers in bands of a score the upstream cannot compute. docs/disposition.md has the
figures and the limits.

- :mod:`~proxy.disposition.apps`: which app a request came from;
- :mod:`~proxy.disposition.baseline`: the cells and the model's counts per cell;
- :mod:`~proxy.disposition.riskcusum`: the risk-adjusted CUSUM and its exact run lengths;
- :mod:`~proxy.disposition.watch`: the leader's statistics per model, their refresh and the store's rows.
"""

from proxy.disposition.watch import ALL, JUDGED, STRATA, UNFLAGGED, DispositionWatch

__all__ = ["ALL", "JUDGED", "STRATA", "UNFLAGGED", "DispositionWatch"]
