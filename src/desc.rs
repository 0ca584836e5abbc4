//! What is fixed about a metric family: its kind, name, help, labels, buckets or states, and
//! how its gauges merge across processes. The bottom layer every other module builds on.

use crate::error::{Error, Result};
use crate::names;
use crate::native::{self, NativeParams};

/// What kind of metric a family is; decides suffixes and cell layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter, exposed as `<name>_total`.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Bucketed distribution.
    Histogram,
    /// Count and sum of observations.
    Summary,
    /// Constant key-value pairs, exposed as `<name>_info`.
    Info,
    /// One of a fixed set of states (OpenMetrics `stateset`).
    Enum,
}

impl Kind {
    /// The OpenMetrics type name.
    pub fn openmetrics_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Info => "info",
            Kind::Enum => "stateset",
        }
    }

    /// How families of this kind are exposed (suffixes, text 0.0.4 names).
    pub fn exposure(self) -> names::Exposure {
        // Every kind's OpenMetrics name is in the table.
        names::exposure_of(self.openmetrics_name()).unwrap_or(names::Exposure {
            sample_suffixes: &[],
            text_suffix: "",
            text_type: "untyped",
        })
    }

    /// Label names a user may not declare on a family of this kind.
    pub fn reserved_label(self) -> Option<&'static str> {
        match self {
            Kind::Histogram => Some("le"),
            Kind::Summary => Some("quantile"),
            _ => None,
        }
    }
}

/// How a gauge's values from several processes combine (multiprocess mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaugeMode {
    /// One series per process, dead ones kept.
    All,
    /// One series per live process.
    LiveAll,
    /// Sum over live processes.
    LiveSum,
    /// Sum over all processes, dead ones included.
    Sum,
    /// Maximum over all processes.
    Max,
    /// Minimum over all processes.
    Min,
    /// The most recently written value.
    MostRecent,
    /// Maximum over live processes.
    LiveMax,
    /// Minimum over live processes.
    LiveMin,
    /// The most recently written value of a live process.
    LiveMostRecent,
    /// One series per live process, labelled `slot` with its slot number: bounded by the
    /// most processes alive at once, whatever the churn.
    LiveWorker,
}

impl GaugeMode {
    /// Parse prometheus_client's mode names.
    pub fn parse(s: &str) -> Result<GaugeMode> {
        Ok(match s {
            "all" => GaugeMode::All,
            "liveall" => GaugeMode::LiveAll,
            "livesum" => GaugeMode::LiveSum,
            "sum" => GaugeMode::Sum,
            "max" => GaugeMode::Max,
            "min" => GaugeMode::Min,
            "mostrecent" => GaugeMode::MostRecent,
            "livemax" => GaugeMode::LiveMax,
            "livemin" => GaugeMode::LiveMin,
            "livemostrecent" => GaugeMode::LiveMostRecent,
            "liveworker" => GaugeMode::LiveWorker,
            other => return Err(Error::Invalid(format!("Invalid multiprocess mode: {other}"))),
        })
    }
}

/// Everything fixed about a family: name, help, kind, label names, buckets or states.
#[derive(Clone, Debug)]
pub struct Desc {
    /// Family name (a counter's without `_total`).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Metric kind.
    pub kind: Kind,
    /// Unit, or empty.
    pub unit: String,
    /// Declared label names, in declaration order.
    pub labelnames: Vec<String>,
    /// Histogram upper bounds, the last one `+Inf`.
    pub buckets: Vec<f64>,
    /// Enum states.
    pub states: Vec<String>,
    /// How gauges merge across processes.
    pub gauge_mode: GaugeMode,
    /// A histogram's native (exponential) buckets, kept beside its classic ones; None: none.
    pub native: Option<NativeParams>,
}

impl Desc {
    /// Validate and build a description.
    pub fn new(
        kind: Kind,
        name: &str,
        help: &str,
        labelnames: Vec<String>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
    ) -> Result<Desc> {
        let full = full_name(kind, name, namespace, subsystem, unit)?;
        validate_labelnames(kind, &labelnames)?;
        Ok(Desc {
            name: full,
            help: help.to_owned(),
            kind,
            unit: unit.to_owned(),
            labelnames,
            buckets: Vec::new(),
            states: Vec::new(),
            gauge_mode: GaugeMode::All,
            native: None,
        })
    }

