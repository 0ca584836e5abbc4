//! Metric families, their label sets (series) and the operations on a series' cells.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cell::{self, Cells, ExemplarSink};
use crate::desc::{Desc, Kind};
use crate::error::{Error, Result};
use crate::exemplar::Exemplar;
use crate::native::NativeState;
use crate::snapshot::{FamilySnapshot, SeriesSnapshot};
use crate::sync;

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One label set of a family and its cells.
pub struct Series {
    /// Label values, aligned with the family's label names.
    pub labels: Vec<String>,
    /// The values.
    pub cells: Cells,
    created: AtomicU64,
    seq: u64,
    info: Mutex<Vec<(String, String)>>,
    // A gauge merged as `mostrecent`: every write also records its time, whoever writes.
    stamped: bool,
    // Exemplars by position (a counter's one, a histogram's per bucket); empty until the
    // first one. Written and read under the lock, never on a plain inc or observe.
    exemplars: Mutex<ExemplarState>,
    // Set once the family let go of this series (`remove()`, `clear()`): whoever still holds
    // it writes where no scrape reads, unless it asks the family again (see `Handle`).
    detached: AtomicBool,
    // A histogram with native buckets: their parameters and the lock taken to re-place them.
    native: Option<NativeState>,
}

/// A series' exemplars: this process's copy, and where other processes can read them.
#[derive(Default)]
struct ExemplarState {
    local: Vec<Option<Exemplar>>,
    // Shared entries (multiprocess mode), asked of the store once per series and store.
    shared: Option<Box<dyn ExemplarSink>>,
    asked: bool,
}

impl Series {
    /// Add `amount` to the first cell (counter, gauge), stamping the time where it is merged by it.
    #[inline]
    pub fn inc(&self, amount: f64) {
        cell::add(&self.cells.get()[0], amount);
        self.stamp();
    }

    /// Set the first cell (gauge, enum state index), stamping the time where it is merged by it.
    #[inline]
    pub fn set(&self, value: f64) {
        cell::set(&self.cells.get()[0], value);
        self.stamp();
    }

    /// Record that the value was written now, for gauges merged as `mostrecent` (their second
    /// cell). Every write goes through `inc` or `set`, so no caller can forget it.
    #[inline]
    fn stamp(&self) {
        if self.stamped {
            if let Some(c) = self.cells.get().get(1) {
                cell::set(c, now());
            }
        }
    }

    /// Read the first cell.
    #[inline]
    pub fn get(&self) -> f64 {
        cell::get(&self.cells.get()[0])
    }

    /// Record one histogram observation against `buckets`, and in the native buckets if the
    /// family has them (one more atomic add, see `native`).
    #[inline]
    pub fn observe_histogram(&self, buckets: &[f64], value: f64) {
        let cells = self.cells.get();
        cell::add(&cells[buckets.len()], value);
        // A NaN lands in no bucket, as in prometheus_client.
        if !value.is_nan() {
            let idx = buckets.partition_point(|b| *b < value);
            if let Some(c) = cells.get(idx) {
                cell::add(c, 1.0);
            }
        }
        if let Some(native) = &self.native {
            if let Some(block) = cells.get(buckets.len() + 1..) {
                native.observe(block, value);
            }
        }
    }

    /// Record one summary observation.
    #[inline]
    pub fn observe_summary(&self, value: f64) {
        let cells = self.cells.get();
        cell::add(&cells[0], 1.0);
        cell::add(&cells[1], value);
    }

    /// This process's exemplars by position (empty when none was recorded).
    pub fn exemplars(&self) -> Vec<Option<Exemplar>> {
        sync::lock(&self.exemplars).local.clone()
    }

    /// Let go of shared exemplar entries (after a fork or a store switch: they belong to the
    /// parent's, or the old, store); the next exemplar asks the current store again.
    pub fn forget_shared_exemplars(&self) {
        let mut state = sync::lock(&self.exemplars);
        state.shared = None;
        state.asked = false;
    }

    /// The bucket an observation of `value` falls in (`buckets.len()` for NaN: none).
    pub fn bucket_of(buckets: &[f64], value: f64) -> usize {
        if value.is_nan() {
            buckets.len()
        } else {
            buckets.partition_point(|b| *b < value)
        }
    }

    /// Zero every cell and restart the creation time at `created` (counter `reset()`).
    pub fn reset(&self, created: f64) {
        for c in self.cells.get() {
            cell::set(c, 0.0);
        }
        self.created.store(created.to_bits(), Ordering::Relaxed);
    }

    /// Creation time, seconds since the epoch.
    pub fn created(&self) -> f64 {
        f64::from_bits(self.created.load(Ordering::Relaxed))
    }

