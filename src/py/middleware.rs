//! `RecordingMiddleware`: the request path of `metrics.middleware.MetricsMiddleware`, one call each.
//!
//! Django calls the middleware once per request; this type's `__call__` is that call. It reads the
//! few request and response attributes the five HTTP metrics need, takes the clock itself, calls
//! the rest of the stack (`get_response`) and records, so a sync request crosses from Python into
//! the core once. What is Django policy rather than measurement (settings, probes, tick hooks,
//! exemplars, the compatibility recorder, streamed bodies, counting exceptions) stays in Python
//! and is handed over as callables when the middleware is built.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple};

use super::request::{Measured, PyRequestMetrics, Recorder, METHODS, OTHER_INDEX, OTHER_METHOD};
use crate::family::Series;
use crate::sync;

/// The `view` label of a request no URL pattern matched.
const UNRESOLVED_VIEW: &str = "<unresolved>";
/// How often a request may call the `tick` hook (which has its own, longer schedule): a
/// monotonic clock read per request instead of a call into Python.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// How often one cause of failure may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The label of method slot `index`.
fn method_name(index: usize) -> &'static str {
    METHODS.get(index).copied().unwrap_or(OTHER_METHOD)
}

/// Return the method slot of `request.method` (anything but a standard method: `other`).
fn method_of(request: &Bound<'_, PyAny>) -> usize {
    let Ok(method) = request.getattr(intern!(request.py(), "method")) else { return OTHER_INDEX };
    let Ok(method) = method.cast::<PyString>() else { return OTHER_INDEX };
    method.to_str().map_or(OTHER_INDEX, super::request::method_index)
}

/// Return the bounded `view` label: `namespace:name`, else the route, else `<unresolved>`.
fn view_label<'py>(request: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = request.py();
    let unresolved = || intern!(py, UNRESOLVED_VIEW).clone().into_any();
    let found = match request.getattr(intern!(py, "resolver_match")) {
        Ok(found) => found,
        Err(e) if e.is_instance_of::<PyAttributeError>(py) => return Ok(unresolved()),
        Err(e) => return Err(e),
    };
    if found.is_none() {
        return Ok(unresolved());
    }
    if found.getattr(intern!(py, "url_name"))?.is_truthy()? {
        return found.getattr(intern!(py, "view_name"));
    }
    let route = found.getattr(intern!(py, "route"))?;
    Ok(if route.is_truthy()? { route } else { unresolved() })
}

/// Return the request body size from `request.META["CONTENT_LENGTH"]` (absent or not a number: 0).
fn request_size(request: &Bound<'_, PyAny>) -> PyResult<f64> {
    let py = request.py();
    let meta = request.getattr(intern!(py, "META"))?;
    let key = intern!(py, "CONTENT_LENGTH");
    let length = match meta.cast::<PyDict>() {
        Ok(meta) => meta.get_item(key)?,
        Err(_) => Some(meta.call_method1(intern!(py, "get"), (key,))?),
    };
    let Some(length) = length else { return Ok(0.0) };
    if !length.is_truthy()? {
        return Ok(0.0);
    }
    if let Ok(text) = length.cast::<PyString>() {
        // The usual header: plain digits. Anything else goes through int(), as it always has.
        if let Some(digits) =
            text.to_str().ok().filter(|t| t.len() <= 15 && t.bytes().all(|b| b.is_ascii_digit()))
        {
            return Ok(digits.parse::<u64>().map_or(0.0, |n| n as f64));
        }
    }
    match py.get_type::<PyInt>().call1((length,)) {
        Ok(n) => n.extract::<f64>(),
        Err(e) if e.is_instance_of::<PyValueError>(py) => Ok(0.0),
        Err(e) => Err(e),
    }
}

/// Return the response body size; None for a streamed body (counted as it goes out).
///
/// `plain_content` is `HttpResponse.content`: a response class that keeps it holds its body as
/// the list of byte strings that property joins, so their lengths are summed instead of
/// building the joined copy; any other class is asked for `content`.
fn response_size(response: Option<&Bound<'_, PyAny>>, plain_content: &Py<PyAny>) -> PyResult<Option<f64>> {
    let Some(response) = response else { return Ok(Some(0.0)) };
    let py = response.py();
    if response.getattr(intern!(py, "streaming"))?.is_truthy()? {
        return Ok(None);
    }
    let content = intern!(py, "content");
    if response.get_type().getattr(content)?.as_ptr() == plain_content.as_ptr() {
        if let Ok(container) = response.getattr(intern!(py, "_container")) {
            let joined = container.cast::<PyList>().ok().and_then(|chunks| {
                chunks
                    .iter()
                    .try_fold(0usize, |n, c| c.cast::<PyBytes>().ok().map(|b| n + b.as_bytes().len()))
            });
            if let Some(size) = joined {
                return Ok(Some(size as f64));
            }
        }
    }
    Ok(Some(response.getattr(content)?.len()? as f64))
}

