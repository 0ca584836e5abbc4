//! `CollectorRegistry`: our families plus foreign Python collectors, and the exposition entry points.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::encode::raw::{RawFamily, RawSample};
use crate::encode::{self, FamilyRender, FamilySnapshot, Options};
use crate::exemplar::Exemplar;
use crate::names::Escaping;
use crate::registry::Registry;
use crate::sync;

static DEFAULT: PyOnceLock<Py<PyRegistry>> = PyOnceLock::new();

/// Return the family behind one of our metric objects (None: a foreign collector).
pub(crate) type FamilyOf = fn(&Bound<'_, PyAny>) -> PyResult<Option<Arc<crate::family::Family>>>;

/// The metric classes' `FamilyOf`, handed over when the module is made, so that this module
/// never depends on them.
static FAMILY_OF: std::sync::OnceLock<FamilyOf> = std::sync::OnceLock::new();

/// Let the registry recognise our metric objects with `family_of`.
pub(crate) fn set_family_of(family_of: FamilyOf) {
    // Set once per process by the module's init; a second init finds the same function.
    let _ = FAMILY_OF.set(family_of);
}

fn family_of(collector: &Bound<'_, PyAny>) -> PyResult<Option<Arc<crate::family::Family>>> {
    match FAMILY_OF.get() {
        Some(family_of) => family_of(collector),
        None => Ok(None),
    }
}

/// Make `registry` the one metrics register in when no `registry=` is given.
#[pyfunction]
pub fn set_default_registry(py: Python<'_>, registry: Py<PyRegistry>) -> PyResult<()> {
    registry.get().everything.store(true, Ordering::Relaxed);
    DEFAULT.set(py, registry).map_err(|_| PyValueError::new_err("the default registry is already set"))
}

/// The default registry (created on first use if Python has not set one).
pub(crate) fn default_registry(py: Python<'_>) -> PyResult<&Py<PyRegistry>> {
    DEFAULT.get_or_try_init(py, || Py::new(py, PyRegistry::empty()))
}

/// Whether prometheus_client's legacy name validation is on (its
/// `PROMETHEUS_LEGACY_NAME_VALIDATION` switch), so a name both libraries see is judged alike;
/// classic names only when it cannot be read.
pub(crate) fn legacy_validation() -> bool {
    Python::attach(|py| {
        py.import("prometheus_client.validation")
            .and_then(|m| m.getattr("get_legacy_validation"))
            .and_then(|f| f.call0())
            .and_then(|v| v.extract::<bool>())
            .unwrap_or(true)
    })
}

/// Where a new metric registers: the default registry, none, or the one given.
pub(crate) enum RegistryArg {
    Default,
    Nothing,
    Given(Py<PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for RegistryArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            Ok(RegistryArg::Nothing)
        } else {
            Ok(RegistryArg::Given(obj.to_owned().unbind()))
        }
    }
}

impl RegistryArg {
    /// Register `family` where this argument says.
    pub(crate) fn register(self, py: Python<'_>, family: &Arc<crate::family::Family>) -> PyResult<()> {
        let registry = match self {
            RegistryArg::Nothing => return Ok(()),
            RegistryArg::Default => default_registry(py)?.clone_ref(py).into_bound(py),
            RegistryArg::Given(obj) => obj.into_bound(py).cast_into::<PyRegistry>().map_err(|_| {
                PyTypeError::new_err(
                    "registry must be a metrics.CollectorRegistry or None; to show these metrics in \
                     prometheus_client's registry, register metrics.core.PrometheusCollector there",
                )
            })?,
        };
        Ok(registry.get().inner.register(Arc::clone(family))?)
    }
}

/// The set of metrics one exposition shows.
#[pyclass(name = "CollectorRegistry", module = "metrics._core", subclass, frozen)]
pub struct PyRegistry {
    pub(crate) inner: Arc<Registry>,
    foreign: Mutex<Vec<Py<PyAny>>>,
    // The default registry also shows families that only other processes created.
    everything: AtomicBool,
}

impl PyRegistry {
    fn empty() -> PyRegistry {
        PyRegistry {
            inner: Arc::new(Registry::new()),
            foreign: Mutex::new(Vec::new()),
            everything: AtomicBool::new(false),
        }
    }
}