    /// Replace the key-value pairs of an info series.
    pub fn set_info(&self, pairs: Vec<(String, String)>) {
        *sync::lock(&self.info) = pairs;
    }

    /// The key-value pairs of an info series.
    pub fn info(&self) -> Vec<(String, String)> {
        sync::lock(&self.info).clone()
    }

    /// Current values of all cells.
    pub fn values(&self) -> Vec<f64> {
        self.cells.get().iter().map(cell::get).collect()
    }

    /// Insertion order within the family.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the family let go of this series (`remove()`, `clear()`).
    #[inline]
    pub fn detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }
}

/// Every family alive in this process, so a store switch or a fork can move their series.
static ALL_FAMILIES: Mutex<Vec<Weak<Family>>> = Mutex::new(Vec::new());

/// Every family alive in this process.
pub fn all_families() -> Vec<Arc<Family>> {
    let mut list = sync::lock(&ALL_FAMILIES);
    list.retain(|w| w.strong_count() > 0);
    list.iter().filter_map(Weak::upgrade).collect()
}

/// A metric family: a description plus its series, keyed by label values.
pub struct Family {
    /// The fixed description.
    pub desc: Arc<Desc>,
    series: RwLock<HashMap<Vec<String>, Arc<Series>>>,
    next_seq: AtomicU64,
    // Handles on this family's series find the new series after a removal (the built-in
    // families: a user's `clear()` must not switch their counting off).
    reattach: AtomicBool,
}

impl Family {
    /// Create a family writing to the current store; a family without labels gets its one series now.
    pub fn new(desc: Desc) -> Arc<Family> {
        Family::new_with(desc, now)
    }

    /// As `new`, with the creation time of an unlabelled family's series from `clock`.
    pub fn new_with(desc: Desc, clock: impl FnOnce() -> f64) -> Arc<Family> {
        let fam = Arc::new(Family {
            desc: Arc::new(desc),
            series: RwLock::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
            reattach: AtomicBool::new(false),
        });
        sync::lock(&ALL_FAMILIES).push(Arc::downgrade(&fam));
        if fam.desc.labelnames.is_empty() {
            // Cannot fail: zero label values for zero label names.
            let _ = fam.series_with(Vec::new(), clock);
        }
        fam
    }

    /// Return the series for `labels`, creating it on first use.
    pub fn series(&self, labels: Vec<String>) -> Result<Arc<Series>> {
        self.series_with(labels, now)
    }

    /// As `series`, with the creation time of a new series from `clock` (the caller's clock:
    /// the bindings use Python's `time.time`, so code that fakes time sees it in `_created`).
    pub fn series_with(&self, labels: Vec<String>, clock: impl FnOnce() -> f64) -> Result<Arc<Series>> {
        if labels.len() != self.desc.labelnames.len() {
            return Err(Error::Invalid("Incorrect label count".into()));
        }
        if let Some(s) = sync::read(&self.series).get(&labels) {
            return Ok(Arc::clone(s));
        }
        // The clock first, outside the lock: the bindings pass Python's `time.time`, which, if
        // patched with Python code, may let another thread run, and that thread must never find
        // this lock held while it waits for the GIL.
        let created = clock();
        let mut map = sync::write(&self.series);
        if let Some(s) = map.get(&labels) {
            return Ok(Arc::clone(s));
        }
        let cells = cell::backing().alloc(&self.desc, &labels, created);
        let series = Arc::new(Series {
            labels: labels.clone(),
            cells,
            created: AtomicU64::new(created.to_bits()),
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            info: Mutex::new(Vec::new()),
            stamped: self.desc.tracks_time(),
            exemplars: Mutex::new(ExemplarState::default()),
            detached: AtomicBool::new(false),
            native: self.desc.native.map(NativeState::new),
        });
        map.insert(labels, Arc::clone(&series));
        Ok(series)
    }

    /// Keep `exemplar` for `series` at `position` of `len` (a counter: 0 of 1; a histogram: its
    /// bucket), in this process and, in multiprocess mode, where other processes can read it.
    pub fn set_exemplar(&self, series: &Series, position: usize, len: usize, exemplar: Exemplar) {
        let mut state = sync::lock(&series.exemplars);
        if state.local.len() < len {
            state.local.resize(len, None);
        }
        if !state.asked {
            state.asked = true;
            state.shared = cell::backing().exemplar_slots(&self.desc, &series.labels, len);
        }
        if let Some(shared) = &state.shared {
            shared.write(position, &exemplar);
        }
        if let Some(slot) = state.local.get_mut(position) {
            *slot = Some(exemplar);
        }
    }

