//! `RecordingMiddleware`: the request path of `metrics.middleware.MetricsMiddleware`, one call each.
//!
//! The framework calls the middleware once per request; this type's `__call__` is that call. It
//! reads the few request and response attributes the five HTTP metrics need (by the names the
//! glue declared in a `RequestFields`), takes the clock itself, calls the rest of the stack
//! (`get_response`) and records, so a sync request crosses from Python into the core once; an
//! async one too (a `RecordedRequest` drives the coroutine of the stack below and records when
//! it ends). What is framework policy rather than measurement (settings, probes, tick hooks, a
//! span reader, streamed bodies, counting exceptions) stays in Python
//! and is handed over as values and callables when the middleware is built; the core names no
//! attribute of the framework's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::exceptions::asyncio::CancelledError;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::compat::PyCompatRecorder;
use super::fields::{PyRequestFields, PyRequestRules, UNRESOLVED_VIEW};
use super::request::{Measured, PyRequestMetrics, Recorder, METHODS, OTHER_METHOD};
use crate::exemplar::Exemplar;
use crate::family::{now, Series};
use crate::sync;

/// How often one cause of failure may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The status of an async request cancelled because the client went away (nginx's).
const CLIENT_CLOSED: u16 = 499;

/// The label of method slot `index`.
fn method_name(index: usize) -> &'static str {
    METHODS.get(index).copied().unwrap_or(OTHER_METHOD)
}

/// Nanoseconds from the first call in this process to `now`.
fn monotonic_ns(now: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let elapsed = now.saturating_duration_since(*BASE.get_or_init(|| now));
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// What `Hooks::record` read of a request, kept for the compatibility recorder.
struct Read<'py> {
    // The request's environ, read once for every header the recorders need.
    environ: Option<Bound<'py, PyAny>>,
    status: Option<u16>,
    request_size: f64,
    // None: streamed.
    response_size: Option<f64>,
}

/// What the Python middleware hands over when it is built.
struct Hooks {
    get_response: Py<PyAny>,
    async_mode: bool,
    // None: the HTTP metrics could not be set up; requests are served, not recorded.
    recorder: Option<Arc<Recorder>>,
    // Where the request and response keep what is read of them.
    fields: Py<PyRequestFields>,
    // () -> the current `RequestRules`; called only when `rules_slot` holds none.
    rules: Py<PyAny>,
    // Where the glue keeps the current `RequestRules` (dict, key) until settings change: read
    // per request without a call.
    rules_slot: Option<(Py<PyDict>, Py<PyString>)>,
    // (middleware, request) -> awaitable: a probe's request in async mode.
    acall: Option<Py<PyAny>>,
    // (middleware, request, exception): counts an exception that escaped the stack below.
    count_escaped: Py<PyAny>,
    tick: Py<PyAny>,
    next_tick: AtomicU64,
    // Nanoseconds between two calls of `tick` from requests: the one schedule of the refresh,
    // kept here so that a request costs a monotonic clock read, not a call into Python.
    tick_every: u64,
    // Trace ids as exemplars (METRICS_EXEMPLARS on).
    exemplars: bool,
    // () -> the trace id of the current span or None (a tracing library is installed).
    span_trace_id: Option<Py<PyAny>>,
    // django-prometheus's families (compatibility on), recorded in the same call.
    compat: Option<Py<PyCompatRecorder>>,
    // (response, method, view): counts a streamed body as it goes out.
    streamed: Py<PyAny>,
    // request -> the probe's response, or None to go on (host allowed).
    probe: Py<PyAny>,
    logger: Py<PyAny>,
    // When each message was last logged.
    logged: Mutex<HashMap<&'static str, Instant>>,
}

