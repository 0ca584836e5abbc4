//! The metric classes: `Counter`, `Gauge`, `Histogram`, `Summary`, `Info`, `Enum`.
//!
//! A parent metric with label names holds a dict from label-value tuples to child objects, so
//! `labels(...)` is one dict lookup on the hot path; each child holds its series and writes to
//! its cells with one atomic operation.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyList, PyString, PyTuple};

use super::context::{PyExceptionCounter, PyInProgress, PyTimer, Target};
use super::registry::{snapshots_to_py, RegistryArg};
use crate::desc::{Desc, GaugeMode, Kind};
use crate::exemplar::Exemplar;
use crate::family::{now, Family, Handle, Series};
use crate::names;
use crate::native;
use crate::store;

/// prometheus_client's default histogram buckets.
const DEFAULT_BUCKETS: [f64; 15] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, f64::INFINITY];

/// Gauges whose value a Python function supplies at collection time.
static GAUGE_FUNCTIONS: PyOnceLock<Py<PyList>> = PyOnceLock::new();

/// A cached child, or the key and state of a child to create.
type Lookup<'py> = Result<Bound<'py, PyAny>, (Bound<'py, PyTuple>, Metric)>;

/// The state shared by every metric class.
pub(crate) struct Metric {
    family: Arc<Family>,
    // None: a labelled parent.
    series: Option<Handle>,
    children: Option<Py<PyDict>>,
    labelvalues: Vec<String>,
}

fn type_name(kind: Kind) -> &'static str {
    kind.openmetrics_name()
}

fn labelnames_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(obj) = obj else { return Ok(Vec::new()) };
    if obj.is_none() {
        return Ok(Vec::new());
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("labelnames must be a sequence of strings, not a string"));
    }
    obj.try_iter()?.map(|item| item?.extract::<String>()).collect()
}

fn to_float(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    match obj.extract::<f64>() {
        Ok(v) => Ok(v),
        Err(_) => obj.py().get_type::<PyFloat>().call1((obj,))?.extract(),
    }
}

/// What every constructor takes, in prometheus_client's order (`registry` aside).
pub(crate) struct NameParts<'a, 'py> {
    name: &'a str,
    documentation: &'a str,
    labelnames: Option<&'a Bound<'py, PyAny>>,
    namespace: &'a str,
    subsystem: &'a str,
    unit: &'a str,
}

impl Metric {
    /// Validate the description of a `kind` family, let `finish` complete it, and create it.
    fn build(
        py: Python<'_>,
        kind: Kind,
        parts: NameParts<'_, '_>,
        registry: RegistryArg,
        finish: impl FnOnce(Desc) -> crate::error::Result<Desc>,
    ) -> PyResult<Metric> {
        let labelnames = labelnames_from(parts.labelnames)?;
        let desc = Desc::new(
            kind,
            parts.name,
            parts.documentation,
            labelnames,
            parts.namespace,
            parts.subsystem,
            parts.unit,
        )
        .and_then(finish)?;
        Metric::create(py, desc, registry)
    }

    fn create(py: Python<'_>, desc: Desc, registry: RegistryArg) -> PyResult<Metric> {
        let family = Family::new_with(desc, || python_time(py));
        registry.register(py, &family)?;
        let labelled = !family.desc.labelnames.is_empty();
        let series = if labelled {
            None
        } else {
            family
                .series_with(Vec::new(), || python_time(py))
                .ok()
                .map(|s| Handle::new(Arc::clone(&family), s, false))
        };
        let children = if labelled { Some(PyDict::new(py).unbind()) } else { None };
        Ok(Metric { family, series, children, labelvalues: Vec::new() })
    }

    fn handle(&self) -> PyResult<&Handle> {
        self.series.as_ref().ok_or_else(|| {
            PyValueError::new_err(format!(
                "{} metric is missing label values",
                type_name(self.family.desc.kind)
            ))
        })
    }

    /// The series to write to (after a removal, the family's new one where handles reattach).
    #[inline]
    fn series(&self, py: Python<'_>) -> PyResult<&Series> {
        Ok(self.handle()?.series(|| python_time(py)))
    }

