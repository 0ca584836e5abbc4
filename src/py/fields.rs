//! `RequestFields` and `RequestRules`: what the web framework's glue declares to the core.
//!
//! The core knows no framework. The glue (`metrics.middleware`) names, once, the request and
//! response attributes that hold what the HTTP metrics need (method, path, URL match, body
//! size, status), and hands over the routing rules as plain values; the request path then reads
//! those attributes by the names it was given. A framework release that renames one breaks the
//! glue's declaration, in Python, with a clear error, never a silent count.

use pyo3::exceptions::{PyAttributeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString};

use super::request::{method_index, OTHER_INDEX};

/// The `view` label of a request no URL pattern matched.
pub(crate) const UNRESOLVED_VIEW: &str = "<unresolved>";

/// Where the request and response keep what the HTTP metrics read, by attribute name.
#[pyclass(name = "RequestFields", module = "metrics._core", frozen)]
pub struct PyRequestFields {
    method: Py<PyString>,
    path: Py<PyString>,
    url_match: Py<PyString>,
    pattern_name: Py<PyString>,
    qualified_name: Py<PyString>,
    route: Py<PyString>,
    environ: Py<PyString>,
    content_length: Py<PyString>,
    status: Py<PyString>,
    streaming: Py<PyString>,
    content: Py<PyString>,
    // A response class whose `content` is `plain_content` keeps its body as a list of byte
    // strings under this name: their lengths are summed instead of joining a copy.
    body_chunks: Option<Py<PyString>>,
    plain_content: Py<PyAny>,
    // The `environ` key of the W3C `traceparent` header (exemplars).
    traceparent: Py<PyString>,
    // What django-prometheus's families read besides (compatibility): the request's scheme
    // (attribute, and the `environ` key the server sets), the `environ` key of the
    // X-Requested-With header, the response's explicit charset and its derived one, its
    // headers mapping and Content-Type key, and its template name.
    scheme: Py<PyString>,
    scheme_key: Py<PyString>,
    requested_with: Py<PyString>,
    charset_override: Py<PyString>,
    charset: Py<PyString>,
    headers: Py<PyString>,
    content_type: Py<PyString>,
    // Where the headers mapping keeps `lower-case name -> (name, value)`, read without a call
    // when the glue found one; the Content-Type key in lower case for it.
    header_store: Option<Py<PyString>>,
    content_type_lower: Py<PyString>,
    template_name: Py<PyString>,
}

/// Return `environ[key]` of a mapping (a dict, or anything with `get`), None when absent.
fn environ_get<'py>(
    environ: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match environ.cast::<PyDict>() {
        Ok(environ) => environ.get_item(key),
        Err(_) => {
            let found = environ.call_method1(intern!(environ.py(), "get"), (key,))?;
            Ok(if found.is_none() { None } else { Some(found) })
        }
    }
}

fn interned(py: Python<'_>, name: &str) -> Py<PyString> {
    PyString::intern(py, name).unbind()
}

