//! Prometheus's protobuf exposition: length-delimited `io.prometheus.client.MetricFamily`
//! messages of client_model's `metrics.proto`, written by hand (no message structs are built:
//! each field goes straight into the output buffer).
//!
//! How our kinds map (as client_golang exposes them): a counter is a `COUNTER` family named
//! `<name>_total`; a gauge a `GAUGE`; a histogram a `HISTOGRAM` with its cumulative buckets
//! (`+Inf` included); a summary a `SUMMARY` with count and sum and no quantiles; an info metric a
//! `GAUGE` named `<name>_info` of value 1 carrying its pairs as labels; an enum a `GAUGE` with one
//! series per state (label `<name>=<state>`, value 1 for the current state, 0 for the others),
//! as text 0.0.4 exposes them. Creation times go in the `created_timestamp` fields, exemplars in
//! the counter's and the buckets' `exemplar` fields. Foreign families (plain samples) are
//! regrouped into the same messages by their OpenMetrics type; a type protobuf has no message
//! for (`unknown`) is `UNTYPED`.

use std::collections::{BTreeMap, HashMap};

use super::raw::{RawFamily, RawSample};
use super::{FamilySnapshot, Options};
use crate::desc::Kind;
use crate::exemplar::Exemplar;
use crate::names::{escape_name, Escaping};
use crate::native::Sparse;

/// Content type of this format (without an `escaping` parameter).
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// `MetricType` values.
mod metric_type {
    pub const COUNTER: u64 = 0;
    pub const GAUGE: u64 = 1;
    pub const SUMMARY: u64 = 2;
    pub const UNTYPED: u64 = 3;
    pub const HISTOGRAM: u64 = 4;
    pub const GAUGE_HISTOGRAM: u64 = 5;
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from((field << 3) | wire));
}

fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, VARINT);
    varint(out, v);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    key(out, field, LEN);
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Write what `build` writes, preceded by its length as a varint. `guess` bytes are reserved for
/// the length (then set to what it took): the body is moved only when the guess was wrong, so
/// a caller writing many messages of about one size (a family's series) passes the same guess
/// and moves almost nothing.
fn delimited_guess(out: &mut Vec<u8>, guess: &mut usize, build: impl FnOnce(&mut Vec<u8>)) {
    let reserved = (*guess).clamp(1, 10);
    let start = out.len();
    out.resize(start + reserved, 0);
    build(out);
    let len = out.len() - start - reserved;
    let n = varint_len(len as u64);
    if n != reserved {
        if n > reserved {
            out.resize(out.len() + n - reserved, 0);
        }
        out.copy_within(start + reserved..start + reserved + len, start + n);
        out.truncate(start + n + len);
    }
    let mut v = len as u64;
    for byte in &mut out[start..start + n] {
        *byte = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
    }
    out[start + n - 1] &= 0x7f;
    *guess = n;
}

/// Write what `build` writes, preceded by its length as a varint.
fn delimited(out: &mut Vec<u8>, build: impl FnOnce(&mut Vec<u8>)) {
    delimited_guess(out, &mut 1, build);
}

/// Write field `field` as an embedded message built by `build`.
fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LEN);
    delimited(out, build);
}

/// Write field `field` as an embedded message, with a length guess (see [`delimited_guess`]).
fn message_guess(out: &mut Vec<u8>, field: u32, guess: &mut usize, build: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LEN);
    delimited_guess(out, guess, build);
}

/// A count as protobuf's `uint64` (counts are whole numbers kept in f64 cells).
fn count(v: f64) -> u64 {
    // `as` saturates, and maps NaN to 0.
    v as u64
}

/// A `google.protobuf.Timestamp` from seconds since the epoch.
fn timestamp(out: &mut Vec<u8>, field: u32, seconds: f64) {
    if !seconds.is_finite() {
        return;
    }
    let whole = seconds.floor();
    let nanos = ((seconds - whole) * 1e9).round().min(999_999_999.0);
    message(out, field, |m| {
        if whole != 0.0 {
            // `int64`: negative values are sign-extended to ten bytes.
            uint(m, 1, whole as i64 as u64);
        }
        if nanos > 0.0 {
            uint(m, 2, nanos as u64);
        }
    });
}