impl Hooks {
    /// Return whether the path of `request` is a probe's, and whether the request is recorded.
    fn route(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<(bool, bool)> {
        let path = self.fields.get().path(request)?;
        self.route_path(py, path.cast::<PyString>()?.to_str()?)
    }

    /// Return whether `path` is a probe's, and whether a request to it is recorded.
    fn route_path(&self, py: Python<'_>, path: &str) -> PyResult<(bool, bool)> {
        let kept = match &self.rules_slot {
            Some((slot, key)) => slot.bind(py).get_item(key)?,
            None => None,
        };
        let current = match kept {
            Some(current) => current,
            None => self.rules.bind(py).call0()?,
        };
        let rules = current.cast::<PyRequestRules>()?;
        Ok(rules.get().route(path))
    }

    /// The exemplar of the request's trace: the current span's, else its `traceparent` header's.
    /// A failing span source costs the request its exemplar, never its count.
    fn exemplar(&self, py: Python<'_>, environ: &Bound<'_, PyAny>, duration: f64) -> Option<Exemplar> {
        let from_span = match &self.span_trace_id {
            Some(source) => match source.call0(py).and_then(|id| id.extract::<Option<String>>(py)) {
                Ok(found) => found,
                Err(e) => {
                    self.log(
                        py,
                        "metrics: the exemplar source failed; the request is counted without one",
                        e,
                    );
                    None
                }
            },
            None => None,
        };
        let trace_id = match from_span {
            Some(id) => Some(id),
            None => match self.fields.get().trace_id(environ) {
                Ok(found) => found,
                Err(e) => {
                    self.log(py, "metrics: could not read the traceparent header", e);
                    None
                }
            },
        };
        trace_id.map(|id| Exemplar::of_trace(&id, duration, now()))
    }

    /// Log `err` under `message`, at most once a minute per message: a cause that repeats on
    /// every request must not flood the log.
    fn log(&self, py: Python<'_>, message: &'static str, err: PyErr) {
        let now = Instant::now();
        {
            let mut logged = sync::lock(&self.logged);
            if logged.get(message).is_some_and(|at| now.duration_since(*at) < LOG_EVERY) {
                return;
            }
            logged.insert(message, now);
        }
        let kwargs = PyDict::new(py);
        if kwargs.set_item(intern!(py, "exc_info"), err.into_value(py)).is_ok() {
            // A logging failure leaves nothing to tell: the request goes on.
            let _ = self.logger.bind(py).call_method(intern!(py, "error"), (message,), Some(&kwargs));
        }
    }

    /// Count the request in progress; return its method slot, the in-progress series it was
    /// counted in (None: it was not), and its start (the one clock read on entry).
    fn begin(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> (usize, Option<&Series>, Instant) {
        let index = self.fields.get().method_of(request);
        let start = Instant::now();
        let begun = (|| -> PyResult<Option<&Series>> {
            let now = monotonic_ns(start);
            let due = self.next_tick.load(Ordering::Relaxed);
            if now >= due
                && self
                    .next_tick
                    .compare_exchange(
                        due,
                        now.saturating_add(self.tick_every),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                // Multiprocess mode: refresh this worker's own process metrics when due. A
                // failure there costs the refresh, not the request's count.
                if let Err(e) = self.tick.call0(py) {
                    self.log(py, "metrics: could not refresh this process's metrics", e);
                }
            }
            let Some(recorder) = &self.recorder else { return Ok(None) };
            let gauge = recorder.in_progress(py, index)?;
            gauge.inc(1.0);
            Ok(Some(gauge))
        })();
        match begun {
            Ok(gauge) => (index, gauge, start),
            Err(e) => {
                self.log(py, "metrics: could not count the request in progress", e);
                (index, None, start)
            }
        }
    }

    /// Record a finished request (`response` None: an exception, `status_without_response`).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        index: usize,
        in_progress: Option<&Series>,
        start: Instant,
        response: Option<&Bound<'_, PyAny>>,
        status_without_response: u16,
    ) {
        let duration = start.elapsed().as_secs_f64();
        // First, so that no failure below leaves the request in progress for good; on the
        // series it was counted in, even if a `clear()` replaced it since.
        if let Some(gauge) = in_progress {
            gauge.inc(-1.0);
        }
        let mut read = Read { environ: None, status: None, request_size: 0.0, response_size: Some(0.0) };
        if let Err(e) =
            self.record(py, request, index, duration, response, status_without_response, &mut read)
        {
            self.log(py, "metrics: could not record the request", e);
        }
        if let Some(compat) = &self.compat {
            let recorded = (|| -> PyResult<()> {
                // What `record` read, unless it failed before reading the status.
                let fields = self.fields.get();
                let status = match (read.status, response) {
                    (Some(status), _) => status,
                    (None, Some(response)) => fields.status(response)?,
                    (None, None) => status_without_response,
                };
                let environ = match read.environ.take() {
                    Some(environ) => environ,
                    None => fields.environ(request)?,
                };
                compat.get().inner.record(
                    py,
                    fields,
                    request,
                    &environ,
                    response,
                    index,
                    status,
                    duration,
                    read.request_size,
                    read.response_size,
                )
            })();
            if let Err(e) = recorded {
                self.log(py, "metrics: could not record the request (django-prometheus names)", e);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
        index: usize,
        duration: f64,
        response: Option<&Bound<'_, PyAny>>,
        status_without_response: u16,
        read: &mut Read<'py>,
    ) -> PyResult<()> {
        let fields = self.fields.get();
        let view = fields.view_label(request)?;
        // No response: the exception escapes every handler above, the client sees a 500.
        let status = match response {
            Some(response) => fields.status(response)?,
            None => status_without_response,
        };
        read.status = Some(status);
        let environ = read.environ.insert(fields.environ(request)?);
        read.request_size = fields.request_size(environ)?;
        read.response_size = fields.response_size(response)?;
        let exemplar = if self.exemplars { self.exemplar(py, environ, duration) } else { None };
        if let Some(recorder) = &self.recorder {
            let measured = Measured {
                view: view.cast::<PyString>()?.to_str()?,
                status,
                duration,
                request_size: read.request_size,
                response_size: read.response_size,
                exemplar,
            };
            recorder.record(py, index, &measured)?;
        }
        if let (None, Some(response)) = (read.response_size, response) {
            self.streamed.call1(py, (response, method_name(index), view))?;
        }
        Ok(())
    }
}

/// The base of `MetricsMiddleware`: its `__call__` records a sync request in one call.
///
/// Built empty; the Python subclass's `__init__` hands over the stack below and its hooks with
/// `_bind`. In async mode it returns a `RecordedRequest` to await (a probe's request goes to
/// the `acall` hook first, which checks its host).
#[pyclass(name = "RecordingMiddleware", module = "metrics._core", subclass, frozen)]
pub struct PyRecordingMiddleware {
    hooks: OnceLock<Hooks>,
}

/// The async path of one recorded request: awaited in place of the coroutine of the stack below,
/// which it drives, and recorded when that coroutine returns or raises, in the same call.
///
/// A coroutine to asyncio (`__await__`, `send`, `throw`, `close`): `asyncio.run()` and
/// `create_task()` accept it as they accept the coroutine of an `async def`.
#[pyclass(name = "RecordedRequest", module = "metrics._core")]
pub struct PyRecordedRequest {
    middleware: Py<PyRecordingMiddleware>,
    request: Py<PyAny>,
    state: Awaited,
}

/// Where a `RecordedRequest` stands.
enum Awaited {
    /// Not sent anything yet: nothing counted, no coroutine made.
    Pending,
    /// Counted in progress; the coroutine of the stack below runs.
    Running(Running),
    /// Recorded (or never begun).
    Done,
}

/// A request counted in progress, and the coroutine of the stack below.
struct Running {
    coroutine: Py<PyAny>,
    index: usize,
    // The in-progress series the request was counted in (None: it was not); shared, to outlive
    // the call that counted it.
    in_progress: Option<Arc<Series>>,
    start: Instant,
}

/// What one step of the coroutine below gave.
enum Step<'py> {
    Yielded(Bound<'py, PyAny>),
    Returned(Bound<'py, PyAny>),
    Raised(PyErr),
}

impl PyRecordedRequest {
    /// Count the request in progress and make the coroutine of the stack below, on the first step.
    fn begin(&mut self, py: Python<'_>) -> PyResult<()> {
        if !matches!(self.state, Awaited::Pending) {
            return Ok(());
        }
        let middleware = self.middleware.get();
        let hooks = middleware.hooks()?;
        let request = self.request.bind(py);
        let (index, counted, start) = hooks.begin(py, request);
        let in_progress = match (counted, &hooks.recorder) {
            (Some(_), Some(recorder)) => recorder.in_progress_arc(py, index).ok(),
            _ => None,
        };
        match hooks.get_response.bind(py).call1((request,)) {
            Ok(coroutine) => {
                let coroutine = coroutine.unbind();
                self.state = Awaited::Running(Running { coroutine, index, in_progress, start });
                Ok(())
            }
            Err(err) => {
                let running = Running { coroutine: py.None(), index, in_progress, start };
                Err(self.raised(py, running, err))
            }
        }
    }

    /// Send `value` into the coroutine below, or throw `exc` into it; record when it ends.
    fn step(
        &mut self,
        py: Python<'_>,
        value: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyTuple>>,
    ) -> PyResult<Py<PyAny>> {
        if let (Awaited::Pending, Some(exc)) = (&self.state, exc) {
            // Thrown in before it ran, like into an unstarted coroutine: it raises, unrecorded.
            self.state = Awaited::Done;
            let thrown = exc.get_item(0)?;
            return Err(PyErr::from_value(thrown));
        }
        self.begin(py)?;
        let Awaited::Running(running) = &self.state else {
            return Err(PyRuntimeError::new_err("cannot reuse already awaited coroutine"));
        };
        let coroutine = running.coroutine.bind(py);
        let step = match exc {
            // The one-argument form when that is all there is (the three-argument one is
            // deprecated since Python 3.12).
            Some(exc) => match coroutine.call_method1(intern!(py, "throw"), trimmed(exc)?) {
                Ok(yielded) => Step::Yielded(yielded),
                Err(err) if err.is_instance_of::<PyStopIteration>(py) => {
                    Step::Returned(err.value(py).getattr(intern!(py, "value"))?)
                }
                Err(err) => Step::Raised(err),
            },
            None => send(py, coroutine, value),
        };
        match step {
            Step::Yielded(yielded) => Ok(yielded.unbind()),
            Step::Returned(response) => {
                if let Awaited::Running(running) = std::mem::replace(&mut self.state, Awaited::Done) {
                    let hooks = self.middleware.get().hooks()?;
                    let request = self.request.bind(py);
                    let gauge = running.in_progress.as_deref();
                    hooks.finish(py, request, running.index, gauge, running.start, Some(&response), 500);
                }
                Err(PyStopIteration::new_err((response.unbind(),)))
            }
            Step::Raised(err) => match std::mem::replace(&mut self.state, Awaited::Done) {
                Awaited::Running(running) => Err(self.raised(py, running, err)),
                _ => Err(err),
            },
        }
    }

    /// Record a request whose stack below raised `err` (a cancellation: the client went away,
    /// nginx's 499; anything else: 500, and the exception counted); return `err`.
    fn raised(&mut self, py: Python<'_>, running: Running, err: PyErr) -> PyErr {
        self.state = Awaited::Done;
        let Ok(hooks) = self.middleware.get().hooks() else { return err };
        let request = self.request.bind(py);
        let gauge = running.in_progress.as_deref();
        if err.is_instance_of::<CancelledError>(py) {
            hooks.finish(py, request, running.index, gauge, running.start, None, CLIENT_CLOSED);
        } else {
            hooks.finish(py, request, running.index, gauge, running.start, None, 500);
            let exc = err.value(py).clone();
            if let Err(e) = hooks.count_escaped.call1(py, (self.middleware.bind(py), request, exc)) {
                hooks.log(py, "metrics: could not count an exception", e);
            }
        }
        err
    }

    /// Close the coroutine below; a request it leaves unfinished is recorded as a 500, as
    /// the `GeneratorExit` it gets would be.
    fn close_running(&mut self, py: Python<'_>) -> PyResult<()> {
        match std::mem::replace(&mut self.state, Awaited::Done) {
            Awaited::Running(running) => {
                let closed = running.coroutine.bind(py).call_method0(intern!(py, "close"));
                if let Ok(hooks) = self.middleware.get().hooks() {
                    let request = self.request.bind(py);
                    let gauge = running.in_progress.as_deref();
                    hooks.finish(py, request, running.index, gauge, running.start, None, 500);
                }
                closed.map(|_| ())
            }
            _ => Ok(()),
        }
    }
}

/// The arguments of a `throw`, without trailing Nones.
fn trimmed<'py>(exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyTuple>> {
    let mut len = exc.len();
    while len > 1 && exc.get_item(len - 1)?.is_none() {
        len -= 1;
    }
    Ok(exc.get_slice(0, len))
}

/// One `send` into `coroutine` (`value` None: `None`), without an exception for its return.
fn send<'py>(py: Python<'py>, coroutine: &Bound<'py, PyAny>, value: Option<&Bound<'py, PyAny>>) -> Step<'py> {
    let none = py.None();
    let value = value.map_or(none.as_ptr(), |v| v.as_ptr());
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: the GIL is held (`py`); `coroutine` and `value` are live references for the call;
    // PyIter_Send leaves in `result` a new reference (NEXT, RETURN) or NULL with an exception
    // set (ERROR), each taken over below exactly once.
    let kind = unsafe { ffi::PyIter_Send(coroutine.as_ptr(), value, &mut result) };
    match kind {
        // SAFETY: `result` is the new, non-null reference PyIter_Send returned.
        ffi::PySendResult::PYGEN_NEXT => Step::Yielded(unsafe { Bound::from_owned_ptr(py, result) }),
        // SAFETY: as above.
        ffi::PySendResult::PYGEN_RETURN => Step::Returned(unsafe { Bound::from_owned_ptr(py, result) }),
        ffi::PySendResult::PYGEN_ERROR => Step::Raised(
            PyErr::take(py)
                .unwrap_or_else(|| PyRuntimeError::new_err("the coroutine failed without an exception")),
        ),
    }
}

impl Drop for PyRecordedRequest {
    fn drop(&mut self) {
        if matches!(self.state, Awaited::Running(_)) {
            // Dropped while it ran (never finished, never closed): close it as Python closes a
            // coroutine it collects, so the request leaves the in-progress gauge.
            Python::attach(|py| {
                if let Err(e) = self.close_running(py) {
                    e.write_unraisable(py, None);
                }
            });
        }
    }
}

#[pymethods]
impl PyRecordedRequest {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.step(py, None, None)
    }