impl PyRequestFields {
    /// Return the path the request was made to (what the routing rules match).
    pub(crate) fn path<'py>(&self, request: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        request.getattr(self.path.bind(request.py()))
    }

    /// Return the method slot of the request's method (anything but a standard one: `other`).
    pub(crate) fn method_of(&self, request: &Bound<'_, PyAny>) -> usize {
        let Ok(method) = request.getattr(self.method.bind(request.py())) else { return OTHER_INDEX };
        let Ok(method) = method.cast::<PyString>() else { return OTHER_INDEX };
        method.to_str().map_or(OTHER_INDEX, method_index)
    }

    /// Return the bounded `view` label: `namespace:name`, else the route, else `<unresolved>`.
    pub(crate) fn view_label<'py>(&self, request: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = request.py();
        let unresolved = || intern!(py, UNRESOLVED_VIEW).clone().into_any();
        let found = match request.getattr(self.url_match.bind(py)) {
            Ok(found) => found,
            Err(e) if e.is_instance_of::<PyAttributeError>(py) => return Ok(unresolved()),
            Err(e) => return Err(e),
        };
        if found.is_none() {
            return Ok(unresolved());
        }
        if found.getattr(self.pattern_name.bind(py))?.is_truthy()? {
            return found.getattr(self.qualified_name.bind(py));
        }
        let route = found.getattr(self.route.bind(py))?;
        Ok(if route.is_truthy()? { route } else { unresolved() })
    }

    /// Return the request's `environ` mapping (read once per request, by whoever needs it first).
    pub(crate) fn environ<'py>(&self, request: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        request.getattr(self.environ.bind(request.py()))
    }

    /// Return the request body size from its declared length in `environ` (absent or not a
    /// number: 0).
    pub(crate) fn request_size(&self, environ: &Bound<'_, PyAny>) -> PyResult<f64> {
        let py = environ.py();
        let Some(length) = environ_get(environ, self.content_length.bind(py))? else { return Ok(0.0) };
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

    /// Return the trace id of a valid `traceparent` header in `environ`, if any.
    pub(crate) fn trace_id(&self, environ: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let Some(header) = environ_get(environ, self.traceparent.bind(environ.py()))? else {
            return Ok(None);
        };
        let Ok(header) = header.cast::<PyString>() else { return Ok(None) };
        Ok(crate::exemplar::trace_id_from_traceparent(header.to_str()?).map(str::to_owned))
    }

    /// Return the `qualified_name` of the request's URL match (possibly empty); None: no match.
    pub(crate) fn qualified_view(&self, request: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let py = request.py();
        let Some(found) = request.getattr_opt(self.url_match.bind(py))? else { return Ok(None) };
        if found.is_none() {
            return Ok(None);
        }
        let name = found.getattr(self.qualified_name.bind(py))?;
        Ok(Some(if name.is_truthy()? { name.str()?.to_cow()?.into_owned() } else { String::new() }))
    }

    /// Return whether the request came over HTTPS: from the server's `environ` when
    /// `from_environ` (and the server set it), else from the request's scheme attribute (which
    /// trusts the configured proxy header).
    pub(crate) fn is_secure(
        &self,
        request: &Bound<'_, PyAny>,
        environ: &Bound<'_, PyAny>,
        from_environ: bool,
    ) -> PyResult<bool> {
        let py = request.py();
        if from_environ {
            if let Some(scheme) = environ_get(environ, self.scheme_key.bind(py))? {
                if let Ok(scheme) = scheme.cast::<PyString>() {
                    return Ok(scheme.to_str()? == "https");
                }
            }
        }
        let scheme = request.getattr(self.scheme.bind(py))?;
        Ok(scheme.cast::<PyString>().is_ok_and(|s| s.to_str().is_ok_and(|s| s == "https")))
    }

    /// Return whether the request says it was made by a script (`X-Requested-With: XMLHttpRequest`).
    pub(crate) fn is_ajax(&self, environ: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match environ_get(environ, self.requested_with.bind(environ.py()))? {
            Some(value) => {
                value.cast::<PyString>().is_ok_and(|v| v.to_str().is_ok_and(|v| v == "XMLHttpRequest"))
            }
            None => false,
        })
    }

    /// Return the charset set explicitly on the response, if any.
    pub(crate) fn charset_override(&self, response: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        match response.getattr_opt(self.charset_override.bind(response.py()))? {
            Some(set) if !set.is_none() => Ok(Some(set.str()?.to_cow()?.into_owned())),
            _ => Ok(None),
        }
    }

    /// Return the response's Content-Type header ("" when absent).
    pub(crate) fn content_type(&self, response: &Bound<'_, PyAny>) -> PyResult<String> {
        let py = response.py();
        let headers = response.getattr(self.headers.bind(py))?;
        if let Some(store) = &self.header_store {
            if let Ok(store) = headers.getattr(store.bind(py))?.cast_into::<PyDict>() {
                let entry = store.get_item(self.content_type_lower.bind(py))?;
                return match entry {
                    Some(entry) => Ok(entry.get_item(1)?.str()?.to_cow()?.into_owned()),
                    None => Ok(String::new()),
                };
            }
        }
        let found = headers.call_method1(intern!(py, "get"), (self.content_type.bind(py),))?;
        Ok(if found.is_none() { String::new() } else { found.str()?.to_cow()?.into_owned() })
    }

    /// Return the response's charset as the framework derives it.
    pub(crate) fn charset(&self, response: &Bound<'_, PyAny>) -> PyResult<String> {
        Ok(response.getattr(self.charset.bind(response.py()))?.str()?.to_cow()?.into_owned())
    }

    /// Return the response's template name, if it has one (an attribute of the instance, looked
    /// up in its `__dict__`: a missing attribute would cost an exception per response).
    pub(crate) fn template_name(&self, response: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let py = response.py();
        let name = match response.getattr(intern!(py, "__dict__"))?.cast_into::<PyDict>() {
            Ok(attributes) => attributes.get_item(self.template_name.bind(py))?,
            Err(_) => response.getattr_opt(self.template_name.bind(py))?,
        };
        match name {
            Some(name) if !name.is_none() => Ok(Some(name.str()?.to_cow()?.into_owned())),
            _ => Ok(None),
        }
    }

    /// Return the response status.
    pub(crate) fn status(&self, response: &Bound<'_, PyAny>) -> PyResult<u16> {
        response.getattr(self.status.bind(response.py()))?.extract::<u16>()
    }

    /// Return the response body size; None for a streamed body (counted as it goes out).
    pub(crate) fn response_size(&self, response: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
        let Some(response) = response else { return Ok(Some(0.0)) };
        let py = response.py();
        if response.getattr(self.streaming.bind(py))?.is_truthy()? {
            return Ok(None);
        }
        let content = self.content.bind(py);
        if let Some(chunks) = &self.body_chunks {
            if response.get_type().getattr(content)?.as_ptr() == self.plain_content.as_ptr() {
                if let Ok(container) = response.getattr(chunks.bind(py)) {
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
        }
        Ok(Some(response.getattr(content)?.len()? as f64))
    }
}

#[pymethods]
impl PyRequestFields {
    /// Name the attributes the core reads: of the request (`method`, `path`, `url_match`
    /// with its `pattern_name`, `qualified_name` and `route`, `environ` with its `content_length` key) and
    /// of the response (`status`, `streaming`, `content`; `body_chunks`, optional, on a class
    /// whose `content` is `plain_content`), the `environ` key of the `traceparent` header, and
    /// what the compatibility families read: the request's `scheme` (and its `environ` key
    /// `scheme_key`), the `environ` key of `requested_with`, the response's `charset_override`
    /// and `charset`, its `headers` mapping with the `content_type` key (and `header_store`,
    /// optional: where that mapping keeps lower-case names), and `template_name`.
    #[new]
    #[pyo3(signature = (*, method, path, url_match, pattern_name, qualified_name, route, environ, content_length, status, streaming, content, body_chunks, plain_content, traceparent, scheme, scheme_key, requested_with, charset_override, charset, headers, content_type, header_store, template_name))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        method: &str,
        path: &str,
        url_match: &str,
        pattern_name: &str,
        qualified_name: &str,
        route: &str,
        environ: &str,
        content_length: &str,
        status: &str,
        streaming: &str,
        content: &str,
        body_chunks: Option<&str>,
        plain_content: Py<PyAny>,
        traceparent: &str,
        scheme: &str,
        scheme_key: &str,
        requested_with: &str,
        charset_override: &str,
        charset: &str,
        headers: &str,
        content_type: &str,
        header_store: Option<&str>,
        template_name: &str,
    ) -> Self {
        PyRequestFields {
            method: interned(py, method),
            path: interned(py, path),
            url_match: interned(py, url_match),
            pattern_name: interned(py, pattern_name),
            qualified_name: interned(py, qualified_name),
            route: interned(py, route),
            environ: interned(py, environ),
            content_length: interned(py, content_length),
            status: interned(py, status),
            streaming: interned(py, streaming),
            content: interned(py, content),
            body_chunks: body_chunks.map(|name| interned(py, name)),
            plain_content,
            traceparent: interned(py, traceparent),
            scheme: interned(py, scheme),
            scheme_key: interned(py, scheme_key),
            requested_with: interned(py, requested_with),
            charset_override: interned(py, charset_override),
            charset: interned(py, charset),
            headers: interned(py, headers),
            content_type: interned(py, content_type),
            header_store: header_store.map(|name| interned(py, name)),
            content_type_lower: interned(py, &content_type.to_lowercase()),
            template_name: interned(py, template_name),
        }
    }

    /// Return the bounded `view` label of `request`: `namespace:name`, else the route, else
    /// `<unresolved>`.
    #[pyo3(name = "view_label")]
    fn py_view_label<'py>(&self, request: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.view_label(request)
    }
}