fn label_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    message(out, 1, |m| {
        string(m, 1, name);
        string(m, 2, value);
    });
}

fn exemplar(out: &mut Vec<u8>, field: u32, e: &Exemplar) {
    message(out, field, |m| {
        // Exemplar label names are written as recorded, as the text formats do.
        for (k, v) in &e.labels {
            label_pair(m, k, v);
        }
        double(m, 2, e.value);
        timestamp(m, 3, e.timestamp);
    });
}

/// One classic bucket: its upper bound, cumulative count and exemplar.
pub(crate) struct Bucket<'a> {
    /// Inclusive upper bound.
    pub upper: f64,
    /// Observations at or below `upper`.
    pub cumulative: f64,
    /// The bucket's exemplar, if any.
    pub exemplar: Option<&'a Exemplar>,
}

/// A histogram's values, as its `Histogram` message carries them. Native (sparse) buckets go
/// here too when histograms get them: [`histogram`] is the one writer of the message.
pub(crate) struct HistogramData<'a, 'b> {
    /// Number of observations.
    pub count: f64,
    /// Sum of observations.
    pub sum: f64,
    /// Classic buckets, in increasing order of upper bound.
    pub buckets: &'b [Bucket<'a>],
    /// Creation time in seconds since the epoch, when it is to be written.
    pub created: Option<f64>,
    /// Native buckets and the zero threshold, for a histogram that has them.
    pub native: Option<(&'b Sparse, f64)>,
}

/// A signed varint field (`sint32`, `sint64`: zigzag).
fn sint(out: &mut Vec<u8>, field: u32, v: i64) {
    uint(out, field, ((v << 1) ^ (v >> 63)) as u64);
}

/// Write one sign's native buckets as spans (`span_field`) and count deltas (`delta_field`,
/// packed). Gaps of one or two empty buckets are written as zero counts within a span, which
/// is shorter than a new span (as the Go client does).
fn native_buckets(out: &mut Vec<u8>, span_field: u32, delta_field: u32, buckets: &BTreeMap<i32, f64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut next: Option<i32> = None;
    for (k, v) in buckets {
        let c = count(*v);
        if c == 0 {
            continue;
        }
        match next {
            Some(n) if *k - n <= 2 => {
                counts.resize(counts.len() + (*k - n) as usize, 0);
                if let Some(last) = spans.last_mut() {
                    last.1 += (*k - n) as u32 + 1;
                }
            }
            Some(n) => spans.push((*k - n, 1)),
            None => spans.push((*k, 1)),
        }
        counts.push(c);
        next = Some(*k + 1);
    }
    for (offset, length) in &spans {
        message(out, span_field, |m| {
            sint(m, 1, i64::from(*offset));
            uint(m, 2, u64::from(*length));
        });
    }
    if !counts.is_empty() {
        key(out, delta_field, LEN);
        delimited(out, |m| {
            let mut previous = 0i64;
            for c in &counts {
                let c = *c as i64;
                let d = c - previous;
                varint(m, ((d << 1) ^ (d >> 63)) as u64);
                previous = c;
            }
        });
    }
}

/// Write a `Metric.histogram` field (`guess`: see [`delimited_guess`]).
fn histogram(out: &mut Vec<u8>, h: &HistogramData<'_, '_>, guess: &mut usize) {
    message_guess(out, 7, guess, |m| {
        uint(m, 1, count(h.count));
        double(m, 2, h.sum);
        for b in h.buckets {
            message(m, 3, |bm| {
                uint(bm, 1, count(b.cumulative));
                double(bm, 2, b.upper);
                if let Some(e) = b.exemplar {
                    exemplar(bm, 3, e);
                }
            });
        }
        if let Some(created) = h.created {
            timestamp(m, 15, created);
        }
        if let Some((native, zero_threshold)) = h.native {
            sint(m, 5, i64::from(native.schema));
            double(m, 6, zero_threshold);
            uint(m, 7, count(native.zero));
            native_buckets(m, 9, 10, &native.negative);
            native_buckets(m, 12, 13, &native.positive);
            let empty = native.positive.values().chain(native.negative.values()).all(|v| count(*v) == 0);
            if zero_threshold == 0.0 && count(native.zero) == 0 && empty {
                // Without observations and with a zero threshold of 0, only a no-op span tells
                // a scraper this is a native histogram.
                message(m, 12, |span| {
                    sint(span, 1, 0);
                    uint(span, 2, 0);
                });
            }
            // A scraper that keeps the native histogram reads its exemplars here (they must have
            // a timestamp, which ours always do): the classic buckets', as client_golang sends them.
            for e in h.buckets.iter().filter_map(|b| b.exemplar) {
                if e.timestamp.is_finite() && e.timestamp > 0.0 {
                    exemplar(m, 16, e);
                }
            }
        }
    });
}

