"""Our exposition equals prometheus_client's for the same metrics and values."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess

import prometheus_client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

import metrics
from metrics import core

CREATED = re.compile(rb"^(\w+_created(?:\{.*\})?) \S+$", re.M)


def normalise(payload: bytes) -> bytes:
    """Blank out `_created` timestamps, which differ between two libraries by construction."""
    return CREATED.sub(rb"\1 <created>", payload)


class Twin:
    """The same metric built in both libraries, fed the same operations."""

    def __init__(self) -> None:
        self.ours = core.CollectorRegistry()
        self.theirs = prometheus_client.CollectorRegistry()
        self.pairs: list[tuple[object, object]] = []

    def make(self, kind: str, *args: object, **kwargs: object) -> tuple[object, object]:
        a = getattr(metrics, kind)(*args, registry=self.ours, **kwargs)
        b = getattr(prometheus_client, kind)(*args, registry=self.theirs, **kwargs)
        return a, b

    def texts(self) -> tuple[bytes, bytes]:
        return core.generate_latest(self.ours), prometheus_client.generate_latest(self.theirs)

    def openmetrics(self) -> tuple[bytes, bytes]:
        from prometheus_client.openmetrics.exposition import generate_latest as om_latest

        return core.generate_latest_openmetrics(self.ours), om_latest(self.theirs)


def both(pair: tuple[object, object], method: str, *args: object) -> None:
    for m in pair:
        getattr(m, method)(*args)


def both_child(pair: tuple[object, object], labels: tuple[str, ...], method: str, *args: object) -> None:
    for m in pair:
        getattr(m.labels(*labels), method)(*args)


def build_fixed_twin(negative_buckets: bool = True) -> Twin:
    t = Twin()
    c = t.make("Counter", "http_total", 'Requests "quoted"\nwith \\ newline', ["method", "code"])
    both_child(c, ("GET", "200"), "inc", 3)
    both_child(c, ('we"ird\\va\nlue', "ünï©ødé"), "inc", 1.5)
    g = t.make("Gauge", "temp_celsius", "Temperature.", unit="celsius")
    both(g, "set", -1234567.891)
    g2 = t.make("Gauge", "big", "Big numbers.", ["k"])
    for i, v in enumerate([1e16, 1e-5, 123456789.0, float("inf"), float("-inf"), 0.1 + 0.2, 1e300, -0.0]):
        both_child(g2, (str(i),), "set", v)
    h = t.make("Histogram", "lat_seconds", "Latency.", ["view"])
    for v in (0.001, 0.2, 3, 99):
        both_child(h, ("home",), "observe", v)
    if negative_buckets:
        # No `_sum` then, which prometheus_client's own OpenMetrics parser refuses to read back.
        h2 = t.make("Histogram", "neg", "Negative buckets.", buckets=[-5, 0, 5])
        both(h2, "observe", -1)
    s = t.make("Summary", "payload_bytes", "Payload.", unit="bytes")
    both(s, "observe", 512)
    i = t.make("Info", "build", "Build info.", ["env"])
    both_child(i, ("prod",), "info", {"version": "1.0", "commit": "abc"})
    e = t.make("Enum", "phase", "Phase.", states=["a", "b", "c"])
    both(e, "state", "b")
    t.make("Counter", "unused", "Labelled, no children.", ["x"])
    return t


def test_text_format_is_byte_identical() -> None:
    """Prometheus text 0.0.4 output equals prometheus_client's, byte for byte."""
    ours, theirs = build_fixed_twin().texts()
    assert normalise(ours) == normalise(theirs)


def test_openmetrics_format_is_byte_identical() -> None:
    """OpenMetrics 1.0 output equals prometheus_client's, byte for byte, ending in # EOF."""
    ours, theirs = build_fixed_twin().openmetrics()
    assert ours.endswith(b"# EOF\n")
    assert normalise(ours) == normalise(theirs)


def test_both_formats_parse_to_the_same_families() -> None:
    """prometheus_client's parsers read our output as the same families and samples."""
    twin = build_fixed_twin(negative_buckets=False)
    for (ours, theirs), parse in ((twin.texts(), text_parse), (twin.openmetrics(), om_parse)):
        a = list(parse(normalise(ours).replace(b"<created>", b"0").decode()))
        b = list(parse(normalise(theirs).replace(b"<created>", b"0").decode()))
        assert a and a == b


