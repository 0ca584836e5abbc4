//! PyO3 bindings: `metrics._core`. Converts Python objects at the edge, then calls the engine.

mod context;
mod metric;
mod registry;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::encode;

/// Gzip `data` (used by the exposition view).
#[pyfunction]
fn gzip<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let out = py.detach(|| encode::gzip(data))?;
    Ok(PyBytes::new(py, &out))
}

/// Format `value` as prometheus_client's `floatToGoString` does.
#[pyfunction]
fn float_to_go_string(value: f64) -> String {
    let mut s = String::new();
    encode::float::write_go_float(&mut s, value);
    s
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
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
    m.add_function(wrap_pyfunction!(gzip, m)?)?;
    m.add_function(wrap_pyfunction!(float_to_go_string, m)?)?;
    m.add_function(wrap_pyfunction!(registry::set_default_registry, m)?)?;
    m.add_function(wrap_pyfunction!(metric::gauge_functions, m)?)?;
    m.add("TEXT_CONTENT_TYPE", encode::text::CONTENT_TYPE)?;
    m.add("OPENMETRICS_CONTENT_TYPE", encode::openmetrics::CONTENT_TYPE)?;
    Ok(())
}