/// Write a `Metric.counter` field.
fn counter(out: &mut Vec<u8>, value: f64, ex: Option<&Exemplar>, created: Option<f64>) {
    message(out, 3, |m| {
        double(m, 1, value);
        if let Some(e) = ex {
            exemplar(m, 2, e);
        }
        if let Some(created) = created {
            timestamp(m, 3, created);
        }
    });
}

/// Write a `Metric.summary` field (count and sum; `quantiles` as (quantile, value)).
fn summary(out: &mut Vec<u8>, count_v: f64, sum: f64, quantiles: &[(f64, f64)], created: Option<f64>) {
    message(out, 4, |m| {
        uint(m, 1, count(count_v));
        double(m, 2, sum);
        for (q, v) in quantiles {
            message(m, 3, |qm| {
                double(qm, 1, *q);
                double(qm, 2, *v);
            });
        }
        if let Some(created) = created {
            timestamp(m, 4, created);
        }
    });
}

/// Write a `Metric.gauge` (field 2) or `Metric.untyped` (field 5).
fn single(out: &mut Vec<u8>, field: u32, value: f64) {
    message(out, field, |m| double(m, 1, value));
}

/// Write a `MetricFamily`'s name, help, type and unit.
fn family_header(out: &mut Vec<u8>, name: &str, help: &str, kind: u64, unit: &str) {
    string(out, 1, name);
    string(out, 2, help);
    uint(out, 3, kind);
    if !unit.is_empty() {
        string(out, 5, unit);
    }
}

fn escaped(parts: &[&str], escaping: Escaping, metric: bool) -> String {
    let mut s = String::new();
    escape_name(&mut s, parts, escaping, metric);
    s
}