    fn target(&self, py: Python<'_>) -> PyResult<Target> {
        let series = self.handle()?.arc(|| python_time(py));
        Ok(Target { family: Arc::clone(&self.family), series })
    }

    fn describe_self(&self) -> String {
        format!("{}:{}", type_name(self.family.desc.kind), self.family.desc.name)
    }

    fn children<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyDict>> {
        match &self.children {
            Some(c) => Ok(c.bind(py)),
            None if !self.labelvalues.is_empty() => Err(PyValueError::new_err(format!(
                "{} already has labels set ({}); can not chain calls to .labels()",
                self.describe_self(),
                self.family
                    .desc
                    .labelnames
                    .iter()
                    .zip(&self.labelvalues)
                    .map(|(k, v)| format!("'{k}': '{v}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            None => Err(PyValueError::new_err(format!(
                "No label names were set when constructing {}",
                self.describe_self()
            ))),
        }
    }

    /// The lookup key for `labels(*args, **kwargs)`: the args tuple, or kwargs in label order.
    fn key<'py>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let Some(kw) = kwargs.filter(|k| !k.is_empty()) else { return Ok(args.clone()) };
        if !args.is_empty() {
            return Err(PyValueError::new_err("Can't pass both *args and **kwargs"));
        }
        let names = &self.family.desc.labelnames;
        if kw.len() != names.len() {
            return Err(PyValueError::new_err("Incorrect label names"));
        }
        let mut values = Vec::with_capacity(names.len());
        for n in names {
            match kw.get_item(n)? {
                Some(v) => values.push(v),
                None => return Err(PyValueError::new_err("Incorrect label names")),
            }
        }
        PyTuple::new(args.py(), values)
    }

    /// Label values as strings, checked against the label names.
    fn canonical<'py>(&self, key: &Bound<'py, PyTuple>) -> PyResult<(Bound<'py, PyTuple>, Vec<String>)> {
        if key.len() != self.family.desc.labelnames.len() {
            return Err(PyValueError::new_err("Incorrect label count"));
        }
        let mut values = Vec::with_capacity(key.len());
        for item in key.iter() {
            values.push(item.str()?.to_cow()?.into_owned());
        }
        Ok((PyTuple::new(key.py(), &values)?, values))
    }

    /// Return the child for `key` if cached, else the label values of a child to create.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Lookup<'py>> {
        let children = self.children(py)?;
        let key = self.key(args, kwargs)?;
        if let Some(child) = children.get_item(&key)? {
            return Ok(Ok(child));
        }
        // Only tuples of str are stored, so `labels(1)` and `labels(True)` never share a child.
        let (canon, values) = self.canonical(&key)?;
        if let Some(child) = children.get_item(&canon)? {
            return Ok(Ok(child));
        }
        let series = self.family.series_with(values.clone(), || python_time(py))?;
        let child = Metric {
            family: Arc::clone(&self.family),
            series: Some(Handle::new(Arc::clone(&self.family), series, false)),
            children: None,
            labelvalues: values,
        };
        Ok(Err((canon, child)))
    }

    fn store_child(&self, py: Python<'_>, key: Bound<'_, PyTuple>, child: &Bound<'_, PyAny>) -> PyResult<()> {
        self.children(py)?.set_item(key, child)
    }

    fn remove(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let children = self.children(py)?;
        let (canon, values) = self.canonical(args)?;
        self.family.remove(&values);
        if children.contains(&canon)? {
            children.del_item(&canon)?;
        }
        Ok(())
    }

    fn remove_by_labels(&self, py: Python<'_>, labels: &Bound<'_, PyDict>) -> PyResult<()> {
        let children = self.children(py)?;
        let names = &self.family.desc.labelnames;
        let mut matching = Vec::with_capacity(labels.len());
        for (k, v) in labels.iter() {
            let k: String = k.extract()?;
            let Some(i) = names.iter().position(|n| *n == k) else {
                return Err(PyValueError::new_err(format!("Unknown label name: {k}")));
            };
            matching.push((i, v.str()?.to_cow()?.into_owned()));
        }
        if matching.is_empty() {
            return Ok(());
        }
        for values in self.family.remove_matching(&matching) {
            let key = PyTuple::new(py, &values)?;
            if children.contains(&key)? {
                children.del_item(&key)?;
            }
        }
        // Children cached under their original (non-str) keys: drop those matching too.
        let stale: Vec<Bound<'_, PyAny>> = children
            .iter()
            .filter(|(_, child)| {
                target_of(child)
                    .map(|t| matching.iter().all(|(i, v)| t.series.labels.get(*i) == Some(v)))
                    .unwrap_or(false)
            })
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            children.del_item(key)?;
        }
        Ok(())
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(c) = &self.children {
            c.bind(py).clear();
            self.family.clear();
        }
        Ok(())
    }

    fn collect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let snaps = store::current().collect(std::slice::from_ref(&self.family), false);
        let tuples = snapshots_to_py(py, &snaps, true)?;
        py.import("metrics.core")?.getattr("_to_prometheus")?.call1((tuples,))
    }
}

