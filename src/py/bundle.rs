//! `Bundle`: the series one event writes to, recorded together in one call.

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::context::Target;
use super::metric::target_of;
use crate::desc::Kind;

/// Counters and histograms (children of our metrics) that one event updates: counters go up by
/// one, histograms observe the event's duration, request size or response size.
#[pyclass(name = "Bundle", module = "metrics._core", frozen)]
pub struct PyBundle {
    counts: Vec<Target>,
    durations: Vec<Target>,
    request_sizes: Vec<Target>,
    response_sizes: Vec<Target>,
    streamed: Vec<Target>,
    ajax: Vec<Target>,
}

fn targets(list: Option<&Bound<'_, PyList>>) -> PyResult<Vec<Target>> {
    list.map(|l| l.iter().map(|item| target_of(&item)).collect()).unwrap_or(Ok(Vec::new()))
}

fn observe(target: &Target, value: f64) {
    match target.family.desc.kind {
        Kind::Histogram => target.series.observe_histogram(&target.family.desc.buckets, value),
        Kind::Summary => target.series.observe_summary(value),
        _ => target.series.inc(value),
    }
}

#[pymethods]
impl PyBundle {
    /// The children to update: `counts` (+1 per event), histograms of `durations`,
    /// `request_sizes` and `response_sizes`, and counters for `streamed` responses and `ajax`
    /// requests.
    #[new]
    #[pyo3(signature = (counts=None, durations=None, request_sizes=None, response_sizes=None, streamed=None, ajax=None))]
    fn new(
        counts: Option<&Bound<'_, PyList>>,
        durations: Option<&Bound<'_, PyList>>,
        request_sizes: Option<&Bound<'_, PyList>>,
        response_sizes: Option<&Bound<'_, PyList>>,
        streamed: Option<&Bound<'_, PyList>>,
        ajax: Option<&Bound<'_, PyList>>,
    ) -> PyResult<Self> {
        Ok(PyBundle {
            counts: targets(counts)?,
            durations: targets(durations)?,
            request_sizes: targets(request_sizes)?,
            response_sizes: targets(response_sizes)?,
            streamed: targets(streamed)?,
            ajax: targets(ajax)?,
        })
    }

    /// Record one event. A response size of None means none to observe (no response, or a
    /// streamed one: `streamed` counts it when `is_streamed`).
    #[pyo3(signature = (duration, request_size, response_size=None, is_streamed=false, is_ajax=false))]
    fn record(
        &self,
        duration: f64,
        request_size: f64,
        response_size: Option<f64>,
        is_streamed: bool,
        is_ajax: bool,
    ) {
        for t in &self.counts {
            t.series.inc(1.0);
        }
        for t in &self.durations {
            observe(t, duration);
        }
        for t in &self.request_sizes {
            observe(t, request_size);
        }
        if let Some(size) = response_size {
            for t in &self.response_sizes {
                observe(t, size);
            }
        }
        if is_streamed {
            for t in &self.streamed {
                t.series.inc(1.0);
            }
        }
        if is_ajax {
            for t in &self.ajax {
                t.series.inc(1.0);
            }
        }
    }
}