/// Append `families` as length-delimited `MetricFamily` messages.
pub fn encode(out: &mut Vec<u8>, families: &[FamilySnapshot], opts: Options) {
    let esc = opts.escaping;
    let mut buckets: Vec<Bucket<'_>> = Vec::new();
    for fam in families {
        let desc = &fam.desc;
        let (suffix, kind) = match desc.kind {
            Kind::Counter => ("_total", metric_type::COUNTER),
            Kind::Gauge | Kind::Enum => ("", metric_type::GAUGE),
            Kind::Info => ("_info", metric_type::GAUGE),
            Kind::Histogram => ("", metric_type::HISTOGRAM),
            Kind::Summary => ("", metric_type::SUMMARY),
        };
        let name = escaped(&[&desc.name, suffix], esc, true);
        let label_names: Vec<String> = desc.labelnames.iter().map(|l| escaped(&[l], esc, false)).collect();
        // Label indices by written name: one sort per family, none per series.
        let mut order: Vec<usize> = (0..label_names.len()).collect();
        order.sort_by(|a, b| label_names[*a].cmp(&label_names[*b]));
        let state_label = escaped(&[&desc.name], esc, false);
        let want_created = opts.created;
        let (mut metric_guess, mut histogram_guess) = (1, 1);
        delimited(out, |f| {
            family_header(f, &name, &desc.help, kind, &desc.unit);
            for series in &fam.series {
                let at = |i: usize| series.values.get(i).copied().unwrap_or(0.0);
                let ex = |i: usize| series.exemplars.get(i).and_then(Option::as_ref);
                let created = want_created.then_some(series.created);
                let value = |i: usize| series.labels.get(i).map_or("", String::as_str);
                // An info's pairs and an enum's state label join the declared ones, sorted.
                let extra_names: Vec<String> =
                    series.info.iter().map(|(k, _)| escaped(&[k], esc, false)).collect();
                let mut merged: Vec<(&str, &str)> = Vec::new();
                if !extra_names.is_empty() || desc.kind == Kind::Enum {
                    merged.extend(order.iter().map(|i| (label_names[*i].as_str(), value(*i))));
                    merged.extend(
                        extra_names
                            .iter()
                            .map(String::as_str)
                            .zip(series.info.iter().map(|(_, v)| v.as_str())),
                    );
                    merged.sort();
                }
                let write_labels = |m: &mut Vec<u8>| {
                    if merged.is_empty() {
                        for i in &order {
                            label_pair(m, &label_names[*i], value(*i));
                        }
                    } else {
                        for (k, v) in &merged {
                            label_pair(m, k, v);
                        }
                    }
                };
                match desc.kind {
                    Kind::Enum => {
                        let current = at(0);
                        for (i, state) in desc.states.iter().enumerate() {
                            let mut with_state = merged.clone();
                            with_state.push((state_label.as_str(), state.as_str()));
                            with_state.sort();
                            message(f, 4, |m| {
                                for (k, v) in &with_state {
                                    label_pair(m, k, v);
                                }
                                single(m, 2, if i as f64 == current { 1.0 } else { 0.0 });
                            });
                        }
                    }
                    Kind::Counter => message(f, 4, |m| {
                        write_labels(m);
                        counter(m, at(0), ex(0), created);
                    }),
                    Kind::Gauge => message(f, 4, |m| {
                        write_labels(m);
                        single(m, 2, at(0));
                    }),
                    Kind::Info => message(f, 4, |m| {
                        write_labels(m);
                        single(m, 2, 1.0);
                    }),
                    Kind::Summary => message(f, 4, |m| {
                        write_labels(m);
                        summary(m, at(0), at(1), &[], created);
                    }),
                    Kind::Histogram => {
                        buckets.clear();
                        let mut acc = 0.0;
                        for (i, upper) in desc.buckets.iter().enumerate() {
                            acc += at(i);
                            buckets.push(Bucket { upper: *upper, cumulative: acc, exemplar: ex(i) });
                        }
                        let classic = desc.buckets.len() + 1;
                        let sparse = desc.native.as_ref().and_then(|p| {
                            let block = series.values.get(classic..)?;
                            Some((Sparse::from_cells(block, p)?, p.zero_threshold))
                        });
                        let data = HistogramData {
                            // With native buckets, the count is theirs (a scraper checks they add
                            // up to it); it is the classic one but while an observation is half
                            // written (a NaN is in neither).
                            count: sparse.as_ref().map_or(acc, |(s, _)| s.count()),
                            sum: at(desc.buckets.len()),
                            buckets: &buckets,
                            created,
                            native: sparse.as_ref().map(|(s, z)| (s, *z)),
                        };
                        message_guess(f, 4, &mut metric_guess, |m| {
                            write_labels(m);
                            histogram(m, &data, &mut histogram_guess);
                        });
                    }
                }
            }
        });
    }
}

/// The series of one foreign family that share a label set (`le` and `quantile` aside).
#[derive(Default)]
struct Group<'a> {
    labels: Vec<(&'a str, &'a str)>,
    value: Option<f64>,
    exemplar: Option<&'a Exemplar>,
    count: f64,
    sum: f64,
    created: Option<f64>,
    timestamp: Option<f64>,
    buckets: Vec<(f64, f64, Option<&'a Exemplar>)>,
    quantiles: Vec<(f64, f64)>,
}

