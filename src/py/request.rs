//! `RequestMetrics`: the five HTTP metrics of a request, and the series they write to.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::metric::{family_of, python_time};
use crate::desc::Kind;
use crate::exemplar::Exemplar;
use crate::family::{Family, Handle, Series};
use crate::sync;

/// The methods the middleware labels by name; any other is labelled [`OTHER_METHOD`].
pub(crate) const METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];
/// The label of every method outside [`METHODS`].
pub(crate) const OTHER_METHOD: &str = "other";
/// Index of [`OTHER_METHOD`] in [`Recorder`]'s method slots (after the [`METHODS`]).
pub(crate) const OTHER_INDEX: usize = METHODS.len();

/// Return the slot of a method label: its index in [`METHODS`], else [`OTHER_INDEX`].
pub(crate) fn method_index(method: &str) -> usize {
    METHODS.iter().position(|m| *m == method).unwrap_or(OTHER_INDEX)
}

/// The series one (method, view, status) writes to.
struct Children {
    total: Arc<Series>,
    duration: Arc<Series>,
    request_size: Arc<Series>,
    response_size: Arc<Series>,
}

impl Children {
    /// Whether a family let go of any of these series (`remove()`, `clear()`): they are
    /// looked up again, so a user's `clear()` never switches the request metrics off.
    #[inline]
    fn detached(&self) -> bool {
        self.total.detached()
            || self.duration.detached()
            || self.request_size.detached()
            || self.response_size.detached()
    }
}

/// Children by view, then status: a view sees a handful of statuses, scanned in order.
type ByView = HashMap<String, Vec<(u16, Arc<Children>)>>;

/// The series of one method label: its in-progress gauge, and its children by view and status.
struct MethodSeries {
    name: String,
    gauge: OnceLock<Handle>,
    by_view: RwLock<ByView>,
}

impl MethodSeries {
    fn new(name: &str) -> MethodSeries {
        MethodSeries { name: name.to_owned(), gauge: OnceLock::new(), by_view: RwLock::new(HashMap::new()) }
    }
}

/// What one request measured, for [`Recorder::record`].
pub(crate) struct Measured<'a> {
    /// Label value of the view.
    pub view: &'a str,
    /// Response status.
    pub status: u16,
    /// Seconds from entry to response.
    pub duration: f64,
    /// Request body size in bytes.
    pub request_size: f64,
    /// Response body size in bytes; None: streamed, observed later by the caller.
    pub response_size: Option<f64>,
    /// The exemplar for the counter and the duration's bucket.
    pub exemplar: Option<Exemplar>,
}

/// The five HTTP metrics, with their series looked up once per label combination.
///
/// Requests are keyed by method slot (no hashing for the standard methods), then view, then
/// status; each combination's series are created on first use and kept until a family lets go
/// of one of them (`remove()`, `clear()`), when they are looked up again.
pub(crate) struct Recorder {
    total: Arc<Family>,
    duration: Arc<Family>,
    in_progress: Arc<Family>,
    request_size: Arc<Family>,
    response_size: Arc<Family>,
    // METHODS, then OTHER_METHOD.
    fixed: Vec<MethodSeries>,
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

impl Recorder {
    /// The in-progress gauge of method slot `index`, to move up on entry and down on exit: the
    /// same series both times, so a `clear()` in between leaves no request counted for good.
    pub(crate) fn in_progress(&self, py: Python<'_>, index: usize) -> PyResult<&Series> {
        let method = &self.fixed[index.min(OTHER_INDEX)];
        if let Some(gauge) = method.gauge.get() {
            return Ok(gauge.series(|| python_time(py)));
        }
        let series = self.in_progress.series_with(vec![method.name.clone()], || python_time(py))?;
        let handle = method.gauge.get_or_init(|| Handle::new(Arc::clone(&self.in_progress), series, true));
        Ok(handle.series(|| python_time(py)))
    }