/// The middleware's routing rules, made from settings by the glue: whether recording is on,
/// the path prefixes it skips, and the probes' paths.
#[pyclass(name = "RequestRules", module = "metrics._core", frozen)]
pub struct PyRequestRules {
    enabled: bool,
    excluded: Vec<String>,
    probes: Vec<String>,
}

impl PyRequestRules {
    /// Return whether `path` is a probe's, and whether a request to it is recorded.
    pub(crate) fn route(&self, path: &str) -> (bool, bool) {
        let probe = self.probes.iter().any(|p| p == path);
        let recorded = self.enabled && !self.excluded.iter().any(|prefix| path.starts_with(prefix.as_str()));
        (probe, recorded)
    }
}

#[pymethods]
impl PyRequestRules {
    /// Rules: record when `enabled`, except paths under an `excluded` prefix; `probes` are the
    /// probe paths answered before any host check.
    #[new]
    fn new(enabled: bool, excluded: Vec<String>, probes: Vec<String>) -> Self {
        PyRequestRules { enabled, excluded, probes }
    }

    /// Whether requests are recorded at all.
    #[getter]
    fn enabled(&self) -> bool {
        self.enabled
    }

    /// The path prefixes never recorded.
    #[getter]
    fn excluded(&self) -> Vec<String> {
        self.excluded.clone()
    }

    /// The probes' paths.
    #[getter]
    fn probes(&self) -> Vec<String> {
        self.probes.clone()
    }

    /// Return (whether `path` is a probe's, whether a request to it is recorded).
    #[pyo3(name = "route")]
    fn py_route(&self, path: &str) -> (bool, bool) {
        self.route(path)
    }
}