    /// Set histogram buckets: sorted, `+Inf` appended when missing, at least two.
    pub fn with_buckets(mut self, mut buckets: Vec<f64>) -> Result<Desc> {
        if buckets.iter().any(|b| b.is_nan()) || buckets.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::Invalid("Buckets not in sorted order".into()));
        }
        if buckets.last().is_some_and(|b| *b != f64::INFINITY) {
            buckets.push(f64::INFINITY);
        }
        if buckets.len() < 2 {
            return Err(Error::Invalid("Must have at least two buckets".into()));
        }
        self.buckets = buckets;
        Ok(self)
    }

    /// Give a histogram native buckets as well (see [`NativeParams::new`]).
    pub fn with_native(mut self, factor: f64, max_buckets: u32, zero_threshold: f64) -> Result<Desc> {
        if self.kind != Kind::Histogram {
            return Err(Error::Invalid("Only histograms have native buckets".into()));
        }
        self.native = Some(NativeParams::new(factor, max_buckets, zero_threshold)?);
        Ok(self)
    }

    /// Set enum states.
    pub fn with_states(mut self, states: Vec<String>) -> Result<Desc> {
        if self.labelnames.contains(&self.name) {
            return Err(Error::Invalid(format!("Overlapping labels for Enum metric: {}", self.name)));
        }
        if states.is_empty() {
            return Err(Error::Invalid(format!("No states provided for Enum metric: {}", self.name)));
        }
        self.states = states;
        Ok(self)
    }

    /// Whether gauge writes must also record when they happened (for `mostrecent` merging).
    pub fn tracks_time(&self) -> bool {
        self.kind == Kind::Gauge
            && matches!(self.gauge_mode, GaugeMode::MostRecent | GaugeMode::LiveMostRecent)
    }

    /// Number of f64 cells one series of this family uses.
    pub fn cell_count(&self) -> usize {
        match self.kind {
            // Value, and the time of the last write.
            Kind::Gauge if self.tracks_time() => 2,
            Kind::Counter | Kind::Gauge | Kind::Enum => 1,
            // One per bucket (not cumulative) plus the sum, then the native buckets' block.
            Kind::Histogram => self.buckets.len() + 1 + self.native.as_ref().map_or(0, native::cell_count),
            // Count and sum.
            Kind::Summary => 2,
            Kind::Info => 0,
        }
    }

    /// Sample names this family produces, for clash detection in a registry.
    pub fn sample_names(&self) -> Vec<String> {
        let mut out = vec![self.name.clone()];
        out.extend(self.kind.exposure().sample_suffixes.iter().map(|s| format!("{}{s}", self.name)));
        out
    }
}

/// Build the family name from its parts the way prometheus_client does.
fn full_name(kind: Kind, name: &str, namespace: &str, subsystem: &str, unit: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::Invalid("Metric name should not be empty".into()));
    }
    let mut full = String::new();
    for part in [namespace, subsystem] {
        if !part.is_empty() {
            full.push_str(part);
            full.push('_');
        }
    }
    full.push_str(name);
    if kind == Kind::Counter && full.ends_with("_total") {
        full.truncate(full.len() - "_total".len());
    }
    if !unit.is_empty() && !full.ends_with(&format!("_{unit}")) {
        full.push('_');
        full.push_str(unit);
    }
    if !unit.is_empty() && matches!(kind, Kind::Info | Kind::Enum) {
        return Err(Error::Invalid(format!("Metric name is of a type that cannot have a unit: {full}")));
    }
    if !names::is_valid_utf8_metric_name(&full) {
        return Err(Error::Invalid(format!("Invalid metric name: {full}")));
    }
    Ok(full)
}

/// Check declared label names.
fn validate_labelnames(kind: Kind, labelnames: &[String]) -> Result<()> {
    for (i, l) in labelnames.iter().enumerate() {
        if !names::is_valid_utf8_label_name(l) {
            return Err(Error::Invalid(format!("Invalid label metric name: {l}")));
        }
        if l.starts_with("__") || kind.reserved_label() == Some(l.as_str()) {
            return Err(Error::Invalid(format!("Reserved label metric name: {l}")));
        }
        if labelnames[..i].contains(l) {
            return Err(Error::Invalid(format!("Duplicate label metric name: {l}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_total_is_stripped_and_units_appended() {
        assert_eq!(full_name(Kind::Counter, "x_total", "", "", "").unwrap(), "x");
        assert_eq!(full_name(Kind::Gauge, "x_total", "", "", "").unwrap(), "x_total");
        assert_eq!(full_name(Kind::Gauge, "req", "ns", "sub", "bytes").unwrap(), "ns_sub_req_bytes");
        assert_eq!(full_name(Kind::Gauge, "req_bytes", "", "", "bytes").unwrap(), "req_bytes");
        assert!(full_name(Kind::Info, "i", "", "", "bytes").is_err());
    }

    #[test]
    fn bad_names_are_rejected() {
        // Without legacy validation (no probe installed), any non-empty UTF-8 name is valid.
        assert_eq!(full_name(Kind::Counter, "http.requests_total", "", "", "").unwrap(), "http.requests");
        assert!(full_name(Kind::Gauge, "1x", "", "", "").is_ok());
        assert!(full_name(Kind::Gauge, "", "", "", "").is_err());
        assert!(validate_labelnames(Kind::Gauge, &["__x".into()]).is_err());
        assert!(validate_labelnames(Kind::Gauge, &["".into()]).is_err());
        assert!(validate_labelnames(Kind::Histogram, &["le".into()]).is_err());
        assert!(validate_labelnames(Kind::Gauge, &["le".into()]).is_ok());
        assert!(validate_labelnames(Kind::Gauge, &["a:b".into(), "ünï".into()]).is_ok());
        assert!(validate_labelnames(Kind::Gauge, &["a".into(), "a".into()]).is_err());
    }
}
