//! Exposition: snapshots of families, and the text formats they are written in.

pub mod openmetrics;
pub mod protobuf;
pub mod raw;
pub mod text;

use std::io::Write;

use crate::desc::{Desc, Kind};
use crate::exemplar::Exemplar;
use crate::float;
use crate::names::{escape_help, escape_label_value, write_name, Escaping};
pub use crate::snapshot::{FamilySnapshot, SeriesSnapshot};

/// Options shared by the encoders.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Emit `_created` samples for counters, histograms and summaries (protobuf: their
    /// `created_timestamp` fields).
    pub created: bool,
    /// How names outside the classic character set are written.
    pub escaping: Escaping,
}

impl Default for Options {
    fn default() -> Self {
        Options { created: true, escaping: Escaping::Underscores }
    }
}

/// Every suffix a sample of ours can carry after its family name.
const SUFFIXES: [&str; 7] = ["", "_total", "_bucket", "_count", "_sum", "_created", "_info"];

/// Append a family's `# HELP` and `# TYPE` lines (name plus `suffix`), and its `# UNIT` line when
/// `unit` is not empty. OpenMetrics escapes double quotes in help text; text 0.0.4 does not.
/// The name is written as `escaping` says (quoted under `allow-utf-8` when outside the classic
/// character set).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_header(
    out: &mut String,
    name: &str,
    suffix: &str,
    help: &str,
    type_name: &str,
    unit: &str,
    openmetrics: bool,
    escaping: Escaping,
) {
    for (keyword, value) in [("HELP", None), ("TYPE", Some(type_name)), ("UNIT", Some(unit))] {
        if keyword == "UNIT" && unit.is_empty() {
            continue;
        }
        out.push_str("# ");
        out.push_str(keyword);
        out.push(' ');
        write_name(out, &[name, suffix], escaping, true);
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
    /// How names are written.
    escaping: Escaping,
    /// Label names as written (escaped or quoted), aligned with the family's label names.
    label_names: Vec<String>,
    /// The extra label's name as written.
    extra_written: String,
    /// Each suffix with the sample name as written, and whether it goes inside the braces
    /// (a quoted UTF-8 name).
    sample_names: Vec<(&'static str, String, bool)>,
}

/// `name` as a label name written under `escaping`.
fn written_label(name: &str, escaping: Escaping) -> String {
    let mut s = String::with_capacity(name.len());
    write_name(&mut s, &[name], escaping, false);
    s
}

impl<'a> FamilyRender<'a> {
    /// Prepare the rendering of `desc`'s series, names written as `escaping` says.
    pub fn new(desc: &'a Desc, escaping: Escaping) -> FamilyRender<'a> {
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
        let label_names = desc.labelnames.iter().map(|l| written_label(l, escaping)).collect();
        let extra_written = extra_name.map(|l| written_label(l, escaping)).unwrap_or_default();
        let sample_names = SUFFIXES
            .iter()
            .map(|suffix| {
                let parts = [desc.name.as_str(), suffix];
                let mut written = String::with_capacity(desc.name.len() + suffix.len() + 2);
                write_name(&mut written, &parts, escaping, true);
                (*suffix, written, crate::names::needs_quotes(&parts, escaping, true))
            })
            .collect();
        FamilyRender { desc, order, extra_name, le, escaping, label_names, extra_written, sample_names }
    }

    /// The sample name for `suffix` as written, and whether it goes inside the braces.
    fn sample_name(&self, suffix: &str) -> (&str, bool) {
        self.sample_names
            .iter()
            .find(|(s, _, _)| *s == suffix)
            .map_or((self.desc.name.as_str(), false), |(_, written, quoted)| (written.as_str(), *quoted))
    }

    /// Render the labels of `series`, sorted by name.
    pub fn labels(&self, series: &SeriesSnapshot) -> RenderedLabels {
        // Sorted by the names as declared, written as escaped (prometheus_client's order).
        let mut pairs: Vec<(&str, &str, Option<&str>)> = self
            .order
            .iter()
            .map(|i| {
                (
                    self.desc.labelnames[*i].as_str(),
                    series.labels.get(*i).map(String::as_str).unwrap_or(""),
                    self.label_names.get(*i).map(String::as_str),
                )
            })
            .collect();
        if !series.info.is_empty() {
            pairs.extend(series.info.iter().map(|(k, v)| (k.as_str(), v.as_str(), None)));
            pairs.sort();
        }
        let mut before = String::new();
        let mut after = String::new();
        for (k, v, written) in pairs {
            let dst = match self.extra_name {
                Some(extra) if k > extra => &mut after,
                _ => &mut before,
            };
            if !dst.is_empty() {
                dst.push(',');
            }
            match written {
                Some(w) => dst.push_str(w),
                None => write_name(dst, &[k], self.escaping, false),
            }
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
        let (name, quoted) = self.sample_name(sample.suffix);
        let has_extra = sample.extra.is_some();
        let has_labels = has_extra || !labels.before.is_empty() || !labels.after.is_empty();
        if quoted {
            // A UTF-8 name goes inside the braces: `{"a.b_total",x="1"} 2.0`.
            out.push('{');
            out.push_str(name);
            if has_labels {
                out.push(',');
            }
        } else {
            out.push_str(name);
            if has_labels {
                out.push('{');
            }
        }
        if has_labels {
            out.push_str(&labels.before);
            if let (Some(value), Some(_)) = (sample.extra, self.extra_name) {
                if !labels.before.is_empty() {
                    out.push(',');
                }
                out.push_str(&self.extra_written);
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
        }
        if quoted || has_labels {
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
