"""The protobuf exposition, read back by Google's own protobuf runtime (the `protobuf` package).

The message classes are built at test time from a descriptor of client_model's `metrics.proto`
written out below field by field, so the bytes we serve are decoded by an implementation that
shares nothing with our encoder. A real Prometheus scraping them is in tests/e2e/.
"""

from __future__ import annotations

import gzip
import math
import time
from typing import Any

import pytest
from django.test import Client, override_settings
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, SummaryMetricFamily

from metrics import core
from metrics.core import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from metrics.negotiation import PROTOBUF_CONTENT_TYPE

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
# (message, [(field name, number, type, label, message type name)]), after client_model.
SCHEMA: list[tuple[str, list[tuple[str, int, int, int, str]]]] = [
    ("LabelPair", [("name", 1, F.TYPE_STRING, OPTIONAL, ""), ("value", 2, F.TYPE_STRING, OPTIONAL, "")]),
    ("Gauge", [("value", 1, F.TYPE_DOUBLE, OPTIONAL, "")]),
    ("Untyped", [("value", 1, F.TYPE_DOUBLE, OPTIONAL, "")]),
    (
        "Exemplar",
        [
            ("label", 1, F.TYPE_MESSAGE, REPEATED, "LabelPair"),
            ("value", 2, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("timestamp", 3, F.TYPE_MESSAGE, OPTIONAL, ".google.protobuf.Timestamp"),
        ],
    ),
    (
        "Counter",
        [
            ("value", 1, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("exemplar", 2, F.TYPE_MESSAGE, OPTIONAL, "Exemplar"),
            ("created_timestamp", 3, F.TYPE_MESSAGE, OPTIONAL, ".google.protobuf.Timestamp"),
        ],
    ),
    ("Quantile", [("quantile", 1, F.TYPE_DOUBLE, OPTIONAL, ""), ("value", 2, F.TYPE_DOUBLE, OPTIONAL, "")]),
    (
        "Summary",
        [
            ("sample_count", 1, F.TYPE_UINT64, OPTIONAL, ""),
            ("sample_sum", 2, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("quantile", 3, F.TYPE_MESSAGE, REPEATED, "Quantile"),
            ("created_timestamp", 4, F.TYPE_MESSAGE, OPTIONAL, ".google.protobuf.Timestamp"),
        ],
    ),
    (
        "Bucket",
        [
            ("cumulative_count", 1, F.TYPE_UINT64, OPTIONAL, ""),
            ("cumulative_count_float", 4, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("upper_bound", 2, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("exemplar", 3, F.TYPE_MESSAGE, OPTIONAL, "Exemplar"),
        ],
    ),
    ("BucketSpan", [("offset", 1, F.TYPE_SINT32, OPTIONAL, ""), ("length", 2, F.TYPE_UINT32, OPTIONAL, "")]),
    (
        "Histogram",
        [
            ("sample_count", 1, F.TYPE_UINT64, OPTIONAL, ""),
            ("sample_count_float", 4, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("sample_sum", 2, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("bucket", 3, F.TYPE_MESSAGE, REPEATED, "Bucket"),
            ("created_timestamp", 15, F.TYPE_MESSAGE, OPTIONAL, ".google.protobuf.Timestamp"),
            ("schema", 5, F.TYPE_SINT32, OPTIONAL, ""),
            ("zero_threshold", 6, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("zero_count", 7, F.TYPE_UINT64, OPTIONAL, ""),
            ("zero_count_float", 8, F.TYPE_DOUBLE, OPTIONAL, ""),
            ("negative_span", 9, F.TYPE_MESSAGE, REPEATED, "BucketSpan"),
            ("negative_delta", 10, F.TYPE_SINT64, REPEATED, ""),
            ("negative_count", 11, F.TYPE_DOUBLE, REPEATED, ""),
            ("positive_span", 12, F.TYPE_MESSAGE, REPEATED, "BucketSpan"),
            ("positive_delta", 13, F.TYPE_SINT64, REPEATED, ""),
            ("positive_count", 14, F.TYPE_DOUBLE, REPEATED, ""),
            ("exemplars", 16, F.TYPE_MESSAGE, REPEATED, "Exemplar"),
        ],
    ),
    (
        "Metric",
        [
            ("label", 1, F.TYPE_MESSAGE, REPEATED, "LabelPair"),
            ("gauge", 2, F.TYPE_MESSAGE, OPTIONAL, "Gauge"),
            ("counter", 3, F.TYPE_MESSAGE, OPTIONAL, "Counter"),
            ("summary", 4, F.TYPE_MESSAGE, OPTIONAL, "Summary"),
            ("untyped", 5, F.TYPE_MESSAGE, OPTIONAL, "Untyped"),
            ("histogram", 7, F.TYPE_MESSAGE, OPTIONAL, "Histogram"),
            ("timestamp_ms", 6, F.TYPE_INT64, OPTIONAL, ""),
        ],
    ),
    (
        "MetricFamily",
        [
            ("name", 1, F.TYPE_STRING, OPTIONAL, ""),
            ("help", 2, F.TYPE_STRING, OPTIONAL, ""),
            ("type", 3, F.TYPE_ENUM, OPTIONAL, "MetricType"),
            ("metric", 4, F.TYPE_MESSAGE, REPEATED, "Metric"),
            ("unit", 5, F.TYPE_STRING, OPTIONAL, ""),
        ],
    ),
]
TYPES = ["COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM", "GAUGE_HISTOGRAM"]


def _metric_family_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="test_metrics.proto",
        package="io.prometheus.client",
        syntax="proto2",
        dependency=["google/protobuf/timestamp.proto"],
    )
    enum = proto.enum_type.add(name="MetricType")
    for number, name in enumerate(TYPES):
        enum.value.add(name=name, number=number)
    for message, fields in SCHEMA:
        msg = proto.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            field = msg.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = (
                    type_name if type_name.startswith(".") else f".io.prometheus.client.{type_name}"
                )
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("io.prometheus.client.MetricFamily"))


MetricFamily = _metric_family_class()


def decode(payload: bytes) -> dict[str, Any]:
    """Return the MetricFamily messages of a length-delimited stream, by name."""
    families: dict[str, Any] = {}
    pos = 0
    while pos < len(payload):
        length = shift = 0
        while True:
            byte = payload[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        family = MetricFamily()
        family.ParseFromString(payload[pos : pos + length])
        pos += length
        assert family.name not in families, f"{family.name} sent twice"
        families[family.name] = family
    assert pos == len(payload)
    return families


def labels_of(metric: Any) -> dict[str, str]:
    return {pair.name: pair.value for pair in metric.label}


def seconds(ts: Any) -> float:
    return float(ts.seconds + ts.nanos / 1e9)


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def test_every_kind_decodes_with_its_values(reg: CollectorRegistry) -> None:
    """Counter, gauge, histogram, summary, info and enum arrive as client_golang would send them."""
    before = time.time()
    c = Counter("jobs", "Jobs done.", ["queue"], registry=reg)
    c.labels("fast").inc(3)
    Gauge("temp", "Temperature.", unit="celsius", registry=reg).set(-4.5)
    h = Histogram("latency", "Latency.", ["view"], buckets=[0.1, 1.0], registry=reg)
    for v in (0.05, 0.5, 0.7, 3.0):
        h.labels("home").observe(v)
    s = Summary("size", "Sizes.", registry=reg)
    s.observe(10)
    s.observe(5)
    Info("build", "Build.", registry=reg).info({"version": "1.2", "commit": "abc"})
    Enum("state", "State.", states=["up", "down"], registry=reg).state("down")

    families = decode(core.generate_latest_protobuf(reg))
    assert set(families) == {"jobs_total", "temp_celsius", "latency", "size", "build_info", "state"}

    jobs = families["jobs_total"]
    assert (TYPES[jobs.type], jobs.help) == ("COUNTER", "Jobs done.")
    (metric,) = jobs.metric
    assert labels_of(metric) == {"queue": "fast"} and metric.counter.value == 3
    assert before - 1 <= seconds(metric.counter.created_timestamp) <= time.time() + 1

    temp = families["temp_celsius"]
    assert (TYPES[temp.type], temp.unit, temp.metric[0].gauge.value) == ("GAUGE", "celsius", -4.5)

    latency = families["latency"]
    assert TYPES[latency.type] == "HISTOGRAM"
    hist = latency.metric[0].histogram
    assert labels_of(latency.metric[0]) == {"view": "home"}
    assert (hist.sample_count, hist.sample_sum) == (4, pytest.approx(4.25))
    assert [(b.upper_bound, b.cumulative_count) for b in hist.bucket] == [
        (0.1, 1),
        (1.0, 3),
        (float("inf"), 4),
    ]
    assert hist.HasField("created_timestamp")
    # Classic only: no native-histogram field is set, so Prometheus reads it as a classic histogram.
    assert not hist.HasField("schema") and not hist.positive_span and not hist.HasField("zero_threshold")

    size = families["size"].metric[0].summary
    assert (TYPES[families["size"].type], size.sample_count, size.sample_sum) == ("SUMMARY", 2, 15.0)
    assert not size.quantile and size.HasField("created_timestamp")

    build = families["build_info"]
    assert TYPES[build.type] == "GAUGE"
    assert (
        labels_of(build.metric[0]) == {"version": "1.2", "commit": "abc"} and build.metric[0].gauge.value == 1
    )

    state = families["state"]
    assert TYPES[state.type] == "GAUGE"
    assert {labels_of(m)["state"]: m.gauge.value for m in state.metric} == {"up": 0.0, "down": 1.0}


def test_exemplars_are_carried(reg: CollectorRegistry) -> None:
    """A counter's exemplar and a bucket's arrive with their labels, value and timestamp."""
    c = Counter("hits", "Hits.", registry=reg)
    c.inc(2, exemplar={"trace_id": "abc"})
    h = Histogram("dur", "Durations.", buckets=[1.0], registry=reg)
    h.observe(0.5, exemplar={"trace_id": "def"})
    families = decode(core.generate_latest_protobuf(reg))
    exemplar = families["hits_total"].metric[0].counter.exemplar
    assert labels_of(exemplar) == {"trace_id": "abc"} and exemplar.value == 2
    assert abs(seconds(exemplar.timestamp) - time.time()) < 60
    bucket = families["dur"].metric[0].histogram.bucket[0]
    assert labels_of(bucket.exemplar) == {"trace_id": "def"} and bucket.exemplar.value == 0.5
    assert not families["dur"].metric[0].histogram.bucket[1].HasField("exemplar")


def test_created_timestamps_follow_the_created_switch(reg: CollectorRegistry) -> None:
    """With `_created` samples disabled, no created_timestamp is sent either."""
    Counter("c", "C.", registry=reg).inc()
    core.disable_created_metrics()
    try:
        families = decode(core.generate_latest_protobuf(reg))
    finally:
        core.enable_created_metrics()
    assert not families["c_total"].metric[0].counter.HasField("created_timestamp")


def test_foreign_families_are_regrouped(reg: CollectorRegistry) -> None:
    """prometheus_client collectors' plain samples become counter, histogram and summary messages."""

    class Foreign:
        def collect(self) -> list[Any]:
            counter = CounterMetricFamily("ext", "External.", labels=["a"], created=100.25)
            counter.add_metric(["x"], 7, created=100.25)
            histogram = HistogramMetricFamily("ext_h", "External histogram.")
            histogram.add_metric([], buckets=[("1.0", 2), ("+Inf", 5)], sum_value=9)
            summary = SummaryMetricFamily("ext_s", "External summary.", labels=["q"])
            summary.add_metric(["v"], count_value=3, sum_value=6)
            return [counter, histogram, summary]

    reg.register(Foreign())
    families = decode(core.generate_latest_protobuf(reg))
    ext = families["ext_total"]
    assert TYPES[ext.type] == "COUNTER" and labels_of(ext.metric[0]) == {"a": "x"}
    assert ext.metric[0].counter.value == 7 and seconds(ext.metric[0].counter.created_timestamp) == 100.25
    hist = families["ext_h"].metric[0].histogram
    assert [(b.upper_bound, b.cumulative_count) for b in hist.bucket] == [(1.0, 2), (float("inf"), 5)]
    assert (hist.sample_count, hist.sample_sum) == (5, 9)
    summary = families["ext_s"].metric[0]
    assert labels_of(summary) == {"q": "v"} and (
        summary.summary.sample_count,
        summary.summary.sample_sum,
    ) == (3, 6)


def test_utf8_names_kept_or_escaped(reg: CollectorRegistry) -> None:
    """`allow-utf-8` keeps a dotted name as it is; by default it is escaped with underscores."""
    Counter("http.server.requests", "Requests.", ["http.method"], registry=reg).labels("GET").inc()
    kept = decode(core.generate_latest_protobuf(reg, escaping="allow-utf-8"))
    assert labels_of(kept["http.server.requests_total"].metric[0]) == {"http.method": "GET"}
    escaped = decode(core.generate_latest_protobuf(reg))
    assert labels_of(escaped["http_server_requests_total"].metric[0]) == {"http_method": "GET"}


PROMETHEUS_3 = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,"
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


@pytest.mark.django_db
def test_metrics_view_serves_protobuf_to_prometheus(sample: Any) -> None:
    """/metrics/ answers Prometheus 3's Accept header with protobuf, gzipped when allowed."""
    with override_settings(METRICS_ALLOWED_IPS="127.0.0.1"):
        client = Client(REMOTE_ADDR="127.0.0.1")
        client.get("/ok/")
        before = sample("django_http_requests_total", method="GET", view="ok", status="200")
        response = client.get("/metrics/", HTTP_ACCEPT=PROMETHEUS_3, HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert response["Content-Type"] == PROTOBUF_CONTENT_TYPE
    assert response["Content-Encoding"] == "gzip"
    families = decode(gzip.decompress(response.content))
    served = {
        tuple(sorted(labels_of(m).items())): m.counter.value
        for m in families["django_http_requests_total"].metric
    }
    assert served[(("method", "GET"), ("status", "200"), ("view", "ok"))] == before
    assert TYPES[families["django_http_request_duration_seconds"].type] == "HISTOGRAM"


def native_buckets(spans: Any, deltas: Any) -> dict[int, int]:
    """Return {bucket index: count} from client_model's spans and count deltas."""
    out: dict[int, int] = {}
    index, count, at = 0, 0, 0
    for i, span in enumerate(spans):
        index = span.offset if i == 0 else index + span.offset
        for _ in range(span.length):
            count += deltas[at]
            at += 1
            if count:
                out[index] = count
            index += 1
    assert at == len(deltas)
    return out


def expected_index(value: float, schema: int) -> int:
    """Return the index of the bucket holding `value` by its definition: 2^((k-1)/2^s) < v <= 2^(k/2^s)."""
    return math.ceil(math.log2(value) * 2**schema)


def test_native_buckets_decode_with_schema_spans_and_counts(reg: CollectorRegistry) -> None:
    """Schema 3 from a factor of 1.1, the zero bucket, both signs, and the classic buckets kept."""
    h = Histogram("native", "N.", buckets=[0.1, 1.0], native_histogram_bucket_factor=1.1, registry=reg)
    values = [0.01, 0.02, 0.021, 0.5, 1.5, 3.0, 3.0, 40.0, -2.0, 0.0]
    for v in values:
        h.observe(v)
    (metric,) = decode(core.generate_latest_protobuf(reg))["native"].metric
    hist = metric.histogram
    assert (hist.schema, hist.zero_threshold, hist.zero_count) == (3, 2.0**-128, 1)
    assert hist.sample_count == len(values)
    assert hist.sample_sum == pytest.approx(sum(values))
    positive: dict[int, int] = {}
    for v in values:
        if v > 0:
            positive[expected_index(v, 3)] = positive.get(expected_index(v, 3), 0) + 1
    assert native_buckets(hist.positive_span, hist.positive_delta) == positive
    assert native_buckets(hist.negative_span, hist.negative_delta) == {8: 1}
    # The classic buckets are as without native ones.
    assert [(b.upper_bound, b.cumulative_count) for b in hist.bucket] == [(0.1, 5), (1.0, 6), (math.inf, 10)]


def test_native_buckets_lower_their_resolution_at_the_limit(reg: CollectorRegistry) -> None:
    """Past the bucket limit, pairs of buckets merge (the schema drops) and nothing is lost."""
    h = Histogram(
        "coarse",
        "C.",
        native_histogram_bucket_factor=1.01,
        native_histogram_max_bucket_number=10,
        registry=reg,
    )
    values = [0.001 * 1.7**i for i in range(25)]
    for v in values:
        h.observe(v)
    hist = decode(core.generate_latest_protobuf(reg))["coarse"].metric[0].histogram
    buckets = native_buckets(hist.positive_span, hist.positive_delta)
    assert hist.schema < 6  # 1.01 asks for schema 6; 25 values over 0.001..300 do not fit 10 of those.
    assert max(buckets) - min(buckets) < 10
    want: dict[int, int] = {}
    for v in values:
        want[expected_index(v, hist.schema)] = want.get(expected_index(v, hist.schema), 0) + 1
    assert buckets == want
    assert sum(buckets.values()) == hist.sample_count == len(values)


def test_an_empty_native_histogram_is_still_native(reg: CollectorRegistry) -> None:
    """With a zero threshold of 0 and no observation, a no-op span marks it native (as client_golang)."""
    Histogram(
        "empty", "E.", native_histogram_bucket_factor=2, native_histogram_zero_threshold=0, registry=reg
    )
    Histogram("classic", "C.", registry=reg)
    families = decode(core.generate_latest_protobuf(reg))
    empty = families["empty"].metric[0].histogram
    assert (empty.schema, empty.zero_threshold, empty.zero_count) == (0, 0.0, 0)
    assert [(s.offset, s.length) for s in empty.positive_span] == [(0, 0)]
    classic = families["classic"].metric[0].histogram
    assert not classic.HasField("schema") and not classic.HasField("zero_threshold")
    assert len(classic.positive_span) == 0


def test_native_buckets_leave_the_text_formats_alone(reg: CollectorRegistry) -> None:
    """The text format shows a native histogram exactly as the same classic one."""
    other = CollectorRegistry()
    for r, factor in ((reg, 1.1), (other, None)):
        h = Histogram("same", "S.", ["a"], native_histogram_bucket_factor=factor, registry=r)
        for v in (0.003, 0.2, 7.0):
            h.labels("x").observe(v)

    def without_created(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines() if b"_created" not in line]

    assert without_created(core.generate_latest(reg)) == without_created(core.generate_latest(other))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"native_histogram_bucket_factor": 1.1, "native_histogram_max_bucket_number": 0},
        {"native_histogram_bucket_factor": math.nan},
        {"native_histogram_bucket_factor": 1.1, "native_histogram_zero_threshold": -1.0},
    ],
)
def test_bad_native_parameters_are_refused(reg: CollectorRegistry, kwargs: dict[str, Any]) -> None:
    """A limit of 0, a NaN factor or a negative zero threshold is a ValueError, as bad buckets are."""
    with pytest.raises(ValueError, match="native_histogram"):
        Histogram("bad", "B.", registry=reg, **kwargs)
