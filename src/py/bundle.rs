//! `Bundle`: the series one event writes to, recorded together in one call.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::metric::{python_time, target_of};
use crate::desc::Kind;
use crate::family::Handle;

/// Counters and histograms (children of our metrics) that one event updates: counters go up by
/// one, histograms observe the event's duration, request size or response size.
///
/// A bundle is a cache: after `remove()` or `clear()` on one of the families, it records on the
/// family's new series for the same labels, as a fresh `labels()` lookup would.
#[pyclass(name = "Bundle", module = "metrics._core", frozen)]
pub struct PyBundle {
    counts: Vec<Handle>,
    durations: Vec<Handle>,
    request_sizes: Vec<Handle>,
    response_sizes: Vec<Handle>,
    streamed: Vec<Handle>,
    ajax: Vec<Handle>,
}

fn targets(list: Option<&Bound<'_, PyList>>) -> PyResult<Vec<Handle>> {
    let Some(list) = list else { return Ok(Vec::new()) };
    list.iter()
        .map(|item| target_of(&item).map(|t| Handle::new(Arc::clone(&t.family), t.series, true)))
        .collect()
}

fn observe(py: Python<'_>, handle: &Handle, value: f64) {
    let series = handle.series(|| python_time(py));
    let desc = &handle.family().desc;
    match desc.kind {
        Kind::Histogram => series.observe_histogram(&desc.buckets, value),
        Kind::Summary => series.observe_summary(value),
        _ => series.inc(value),
    }
}

fn count(py: Python<'_>, handles: &[Handle]) {
    for h in handles {
        h.series(|| python_time(py)).inc(1.0);
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
        py: Python<'_>,
        duration: f64,
        request_size: f64,
        response_size: Option<f64>,
        is_streamed: bool,
        is_ajax: bool,
    ) {
        count(py, &self.counts);
        for h in &self.durations {
            observe(py, h, duration);
        }
        for h in &self.request_sizes {
            observe(py, h, request_size);
        }
        if let Some(size) = response_size {
            for h in &self.response_sizes {
                observe(py, h, size);
            }
        }
        if is_streamed {
            count(py, &self.streamed);
        }
        if is_ajax {
            count(py, &self.ajax);
        }
    }
}
