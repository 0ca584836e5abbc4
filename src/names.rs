//! The exposition's lexical rules: metric and label names (the classic Prometheus ones that every
//! server version accepts), and how label values and help text are escaped.

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

/// Append `s` as a label value: backslash, newline and double quote escaped.
pub fn escape_label_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Append `s` as help text: backslash and newline escaped, and double quote if `quote`.
pub fn escape_help(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// How a family of one OpenMetrics type is exposed: the suffixes of its sample names, the suffix
/// its name takes in text 0.0.4's `# HELP`/`# TYPE` lines, and its text 0.0.4 type name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exposure {
    /// Suffixes of the sample names besides the bare family name (for clash detection).
    pub sample_suffixes: &'static [&'static str],
    /// What text 0.0.4 appends to the family name in its headers (`_total`, `_info`).
    pub text_suffix: &'static str,
    /// The text 0.0.4 type name.
    pub text_type: &'static str,
}

/// The one table of suffixes: every OpenMetrics type prometheus_client knows, ours and those a
/// foreign collector may hand over.
const EXPOSURES: [(&str, Exposure); 8] = [
    ("counter", exposure(&["_total", "_created"], "_total", "counter")),
    ("gauge", exposure(&[], "", "gauge")),
    ("histogram", exposure(&["_bucket", "_sum", "_count", "_created"], "", "histogram")),
    ("gaugehistogram", exposure(&["_bucket", "_gsum", "_gcount"], "", "histogram")),
    ("summary", exposure(&["_sum", "_count", "_created"], "", "summary")),
    ("info", exposure(&["_info"], "_info", "gauge")),
    ("stateset", exposure(&[], "", "gauge")),
    ("unknown", exposure(&[], "", "untyped")),
];

const fn exposure(
    sample_suffixes: &'static [&'static str],
    text_suffix: &'static str,
    text_type: &'static str,
) -> Exposure {
    Exposure { sample_suffixes, text_suffix, text_type }
}

/// How a family of OpenMetrics type `type_name` is exposed; None for a type outside OpenMetrics.
pub fn exposure_of(type_name: &str) -> Option<Exposure> {
    EXPOSURES.iter().find(|(name, _)| *name == type_name).map(|(_, e)| *e)
}

/// Text 0.0.4's OpenMetrics-only samples (moved into gauge families of their own there).
pub const OPENMETRICS_ONLY_SUFFIXES: [&str; 3] = ["_created", "_gcount", "_gsum"];