type PyExemplar = (HashMap<String, String>, f64, Option<f64>);
type PySample = (String, HashMap<String, String>, f64, Option<f64>, Option<PyExemplar>);
type PyFamily = (String, String, String, String, Vec<PySample>);

fn owner_key(obj: &Bound<'_, PyAny>) -> String {
    format!("collector@{:x}", obj.as_ptr() as usize)
}

/// The sample names a foreign collector produces, from its `describe()`, or with
/// `auto_describe` from its `collect()` when it has no `describe()` (prometheus_client's rule).
fn foreign_names(collector: &Bound<'_, PyAny>, auto_describe: bool) -> PyResult<Vec<String>> {
    let describe = match collector.getattr("describe") {
        Ok(d) => d,
        Err(_) if auto_describe => collector.getattr("collect")?,
        Err(_) => return Ok(Vec::new()),
    };
    let mut names = Vec::new();
    for metric in describe.call0()?.try_iter()? {
        let metric = metric?;
        let name: String = metric.getattr("name")?.extract()?;
        let kind: String = metric.getattr("type")?.extract()?;
        let suffixes = crate::names::exposure_of(&kind).map_or(&[][..], |e| e.sample_suffixes);
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        names.push(name);
    }
    Ok(names)
}

fn raw_families(foreign: Vec<PyFamily>) -> Vec<RawFamily> {
    foreign
        .into_iter()
        .map(|(name, kind, help, unit, samples)| RawFamily {
            name,
            kind,
            help,
            unit,
            samples: samples
                .into_iter()
                .map(|(name, labels, value, timestamp, exemplar)| RawSample {
                    name,
                    labels: labels.into_iter().collect(),
                    value,
                    timestamp,
                    exemplar: exemplar.map(|(labels, value, timestamp)| {
                        let mut labels: Vec<(String, String)> = labels.into_iter().collect();
                        labels.sort();
                        Exemplar { labels, value, timestamp: timestamp.unwrap_or(f64::NAN) }
                    }),
                })
                .collect(),
        })
        .collect()
}

/// Render snapshots as `(name, type, help, unit, [(sample name, labels, value)])` tuples.
pub(crate) fn snapshots_to_py<'py>(
    py: Python<'py>,
    snaps: &[FamilySnapshot],
    created: bool,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for fam in snaps {
        let desc = &fam.desc;
        // Plain names: this is the data prometheus_client's own encoders escape.
        let render = FamilyRender::new(desc, Escaping::AllowUtf8);
        let samples = PyList::empty(py);
        for series in &fam.series {
            let base = PyDict::new(py);
            for (k, v) in desc.labelnames.iter().zip(&series.labels) {
                base.set_item(k, v)?;
            }
            for (k, v) in &series.info {
                base.set_item(k, v)?;
            }
            for s in render.samples(series) {
                let labels = base.copy()?;
                if let (Some(k), Some(v)) = (render.extra_name(), s.extra) {
                    labels.set_item(k, v)?;
                }
                let exemplar = match s.exemplar {
                    Some(e) => {
                        let ex_labels = PyDict::new(py);
                        for (k, v) in &e.labels {
                            ex_labels.set_item(k, v)?;
                        }
                        Some((ex_labels, e.value, e.timestamp))
                    }
                    None => None,
                };
                samples.append((format!("{}{}", desc.name, s.suffix), labels, s.value, exemplar))?;
            }
            if created && render.has_created() {
                samples.append((format!("{}_created", desc.name), base, series.created, py.None()))?;
            }
        }
        let kind = desc.kind.openmetrics_name();
        out.append((desc.name.as_str(), kind, desc.help.as_str(), desc.unit.as_str(), samples))?;
    }
    Ok(out)
}

#[pymethods]
impl PyRegistry {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyRegistry {
        PyRegistry::empty()
    }

    /// Add a metric of ours, or any object with `collect()` (and optionally `describe()`).
    fn register(&self, collector: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some(family) = family_of(collector)? {
            return Ok(self.inner.register(family)?);
        }
        let names = foreign_names(collector, false)?;
        self._register_foreign(collector, names)
    }

    /// The sample names `collector` produces and clashes with (see `foreign_names`).
    #[pyo3(signature = (collector, auto_describe=false))]
    fn _foreign_names(&self, collector: &Bound<'_, PyAny>, auto_describe: bool) -> PyResult<Vec<String>> {
        foreign_names(collector, auto_describe)
    }

