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


def test_multiprocess_shows_the_newest_exemplar_of_every_process(tmp_path) -> None:
    """In multiprocess mode each bucket shows the newest exemplar, whichever process recorded it."""
    from tests.core.test_multiprocess import run

    out = run(
        tmp_path,
        """
        from metrics import generate_latest_openmetrics
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
        c = Counter("mp_ex", "C.")
        h = Histogram("mp_ex_seconds", "H.", buckets=(0.1, 1.0))
        r, w = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:
            c.inc(exemplar={"trace_id": "child"})
            h.observe(0.5, exemplar={"trace_id": "child-slow"})
            os.write(w, b"x")
            os.read(r2, 1)
            os._exit(0)
        os.read(r, 1)
        time.sleep(0.01)
        h.observe(0.05, exemplar={"trace_id": "parent-fast"})
        text = generate_latest_openmetrics().decode()
        os.write(w2, b"x")
        os.waitpid(pid, 0)
        found = {}
        for fam in parse(text):
            for s in fam.samples:
                if s.exemplar is not None and s.name.startswith("mp_ex"):
                    found[s.name + s.labels.get("le", "")] = s.exemplar.labels["trace_id"]
        emit(found)
        """,
    )
    assert out == {
        "mp_ex_total": "child",
        "mp_ex_seconds_bucket0.1": "parent-fast",
        "mp_ex_seconds_bucket1.0": "child-slow",
    }


def test_created_samples_can_be_switched_off_and_on() -> None:
    """disable_created_metrics() / enable_created_metrics(), as in prometheus_client."""
    import metrics

    registry = CollectorRegistry()
    Counter("switch", "S.", registry=registry).inc()
    try:
        metrics.disable_created_metrics()
        assert b"switch_created" not in generate_latest(registry)
        metrics.enable_created_metrics()
        assert b"switch_created" in generate_latest(registry)
    finally:
        metrics.core._use_created = None