fn parse_bound(s: &str) -> f64 {
    match s {
        "+Inf" | "Inf" | "inf" => f64::INFINITY,
        "-Inf" | "-inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

/// Append foreign `families` (plain samples, as prometheus_client's collectors give them) as
/// length-delimited `MetricFamily` messages.
pub fn encode_raw(out: &mut Vec<u8>, families: &[RawFamily], opts: Options) {
    let esc = opts.escaping;
    for fam in families {
        let (kind, value_suffix) = match fam.kind.as_str() {
            "counter" => (metric_type::COUNTER, "_total"),
            "gauge" | "stateset" => (metric_type::GAUGE, ""),
            "info" => (metric_type::GAUGE, "_info"),
            "histogram" => (metric_type::HISTOGRAM, ""),
            "gaugehistogram" => (metric_type::GAUGE_HISTOGRAM, ""),
            "summary" => (metric_type::SUMMARY, ""),
            _ => (metric_type::UNTYPED, ""),
        };
        let value_name = format!("{}{value_suffix}", fam.name);
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut index: HashMap<Vec<(&str, &str)>, usize> = HashMap::new();
        // Samples that fit no field of this family's message, exposed as untyped families of
        // their own so nothing a collector reports is lost.
        let mut stray: Vec<&RawSample> = Vec::new();
        for s in &fam.samples {
            let Some(suffix) = s.name.strip_prefix(fam.name.as_str()) else {
                stray.push(s);
                continue;
            };
            let special = match kind {
                metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM => "le",
                metric_type::SUMMARY => "quantile",
                _ => "",
            };
            let mut labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .filter(|(k, _)| k != special)
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            labels.sort();
            let special_value = s.labels.iter().find(|(k, _)| k == special).map(|(_, v)| v.as_str());
            let i = *index.entry(labels.clone()).or_insert_with(|| {
                groups.push(Group { labels, ..Group::default() });
                groups.len() - 1
            });
            let g = &mut groups[i];
            g.timestamp = g.timestamp.or(s.timestamp);
            let histo = matches!(kind, metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM);
            match (suffix, special_value) {
                ("_created", None) if kind != metric_type::GAUGE && kind != metric_type::UNTYPED => {
                    g.created = Some(s.value)
                }
                ("_bucket", Some(le)) if histo => {
                    g.buckets.push((parse_bound(le), s.value, s.exemplar.as_ref()))
                }
                ("_count" | "_gcount", None) if histo || kind == metric_type::SUMMARY => g.count = s.value,
                ("_sum" | "_gsum", None) if histo || kind == metric_type::SUMMARY => g.sum = s.value,
                ("", Some(q)) if kind == metric_type::SUMMARY => g.quantiles.push((parse_bound(q), s.value)),
                (suffix, None) if suffix == value_suffix && !histo && kind != metric_type::SUMMARY => {
                    g.value = Some(s.value);
                    g.exemplar = s.exemplar.as_ref();
                }
                _ => stray.push(s),
            }
        }
        let groups: Vec<Group<'_>> = groups
            .into_iter()
            .filter(|g| {
                !matches!(kind, metric_type::COUNTER | metric_type::GAUGE | metric_type::UNTYPED)
                    || g.value.is_some()
            })
            .collect();
        if !groups.is_empty() {
            let name = escaped(&[&value_name], esc, true);
            delimited(out, |f| {
                family_header(f, &name, &fam.help, kind, &fam.unit);
                for g in &groups {
                    message(f, 4, |m| {
                        let mut pairs: Vec<(String, &str)> =
                            g.labels.iter().map(|(k, v)| (escaped(&[k], esc, false), *v)).collect();
                        pairs.sort();
                        for (k, v) in &pairs {
                            label_pair(m, k, v);
                        }
                        let created = if opts.created { g.created } else { None };
                        match kind {
                            metric_type::COUNTER => counter(m, g.value.unwrap_or(0.0), g.exemplar, created),
                            metric_type::GAUGE => single(m, 2, g.value.unwrap_or(0.0)),
                            metric_type::SUMMARY => summary(m, g.count, g.sum, &g.quantiles, created),
                            metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM => {
                                let mut sorted = g.buckets.clone();
                                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                                let buckets: Vec<Bucket<'_>> = sorted
                                    .iter()
                                    .map(|(upper, cumulative, exemplar)| Bucket {
                                        upper: *upper,
                                        cumulative: *cumulative,
                                        exemplar: *exemplar,
                                    })
                                    .collect();
                                let data = HistogramData {
                                    count: g.count,
                                    sum: g.sum,
                                    buckets: &buckets,
                                    created,
                                    native: None,
                                };
                                histogram(m, &data, &mut 1);
                            }
                            _ => single(m, 5, g.value.unwrap_or(0.0)),
                        }
                        if let Some(ts) = g.timestamp {
                            // `int64` milliseconds, sign-extended when negative.
                            uint(m, 6, (ts * 1000.0) as i64 as u64);
                        }
                    });
                }
            });
        }
        for s in stray {
            delimited(out, |f| {
                family_header(f, &escaped(&[&s.name], esc, true), &fam.help, metric_type::UNTYPED, "");
                message(f, 4, |m| {
                    let mut pairs: Vec<(String, &str)> =
                        s.labels.iter().map(|(k, v)| (escaped(&[k], esc, false), v.as_str())).collect();
                    pairs.sort();
                    for (k, v) in &pairs {
                        label_pair(m, k, v);
                    }
                    single(m, 5, s.value);
                    if let Some(ts) = s.timestamp {
                        uint(m, 6, (ts * 1000.0) as i64 as u64);
                    }
                });
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::Desc;
    use crate::family::Family;

    /// A minimal protobuf reader for the tests: (field, wire value) pairs of one message.
    #[derive(Debug, Clone, PartialEq)]
    enum Value {
        Varint(u64),
        Fixed(f64),
        Bytes(Vec<u8>),
    }

    fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn fields(buf: &[u8]) -> Vec<(u32, Value)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let k = read_varint(buf, &mut pos);
            let (field, wire) = ((k >> 3) as u32, (k & 7) as u32);
            let v = match wire {
                VARINT => Value::Varint(read_varint(buf, &mut pos)),
                FIXED64 => {
                    let v = f64::from_le_bytes(buf[pos..pos + 8].try_into().unwrap());
                    pos += 8;
                    Value::Fixed(v)
                }
                LEN => {
                    let n = read_varint(buf, &mut pos) as usize;
                    pos += n;
                    Value::Bytes(buf[pos - n..pos].to_vec())
                }
                w => panic!("wire type {w}"),
            };
            out.push((field, v));
        }
        out
    }

    fn delimited_messages(buf: &[u8]) -> Vec<Vec<u8>> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let n = read_varint(buf, &mut pos) as usize;
            out.push(buf[pos..pos + n].to_vec());
            pos += n;
        }
        out
    }

    fn bytes_of(fields: &[(u32, Value)], field: u32) -> Vec<Vec<u8>> {
        fields
            .iter()
            .filter(|(f, _)| *f == field)
            .filter_map(|(_, v)| if let Value::Bytes(b) = v { Some(b.clone()) } else { None })
            .collect()
    }

    #[test]
    fn long_messages_get_multi_byte_lengths() {
        let mut out = Vec::new();
        delimited(&mut out, |m| string(m, 1, &"x".repeat(300)));
        let msgs = delimited_messages(&out);
        assert_eq!(msgs.len(), 1);
        assert_eq!(fields(&msgs[0]), vec![(1, Value::Bytes(vec![b'x'; 300]))]);
    }

    #[test]
    fn wrong_length_guesses_are_corrected_both_ways() {
        for (guess, len) in [(3, 5), (1, 200), (2, 20_000), (1, 0)] {
            let mut out = vec![7u8];
            let mut g = guess;
            delimited_guess(&mut out, &mut g, |m| m.extend(std::iter::repeat(b'y').take(len)));
            assert_eq!(g, varint_len(len as u64));
            assert_eq!(out[0], 7);
            assert_eq!(delimited_messages(&out[1..]), vec![vec![b'y'; len]]);
        }
    }

    #[test]
    fn histogram_family_has_cumulative_buckets_and_created() {
        let desc = Desc::new(Kind::Histogram, "h.t", "H", vec!["a".into()], "", "", "")
            .unwrap()
            .with_buckets(vec![1.0, 2.0])
            .unwrap();
        let fam = Family::new(desc);
        let s = fam.series(vec!["x".into()]).unwrap();
        s.observe_histogram(&fam.desc.buckets, 0.5);
        s.observe_histogram(&fam.desc.buckets, 1.5);
        s.observe_histogram(&fam.desc.buckets, 9.0);
        let mut out = Vec::new();
        encode(&mut out, &[fam.snapshot()], Options::default());
        let msgs = delimited_messages(&out);
        let family = fields(&msgs[0]);
        assert_eq!(family[0], (1, Value::Bytes(b"h_t".to_vec())));
        assert_eq!(family[2], (3, Value::Varint(metric_type::HISTOGRAM)));
        let metric = fields(&bytes_of(&family, 4)[0]);
        let label = fields(&bytes_of(&metric, 1)[0]);
        assert_eq!(label, vec![(1, Value::Bytes(b"a".to_vec())), (2, Value::Bytes(b"x".to_vec()))]);
        let h = fields(&bytes_of(&metric, 7)[0]);
        assert_eq!(h[0], (1, Value::Varint(3)));
        assert_eq!(h[1], (2, Value::Fixed(11.0)));
        let counts: Vec<Value> = bytes_of(&h, 3).iter().map(|b| fields(b)[0].1.clone()).collect();
        assert_eq!(counts, vec![Value::Varint(1), Value::Varint(2), Value::Varint(3)]);
        let created = fields(&bytes_of(&h, 15)[0]);
        assert!(matches!(created[0], (1, Value::Varint(secs)) if secs > 1_600_000_000));
    }

    #[test]
    fn native_histograms_carry_their_exemplars_in_the_histogram_too() {
        let desc = Desc::new(Kind::Histogram, "n", "", vec![], "", "", "")
            .unwrap()
            .with_buckets(vec![1.0])
            .unwrap()
            .with_native(1.1, 20, 0.0)
            .unwrap();
        let fam = Family::new(desc);
        let s = fam.series(vec![]).unwrap();
        s.observe_histogram(&fam.desc.buckets, 0.5);
        let ex = Exemplar::new(vec![("trace_id".into(), "t".into())], 0.5, 12.0, true).unwrap();
        fam.set_exemplar(&s, 0, 2, ex);
        let mut out = Vec::new();
        encode(&mut out, &[fam.snapshot()], Options::default());
        let family = fields(&delimited_messages(&out)[0]);
        let h = fields(&bytes_of(&fields(&bytes_of(&family, 4)[0]), 7)[0]);
        assert_eq!(h.iter().find(|(f, _)| *f == 5).map(|(_, v)| v.clone()), Some(Value::Varint(6)));
        let native = bytes_of(&h, 16);
        assert_eq!(native.len(), 1);
        assert_eq!(fields(&native[0])[1], (2, Value::Fixed(0.5)));
        // Still on its classic bucket as well.
        assert_eq!(bytes_of(&h, 3).iter().filter(|b| !bytes_of(&fields(b), 3).is_empty()).count(), 1);
    }

    #[test]
    fn utf8_names_are_kept_under_allow_utf8() {
        let desc = Desc::new(Kind::Counter, "a.b", "", vec![], "", "", "").unwrap();
        let fam = Family::new(desc);
        fam.series(vec![]).unwrap().inc(2.0);
        let mut out = Vec::new();
        let opts = Options { created: false, escaping: Escaping::AllowUtf8 };
        encode(&mut out, &[fam.snapshot()], opts);
        let family = fields(&delimited_messages(&out)[0]);
        assert_eq!(family[0], (1, Value::Bytes(b"a.b_total".to_vec())));
        let metric = fields(&bytes_of(&family, 4)[0]);
        let c = fields(&bytes_of(&metric, 3)[0]);
        assert_eq!(c, vec![(1, Value::Fixed(2.0))]);
    }

    #[test]
    fn negative_timestamps_are_sign_extended() {
        let mut out = Vec::new();
        timestamp(&mut out, 3, -1.5);
        let t = fields(&bytes_of(&fields(&out), 3)[0]);
        assert_eq!(t, vec![(1, Value::Varint(-2i64 as u64)), (2, Value::Varint(500_000_000))]);
    }
}