/// Nanoseconds from the first call in this process to `now`.
fn monotonic_ns(now: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let elapsed = now.saturating_duration_since(*BASE.get_or_init(|| now));
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// The middleware's settings, as `app_settings.middleware_settings()` returns them.
struct Rules {
    enabled: bool,
    excluded: Vec<String>,
    probes: Vec<String>,
}

impl Rules {
    /// Return whether `path` is a probe's, and whether a request to it is recorded.
    fn route(&self, path: &str) -> (bool, bool) {
        let probe = self.probes.iter().any(|p| p == path);
        let recorded = self.enabled && !self.excluded.iter().any(|prefix| path.starts_with(prefix.as_str()));
        (probe, recorded)
    }

    fn read(value: &Bound<'_, PyAny>) -> PyResult<Rules> {
        let strings = |item: Bound<'_, PyAny>| -> PyResult<Vec<String>> {
            item.try_iter()?.map(|p| p?.extract::<String>()).collect()
        };
        Ok(Rules {
            enabled: value.get_item(0)?.is_truthy()?,
            excluded: strings(value.get_item(1)?)?,
            probes: strings(value.get_item(2)?)?,
        })
    }
}

/// What `Hooks::record` read of a request, kept for the compatibility recorder.
struct Read {
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
    // () -> (enabled, excluded prefixes, probe paths), cached by Python until settings change.
    settings: Py<PyAny>,
    // Where `settings` keeps its answer (dict, key): read directly, it is called only when absent.
    settings_cache: Option<(Py<PyDict>, Py<PyString>)>,
    // `HttpResponse.content`, the property whose body list is summed instead of joined.
    plain_content: Py<PyAny>,
    // The last settings tuple seen and what was read from it (kept while it is the same object).
    rules: Mutex<Option<(Py<PyAny>, Rules)>>,
    tick: Py<PyAny>,
    next_tick: AtomicU64,
    // request -> exemplar labels or None (METRICS_EXEMPLARS on).
    exemplar: Option<Py<PyAny>>,
    // (request, response, status, duration, request size, response size) (compatibility on).
    compat: Option<Py<PyAny>>,
    // (response, method, view): counts a streamed body as it goes out.
    streamed: Py<PyAny>,
    // request -> the probe's response, or None to go on (host allowed).
    probe: Py<PyAny>,
    logger: Py<PyAny>,
    // When each message was last logged.
    logged: Mutex<HashMap<&'static str, Instant>>,
}

