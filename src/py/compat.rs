//! `CompatRecorder`: django-prometheus's request families, recorded in the request's one crossing.
//!
//! With `METRICS_COMPAT_DJANGO_PROMETHEUS` on, every request also counts in the families
//! django-prometheus's middlewares fill. The middleware's core records them right after its own
//! five metrics, from what it already read of the request, so compatibility adds no call into
//! Python. Series are looked up once per label combination and kept as [`Handle`]s, which follow
//! a user's `remove()` or `clear()` to the new series.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pyo3::prelude::*;

use super::fields::PyRequestFields;
use super::metric::{family_of, python_time};
use super::request::{METHODS, OTHER_INDEX};
use crate::desc::Kind;
use crate::family::{Family, Handle, Series};
use crate::sync;

/// django-prometheus's `method` label of a method outside the standard ones.
const INVALID_METHOD: &str = "<invalid method>";
/// django-prometheus's `view` label of a request no URL pattern matched.
const UNNAMED_VIEW: &str = "<unnamed view>";
/// At most this many distinct Content-Type values have their charset remembered.
const CONTENT_TYPES_KEPT: usize = 64;

/// The label combination of a request in the compatibility families.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    method: usize,
    view: String,
    status: u16,
    secure: bool,
    resolved: bool,
}

/// The labelled series one kind of request writes to.
struct Bundle {
    counts: Vec<Handle>,
    latency: Handle,
}

/// The compatibility families and the series found so far.
pub(crate) struct Compat {
    requests_before: Handle,
    responses_before: Handle,
    latency_including: Handle,
    request_body: Handle,
    response_body: Handle,
    streaming: Handle,
    ajax: Handle,
    by_method: Arc<Family>,
    by_transport: Arc<Family>,
    by_status: Arc<Family>,
    by_status_view_method: Arc<Family>,
    by_view_transport_method: Arc<Family>,
    latency_by_view_method: Arc<Family>,
    by_charset: Arc<Family>,
    by_templatename: Arc<Family>,
    // Whether the scheme can be read from the environ (no proxy header to trust).
    scheme_from_environ: bool,
    bundles: RwLock<HashMap<Key, Arc<Bundle>>>,
    charsets: RwLock<HashMap<String, Arc<Handle>>>,
    charset_of_type: RwLock<HashMap<String, String>>,
    templates: RwLock<HashMap<String, Arc<Handle>>>,
}

/// Return the series of `family` for `labels` as a handle that follows removals.
fn handle(py: Python<'_>, family: &Arc<Family>, labels: Vec<String>) -> PyResult<Handle> {
    let series = family.series_with(labels, || python_time(py))?;
    Ok(Handle::new(Arc::clone(family), series, true))
}

fn observe(py: Python<'_>, handle: &Handle, value: f64) {
    let series: &Series = handle.series(|| python_time(py));
    let desc = &handle.family().desc;
    match desc.kind {
        Kind::Histogram => series.observe_histogram(&desc.buckets, value),
        Kind::Summary => series.observe_summary(value),
        _ => series.inc(value),
    }
}

fn count(py: Python<'_>, handle: &Handle) {
    handle.series(|| python_time(py)).inc(1.0);
}

/// Return the handle kept under `key` in `map`, making it with `make` on first use.
fn kept(
    map: &RwLock<HashMap<String, Arc<Handle>>>,
    key: &str,
    make: impl FnOnce() -> PyResult<Handle>,
) -> PyResult<Arc<Handle>> {
    if let Some(found) = sync::read(map).get(key) {
        return Ok(Arc::clone(found));
    }
    let made = Arc::new(make()?);
    Ok(Arc::clone(sync::write(map).entry(key.to_owned()).or_insert(made)))
}

impl Compat {
    fn bundle(&self, py: Python<'_>, key: &Key) -> PyResult<Arc<Bundle>> {
        if let Some(found) = sync::read(&self.bundles).get(key) {
            return Ok(Arc::clone(found));
        }
        let method = METHODS.get(key.method).copied().unwrap_or(INVALID_METHOD).to_owned();
        let transport = if key.secure { "https" } else { "http" }.to_owned();
        let status = key.status.to_string();
        let view = key.view.clone();
        let mut counts = vec![
            handle(py, &self.by_method, vec![method.clone()])?,
            handle(py, &self.by_transport, vec![transport.clone()])?,
            handle(py, &self.by_status, vec![status.clone()])?,
            handle(py, &self.by_status_view_method, vec![status, view.clone(), method.clone()])?,
        ];
        if key.resolved {
            counts.push(handle(
                py,
                &self.by_view_transport_method,
                vec![view.clone(), transport, method.clone()],
            )?);
        }
        let latency = handle(py, &self.latency_by_view_method, vec![view, method])?;
        let made = Arc::new(Bundle { counts, latency });
        Ok(Arc::clone(sync::write(&self.bundles).entry(key.clone()).or_insert(made)))
    }