    /// The in-progress gauge of method slot `index`, shared (the async path keeps it across an
    /// `await`).
    pub(crate) fn in_progress_arc(&self, py: Python<'_>, index: usize) -> PyResult<Arc<Series>> {
        self.in_progress(py, index)?;
        let method = &self.fixed[index.min(OTHER_INDEX)];
        let gauge = method.gauge.get().ok_or_else(|| PyValueError::new_err("no in-progress gauge"))?;
        Ok(gauge.arc(|| python_time(py)))
    }

    /// Create the series of a (method, view, status) seen for the first time (or whose series
    /// a family let go of), and keep them.
    fn new_children(
        &self,
        py: Python<'_>,
        method: &MethodSeries,
        view: &str,
        status: u16,
    ) -> PyResult<Arc<Children>> {
        let series = |fam: &Family, labels: Vec<String>| {
            fam.series_with(labels, || python_time(py)).map_err(PyErr::from)
        };
        let pair = || vec![method.name.clone(), view.to_owned()];
        let children = Arc::new(Children {
            total: series(&self.total, vec![method.name.clone(), view.to_owned(), status.to_string()])?,
            duration: series(&self.duration, pair())?,
            request_size: series(&self.request_size, pair())?,
            response_size: series(&self.response_size, pair())?,
        });
        let mut views = sync::write(&method.by_view);
        let statuses = views.entry(view.to_owned()).or_default();
        match statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, kept)) => *kept = Arc::clone(&children),
            None => statuses.push((status, Arc::clone(&children))),
        }
        drop(views);
        Ok(children)
    }

    /// Count and observe a finished request of method slot `index`.
    pub(crate) fn record(&self, py: Python<'_>, index: usize, m: &Measured<'_>) -> PyResult<()> {
        let method = &self.fixed[index.min(OTHER_INDEX)];
        let exemplar = &m.exemplar;
        let buckets = &self.duration.desc.buckets;
        let write = |children: &Children| {
            if let Some(ex) = &exemplar {
                let bucket = Series::bucket_of(buckets, m.duration);
                if bucket < buckets.len() {
                    self.duration.set_exemplar(&children.duration, bucket, buckets.len(), ex.clone());
                }
                let counted = crate::exemplar::Exemplar { value: 1.0, ..ex.clone() };
                self.total.set_exemplar(&children.total, 0, 1, counted);
            }
            children.total.inc(1.0);
            children.duration.observe_histogram(buckets, m.duration);
            children.request_size.observe_histogram(&self.request_size.desc.buckets, m.request_size);
            if let Some(size) = m.response_size {
                children.response_size.observe_histogram(&self.response_size.desc.buckets, size);
            }
        };
        // Written under the read lock (atomic cell writes only), without cloning the series.
        let written = {
            let views = sync::read(&method.by_view);
            views
                .get(m.view)
                .and_then(|statuses| statuses.iter().find(|(s, _)| *s == m.status))
                .filter(|(_, children)| !children.detached())
                .map(|(_, children)| write(children))
        };
        if written.is_none() {
            let made = self.new_children(py, method, m.view, m.status)?;
            write(&made);
        }
        Ok(())
    }
}

/// The five HTTP metrics the middleware records on (built once, handed to `RecordingMiddleware`).
#[pyclass(name = "RequestMetrics", module = "metrics._core", frozen)]
pub struct PyRequestMetrics {
    pub(crate) recorder: Arc<Recorder>,
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
        let fixed = METHODS.iter().chain([&OTHER_METHOD]).map(|m| MethodSeries::new(m)).collect();
        let recorder = Recorder {
            total: family(total, Kind::Counter, &["method", "view", "status"])?,
            duration: family(duration, Kind::Histogram, &["method", "view"])?,
            in_progress: family(in_progress, Kind::Gauge, &["method"])?,
            request_size: family(request_size, Kind::Histogram, &["method", "view"])?,
            response_size: family(response_size, Kind::Histogram, &["method", "view"])?,
            fixed,
        };
        Ok(PyRequestMetrics { recorder: Arc::new(recorder) })
    }
}
