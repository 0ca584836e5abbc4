"""Exemplars: kept per counter and histogram bucket, shown in OpenMetrics only."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.samples import Exemplar

from metrics.core import CollectorRegistry, Counter, Histogram, generate_latest, generate_latest_openmetrics


def test_counter_and_bucket_exemplars_in_openmetrics_only() -> None:
    """The newest exemplar of a counter and of each bucket is written after its sample."""
    registry = CollectorRegistry()
    c = Counter("req", "R.", registry=registry)
    h = Histogram("lat_seconds", "L.", buckets=(0.1, 1.0), registry=registry)
    c.inc(exemplar={"trace_id": "a" * 32})
    c.inc(2, exemplar={"trace_id": "b" * 32})
    h.observe(0.05, exemplar={"trace_id": "c1"})
    h.observe(0.5, exemplar={"trace_id": "c2"})
    h.observe(7)  # no exemplar: +Inf keeps none
    om = generate_latest_openmetrics(registry).decode()
    samples = {(s.name, s.labels.get("le")): s for fam in parse_openmetrics(om) for s in fam.samples}
    assert samples[("req_total", None)].exemplar.labels == {"trace_id": "b" * 32}
    assert samples[("req_total", None)].exemplar.value == 2.0
    assert samples[("lat_seconds_bucket", "0.1")].exemplar.labels == {"trace_id": "c1"}
    assert samples[("lat_seconds_bucket", "1.0")].exemplar.labels == {"trace_id": "c2"}
    assert samples[("lat_seconds_bucket", "+Inf")].exemplar is None
    assert " # " not in generate_latest(registry).decode()


def test_exemplar_output_matches_prometheus_client() -> None:
    """Our OpenMetrics line with an exemplar is prometheus_client's, byte for byte (timestamp aside)."""
    ours, theirs = CollectorRegistry(), prometheus_client.CollectorRegistry()
    for lib, reg in ((__import__("metrics"), ours), (prometheus_client, theirs)):
        lib.Counter("c", "C.", ["l"], registry=reg).labels("x").inc(3, exemplar={"b": "1", "a": 'q"'})
    line = [ln for ln in generate_latest_openmetrics(ours).decode().splitlines() if ln.startswith("c_total")]
    expected = [
        ln
        for ln in prometheus_client.openmetrics.exposition.generate_latest(theirs).decode().splitlines()
        if ln.startswith("c_total")
    ]
    assert line[0].rsplit(" ", 1)[0] == expected[0].rsplit(" ", 1)[0]


def test_collect_carries_exemplars_to_prometheus_client_tools() -> None:
    """`collect()` returns prometheus_client samples with their Exemplar."""
    registry = CollectorRegistry()
    Counter("e", "E.", registry=registry).inc(exemplar={"trace_id": "t"})
    sample = next(s for m in registry.collect() for s in m.samples if s.name == "e_total")
    assert isinstance(sample.exemplar, Exemplar)
    assert (sample.exemplar.labels, sample.exemplar.value) == ({"trace_id": "t"}, 1.0)


def test_foreign_collector_exemplars_are_carried() -> None:
    """A prometheus_client collector's exemplar reaches our OpenMetrics output."""
    theirs = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("f", "F.", registry=theirs).inc(exemplar={"trace_id": "zz"})
    registry = CollectorRegistry()
    registry.register(theirs)
    om = generate_latest_openmetrics(registry).decode()
    sample = next(s for fam in parse_openmetrics(om) for s in fam.samples if s.name == "f_total")
    assert sample.exemplar.labels == {"trace_id": "zz"}


@pytest.mark.parametrize(
    "labels",
    [{"trace_id": "x" * 121}, {"a" * 64: "b" * 65}],
)
def test_exemplar_over_128_characters_is_refused(labels: dict[str, str]) -> None:
    """Names and values hold at most 128 characters together; nothing is counted on refusal."""
    c = Counter("refused", "R.", registry=CollectorRegistry())
    with pytest.raises(ValueError, match="exceeding the limit of 128"):
        c.inc(exemplar=labels)
    assert c._get() == 0