/// Python's `time.time()`: creation times follow the interpreter's clock, so tests and tools
/// that fake time (freezegun, a patched `time.time`) see it in `_created`, as with
/// prometheus_client. Read once per new series, never per operation.
pub(crate) fn python_time(py: Python<'_>) -> f64 {
    py.import("time")
        .and_then(|t| t.getattr("time"))
        .and_then(|f| f.call0())
        .and_then(|v| v.extract::<f64>())
        .unwrap_or_else(|_| now())
}

/// Build an exemplar from a dict of labels, validated as prometheus_client does (its legacy
/// label-name rule applies while `prometheus_client.validation` says so).
pub(crate) fn exemplar_of(py: Python<'_>, labels: &Bound<'_, PyDict>, value: f64) -> PyResult<Exemplar> {
    let mut pairs = Vec::with_capacity(labels.len());
    for (k, v) in labels.iter() {
        pairs.push((k.extract::<String>()?, v.extract::<String>()?));
    }
    Exemplar::new(pairs, value, python_time(py), names::legacy_validation()).map_err(PyErr::from)
}

/// The series behind a child (or an unlabelled metric) of any of our metric classes.
pub(crate) fn target_of(obj: &Bound<'_, PyAny>) -> PyResult<Target> {
    macro_rules! try_class {
        ($($ty:ty),*) => {
            $(if let Ok(m) = obj.cast::<$ty>() {
                return m.get().m.target(obj.py());
            })*
        };
    }
    try_class!(PyCounter, PyGauge, PyHistogram, PySummary, PyInfo, PyEnum);
    Err(PyTypeError::new_err("not a metric of this package"))
}

