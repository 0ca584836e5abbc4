//! Exemplars: a labelled sample (a trace id) attached to a counter or a histogram bucket.

use crate::error::{Error, Result};
use crate::float;
use crate::names::escape_label_value;
use crate::names::is_valid_label_name;

/// The most characters (Unicode code points) an exemplar's label names and values may hold in
/// all, as OpenMetrics and prometheus_client require.
pub const MAX_RUNES: usize = 128;

/// One exemplar: its labels, the observed value, and when it was recorded (Unix seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// Label pairs, sorted by name.
    pub labels: Vec<(String, String)>,
    /// The value observed (or added) with it.
    pub value: f64,
    /// Seconds since the epoch (NaN: none, for a foreign exemplar without one).
    pub timestamp: f64,
}

impl Exemplar {
    /// Validate `labels` and build an exemplar. With `legacy`, names must match
    /// `[a-zA-Z_][a-zA-Z0-9_]*` (prometheus_client's legacy validation); otherwise any non-empty
    /// name is accepted. Names and values together hold at most [`MAX_RUNES`] characters.
    pub fn new(
        mut labels: Vec<(String, String)>,
        value: f64,
        timestamp: f64,
        legacy: bool,
    ) -> Result<Exemplar> {
        let mut runes = 0;
        for (name, text) in &labels {
            if name.is_empty() || (legacy && !is_valid_label_name(name)) {
                return Err(Error::Invalid(format!("Invalid label metric name: {name}")));
            }
            runes += name.chars().count() + text.chars().count();
        }
        if runes > MAX_RUNES {
            return Err(Error::Invalid(format!(
                "Exemplar labels have {runes} UTF-8 characters, exceeding the limit of {MAX_RUNES}"
            )));
        }
        labels.sort();
        Ok(Exemplar { labels, value, timestamp })
    }

    /// The exemplar of a trace: `{trace_id="..."}` with `value`, recorded at `timestamp`.
    pub fn of_trace(trace_id: &str, value: f64, timestamp: f64) -> Exemplar {
        Exemplar { labels: vec![("trace_id".to_owned(), trace_id.to_owned())], value, timestamp }
    }

    /// Append ` # {labels} value timestamp`, as OpenMetrics writes an exemplar after a sample.
    pub fn write(&self, out: &mut String) {
        out.push_str(" # {");
        for (i, (name, text)) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push_str("=\"");
            escape_label_value(out, text);
            out.push('"');
        }
        out.push_str("} ");
        float::write_go_float(out, self.value);
        if !self.timestamp.is_nan() {
            out.push(' ');
            float::write_py_repr(out, self.timestamp);
        }
    }
}

/// Return the trace id of a valid W3C `traceparent` header value (`version-traceid-parentid-flags`,
/// lower-case hex; version `ff` and all-zero ids are invalid), else None.
pub fn trace_id_from_traceparent(header: &str) -> Option<&str> {
    let header = header.trim_matches(|c: char| c.is_ascii_whitespace());
    let mut parts = header.split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |part: &str| part.bytes().all(|b| b == b'0');
    let valid = parts.next().is_none()
        && hex(version, 2)
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && version != "ff"
        && !zero(trace_id)
        && !zero(parent_id);
    valid.then_some(trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn limits_and_names() {
        let long = "x".repeat(121);
        assert!(Exemplar::new(pairs(&[("trace_id", &long)]), 1.0, 0.0, false).is_err());
        assert!(Exemplar::new(pairs(&[("trace_id", &long[..120])]), 1.0, 0.0, false).is_ok());
        assert!(Exemplar::new(pairs(&[("t", &"平".repeat(127))]), 1.0, 0.0, false).is_ok());
        assert!(Exemplar::new(pairs(&[(":o)", "smile")]), 1.0, 0.0, true).is_err());
        assert!(Exemplar::new(pairs(&[(":o)", "smile")]), 1.0, 0.0, false).is_ok());
    }

    #[test]
    fn traceparent() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let header = format!("00-{trace}-00f067aa0ba902b7-01");
        assert_eq!(trace_id_from_traceparent(&header), Some(trace));
        assert_eq!(trace_id_from_traceparent(&format!(" {header}\t")), Some(trace));
        for bad in [
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{trace}-{}-01", "0".repeat(16)),
            format!("ff-{trace}-00f067aa0ba902b7-01"),
            header.to_uppercase(),
            format!("{header}-00"),
            "00-abc-def-01".to_owned(),
            String::new(),
        ] {
            assert_eq!(trace_id_from_traceparent(&bad), None, "{bad}");
        }
    }

    #[test]
    fn written_sorted_and_escaped() {
        let ex = Exemplar::new(pairs(&[("b", "1"), ("a", "q\"")]), 0.5, 12.25, true).unwrap();
        let mut out = String::new();
        ex.write(&mut out);
        assert_eq!(out, " # {a=\"q\\\"\",b=\"1\"} 0.5 12.25");
    }
}
