"""The model catalog's names learned from traffic, as the pipeline stage that feeds it sees them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from proxy.catalog import ModelCatalog
from proxy.metrics import Metrics
from proxy.settings import UpstreamConfig
from proxy.stages import LearnModelNames
from proxy.testing import exchange
from proxy.upstream import OpenAIUpstream


def test_a_request_routed_before_its_name_was_admitted_is_counted_under_the_name() -> None:
    """Two requests for ``gemma`` in a row, the second routed (under ``*``) before the first was judged:
    once the first admits the name, the second is counted under it too, not under the pattern (the
    race a clean-clone CI run hit in tests/integration/test_llamacpp.py)."""
    ups = [OpenAIUpstream(UpstreamConfig(name="u", base_url="http://x/v1", models=("*",)))]
    catalog = ModelCatalog(ups, traffic_after=1)
    stage = LearnModelNames(catalog, Metrics(CollectorRegistry()))
    first, second = (exchange(model="gemma", model_label="*") for _ in range(2))  # routed under "*"
    stage(first)
    stage(second)
    assert (first.model_label, second.model_label) == ("gemma", "gemma")
    made_up = exchange(model="made-up", model_label="*")
    catalog.traffic_after = 2
    stage(made_up)
    assert made_up.model_label == "*"  # still a candidate
