//! Prometheus text format 0.0.4, laid out exactly as prometheus_client's `generate_latest`.

use super::{write_header, FamilyRender, FamilySnapshot, Options, Sample};

/// Content type of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Append the exposition of `families` to `out`.
pub fn encode(out: &mut String, families: &[FamilySnapshot], opts: Options) {
    for fam in families {
        let desc = &fam.desc;
        let render = FamilyRender::new(desc, opts.escaping);
        let exposure = desc.kind.exposure();
        let esc = opts.escaping;
        write_header(out, &desc.name, exposure.text_suffix, &desc.help, exposure.text_type, "", false, esc);
        let want_created = opts.created && render.has_created();
        let mut created_lines = String::new();
        for series in &fam.series {
            let labels = render.labels(series);
            for sample in render.samples(series) {
                render.write_sample(out, &labels, &sample, false);
            }
            if want_created {
                let created =
                    Sample { suffix: "_created", extra: None, value: series.created, exemplar: None };
                render.write_sample(&mut created_lines, &labels, &created, false);
            }
        }
        // prometheus_client moves OpenMetrics-only samples into a gauge family of their own.
        if !created_lines.is_empty() {
            write_header(out, &desc.name, "_created", &desc.help, "gauge", "", false, esc);
            out.push_str(&created_lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::{Desc, Kind};
    use crate::family::Family;
    use std::sync::Arc;

    fn encode_one(fam: &Arc<Family>, created: bool) -> String {
        let mut out = String::new();
        encode(&mut out, &[fam.snapshot()], Options { created, ..Options::default() });
        out
    }

    #[test]
    fn counter_with_escaped_labels() {
        let desc = Desc::new(
            Kind::Counter,
            "req_total",
            "Help \\ with\nnewline",
            vec!["b".into(), "a".into()],
            "",
            "",
            "",
        )
        .unwrap();
        let fam = Family::new(desc);
        fam.series(vec!["q\"uote".into(), "back\\slash\n".into()]).unwrap().inc(3.0);
        let out = encode_one(&fam, false);
        assert_eq!(
            out,
            "# HELP req_total Help \\\\ with\\nnewline\n# TYPE req_total counter\n\
             req_total{a=\"back\\\\slash\\n\",b=\"q\\\"uote\"} 3.0\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_sorted_with_le() {
        let desc = Desc::new(Kind::Histogram, "h", "H", vec!["z".into(), "a".into()], "", "", "")
            .unwrap()
            .with_buckets(vec![1.0, 2.0])
            .unwrap();
        let fam = Family::new(desc);
        let s = fam.series(vec!["zv".into(), "av".into()]).unwrap();
        s.observe_histogram(&fam.desc.buckets, 0.5);
        s.observe_histogram(&fam.desc.buckets, 5.0);
        let out = encode_one(&fam, true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], "h_bucket{a=\"av\",le=\"1.0\",z=\"zv\"} 1.0");
        assert_eq!(lines[4], "h_bucket{a=\"av\",le=\"+Inf\",z=\"zv\"} 2.0");
        assert_eq!(lines[5], "h_count{a=\"av\",z=\"zv\"} 2.0");
        assert_eq!(lines[6], "h_sum{a=\"av\",z=\"zv\"} 5.5");
        assert_eq!(lines[7], "# HELP h_created H");
        assert_eq!(lines[8], "# TYPE h_created gauge");
        assert!(lines[9].starts_with("h_created{a=\"av\",z=\"zv\"} 1."));
    }

    #[test]
    fn enum_and_info() {
        let desc = Desc::new(Kind::Enum, "state", "S", vec![], "", "", "")
            .unwrap()
            .with_states(vec!["up".into(), "down".into()])
            .unwrap();
        let fam = Family::new(desc);
        fam.series(vec![]).unwrap().set(1.0);
        assert_eq!(
            encode_one(&fam, true),
            "# HELP state S\n# TYPE state gauge\nstate{state=\"up\"} 0.0\nstate{state=\"down\"} 1.0\n"
        );
        let desc = Desc::new(Kind::Info, "build", "B", vec![], "", "", "").unwrap();
        let fam = Family::new(desc);
        fam.series(vec![]).unwrap().set_info(vec![("version".into(), "1.2".into())]);
        assert_eq!(
            encode_one(&fam, true),
            "# HELP build_info B\n# TYPE build_info gauge\nbuild_info{version=\"1.2\"} 1.0\n"
        );
    }
}
