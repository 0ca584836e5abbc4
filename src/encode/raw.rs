//! Families given as plain samples (metrics from other collectors, such as prometheus_client's
//! registry), written with the same rules prometheus_client's own encoders apply to them.

use super::write_header;
use crate::exemplar::Exemplar;
use crate::float::write_go_float;
use crate::names::{
    escape_label_value, exposure_of, needs_quotes, write_name, Escaping, OPENMETRICS_ONLY_SUFFIXES,
};

/// One sample of a foreign family.
#[derive(Clone, Debug)]
pub struct RawSample {
    /// Full sample name.
    pub name: String,
    /// Label pairs, in any order (written sorted by name).
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
    /// Timestamp in seconds, if the collector set one.
    pub timestamp: Option<f64>,
    /// An exemplar (OpenMetrics only; a NaN timestamp is written as none).
    pub exemplar: Option<Exemplar>,
}

/// A foreign family.
#[derive(Clone, Debug)]
pub struct RawFamily {
    /// Family name.
    pub name: String,
    /// OpenMetrics type name (`counter`, `gauge`, `histogram`, `unknown`, ...).
    pub kind: String,
    /// Help text.
    pub help: String,
    /// Unit, or empty.
    pub unit: String,
    /// Samples.
    pub samples: Vec<RawSample>,
}

fn write_line(out: &mut String, s: &RawSample, openmetrics: bool, escaping: Escaping) {
    // A UTF-8 name left as it is goes inside the braces, quoted.
    let quoted = needs_quotes(&[&s.name], escaping, true);
    if quoted {
        out.push('{');
        write_name(out, &[&s.name], escaping, true);
    } else {
        write_name(out, &[&s.name], escaping, true);
    }
    if !s.labels.is_empty() {
        let mut pairs: Vec<&(String, String)> = s.labels.iter().collect();
        pairs.sort();
        out.push(if quoted { ',' } else { '{' });
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_name(out, &[k], escaping, false);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
    }
    if quoted || !s.labels.is_empty() {
        out.push('}');
    }
    out.push(' ');
    write_go_float(out, s.value);
    if let Some(ts) = s.timestamp {
        out.push(' ');
        if openmetrics {
            crate::float::write_py_repr(out, ts);
        } else {
            out.push_str(&format!("{}", (ts * 1000.0) as i64));
        }
    }
    if let (true, Some(exemplar)) = (openmetrics, &s.exemplar) {
        exemplar.write(out);
    }
    out.push('\n');
}

/// Append `families` in Prometheus text 0.0.4.
pub fn encode_text(out: &mut String, families: &[RawFamily], escaping: Escaping) {
    for fam in families {
        // A type outside OpenMetrics is written as given, as prometheus_client does.
        let (suffix, kind) =
            exposure_of(&fam.kind).map_or(("", fam.kind.as_str()), |e| (e.text_suffix, e.text_type));
        write_header(out, &fam.name, suffix, &fam.help, kind, "", false, escaping);
        // OpenMetrics-only samples go into gauge families of their own, sorted by suffix.
        let mut moved: Vec<(&str, String)> = Vec::new();
        for s in &fam.samples {
            let suffix = OPENMETRICS_ONLY_SUFFIXES.into_iter().find(|suf| {
                s.name.len() == fam.name.len() + suf.len()
                    && s.name.starts_with(&fam.name)
                    && s.name.ends_with(suf)
            });
            match suffix {
                Some(suf) => {
                    let mut line = String::new();
                    write_line(&mut line, s, false, escaping);
                    match moved.iter_mut().find(|(k, _)| *k == suf) {
                        Some((_, lines)) => lines.push_str(&line),
                        None => moved.push((suf, line)),
                    }
                }
                None => write_line(out, s, false, escaping),
            }
        }
        moved.sort_by(|a, b| a.0.cmp(b.0));
        for (suf, lines) in moved {
            write_header(out, &fam.name, suf, &fam.help, "gauge", "", false, escaping);
            out.push_str(&lines);
        }
    }
}

/// Append `families` in OpenMetrics 1.0 (without `# EOF`).
pub fn encode_openmetrics(out: &mut String, families: &[RawFamily], escaping: Escaping) {
    for fam in families {
        write_header(out, &fam.name, "", &fam.help, &fam.kind, &fam.unit, true, escaping);
        for s in &fam.samples {
            write_line(out, s, true, escaping);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_moves_to_its_own_gauge_in_text() {
        let fam = RawFamily {
            name: "c".into(),
            kind: "counter".into(),
            help: "h".into(),
            unit: String::new(),
            samples: vec![
                RawSample {
                    name: "c_total".into(),
                    labels: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
                    value: 1.0,
                    timestamp: None,
                    exemplar: None,
                },
                RawSample {
                    name: "c_created".into(),
                    labels: vec![],
                    value: 5.0,
                    timestamp: Some(1.5),
                    exemplar: None,
                },
            ],
        };
        let mut out = String::new();
        encode_text(&mut out, &[fam], Escaping::Underscores);
        assert_eq!(
            out,
            "# HELP c_total h\n# TYPE c_total counter\nc_total{a=\"2\",b=\"1\"} 1.0\n\
             # HELP c_created h\n# TYPE c_created gauge\nc_created 5.0 1500\n"
        );
    }
}