/// Find the family behind any of our metric objects.
pub(crate) fn family_of(obj: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Family>>> {
    macro_rules! try_class {
        ($($ty:ty),*) => {
            $(if let Ok(m) = obj.cast::<$ty>() {
                let m = &m.get().m;
                if !m.labelvalues.is_empty() {
                    return Err(PyValueError::new_err("register the parent metric, not a child from labels()"));
                }
                return Ok(Some(Arc::clone(&m.family)));
            })*
        };
    }
    try_class!(PyCounter, PyGauge, PyHistogram, PySummary, PyInfo, PyEnum);
    Ok(None)
}

macro_rules! metric_class {
    ($ty:ident, $pyname:literal, { $($extra:tt)* }) => {
        #[doc = concat!("The `", $pyname, "` metric class.")]
        #[pyclass(name = $pyname, module = "metrics._core", frozen)]
        pub struct $ty {
            pub(crate) m: Metric,
        }

        #[pymethods]
        impl $ty {
            $($extra)*

            /// Return the child for the given label values (by position or by name).
            #[pyo3(signature = (*args, **kwargs))]
            fn labels<'py>(
                &self,
                py: Python<'py>,
                args: &Bound<'py, PyTuple>,
                kwargs: Option<&Bound<'py, PyDict>>,
            ) -> PyResult<Bound<'py, PyAny>> {
                match self.m.lookup(py, args, kwargs)? {
                    Ok(child) => Ok(child),
                    Err((key, m)) => {
                        let child = Bound::new(py, $ty { m })?.into_any();
                        self.m.store_child(py, key, &child)?;
                        Ok(child)
                    }
                }
            }

            /// Forget the child with these label values.
            #[pyo3(signature = (*labelvalues))]
            fn remove(&self, py: Python<'_>, labelvalues: &Bound<'_, PyTuple>) -> PyResult<()> {
                self.m.remove(py, labelvalues)
            }

            /// Forget every child whose labels include all of `labels` (a dict, by name).
            fn remove_by_labels(&self, py: Python<'_>, labels: &Bound<'_, PyDict>) -> PyResult<()> {
                self.m.remove_by_labels(py, labels)
            }

            /// Forget every child.
            fn clear(&self, py: Python<'_>) -> PyResult<()> {
                self.m.clear(py)
            }

            /// Let children already handed out find the new series of their labels after
            /// `remove()` or `clear()`, instead of writing where no scrape reads (the built-in
            /// families: code that keeps a child, like the instruments, must go on counting).
            fn _reattach_after_removal(&self) {
                self.m.family.reattach_handles();
            }

            /// This metric as prometheus_client `Metric` objects.
            fn collect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                self.m.collect(py)
            }

            /// The family name.
            #[getter]
            fn _name(&self) -> &str {
                &self.m.family.desc.name
            }

            /// The help text.
            #[getter]
            fn _documentation(&self) -> &str {
                &self.m.family.desc.help
            }

            /// The declared label names.
            #[getter]
            fn _labelnames<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
                PyTuple::new(py, &self.m.family.desc.labelnames)
            }

            /// The label values of a child (empty on a parent).
            #[getter]
            fn _labelvalues<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
                PyTuple::new(py, &self.m.labelvalues)
            }

            /// The OpenMetrics type name.
            #[getter]
            fn _type(&self) -> &'static str {
                type_name(self.m.family.desc.kind)
            }

            fn __repr__(&self) -> String {
                format!("metrics._core.{}({})", $pyname, self.m.family.desc.name)
            }

            fn __str__(&self) -> String {
                self.m.describe_self()
            }
        }
    };
}

metric_class!(PyCounter, "Counter", {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="",
                        registry=RegistryArg::Default))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: RegistryArg,
    ) -> PyResult<Self> {
        let parts = NameParts { name, documentation, labelnames, namespace, subsystem, unit };
        Ok(PyCounter { m: Metric::build(py, Kind::Counter, parts, registry, Ok)? })
    }

    /// Increment by `amount` (non-negative), keeping `exemplar` (a dict of labels) if given.
    #[pyo3(signature = (amount=1.0, exemplar=None))]
    fn inc(&self, py: Python<'_>, amount: f64, exemplar: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        if amount < 0.0 {
            return Err(PyValueError::new_err("Counters can only be incremented by non-negative amounts."));
        }
        let series = self.m.series(py)?;
        if let Some(labels) = exemplar.filter(|e| !e.is_empty()) {
            self.m.family.set_exemplar(series, 0, 1, exemplar_of(py, labels, amount)?);
        }
        series.inc(amount);
        Ok(())
    }

    /// Reset to zero and restart the creation time.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.m.series(py)?.reset(python_time(py));
        Ok(())
    }

    /// Count exceptions of type `exception` raised in a block or function.
    #[pyo3(signature = (exception=None))]
    fn count_exceptions(&self, py: Python<'_>, exception: Option<Py<PyAny>>) -> PyResult<PyExceptionCounter> {
        let exception = match exception {
            Some(e) => e,
            None => py.get_type::<pyo3::exceptions::PyException>().into_any().unbind(),
        };
        Ok(PyExceptionCounter::new(self.m.target(py)?, exception))
    }

    /// The current value (for tests and tools).
    fn _get(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.m.series(py)?.get())
    }
});

