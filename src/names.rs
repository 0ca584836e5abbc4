//! The exposition's lexical rules: metric and label names (any UTF-8, or the classic Prometheus
//! set under legacy validation), how names are escaped for a scraper (Prometheus's escaping
//! schemes), and how label values and help text are escaped.

use std::sync::OnceLock;

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

/// Whether `name` is a valid metric name under the current validation: any non-empty UTF-8
/// string, or the classic set when [`legacy_validation`] says so (prometheus_client's rule).
pub fn is_valid_utf8_metric_name(name: &str) -> bool {
    !name.is_empty() && (!legacy_validation() || is_valid_metric_name(name))
}

/// Whether `name` may be declared as a label name under the current validation: any non-empty
/// UTF-8 string, or the classic set under legacy validation. Reserved `__` names are checked
/// by the caller.
pub fn is_valid_utf8_label_name(name: &str) -> bool {
    !name.is_empty() && (!legacy_validation() || is_valid_label_name(name))
}

static LEGACY_PROBE: OnceLock<fn() -> bool> = OnceLock::new();

/// Install the function that says whether legacy (classic character set) validation is on.
/// The bindings install one that reads prometheus_client's switch, so both libraries agree;
/// without one, names may be any UTF-8 (prometheus_client's default since 0.22).
pub fn set_legacy_probe(probe: fn() -> bool) {
    // A second installation keeps the first: there is one switch per process.
    let _ = LEGACY_PROBE.set(probe);
}

/// Whether names must follow the classic character set.
pub fn legacy_validation() -> bool {
    LEGACY_PROBE.get().is_some_and(|probe| probe())
}

/// How metric and label names outside the classic character set are written for a scraper:
/// Prometheus's escaping schemes (`escaping=` in the Accept and Content-Type headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Escaping {
    /// Names as they are; text formats quote those outside the classic set.
    AllowUtf8,
    /// Every character outside the classic set becomes `_` (names already classic are kept).
    #[default]
    Underscores,
    /// `.` becomes `_dot_`, `_` becomes `__`, any other character outside the set `__`.
    Dots,
    /// `U__` then `_` doubled and other characters outside the set as `_<hex code point>_`
    /// (names already classic are kept).
    Values,
}

impl Escaping {
    /// Parse the header value (`allow-utf-8`, `underscores`, `dots`, `values`); None otherwise.
    pub fn parse(s: &str) -> Option<Escaping> {
        Some(match s {
            "allow-utf-8" => Escaping::AllowUtf8,
            "underscores" => Escaping::Underscores,
            "dots" => Escaping::Dots,
            "values" => Escaping::Values,
            _ => return None,
        })
    }
}

fn is_legacy_rune(c: char, index: usize, colon: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (index > 0 && c.is_ascii_digit())
}

/// Append the name made of `parts` (a family name and a suffix) escaped by `scheme`; `metric`
/// allows `:` (metric names) where label names do not. Under [`Escaping::AllowUtf8`] the name
/// is written as it is (quoting, where a format needs it, is the caller's); under the others
/// the result always matches the classic character set.
pub fn escape_name(out: &mut String, parts: &[&str], scheme: Escaping, metric: bool) {
    let classic = || {
        let mut index = 0;
        parts.iter().flat_map(|p| p.chars()).all(|c| {
            let ok = is_legacy_rune(c, index, metric);
            index += 1;
            ok
        })
    };
    let chars = parts.iter().flat_map(|p| p.chars()).enumerate();
    match scheme {
        Escaping::AllowUtf8 => parts.iter().for_each(|p| out.push_str(p)),
        Escaping::Underscores | Escaping::Values if classic() => parts.iter().for_each(|p| out.push_str(p)),
        Escaping::Underscores => {
            for (i, c) in chars {
                out.push(if is_legacy_rune(c, i, metric) { c } else { '_' });
            }
        }
        Escaping::Dots => {
            for (i, c) in chars {
                match c {
                    '_' => out.push_str("__"),
                    '.' => out.push_str("_dot_"),
                    c if is_legacy_rune(c, i, metric) => out.push(c),
                    _ => out.push_str("__"),
                }
            }
        }
        Escaping::Values => {
            out.push_str("U__");
            for (i, c) in chars {
                match c {
                    '_' => out.push_str("__"),
                    c if is_legacy_rune(c, i, metric) => out.push(c),
                    c => {
                        out.push('_');
                        out.push_str(&format!("{:x}", c as u32));
                        out.push('_');
                    }
                }
            }
        }
    }
}

/// Whether the name made of `parts` must be quoted in a text format under `scheme`: only
/// [`Escaping::AllowUtf8`] leaves names outside the classic set as they are.
pub fn needs_quotes(parts: &[&str], scheme: Escaping, metric: bool) -> bool {
    if scheme != Escaping::AllowUtf8 {
        return false;
    }
    let mut index = 0;
    !parts.iter().flat_map(|p| p.chars()).all(|c| {
        let ok = is_legacy_rune(c, index, metric);
        index += 1;
        ok
    })
}

/// Append the name made of `parts` as a text format writes it under `scheme`: escaped, or for
/// [`Escaping::AllowUtf8`] quoted (with `\`, newline and `"` escaped) when outside the classic
/// set.
pub fn write_name(out: &mut String, parts: &[&str], scheme: Escaping, metric: bool) {
    if needs_quotes(parts, scheme, metric) {
        out.push('"');
        for p in parts {
            escape_label_value(out, p);
        }
        out.push('"');
    } else {
        escape_name(out, parts, scheme, metric);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(name: &str, scheme: Escaping, metric: bool) -> String {
        let mut s = String::new();
        write_name(&mut s, &[name], scheme, metric);
        s
    }

    #[test]
    fn schemes_as_prometheus_defines_them() {
        assert_eq!(esc("http.server_total", Escaping::Underscores, true), "http_server_total");
        assert_eq!(esc("a:b", Escaping::Underscores, true), "a:b");
        assert_eq!(esc("a:b", Escaping::Underscores, false), "a_b");
        assert_eq!(esc("1x", Escaping::Underscores, true), "_x");
        assert_eq!(esc("my.metric_x", Escaping::Dots, true), "my_dot_metric__x");
        assert_eq!(esc("plain", Escaping::Values, true), "plain");
        assert_eq!(esc("a.b_c", Escaping::Values, true), "U__a_2e_b__c");
        assert_eq!(esc("a.b", Escaping::AllowUtf8, true), "\"a.b\"");
        assert_eq!(esc("q\"", Escaping::AllowUtf8, false), "\"q\\\"\"");
        assert_eq!(esc("plain", Escaping::AllowUtf8, true), "plain");
    }

    #[test]
    fn suffix_counts_in_the_position_rule() {
        let mut s = String::new();
        escape_name(&mut s, &["", "9a"], Escaping::Underscores, true);
        assert_eq!(s, "_a");
    }
}