    /// Make every [`Handle`] on this family's series find the family's new series for its labels
    /// after a `remove()` or `clear()`, instead of writing on to the removed one.
    pub fn reattach_handles(&self) {
        self.reattach.store(true, Ordering::Relaxed);
    }

    /// Whether handles on this family's series reattach after a removal.
    #[inline]
    pub fn reattaches(&self) -> bool {
        self.reattach.load(Ordering::Relaxed)
    }

    /// Mark `gone` detached and let the store drop this process's values of them. Called after
    /// the family's lock is released: the store takes its own locks, and a scrape holding those
    /// may be waiting for the family's.
    fn detach(&self, gone: Vec<Arc<Series>>) {
        if gone.is_empty() {
            return;
        }
        let backing = cell::backing();
        for series in gone {
            series.detached.store(true, Ordering::Relaxed);
            backing.release(&self.desc, &series.labels, &series.cells);
        }
    }

    /// Forget the series for `labels`; return whether it existed.
    pub fn remove(&self, labels: &[String]) -> bool {
        let gone = sync::write(&self.series).remove(labels);
        let existed = gone.is_some();
        self.detach(gone.into_iter().collect());
        existed
    }

    /// Forget every series whose labels at the given positions have the given values; return
    /// the label values of the series removed.
    pub fn remove_matching(&self, matching: &[(usize, String)]) -> Vec<Vec<String>> {
        let mut map = sync::write(&self.series);
        let gone: Vec<Vec<String>> = map
            .keys()
            .filter(|labels| matching.iter().all(|(i, v)| labels.get(*i) == Some(v)))
            .cloned()
            .collect();
        let series: Vec<Arc<Series>> = gone.iter().filter_map(|labels| map.remove(labels)).collect();
        drop(map);
        self.detach(series);
        gone
    }

    /// Forget every series.
    pub fn clear(&self) {
        let gone: Vec<Arc<Series>> = sync::write(&self.series).drain().map(|(_, s)| s).collect();
        self.detach(gone);
    }

    /// All series, in creation order.
    pub fn all_series(&self) -> Vec<Arc<Series>> {
        let mut out: Vec<Arc<Series>> = sync::read(&self.series).values().cloned().collect();
        out.sort_by_key(|s| s.seq);
        out
    }

    /// Read this process's values of every series.
    pub fn snapshot(&self) -> FamilySnapshot {
        let series = self
            .all_series()
            .into_iter()
            .map(|s| SeriesSnapshot {
                labels: s.labels.clone(),
                values: s.values(),
                created: s.created(),
                info: if self.desc.kind == Kind::Info { s.info() } else { Vec::new() },
                exemplars: s.exemplars(),
            })
            .collect();
        FamilySnapshot { desc: Arc::clone(&self.desc), series }
    }
}

/// A handle on the series of one label set, kept for speed by whoever records on it (a child
/// returned by `labels()`, the request recorder).
///
/// A series the family let go of (`remove()`, `clear()`) is detached: a handle on it finds the
/// family's new series for the same labels on its next write when the family reattaches
/// handles (the built-in families), or, for any family, when the handle was made with
/// `always`. Otherwise it keeps writing to the detached series, which no scrape reads, as a
/// child of prometheus_client does.
pub struct Handle {
    family: Arc<Family>,
    always: bool,
    // Points into an `Arc` in `held`.
    current: AtomicPtr<Series>,
    // Every series this handle pointed to, kept for the handle's life: a reference returned by
    // `series` stays valid however often the handle moves on. Only ever appended to.
    held: Mutex<Vec<Arc<Series>>>,
}

impl Handle {
    /// A handle on `series` of `family`; `always`: reattach whatever the family says.
    pub fn new(family: Arc<Family>, series: Arc<Series>, always: bool) -> Handle {
        let current = AtomicPtr::new(Arc::as_ptr(&series) as *mut Series);
        Handle { family, always, current, held: Mutex::new(vec![series]) }
    }

    /// The family of the series.
    pub fn family(&self) -> &Arc<Family> {
        &self.family
    }

    /// The series to write to: the current one, or, once it is detached and the handle
    /// reattaches, the family's series for the same labels (created with `clock` if needed).
    #[inline]
    pub fn series(&self, clock: impl FnOnce() -> f64) -> &Series {
        // SAFETY: `current` always points to a series whose `Arc` is in `held`, which is only
        // appended to and lives as long as `self`, so the series outlives the borrow of `self`.
        let series = unsafe { &*self.current.load(Ordering::Acquire) };
        if series.detached() && (self.always || self.family.reattaches()) {
            return self.reattach(series, clock);
        }
        series
    }