impl Hooks {
    /// Return whether `path` is a probe's, and whether a request to it is recorded.
    fn route(&self, py: Python<'_>, path: &str) -> PyResult<(bool, bool)> {
        let cached = match &self.settings_cache {
            Some((cache, key)) => cache.bind(py).get_item(key)?,
            None => None,
        };
        let current = match cached {
            Some(current) => current.unbind(),
            None => self.settings.call0(py)?,
        };
        if let Some((seen, rules)) = sync::lock(&self.rules).as_ref() {
            if seen.as_ptr() == current.as_ptr() {
                return Ok(rules.route(path));
            }
        }
        let rules = Rules::read(current.bind(py))?;
        let route = rules.route(path);
        let replaced = sync::lock(&self.rules).replace((current, rules));
        // The old tuple is released outside the lock.
        drop(replaced);
        Ok(route)
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
        let index = method_of(request);
        let start = Instant::now();
        let begun = (|| -> PyResult<Option<&Series>> {
            let now = monotonic_ns(start);
            let due = self.next_tick.load(Ordering::Relaxed);
            if now >= due
                && self
                    .next_tick
                    .compare_exchange(
                        due,
                        now.saturating_add(TICK_EVERY.as_nanos() as u64),
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
        let mut read = Read { status: None, request_size: 0.0, response_size: Some(0.0) };
        if let Err(e) =
            self.record(py, request, index, duration, response, status_without_response, &mut read)
        {
            self.log(py, "metrics: could not record the request", e);
        }
        if let Some(compat) = &self.compat {
            let recorded = (|| -> PyResult<()> {
                // What `record` read, unless it failed before reading the status.
                let status = match (read.status, response) {
                    (Some(status), _) => status.into_pyobject(py)?.into_any(),
                    (None, Some(response)) => response.getattr(intern!(py, "status_code"))?,
                    (None, None) => status_without_response.into_pyobject(py)?.into_any(),
                };
                let args = (
                    request,
                    response,
                    status,
                    duration,
                    read.request_size as i64,
                    read.response_size.map(|s| s as i64),
                );
                compat.call1(py, args)?;
                Ok(())
            })();
            if let Err(e) = recorded {
                self.log(py, "metrics: could not record the request (django-prometheus names)", e);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        index: usize,
        duration: f64,
        response: Option<&Bound<'_, PyAny>>,
        status_without_response: u16,
        read: &mut Read,
    ) -> PyResult<()> {
        let view = view_label(request)?;
        // No response: the exception escapes every handler above, the client sees a 500.
        let status = match response {
            Some(response) => response.getattr(intern!(py, "status_code"))?.extract::<u16>()?,
            None => status_without_response,
        };
        read.status = Some(status);
        read.request_size = request_size(request)?;
        read.response_size = response_size(response, &self.plain_content)?;
        // A failing exemplar source costs the request its exemplar, not its count.
        let exemplar = match &self.exemplar {
            Some(source) => match source.call1(py, (request,)).and_then(|e| {
                let e = e.into_bound(py);
                if e.is_none() {
                    Ok(None)
                } else {
                    Ok(Some(e.cast_into::<PyDict>()?))
                }
            }) {
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
        if let Some(recorder) = &self.recorder {
            let measured = Measured {
                view: view.cast::<PyString>()?.to_str()?,
                status,
                duration,
                request_size: read.request_size,
                response_size: read.response_size,
                exemplar: exemplar.as_ref(),
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
/// `_bind`. Async requests go to the subclass's `__acall__`, which uses `_begin_request` and
/// `_end_request` around its `await`.
#[pyclass(name = "RecordingMiddleware", module = "metrics._core", subclass, frozen)]
pub struct PyRecordingMiddleware {
    hooks: OnceLock<Hooks>,
}

/// When a request entered the middleware, its method slot, and whether it was counted in progress.
#[pyclass(name = "RequestStart", module = "metrics._core", frozen)]
pub struct PyRequestStart {
    index: usize,
    // The in-progress series the request was counted in (None: it was not).
    in_progress: Option<Arc<Series>>,
    start: Instant,
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
        signature = (get_response, *, async_mode, recorder, settings, settings_cache, plain_content, tick, exemplar, compat, streamed, probe, logger)
    )]
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        get_response: Py<PyAny>,
        async_mode: bool,
        recorder: Option<&Bound<'_, PyRequestMetrics>>,
        settings: Py<PyAny>,
        settings_cache: Option<(Py<PyDict>, Py<PyString>)>,
        plain_content: Py<PyAny>,
        tick: Py<PyAny>,
        exemplar: Option<Py<PyAny>>,
        compat: Option<Py<PyAny>>,
        streamed: Py<PyAny>,
        probe: Py<PyAny>,
        logger: Py<PyAny>,
    ) -> PyResult<()> {
        let hooks = Hooks {
            get_response,
            async_mode,
            recorder: recorder.map(|r| Arc::clone(&r.get().recorder)),
            settings,
            settings_cache,
            plain_content,
            rules: Mutex::new(None),
            tick,
            next_tick: AtomicU64::new(0),
            exemplar,
            compat,
            streamed,
            probe,
            logger,
            logged: Mutex::new(HashMap::new()),
        };
        self.hooks.set(hooks).map_err(|_| PyRuntimeError::new_err("the middleware is already set up"))
    }

    /// Serve `request` through the stack below and record it (async mode: `__acall__`).
    fn __call__(slf: &Bound<'_, Self>, request: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let hooks = slf.get().hooks()?;
        if hooks.async_mode {
            return Ok(slf.call_method1(intern!(py, "__acall__"), (request,))?.unbind());
        }
        let get_response = hooks.get_response.bind(py);
        // Monitoring never changes what the user gets: a failure to route serves the request
        // unrecorded, and is logged.
        let routed = request
            .getattr(intern!(py, "path_info"))
            .and_then(|path| hooks.route(py, path.cast::<PyString>()?.to_str()?));
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
                if let Err(e) = slf.call_method1(intern!(py, "_count_escaped"), (request, exc)) {
                    hooks.log(py, "metrics: could not count an exception", e);
                }
                Err(err)
            }
        }
    }

    /// Return (whether `path` is a probe's, whether a request to it is recorded) under the
    /// current settings: the one definition `__call__`, `__acall__` and `process_exception` use.
    #[pyo3(name = "_route")]
    fn py_route(&self, py: Python<'_>, path: &str) -> PyResult<(bool, bool)> {
        self.hooks()?.route(py, path)
    }

    /// Count `request` in progress and start its clock (the async path).
    #[pyo3(name = "_begin_request")]
    fn begin_request(&self, request: &Bound<'_, PyAny>) -> PyResult<PyRequestStart> {
        let py = request.py();
        let hooks = self.hooks()?;
        let (index, counted, start) = hooks.begin(py, request);
        // Shared, to outlive this call: the request awaits between begin and end.
        let in_progress = match (counted, &hooks.recorder) {
            (Some(_), Some(recorder)) => recorder.in_progress_arc(py, index).ok(),
            _ => None,
        };
        Ok(PyRequestStart { index, in_progress, start })
    }

    /// Record `request`, begun at `start` (the async path; `response` None: it raised).
    #[pyo3(name = "_end_request", signature = (request, start, response=None, status_without_response=500))]
    fn end_request(
        &self,
        request: &Bound<'_, PyAny>,
        start: &Bound<'_, PyRequestStart>,
        response: Option<&Bound<'_, PyAny>>,
        status_without_response: u16,
    ) -> PyResult<()> {
        let s = start.get();
        self.hooks()?.finish(
            request.py(),
            request,
            s.index,
            s.in_progress.as_deref(),
            s.start,
            response,
            status_without_response,
        );
        Ok(())
    }

    /// Return the bounded `view` label: `namespace:name`, else the route, else `<unresolved>`.
    #[staticmethod]
    #[pyo3(name = "view_label")]
    fn py_view_label<'py>(request: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        view_label(request)
    }
}