    /// Add a foreign collector that produces (and clashes with) the sample names `names`.
    fn _register_foreign(&self, collector: &Bound<'_, PyAny>, names: Vec<String>) -> PyResult<()> {
        if !collector.hasattr("collect")? {
            return Err(PyTypeError::new_err("a collector needs a collect() method"));
        }
        self.inner.reserve(&owner_key(collector), &names)?;
        sync::lock(&self.foreign).push(collector.clone().unbind());
        Ok(())
    }

    /// Claim sample names for `owner` (a key of the caller's), as a collector would.
    fn _reserve(&self, owner: &str, names: Vec<String>) -> PyResult<()> {
        Ok(self.inner.reserve(owner, &names)?)
    }

    /// Release the names `_reserve` claimed for `owner`.
    fn _release(&self, owner: &str) {
        self.inner.release(owner);
    }

    /// Each family of ours with the sample names it produces.
    fn _family_sample_names(&self) -> Vec<(String, Vec<String>)> {
        self.inner.families().iter().map(|f| (f.desc.name.clone(), f.desc.sample_names())).collect()
    }

    /// Remove a metric or collector.
    fn unregister(&self, collector: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some(family) = family_of(collector)? {
            self.inner.unregister(&family.desc.name);
            return Ok(());
        }
        self.inner.release(&owner_key(collector));
        sync::lock(&self.foreign).retain(|c| !c.is(collector));
        Ok(())
    }

    /// The foreign collectors registered here.
    fn _foreign_collectors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Py<PyAny>> = sync::lock(&self.foreign).iter().map(|c| c.clone_ref(py)).collect();
        PyList::new(py, items)
    }

    /// Our families as plain tuples (see `metrics.core` for the prometheus_client adapter).
    #[pyo3(signature = (created=true))]
    fn _snapshot<'py>(&self, py: Python<'py>, created: bool) -> PyResult<Bound<'py, PyList>> {
        // Collected with the GIL held: see `_encode`.
        let snaps = self.inner.collect(self.everything.load(Ordering::Relaxed));
        snapshots_to_py(py, &snaps, created)
    }

    /// Encode our families plus `foreign` ones (already collected by Python) as bytes: text
    /// 0.0.4 (or 1.0.0, the same layout), OpenMetrics 1.0 with `openmetrics`, or Prometheus's
    /// protobuf with `protobuf`; names escaped by `escaping` (`allow-utf-8`, `underscores`,
    /// `dots`, `values`).
    #[pyo3(signature = (openmetrics=false, created=true, foreign=Vec::new(), gzip=false, escaping="underscores", protobuf=false))]
    #[allow(clippy::too_many_arguments)]
    fn _encode<'py>(
        &self,
        py: Python<'py>,
        openmetrics: bool,
        created: bool,
        foreign: Vec<PyFamily>,
        gzip: bool,
        escaping: &str,
        protobuf: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let escaping = Escaping::parse(escaping)
            .ok_or_else(|| PyValueError::new_err(format!("unknown escaping scheme: {escaping:?}")))?;
        // Collect with the GIL held: `os.fork` needs the GIL, so no child is ever forked while
        // this thread holds a family's or the store's lock (the child would inherit it locked and
        // deadlock on its first new label set). Only the encoding, on owned data, runs without it.
        let snaps = self.inner.collect(self.everything.load(Ordering::Relaxed));
        let raw = raw_families(foreign);
        let out = py.detach(move || -> std::io::Result<Vec<u8>> {
            let opts = Options { created, escaping };
            let bytes = if protobuf {
                let mut buf = Vec::with_capacity(snaps.len() * 256);
                encode::protobuf::encode(&mut buf, &snaps, opts);
                encode::protobuf::encode_raw(&mut buf, &raw, opts);
                buf
            } else {
                let mut text = String::with_capacity(snaps.len() * 256);
                if openmetrics {
                    encode::openmetrics::encode(&mut text, &snaps, opts);
                    encode::raw::encode_openmetrics(&mut text, &raw, escaping);
                    encode::openmetrics::finish(&mut text);
                } else {
                    encode::text::encode(&mut text, &snaps, opts);
                    encode::raw::encode_text(&mut text, &raw, escaping);
                }
                text.into_bytes()
            };
            if gzip {
                encode::gzip(&bytes)
            } else {
                Ok(bytes)
            }
        })?;
        Ok(PyBytes::new(py, &out))
    }
}