    /// Send `value` into the coroutine below (what an event loop does to run it).
    fn send(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py, Some(value), None)
    }

    /// Throw an exception into the coroutine below (a cancellation, for one).
    #[pyo3(signature = (*exc))]
    fn throw(&mut self, py: Python<'_>, exc: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        if exc.is_empty() {
            return Err(PyTypeError::new_err("throw expected at least 1 argument, got 0"));
        }
        self.step(py, None, Some(exc))
    }

    /// Close the coroutine below.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.close_running(py)
    }
}

impl PyRecordingMiddleware {
    fn hooks(&self) -> PyResult<&Hooks> {
        self.hooks
            .get()
            .ok_or_else(|| PyTypeError::new_err("the middleware was not set up: call _bind() in __init__"))
    }
}

#[pymethods]
impl PyRecordingMiddleware {
    /// The `view` label of a request no URL pattern matched.
    #[classattr]
    const UNRESOLVED: &'static str = UNRESOLVED_VIEW;
    /// The `method` label of every non-standard method.
    #[classattr]
    const OTHER_METHOD: &'static str = OTHER_METHOD;

    /// An unbound middleware (any arguments are the subclass's, for its `__init__`).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        PyRecordingMiddleware { hooks: OnceLock::new() }
    }

    /// Hand over the stack below (`get_response`) and the hooks; once per middleware.
    #[pyo3(
        name = "_bind",
        signature = (get_response, *, async_mode, recorder, fields, rules, rules_slot, acall, count_escaped, tick, tick_every, exemplars, span_trace_id, compat, streamed, probe, logger)
    )]
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        get_response: Py<PyAny>,
        async_mode: bool,
        recorder: Option<&Bound<'_, PyRequestMetrics>>,
        fields: Py<PyRequestFields>,
        rules: Py<PyAny>,
        rules_slot: Option<(Py<PyDict>, Py<PyString>)>,
        acall: Option<Py<PyAny>>,
        count_escaped: Py<PyAny>,
        tick: Py<PyAny>,
        tick_every: f64,
        exemplars: bool,
        span_trace_id: Option<Py<PyAny>>,
        compat: Option<Py<PyCompatRecorder>>,
        streamed: Py<PyAny>,
        probe: Py<PyAny>,
        logger: Py<PyAny>,
    ) -> PyResult<()> {
        if !(tick_every.is_finite() && tick_every > 0.0) {
            return Err(PyValueError::new_err(format!(
                "tick_every must be a positive number of seconds, not {tick_every}"
            )));
        }
        let tick_every = u64::try_from(Duration::from_secs_f64(tick_every).as_nanos()).unwrap_or(u64::MAX);
        let hooks = Hooks {
            get_response,
            async_mode,
            recorder: recorder.map(|r| Arc::clone(&r.get().recorder)),
            fields,
            rules,
            rules_slot,
            acall,
            count_escaped,
            tick,
            next_tick: AtomicU64::new(0),
            tick_every,
            exemplars,
            span_trace_id,
            compat,
            streamed,
            probe,
            logger,
            logged: Mutex::new(HashMap::new()),
        };
        self.hooks.set(hooks).map_err(|_| PyRuntimeError::new_err("the middleware is already set up"))
    }

    /// Serve `request` through the stack below and record it (async mode: the `acall` hook).
    fn __call__(slf: &Bound<'_, Self>, request: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let hooks = slf.get().hooks()?;
        if hooks.async_mode {
            return Self::serve_async(slf, request, true);
        }
        let get_response = hooks.get_response.bind(py);
        // Monitoring never changes what the user gets: a failure to route serves the request
        // unrecorded, and is logged.
        let routed = hooks.route(py, request);
        let (probe, recorded) = match routed {
            Ok(routed) => routed,
            Err(e) => {
                hooks.log(py, "metrics: could not route the request; served unrecorded", e);
                (false, false)
            }
        };
        if probe {
            match hooks.probe.call1(py, (request,)) {
                Ok(answer) if !answer.is_none(py) => return Ok(answer),
                Ok(_) => {}
                Err(e) => hooks.log(py, "metrics: could not answer the probe; the site answers it", e),
            }
        }
        if !recorded {
            return Ok(get_response.call1((request,))?.unbind());
        }
        let (index, in_progress, start) = hooks.begin(py, request);
        match get_response.call1((request,)) {
            Ok(response) => {
                hooks.finish(py, request, index, in_progress, start, Some(&response), 500);
                Ok(response.unbind())
            }
            Err(err) => {
                hooks.finish(py, request, index, in_progress, start, None, 500);
                let exc = err.value(py).clone();
                if let Err(e) = hooks.count_escaped.call1(py, (slf, request, exc)) {
                    hooks.log(py, "metrics: could not count an exception", e);
                }
                Err(err)
            }
        }
    }

    /// Return (whether `path` is a probe's, whether a request to it is recorded) under the
    /// current settings: the one definition the sync and async paths and exception counting use.
    #[pyo3(name = "_route")]
    fn py_route(&self, py: Python<'_>, path: &str) -> PyResult<(bool, bool)> {
        self.hooks()?.route_path(py, path)
    }

    /// Serve `request` in async mode, the way `__call__` does, but a probe's path is no
    /// exception: what the `acall` hook returns to once it has let a probe's request through.
    #[pyo3(name = "_serve_async")]
    fn py_serve_async(slf: &Bound<'_, Self>, request: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Self::serve_async(slf, request, false)
    }
}

impl PyRecordingMiddleware {
    /// Return the awaitable of an async request: the stack below's, or a `RecordedRequest`
    /// around it that records the request when it ends. `probes`: a probe's request goes to
    /// the `acall` hook (which checks its host, in Python, where the probe views are).
    fn serve_async(slf: &Bound<'_, Self>, request: &Bound<'_, PyAny>, probes: bool) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let hooks = slf.get().hooks()?;
        let get_response = hooks.get_response.bind(py);
        let (probe, recorded) = match hooks.route(py, request) {
            Ok(routed) => routed,
            Err(e) => {
                hooks.log(py, "metrics: could not route the request; served unrecorded", e);
                (false, false)
            }
        };
        if probes && probe {
            if let Some(acall) = &hooks.acall {
                return acall.call1(py, (slf, request));
            }
        }
        if !recorded {
            return Ok(get_response.call1((request,))?.unbind());
        }
        let awaitable = PyRecordedRequest {
            middleware: slf.clone().unbind(),
            request: request.clone().unbind(),
            state: Awaited::Pending,
        };
        Ok(Py::new(py, awaitable)?.into_any())
    }
}