    /// Return the charset of `response`, remembered per Content-Type.
    fn charset(&self, fields: &PyRequestFields, response: &Bound<'_, PyAny>) -> PyResult<String> {
        if let Some(set) = fields.charset_override(response)? {
            return Ok(set);
        }
        let content_type = fields.content_type(response)?;
        if let Some(found) = sync::read(&self.charset_of_type).get(&content_type) {
            return Ok(found.clone());
        }
        let charset = fields.charset(response)?;
        let mut kept = sync::write(&self.charset_of_type);
        if kept.len() < CONTENT_TYPES_KEPT {
            kept.insert(content_type, charset.clone());
        }
        Ok(charset)
    }

    /// Record one request in the compatibility families.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        py: Python<'_>,
        fields: &PyRequestFields,
        request: &Bound<'_, PyAny>,
        environ: &Bound<'_, PyAny>,
        response: Option<&Bound<'_, PyAny>>,
        method: usize,
        status: u16,
        duration: f64,
        request_size: f64,
        response_size: Option<f64>,
    ) -> PyResult<()> {
        let (view, resolved) = match fields.qualified_view(request)? {
            Some(view) if !view.is_empty() => (view, true),
            Some(_) => (UNNAMED_VIEW.to_owned(), true),
            None => (UNNAMED_VIEW.to_owned(), false),
        };
        let secure = fields.is_secure(request, environ, self.scheme_from_environ)?;
        let ajax = fields.is_ajax(environ)?;
        let method = method.min(OTHER_INDEX);
        let bundle = self.bundle(py, &Key { method, view, status, secure, resolved })?;
        count(py, &self.requests_before);
        for h in &bundle.counts {
            count(py, h);
        }
        count(py, &self.responses_before);
        observe(py, &bundle.latency, duration);
        observe(py, &self.latency_including, duration);
        observe(py, &self.request_body, request_size);
        if ajax {
            count(py, &self.ajax);
        }
        let Some(response) = response else { return Ok(()) };
        match response_size {
            Some(size) => observe(py, &self.response_body, size),
            None => count(py, &self.streaming),
        }
        let charset = self.charset(fields, response)?;
        let counter = kept(&self.charsets, &charset, || handle(py, &self.by_charset, vec![charset.clone()]))?;
        count(py, &counter);
        if let Some(template) = fields.template_name(response)? {
            let counter = kept(&self.templates, &template, || {
                handle(py, &self.by_templatename, vec![template.clone()])
            })?;
            count(py, &counter);
        }
        Ok(())
    }
}

/// django-prometheus's request families, handed to the middleware, which records them in the
/// same call as its own (`METRICS_COMPAT_DJANGO_PROMETHEUS`).
#[pyclass(name = "CompatRecorder", module = "metrics._core", frozen)]
pub struct PyCompatRecorder {
    pub(crate) inner: Arc<Compat>,
}

#[pymethods]
impl PyCompatRecorder {
    /// Record into these families (django-prometheus's names and labels); `scheme_from_environ`:
    /// no proxy header is trusted, so the scheme is the server's.
    #[new]
    #[pyo3(signature = (*, requests_before, responses_before, latency_including, request_body, response_body, streaming, ajax, by_method, by_transport, by_status, by_status_view_method, by_view_transport_method, latency_by_view_method, by_charset, by_templatename, scheme_from_environ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        requests_before: &Bound<'_, PyAny>,
        responses_before: &Bound<'_, PyAny>,
        latency_including: &Bound<'_, PyAny>,
        request_body: &Bound<'_, PyAny>,
        response_body: &Bound<'_, PyAny>,
        streaming: &Bound<'_, PyAny>,
        ajax: &Bound<'_, PyAny>,
        by_method: &Bound<'_, PyAny>,
        by_transport: &Bound<'_, PyAny>,
        by_status: &Bound<'_, PyAny>,
        by_status_view_method: &Bound<'_, PyAny>,
        by_view_transport_method: &Bound<'_, PyAny>,
        latency_by_view_method: &Bound<'_, PyAny>,
        by_charset: &Bound<'_, PyAny>,
        by_templatename: &Bound<'_, PyAny>,
        scheme_from_environ: bool,
    ) -> PyResult<Self> {
        let family = |obj: &Bound<'_, PyAny>| -> PyResult<Arc<Family>> {
            family_of(obj)?
                .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("not a metric of this package"))
        };
        let single = |obj: &Bound<'_, PyAny>| -> PyResult<Handle> { handle(py, &family(obj)?, Vec::new()) };
        let inner = Compat {
            requests_before: single(requests_before)?,
            responses_before: single(responses_before)?,
            latency_including: single(latency_including)?,
            request_body: single(request_body)?,
            response_body: single(response_body)?,
            streaming: single(streaming)?,
            ajax: single(ajax)?,
            by_method: family(by_method)?,
            by_transport: family(by_transport)?,
            by_status: family(by_status)?,
            by_status_view_method: family(by_status_view_method)?,
            by_view_transport_method: family(by_view_transport_method)?,
            latency_by_view_method: family(latency_by_view_method)?,
            by_charset: family(by_charset)?,
            by_templatename: family(by_templatename)?,
            scheme_from_environ,
            bundles: RwLock::new(HashMap::new()),
            charsets: RwLock::new(HashMap::new()),
            charset_of_type: RwLock::new(HashMap::new()),
            templates: RwLock::new(HashMap::new()),
        };
        Ok(PyCompatRecorder { inner: Arc::new(inner) })
    }
}