def test_promtool_accepts_the_output() -> None:
    """`promtool check metrics` reports nothing on our text output."""
    assert shutil.which("promtool"), "install the Debian package 'prometheus' (make system-deps)"
    ours, _ = build_fixed_twin().texts()
    res = subprocess.run(["promtool", "check", "metrics"], input=ours, capture_output=True)
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()
    assert res.stdout.strip() == b"" and res.stderr.strip() == b""


def test_gzip_round_trips() -> None:
    """The gzip variant decompresses to the plain output."""
    twin = build_fixed_twin()
    plain = twin.ours.encode()
    assert gzip.decompress(twin.ours.encode(gzip=True)) == plain


def test_foreign_prometheus_client_metrics_are_included() -> None:
    """exposition() includes what is registered in prometheus_client.REGISTRY."""
    foreign = prometheus_client.Counter("foreign_lib_events", "From a library.")
    try:
        foreign.inc(4)
        text = core.exposition().decode()
        assert "foreign_lib_events_total 4.0" in text
        om = core.exposition(openmetrics=True).decode()
        assert om.count("# EOF") == 1 and om.endswith("# EOF\n")
        assert "foreign_lib_events_total 4.0" in om
    finally:
        prometheus_client.REGISTRY.unregister(foreign)


def test_custom_collector_in_our_registry() -> None:
    """A prometheus_client-style custom collector registered in our registry is exposed."""
    from prometheus_client.core import GaugeMetricFamily

    class Custom:
        def collect(self):
            g = GaugeMetricFamily("custom_value", "Custom.", labels=["k"])
            g.add_metric(["v"], 9.5)
            yield g

        def describe(self):
            return [GaugeMetricFamily("custom_value", "Custom.")]

    reg = core.CollectorRegistry()
    reg.register(Custom())
    assert b'custom_value{k="v"} 9.5' in reg.encode()
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.Gauge("custom_value", "Clash.", registry=reg)


def test_our_registry_feeds_prometheus_client_tools() -> None:
    """PrometheusCollector hands our metrics to prometheus_client's own encoder."""
    reg = core.CollectorRegistry()
    metrics.Counter("adapted", "A.", ["x"], registry=reg).labels("1").inc(2)
    theirs = prometheus_client.CollectorRegistry()
    theirs.register(core.PrometheusCollector(reg))
    assert b'adapted_total{x="1"} 2.0' in prometheus_client.generate_latest(theirs)


label_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),
    max_size=12,
)
label_name = st.from_regex(r"\A[a-z][a-z0-9_]{0,6}\Z", fullmatch=True)
finite_or_special = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["Counter", "Gauge", "Histogram", "Summary"]),
    help_text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    names=st.lists(label_name, min_size=0, max_size=3, unique=True),
    data=st.data(),
)
def test_random_families_match_prometheus_client(kind, help_text, names, data) -> None:
    """Random families, label values and values encode exactly as prometheus_client does."""
    twin = Twin()
    pair = twin.make(kind, "fam", help_text, names)
    for _ in range(data.draw(st.integers(0, 4))):
        labels = tuple(data.draw(label_text) for _ in names)
        if kind == "Counter":
            amount = data.draw(st.floats(min_value=0, allow_infinity=True, allow_nan=False))
            method = "inc"
        elif kind == "Gauge":
            amount, method = data.draw(finite_or_special), "set"
        else:
            amount, method = data.draw(st.floats(allow_nan=False, allow_infinity=False)), "observe"
        for m in pair:
            target = m.labels(*labels) if names else m
            getattr(target, method)(amount)
    ours, theirs = twin.texts()
    assert normalise(ours) == normalise(theirs)
    ours, theirs = twin.openmetrics()
    assert normalise(ours) == normalise(theirs)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_formatting_matches(v: float) -> None:
    """Every float is written as prometheus_client's floatToGoString writes it."""
    from prometheus_client.utils import floatToGoString

    assert metrics._core.float_to_go_string(v) == floatToGoString(v)
