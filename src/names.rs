//! Metric and label name rules, the classic Prometheus ones that every server version accepts.

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

    /// The Prometheus text 0.0.4 type name.
    pub fn text_name(self) -> &'static str {
        match self {
            Kind::Info | Kind::Enum => "gauge",
            other => other.openmetrics_name(),
        }
    }

    /// Suffixes of the sample names a family of this kind produces (for clash detection).
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total", "_created"],
            Kind::Summary => &["_sum", "_count", "_created"],
            Kind::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Kind::Info => &["_info"],
            Kind::Gauge | Kind::Enum => &[],
        }
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

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.bytes();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.bytes();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Build the family name from its parts the way prometheus_client does.
pub fn full_name(
    kind: Kind,
    name: &str,
    namespace: &str,
    subsystem: &str,
    unit: &str,
) -> Result<String, String> {
    if name.is_empty() {
        return Err("Metric name should not be empty".into());
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
        return Err(format!("Metric name is of a type that cannot have a unit: {full}"));
    }
    if !is_valid_metric_name(&full) {
        return Err(format!("Invalid metric name: {full}"));
    }
    Ok(full)
}

/// Check declared label names.
pub fn validate_labelnames(kind: Kind, labelnames: &[String]) -> Result<(), String> {
    for (i, l) in labelnames.iter().enumerate() {
        if !is_valid_label_name(l) {
            return Err(format!("Invalid label metric name: {l}"));
        }
        if l.starts_with("__") || kind.reserved_label() == Some(l.as_str()) {
            return Err(format!("Reserved label metric name: {l}"));
        }
        if labelnames[..i].contains(l) {
            return Err(format!("Duplicate label metric name: {l}"));
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
        assert!(full_name(Kind::Gauge, "1x", "", "", "").is_err());
        assert!(full_name(Kind::Gauge, "a-b", "", "", "").is_err());
        assert!(full_name(Kind::Gauge, "", "", "", "").is_err());
        assert!(validate_labelnames(Kind::Gauge, &["__x".into()]).is_err());
        assert!(validate_labelnames(Kind::Histogram, &["le".into()]).is_err());
        assert!(validate_labelnames(Kind::Gauge, &["le".into()]).is_ok());
        assert!(validate_labelnames(Kind::Gauge, &["a:b".into()]).is_err());
        assert!(validate_labelnames(Kind::Gauge, &["a".into(), "a".into()]).is_err());
    }
}
