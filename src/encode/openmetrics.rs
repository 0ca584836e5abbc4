//! OpenMetrics 1.0 text, laid out exactly as prometheus_client's OpenMetrics `generate_latest`.

use super::{write_header, FamilyRender, FamilySnapshot, Options, Sample};

/// Content type of this format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Append the families to `out`, without the closing `# EOF` (see [`finish`]).
pub fn encode(out: &mut String, families: &[FamilySnapshot], opts: Options) {
    for fam in families {
        let desc = &fam.desc;
        let render = FamilyRender::new(desc, opts.escaping);
        let kind = desc.kind.openmetrics_name();
        write_header(out, &desc.name, "", &desc.help, kind, &desc.unit, true, opts.escaping);
        let want_created = opts.created && render.has_created();
        for series in &fam.series {
            let labels = render.labels(series);
            for sample in render.samples(series) {
                render.write_sample(out, &labels, &sample, true);
            }
            if want_created {
                let created =
                    Sample { suffix: "_created", extra: None, value: series.created, exemplar: None };
                render.write_sample(out, &labels, &created, true);
            }
        }
    }
}

/// Close an OpenMetrics exposition.
pub fn finish(out: &mut String) {
    out.push_str("# EOF\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::Desc;
    use crate::desc::Kind;
    use crate::family::Family;

    #[test]
    fn counter_has_created_inline_and_unit() {
        let desc = Desc::new(Kind::Counter, "sent", "Sent \"x\"", vec![], "", "", "bytes").unwrap();
        let fam = Family::new(desc);
        fam.series(vec![]).unwrap().inc(1.0);
        let mut out = String::new();
        encode(&mut out, &[fam.snapshot()], Options::default());
        finish(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# HELP sent_bytes Sent \\\"x\\\"");
        assert_eq!(lines[1], "# TYPE sent_bytes counter");
        assert_eq!(lines[2], "# UNIT sent_bytes bytes");
        assert_eq!(lines[3], "sent_bytes_total 1.0");
        assert!(lines[4].starts_with("sent_bytes_created 1."));
        assert_eq!(lines[5], "# EOF");
    }
}
