//! `RequestMetrics`: the five HTTP metrics of one request recorded in one crossing at its end.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::metric::{exemplar_of, family_of, python_time};
use crate::desc::Kind;
use crate::family::{Family, Series};

/// The series one (method, view, status) writes to.
struct Children {
    total: Arc<Series>,
    duration: Arc<Series>,
    request_size: Arc<Series>,
    response_size: Arc<Series>,
}

/// Series by method, then view, then status.
type ByMethod = HashMap<String, HashMap<String, HashMap<u16, Arc<Children>>>>;

/// The middleware's metrics: `begin(method)` when a request enters, `finish(...)` when it ends.
#[pyclass(name = "RequestMetrics", module = "metrics._core", frozen)]
pub struct PyRequestMetrics {
    total: Arc<Family>,
    duration: Arc<Family>,
    in_progress: Arc<Family>,
    request_size: Arc<Family>,
    response_size: Arc<Family>,
    // method -> view -> status -> series: looked up by borrowed strings, no allocation per request.
    children: RwLock<ByMethod>,
    gauges: RwLock<HashMap<String, Arc<Series>>>,
}

fn family(obj: &Bound<'_, PyAny>, kind: Kind, labels: &[&str]) -> PyResult<Arc<Family>> {
    let fam = family_of(obj)?.ok_or_else(|| PyValueError::new_err("not a metric of this package"))?;
    if fam.desc.kind != kind || fam.desc.labelnames.iter().map(String::as_str).ne(labels.iter().copied()) {
        return Err(PyValueError::new_err(format!(
            "{} must be a {} with labels {labels:?}",
            fam.desc.name,
            kind.openmetrics_name()
        )));
    }
    Ok(fam)
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(
    map: &RwLock<HashMap<K, V>>,
    key: K,
    make: impl FnOnce() -> PyResult<V>,
) -> PyResult<V> {
    if let Some(v) = map.read().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(v);
    }
    let value = make()?;
    if let Ok(mut m) = map.write() {
        m.entry(key).or_insert_with(|| value.clone());
    }
    Ok(value)
}

impl PyRequestMetrics {
    fn children(&self, py: Python<'_>, method: &str, view: &str, status: u16) -> PyResult<Arc<Children>> {
        let found = self.children.read().ok().and_then(|m| {
            m.get(method)
                .and_then(|views| views.get(view))
                .and_then(|statuses| statuses.get(&status))
                .cloned()
        });
        if let Some(children) = found {
            return Ok(children);
        }
        let series = |fam: &Family, labels: Vec<String>| {
            fam.series_with(labels, || python_time(py)).map_err(PyErr::from)
        };
        let pair = || vec![method.to_owned(), view.to_owned()];
        let children = Arc::new(Children {
            total: series(&self.total, vec![method.to_owned(), view.to_owned(), status.to_string()])?,
            duration: series(&self.duration, pair())?,
            request_size: series(&self.request_size, pair())?,
            response_size: series(&self.response_size, pair())?,
        });
        if let Ok(mut m) = self.children.write() {
            m.entry(method.to_owned())
                .or_default()
                .entry(view.to_owned())
                .or_default()
                .entry(status)
                .or_insert_with(|| Arc::clone(&children));
        }
        Ok(children)
    }

    fn gauge(&self, py: Python<'_>, method: &str) -> PyResult<Arc<Series>> {
        if let Some(gauge) = self.gauges.read().ok().and_then(|m| m.get(method).cloned()) {
            return Ok(gauge);
        }
        cached(&self.gauges, method.to_owned(), || {
            self.in_progress.series_with(vec![method.to_owned()], || python_time(py)).map_err(PyErr::from)
        })
    }
}

#[pymethods]
impl PyRequestMetrics {
    /// Record with these metrics: a counter {method, view, status}, histograms {method, view}
    /// of duration, request size and response size, and a gauge {method} of requests in progress.
    #[new]
    fn new(
        total: &Bound<'_, PyAny>,
        duration: &Bound<'_, PyAny>,
        in_progress: &Bound<'_, PyAny>,
        request_size: &Bound<'_, PyAny>,
        response_size: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(PyRequestMetrics {
            total: family(total, Kind::Counter, &["method", "view", "status"])?,
            duration: family(duration, Kind::Histogram, &["method", "view"])?,
            in_progress: family(in_progress, Kind::Gauge, &["method"])?,
            request_size: family(request_size, Kind::Histogram, &["method", "view"])?,
            response_size: family(response_size, Kind::Histogram, &["method", "view"])?,
            children: RwLock::new(HashMap::new()),
            gauges: RwLock::new(HashMap::new()),
        })
    }

    /// A request with this method has started.
    fn begin(&self, py: Python<'_>, method: &str) -> PyResult<()> {
        self.gauge(py, method)?.inc(1.0);
        Ok(())
    }

    /// A request has ended: count it, observe its duration and sizes (a response size of None
    /// is observed later, by the caller: a streamed body), and take it out of the in-progress
    /// gauge when `begun`. `exemplar` (labels) goes on the counter and the duration's bucket.
    #[pyo3(signature = (method, view, status, duration, request_size, response_size, begun=true, exemplar=None))]
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        py: Python<'_>,
        method: &str,
        view: &str,
        status: u16,
        duration: f64,
        request_size: f64,
        response_size: Option<f64>,
        begun: bool,
        exemplar: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        if begun {
            self.gauge(py, method)?.inc(-1.0);
        }
        let children = self.children(py, method, view, status)?;
        let buckets = &self.duration.desc.buckets;
        if let Some(labels) = exemplar.filter(|e| !e.is_empty()) {
            let ex = exemplar_of(py, labels, duration)?;
            let bucket = Series::bucket_of(buckets, duration);
            if bucket < buckets.len() {
                self.duration.set_exemplar(&children.duration, bucket, buckets.len(), ex.clone());
            }
            self.total.set_exemplar(&children.total, 0, 1, crate::exemplar::Exemplar { value: 1.0, ..ex });
        }
        children.total.inc(1.0);
        children.duration.observe_histogram(buckets, duration);
        children.request_size.observe_histogram(&self.request_size.desc.buckets, request_size);
        if let Some(size) = response_size {
            children.response_size.observe_histogram(&self.response_size.desc.buckets, size);
        }
        Ok(())
    }
}