metric_class!(PyGauge, "Gauge", {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="",
                        registry=RegistryArg::Default, multiprocess_mode="all"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: RegistryArg,
        multiprocess_mode: &str,
    ) -> PyResult<Self> {
        let mode = GaugeMode::parse(multiprocess_mode)?;
        let parts = NameParts { name, documentation, labelnames, namespace, subsystem, unit };
        Ok(PyGauge {
            m: Metric::build(py, Kind::Gauge, parts, registry, |mut d| {
                d.gauge_mode = mode;
                Ok(d)
            })?,
        })
    }

    /// Increment by `amount`.
    #[pyo3(signature = (amount=1.0))]
    fn inc(&self, py: Python<'_>, amount: f64) -> PyResult<()> {
        let s = self.m.series(py)?;
        s.inc(amount);
        Ok(())
    }

    /// Decrement by `amount`.
    #[pyo3(signature = (amount=1.0))]
    fn dec(&self, py: Python<'_>, amount: f64) -> PyResult<()> {
        let s = self.m.series(py)?;
        s.inc(-amount);
        Ok(())
    }

    /// Set to `value`.
    fn set(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        let s = self.m.series(py)?;
        s.set(value);
        Ok(())
    }

    /// Set to the current Unix time in seconds.
    fn set_to_current_time(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.m.series(py)?;
        s.set(now());
        Ok(())
    }

    /// Track a block or function as in progress.
    fn track_inprogress(&self, py: Python<'_>) -> PyResult<PyInProgress> {
        Ok(PyInProgress::new(self.m.target(py)?))
    }

    /// Time a block or function, setting the gauge to its duration in seconds.
    fn time(slf: &Bound<'_, Self>) -> PyTimer {
        PyTimer::new(slf.clone().into_any().unbind(), slf.get().m.target(slf.py()).ok(), target_of)
    }

    /// Take the value from `f()` at every collection.
    fn set_function(slf: &Bound<'_, Self>, f: Py<PyAny>) -> PyResult<()> {
        slf.get().m.series(slf.py())?;
        let py = slf.py();
        let list = GAUGE_FUNCTIONS.get_or_init(py, || PyList::empty(py).unbind());
        list.bind(py).append((slf, f))
    }

    /// The current value (for tests and tools).
    fn _get(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.m.series(py)?.get())
    }
});

/// The gauges that take their value from a function, as `(gauge, function)` pairs.
#[pyfunction]
pub fn gauge_functions(py: Python<'_>) -> Bound<'_, PyList> {
    GAUGE_FUNCTIONS.get_or_init(py, || PyList::empty(py).unbind()).bind(py).clone()
}

metric_class!(PyHistogram, "Histogram", {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="",
                        registry=RegistryArg::Default, buckets=None,
                        native_histogram_bucket_factor=None, native_histogram_max_bucket_number=160,
                        native_histogram_zero_threshold=native::DEFAULT_ZERO_THRESHOLD))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: RegistryArg,
        buckets: Option<&Bound<'_, PyAny>>,
        native_histogram_bucket_factor: Option<f64>,
        native_histogram_max_bucket_number: u32,
        native_histogram_zero_threshold: f64,
    ) -> PyResult<Self> {
        let bounds = match buckets {
            None => DEFAULT_BUCKETS.to_vec(),
            Some(b) => b.try_iter()?.map(|item| to_float(&item?)).collect::<PyResult<Vec<f64>>>()?,
        };
        // As in the Go client, a factor of 1 or less (or none) means no native buckets; a NaN is
        // refused below.
        let factor = native_histogram_bucket_factor.filter(|f| f.is_nan() || *f > 1.0);
        let parts = NameParts { name, documentation, labelnames, namespace, subsystem, unit };
        Ok(PyHistogram {
            m: Metric::build(py, Kind::Histogram, parts, registry, |d| {
                let d = d.with_buckets(bounds)?;
                match factor {
                    Some(f) => {
                        d.with_native(f, native_histogram_max_bucket_number, native_histogram_zero_threshold)
                    }
                    None => Ok(d),
                }
            })?,
        })
    }

    /// Record one observation.
    #[pyo3(signature = (amount, exemplar=None))]
    fn observe(&self, py: Python<'_>, amount: f64, exemplar: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let series = self.m.series(py)?;
        let buckets = &self.m.family.desc.buckets;
        if let Some(labels) = exemplar.filter(|e| !e.is_empty()) {
            let bucket = Series::bucket_of(buckets, amount);
            if bucket < buckets.len() {
                self.m.family.set_exemplar(series, bucket, buckets.len(), exemplar_of(py, labels, amount)?);
            }
        }
        series.observe_histogram(buckets, amount);
        Ok(())
    }

    /// Time a block or function, observing its duration in seconds.
    fn time(slf: &Bound<'_, Self>) -> PyTimer {
        PyTimer::new(slf.clone().into_any().unbind(), slf.get().m.target(slf.py()).ok(), target_of)
    }

    /// The bucket upper bounds.
    #[getter]
    fn _upper_bounds(&self) -> Vec<f64> {
        self.m.family.desc.buckets.clone()
    }
});

