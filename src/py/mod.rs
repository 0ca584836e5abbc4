//! PyO3 bindings: `metrics._core`. Converts Python objects at the edge, then calls the engine.

mod compat;
mod context;
mod fields;
mod metric;
mod middleware;
mod registry;
mod request;

use pyo3::prelude::*;

use crate::encode;
use crate::error::Error;

pyo3::create_exception!(
    metrics._core,
    StoreError,
    pyo3::exceptions::PyOSError,
    "The multiprocess store cannot be used or read (an I/O fault); the message starts with the file or directory concerned."
);

/// The one place engine errors become Python exceptions: a registry clash is
/// prometheus_client's `DuplicateTimeseries` (a `ValueError`, so code catching either works
/// unchanged); a store fault or an unreadable store file is a `StoreError` (an `OSError`) whose
/// message starts with the path; a bad argument a `ValueError`, as
/// prometheus_client raises.
impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match &err {
            Error::Duplicate(message) => {
                let duplicate = Python::attach(|py| {
                    py.import("prometheus_client.registry")
                        .and_then(|m| m.getattr("DuplicateTimeseries"))
                        .and_then(|class| class.call1((message.as_str(),)))
                        .map(PyErr::from_value)
                        .ok()
                });
                duplicate.unwrap_or_else(|| pyo3::exceptions::PyValueError::new_err(message.clone()))
            }
            // Only the message: setting OSError's `filename` would make its `str()` an
            // "[Errno None] None: ..." line.
            Error::Store { .. } | Error::Corrupt { .. } => StoreError::new_err(err.to_string()),
            Error::Invalid(message) => pyo3::exceptions::PyValueError::new_err(message.clone()),
        }
    }
}

/// Return the trace id of a valid W3C `traceparent` header value, else None.
#[pyfunction]
fn trace_id_from_traceparent(header: &str) -> Option<&str> {
    crate::exemplar::trace_id_from_traceparent(header)
}

/// Format `value` as prometheus_client's `floatToGoString` does.
#[pyfunction]
fn float_to_go_string(value: f64) -> String {
    let mut s = String::new();
    crate::float::write_go_float(&mut s, value);
    s
}

/// Keep every metric value in the shared store under `path` (multiprocess mode), moving the
/// values written so far into it.
#[pyfunction]
fn enable_multiprocess(path: std::path::PathBuf) -> PyResult<()> {
    let store = crate::store::shared::SharedStore::open(&path)?;
    crate::store::switch_to(std::sync::Arc::new(store));
    Ok(())
}

/// Set the permission bits of the files the shared store creates from now on (0600, 0640, 0660).
#[pyfunction]
fn set_store_file_mode(mode: u32) -> PyResult<()> {
    Ok(crate::store::shared::set_file_mode(mode)?)
}

/// In a forked child: claim a slot of its own before anything is written.
#[pyfunction]
fn after_fork() {
    crate::store::after_fork();
}

/// Fold the slots of dead processes into the archive of the shared store under `path`.
///
/// Like every function that takes the store's locks, it keeps the GIL: `os.fork` needs the GIL,
/// so no child is ever forked while this process holds one of them.
#[pyfunction]
fn compact(path: std::path::PathBuf) -> PyResult<Vec<String>> {
    let store = crate::store::shared::SharedStore::open(&path)?;
    store.compact()?;
    Ok(crate::store::Store::take_warnings(&store))
}

/// "local" or "shared".
#[pyfunction]
fn store_kind() -> &'static str {
    crate::store::current().kind()
}

/// Problems the store met since the last call (corrupt files, failed allocations).
#[pyfunction]
fn take_store_warnings() -> Vec<String> {
    crate::store::current().take_warnings()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    registry::set_family_of(metric::family_of);
    m.add_class::<metric::PyCounter>()?;
    m.add_class::<metric::PyGauge>()?;
    m.add_class::<metric::PyHistogram>()?;
    m.add_class::<metric::PySummary>()?;
    m.add_class::<metric::PyInfo>()?;
    m.add_class::<metric::PyEnum>()?;
    m.add_class::<registry::PyRegistry>()?;
    m.add_class::<context::PyTimer>()?;
    m.add_class::<context::PyInProgress>()?;
    m.add_class::<context::PyExceptionCounter>()?;
    m.add_class::<request::PyRequestMetrics>()?;
    m.add_class::<middleware::PyRecordingMiddleware>()?;
    m.add_class::<middleware::PyRecordedRequest>()?;
    m.add_class::<fields::PyRequestFields>()?;
    m.add_class::<compat::PyCompatRecorder>()?;
    m.add_class::<fields::PyRequestRules>()?;
    m.add("StoreError", m.py().get_type::<StoreError>())?;
    m.add_function(wrap_pyfunction!(enable_multiprocess, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(set_store_file_mode, m)?)?;
    m.add_function(wrap_pyfunction!(compact, m)?)?;
    m.add_function(wrap_pyfunction!(store_kind, m)?)?;
    m.add_function(wrap_pyfunction!(take_store_warnings, m)?)?;
    m.add_function(wrap_pyfunction!(float_to_go_string, m)?)?;
    m.add_function(wrap_pyfunction!(trace_id_from_traceparent, m)?)?;
    m.add_function(wrap_pyfunction!(registry::set_default_registry, m)?)?;
    m.add_function(wrap_pyfunction!(metric::gauge_functions, m)?)?;
    m.add("TEXT_CONTENT_TYPE", encode::text::CONTENT_TYPE)?;
    m.add("OPENMETRICS_CONTENT_TYPE", encode::openmetrics::CONTENT_TYPE)?;
    m.add("PROTOBUF_CONTENT_TYPE", encode::protobuf::CONTENT_TYPE)?;
    crate::names::set_legacy_probe(registry::legacy_validation);
    Ok(())
}
