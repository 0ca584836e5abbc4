//! Exposition: snapshots of families, and the text formats they are written in.

pub mod openmetrics;
pub mod raw;
pub mod text;

use std::io::Write;

use crate::desc::{Desc, Kind};
use crate::exemplar::Exemplar;
use crate::float;
use crate::names::{escape_help, escape_label_value};
pub use crate::snapshot::{FamilySnapshot, SeriesSnapshot};

/// Options shared by both encoders.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Emit `_created` samples for counters, histograms and summaries.
    pub created: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { created: true }
    }
}

/// Append a family's `# HELP` and `# TYPE` lines (name plus `suffix`), and its `# UNIT` line when
/// `unit` is not empty. OpenMetrics escapes double quotes in help text; text 0.0.4 does not.
pub(crate) fn write_header(
    out: &mut String,
    name: &str,
    suffix: &str,
    help: &str,
    type_name: &str,
    unit: &str,
    openmetrics: bool,
) {
    for (keyword, value) in [("HELP", None), ("TYPE", Some(type_name)), ("UNIT", Some(unit))] {
        if keyword == "UNIT" && unit.is_empty() {
            continue;
        }
        out.push_str("# ");
        out.push_str(keyword);
        out.push(' ');
        out.push_str(name);
        out.push_str(suffix);
        out.push(' ');
        match value {
            Some(v) => out.push_str(v),
            None => escape_help(out, help, openmetrics),
        }
        out.push('\n');
    }
}

/// The labels of one series, rendered once and sorted by name, split around the slot where an
/// extra label (`le`, an enum's own name) goes.
pub(crate) struct RenderedLabels {
    before: String,
    after: String,
}

/// One sample line: the suffix after the family name, an optional extra label, and its value.
pub(crate) struct Sample<'a> {
    pub suffix: &'a str,
    pub extra: Option<&'a str>,
    pub value: f64,
    /// Written by OpenMetrics only (text 0.0.4 has no exemplars).
    pub exemplar: Option<&'a Exemplar>,
}

/// Per-family rendering state shared by the encoders.
pub(crate) struct FamilyRender<'a> {
    pub desc: &'a Desc,
    /// Label indices in sorted-name order.
    order: Vec<usize>,
    /// The extra label's name, if this kind has one.
    extra_name: Option<&'a str>,
    /// Pre-formatted `le` values.
    pub le: Vec<String>,
}

impl<'a> FamilyRender<'a> {
    pub fn new(desc: &'a Desc) -> FamilyRender<'a> {
        let mut order: Vec<usize> = (0..desc.labelnames.len()).collect();
        order.sort_by(|a, b| desc.labelnames[*a].cmp(&desc.labelnames[*b]));
        let extra_name = match desc.kind {
            Kind::Histogram => Some("le"),
            Kind::Enum => Some(desc.name.as_str()),
            _ => None,
        };
        let le = desc
            .buckets
            .iter()
            .map(|b| {
                let mut s = String::new();
                float::write_go_float(&mut s, *b);
                s
            })
            .collect();
        FamilyRender { desc, order, extra_name, le }
    }

    /// Render the labels of `series`, sorted by name.
    pub fn labels(&self, series: &SeriesSnapshot) -> RenderedLabels {
        let mut pairs: Vec<(&str, &str)> = self
            .order
            .iter()
            .map(|i| {
                (self.desc.labelnames[*i].as_str(), series.labels.get(*i).map(String::as_str).unwrap_or(""))
            })
            .collect();
        if !series.info.is_empty() {
            pairs.extend(series.info.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            pairs.sort();
        }
        let mut before = String::new();
        let mut after = String::new();
        for (k, v) in pairs {
            let dst = match self.extra_name {
                Some(extra) if k > extra => &mut after,
                _ => &mut before,
            };
            if !dst.is_empty() {
                dst.push(',');
            }
            dst.push_str(k);
            dst.push_str("=\"");
            escape_label_value(dst, v);
            dst.push('"');
        }
        RenderedLabels { before, after }
    }

    /// Append one sample line, with its exemplar when `exemplars` (OpenMetrics).
    pub fn write_sample(
        &self,
        out: &mut String,
        labels: &RenderedLabels,
        sample: &Sample<'_>,
        exemplars: bool,
    ) {
        out.push_str(&self.desc.name);
        out.push_str(sample.suffix);
        let has_extra = sample.extra.is_some();
        if has_extra || !labels.before.is_empty() || !labels.after.is_empty() {
            out.push('{');
            out.push_str(&labels.before);
            if let (Some(value), Some(name)) = (sample.extra, self.extra_name) {
                if !labels.before.is_empty() {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                escape_label_value(out, value);
                out.push('"');
            }
            if !labels.after.is_empty() {
                if has_extra || !labels.before.is_empty() {
                    out.push(',');
                }
                out.push_str(&labels.after);
            }
            out.push('}');
        }
        out.push(' ');
        float::write_go_float(out, sample.value);
        if let (true, Some(exemplar)) = (exemplars, sample.exemplar) {
            exemplar.write(out);
        }
        out.push('\n');
    }

    /// The samples of one series, without `_created`, in prometheus_client's order.
    pub fn samples<'s>(&'s self, series: &'s SeriesSnapshot) -> Vec<Sample<'s>> {
        let v = &series.values;
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        let exemplar = |i: usize| series.exemplars.get(i).and_then(Option::as_ref);
        let plain = |suffix, value| Sample { suffix, extra: None, value, exemplar: None };
        match self.desc.kind {
            Kind::Counter => {
                vec![Sample { suffix: "_total", extra: None, value: at(0), exemplar: exemplar(0) }]
            }
            Kind::Gauge => vec![plain("", at(0))],
            Kind::Summary => vec![plain("_count", at(0)), plain("_sum", at(1))],
            Kind::Info => vec![plain("_info", 1.0)],
            Kind::Enum => {
                let current = at(0);
                self.desc
                    .states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Sample {
                        suffix: "",
                        extra: Some(s.as_str()),
                        value: if i as f64 == current { 1.0 } else { 0.0 },
                        exemplar: None,
                    })
                    .collect()
            }
            Kind::Histogram => {
                let n = self.desc.buckets.len();
                let mut out = Vec::with_capacity(n + 2);
                let mut acc = 0.0;
                for (i, le) in self.le.iter().enumerate() {
                    acc += at(i);
                    out.push(Sample {
                        suffix: "_bucket",
                        extra: Some(le.as_str()),
                        value: acc,
                        exemplar: exemplar(i),
                    });
                }
                out.push(plain("_count", acc));
                if self.desc.buckets.first().is_some_and(|b| *b >= 0.0) {
                    out.push(plain("_sum", at(n)));
                }
                out
            }
        }
    }

    /// The name of the extra label (`le`, an enum's own name), if this kind has one.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub fn extra_name(&self) -> Option<&'a str> {
        self.extra_name
    }

    /// Whether this kind has a `_created` sample.
    pub fn has_created(&self) -> bool {
        matches!(self.desc.kind, Kind::Counter | Kind::Histogram | Kind::Summary)
    }
}

/// Gzip `data` at a level that favours speed (scrapes are frequent and mostly repetitive).
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}
