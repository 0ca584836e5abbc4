//! Context managers and decorators: `time()`, `track_inprogress()`, `count_exceptions()`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::desc::Kind;
use crate::family::{Family, Series};
use crate::sync;

/// Return the series a metric object records on (a child, or an unlabelled metric): the metric
/// classes hand it over, so this module never depends on them.
pub(crate) type Resolve = for<'py> fn(&Bound<'py, PyAny>) -> PyResult<Target>;

/// What a context manager acts on.
#[derive(Clone)]
pub(crate) struct Target {
    pub family: Arc<Family>,
    pub series: Arc<Series>,
}

impl Target {
    fn record(&self, seconds: f64) {
        match self.family.desc.kind {
            Kind::Histogram => self.series.observe_histogram(&self.family.desc.buckets, seconds),
            Kind::Summary => self.series.observe_summary(seconds),
            _ => self.series.set(seconds),
        }
    }
}

/// Wrap `func` so that every call runs inside a fresh copy of `ctx` (sync or async).
fn decorate<'py>(ctx: &Bound<'py, PyAny>, func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let module = ctx.py().import("metrics._decorate")?;
    module.getattr("decorate")?.call1((func, ctx))
}

/// Times a block or function; observes a histogram or summary, sets a gauge.
///
/// On a labelled metric, `labels()` inside the block picks the child to record on, as with
/// prometheus_client: `with h.time() as t: t.labels("x")`.
#[pyclass(name = "Timer", module = "metrics._core", frozen)]
pub struct PyTimer {
    metric: Py<PyAny>,
    // Finds the child `labels()` returns.
    resolve: Resolve,
    state: Mutex<TimerState>,
}

struct TimerState {
    target: Option<Target>,
    start: Option<Instant>,
    duration: Option<f64>,
}

impl PyTimer {
    /// A timer on `metric`, whose series is `target` (None: a labelled parent, until `labels()`).
    pub(crate) fn new(metric: Py<PyAny>, target: Option<Target>, resolve: Resolve) -> PyTimer {
        PyTimer { metric, resolve, state: Mutex::new(TimerState { target, start: None, duration: None }) }
    }
}

#[pymethods]
impl PyTimer {
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        sync::lock(&slf.get().state).start = Some(Instant::now());
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        let mut state = sync::lock(&self.state);
        let Some(start) = state.start.take() else { return Ok(false) };
        let seconds = start.elapsed().as_secs_f64();
        state.duration = Some(seconds);
        match &state.target {
            Some(target) => target.record(seconds),
            None => return Err(PyValueError::new_err("metric is missing label values")),
        }
        Ok(false)
    }

    /// Record on the child with these label values (for a timer on a labelled metric).
    #[pyo3(signature = (*args, **kwargs))]
    fn labels(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let child = self.metric.bind(py).call_method("labels", args, kwargs)?;
        let target = (self.resolve)(&child)?;
        sync::lock(&self.state).target = Some(target);
        Ok(())
    }

    /// Seconds the last timed block took (None before it ends).
    #[getter]
    fn duration(&self) -> Option<f64> {
        sync::lock(&self.state).duration
    }

    /// A fresh timer on the same metric (one per decorated call).
    fn _fresh(&self, py: Python<'_>) -> PyTimer {
        let target = sync::lock(&self.state).target.clone();
        PyTimer::new(self.metric.clone_ref(py), target, self.resolve)
    }

    fn __call__<'py>(slf: &Bound<'py, Self>, func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        decorate(slf.as_any(), func)
    }
}

/// Counts a block or function as in progress on a gauge.
#[pyclass(name = "InProgressTracker", module = "metrics._core", frozen)]
pub struct PyInProgress {
    target: Target,
}

impl PyInProgress {
    pub(crate) fn new(target: Target) -> PyInProgress {
        PyInProgress { target }
    }
}

#[pymethods]
impl PyInProgress {
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf.get().target.series.inc(1.0);
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.target.series.inc(-1.0);
        false
    }

    /// A fresh tracker on the same gauge.
    fn _fresh(&self) -> PyInProgress {
        PyInProgress::new(self.target.clone())
    }

    fn __call__<'py>(slf: &Bound<'py, Self>, func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        decorate(slf.as_any(), func)
    }
}

/// Counts exceptions of a given type raised in a block or function.
#[pyclass(name = "ExceptionCounter", module = "metrics._core", frozen)]
pub struct PyExceptionCounter {
    target: Target,
    exception: Py<PyAny>,
}

impl PyExceptionCounter {
    pub(crate) fn new(target: Target, exception: Py<PyAny>) -> PyExceptionCounter {
        PyExceptionCounter { target, exception }
    }
}

#[pymethods]
impl PyExceptionCounter {
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if let Some(t) = exc_type {
            if let Ok(t) = t.cast::<PyType>() {
                if t.is_subclass(self.exception.bind(py))? {
                    self.target.series.inc(1.0);
                }
            }
        }
        Ok(false)
    }

    /// A fresh counter context on the same metric.
    fn _fresh(&self, py: Python<'_>) -> PyExceptionCounter {
        PyExceptionCounter::new(self.target.clone(), self.exception.clone_ref(py))
    }

    fn __call__<'py>(slf: &Bound<'py, Self>, func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        decorate(slf.as_any(), func)
    }
}