    #[cold]
    fn reattach<'s>(&'s self, old: &'s Series, clock: impl FnOnce() -> f64) -> &'s Series {
        // A failure (it cannot happen: the labels fit the family) keeps the detached series.
        let Ok(new) = self.family.series_with(old.labels.clone(), clock) else { return old };
        let ptr = Arc::as_ptr(&new) as *mut Series;
        let mut held = sync::lock(&self.held);
        held.push(new);
        // Stored under the lock, so `arc` (which reads `held` under it) agrees with `current`.
        self.current.store(ptr, Ordering::Release);
        drop(held);
        // SAFETY: the `Arc` behind `ptr` was just put in `held` (see `series`).
        unsafe { &*ptr }
    }

    /// The current series, shared (for context managers that outlive this call).
    pub fn arc(&self, clock: impl FnOnce() -> f64) -> Arc<Series> {
        let current: *const Series = self.series(clock);
        let held = sync::lock(&self.held);
        // `current` is in `held`; the last entry is the fallback should a racing reattach have
        // moved on meanwhile (both are series of the same labels).
        let found = held.iter().rev().find(|s| Arc::as_ptr(s) == current).or(held.last());
        found.map_or_else(|| Arc::clone(&held[0]), Arc::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist() -> Arc<Family> {
        let desc = Desc::new(Kind::Histogram, "h", "help", vec![], "", "", "")
            .unwrap()
            .with_buckets(vec![1.0, 2.0])
            .unwrap();
        Family::new(desc)
    }

    #[test]
    fn histogram_observations_land_in_the_right_bucket() {
        let fam = hist();
        let s = fam.series(vec![]).unwrap();
        for v in [0.5, 1.0, 1.5, 3.0, f64::NAN] {
            s.observe_histogram(&fam.desc.buckets, v);
        }
        let v = s.values();
        assert_eq!(&v[..3], &[2.0, 1.0, 1.0]);
        assert!(v[3].is_nan());
    }

    #[test]
    fn buckets_are_validated() {
        let d = || Desc::new(Kind::Histogram, "h", "", vec![], "", "", "").unwrap();
        assert!(d().with_buckets(vec![2.0, 1.0]).is_err());
        assert!(d().with_buckets(vec![f64::INFINITY]).is_err());
        assert_eq!(d().with_buckets(vec![1.0]).unwrap().buckets, vec![1.0, f64::INFINITY]);
    }

    #[test]
    fn series_are_shared_and_removable() {
        let desc = Desc::new(Kind::Counter, "c", "", vec!["a".into()], "", "", "").unwrap();
        let fam = Family::new(desc);
        assert!(fam.series(vec![]).is_err());
        let a = fam.series(vec!["x".into()]).unwrap();
        a.inc(2.0);
        assert_eq!(fam.series(vec!["x".into()]).unwrap().get(), 2.0);
        assert!(fam.remove(&["x".into()]));
        assert_eq!(fam.series(vec!["x".into()]).unwrap().get(), 0.0);
    }

    fn counter() -> Arc<Family> {
        Family::new(Desc::new(Kind::Counter, "c", "", vec!["a".into()], "", "", "").unwrap())
    }

    fn value(fam: &Family, label: &str) -> Option<f64> {
        fam.all_series().iter().find(|s| s.labels == [label]).map(|s| s.get())
    }

    #[test]
    fn a_handle_stays_detached_unless_it_reattaches() {
        let fam = counter();
        let plain = Handle::new(Arc::clone(&fam), fam.series(vec!["x".into()]).unwrap(), false);
        plain.series(now).inc(1.0);
        fam.clear();
        plain.series(now).inc(1.0);
        assert_eq!(value(&fam, "x"), None, "a prometheus_client child writes nowhere after clear()");
        fam.reattach_handles();
        plain.series(now).inc(1.0);
        assert_eq!(value(&fam, "x"), Some(1.0));
        assert!(fam.remove(&["x".into()]));
        plain.series(now).inc(2.0);
        assert_eq!(value(&fam, "x"), Some(2.0));
    }

    #[test]
    fn an_always_handle_reattaches_to_the_series_labels_made_meanwhile() {
        let fam = counter();
        let handle = Handle::new(Arc::clone(&fam), fam.series(vec!["x".into()]).unwrap(), true);
        let before: *const Series = handle.series(now);
        fam.remove_matching(&[(0, "x".into())]);
        fam.series(vec!["x".into()]).unwrap().inc(3.0);
        handle.series(now).inc(1.0);
        assert_eq!(value(&fam, "x"), Some(4.0));
        assert!(!std::ptr::eq(before, handle.series(now)));
        assert!(std::ptr::eq(Arc::as_ptr(&handle.arc(now)), handle.series(now)));
    }
}