metric_class!(PySummary, "Summary", {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="",
                        registry=RegistryArg::Default))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: RegistryArg,
    ) -> PyResult<Self> {
        let parts = NameParts { name, documentation, labelnames, namespace, subsystem, unit };
        Ok(PySummary { m: Metric::build(py, Kind::Summary, parts, registry, Ok)? })
    }

    /// Record one observation.
    fn observe(&self, py: Python<'_>, amount: f64) -> PyResult<()> {
        self.m.series(py)?.observe_summary(amount);
        Ok(())
    }

    /// Time a block or function, observing its duration in seconds.
    fn time(slf: &Bound<'_, Self>) -> PyTimer {
        PyTimer::new(slf.clone().into_any().unbind(), slf.get().m.target(slf.py()).ok(), target_of)
    }
});

metric_class!(PyInfo, "Info", {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="",
                        registry=RegistryArg::Default))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: RegistryArg,
    ) -> PyResult<Self> {
        let parts = NameParts { name, documentation, labelnames, namespace, subsystem, unit };
        Ok(PyInfo { m: Metric::build(py, Kind::Info, parts, registry, Ok)? })
    }

    /// Set the key-value pairs.
    fn info(&self, py: Python<'_>, val: &Bound<'_, PyDict>) -> PyResult<()> {
        let series = self.m.series(py)?;
        let mut pairs = Vec::with_capacity(val.len());
        for (k, v) in val.iter() {
            let k: String = k.extract()?;
            if self.m.family.desc.labelnames.contains(&k) {
                return Err(PyValueError::new_err(format!(
                    "Overlapping labels for Info metric, metric: {:?} child: {k:?}",
                    self.m.family.desc.labelnames
                )));
            }
            if !names::is_valid_utf8_label_name(&k) || k.starts_with("__") {
                return Err(PyValueError::new_err(format!("Invalid label metric name: {k}")));
            }
            if v.is_none() {
                return Err(PyValueError::new_err("Label value cannot be None"));
            }
            pairs.push((k, v.str()?.to_cow()?.into_owned()));
        }
        series.set_info(pairs);
        Ok(())
    }
});

metric_class!(PyEnum, "Enum", {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="",
                        registry=RegistryArg::Default, states=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: RegistryArg,
        states: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let parts = NameParts { name, documentation, labelnames, namespace, subsystem, unit };
        Ok(PyEnum {
            m: Metric::build(py, Kind::Enum, parts, registry, |d| d.with_states(states.unwrap_or_default()))?,
        })
    }

    /// Set the current state.
    fn state(&self, py: Python<'_>, state: &str) -> PyResult<()> {
        let series = self.m.series(py)?;
        let idx = self.m.family.desc.states.iter().position(|s| s == state).ok_or_else(|| {
            PyValueError::new_err(format!("{state:?} is not a state of {}", self.m.family.desc.name))
        })?;
        series.set(idx as f64);
        Ok(())
    }
});
