//! The seam between metric families and where their values live.
//!
//! A family asks its store for the cells of each new series; hot-path writes are atomic
//! operations on those cells, wherever they are. A scrape asks the store for snapshots, so a
//! store that shares values between processes can merge them there.

pub mod format;
pub mod local;
pub mod merge;
pub mod shared;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crate::cell;
use crate::desc::Kind;
use crate::exemplar::Exemplar;
use crate::family::{self, Family};
use crate::snapshot::FamilySnapshot;
use crate::sync;

pub use crate::cell::{Backing, Cells, ExemplarSink};

/// Where metric values live: process-local heap, or files shared between processes. A store is
/// also the [`Backing`] new series get their cells from while it is current.
pub trait Store: Backing {
    /// Return the samples of `families` as this store sees them; with `everything`, also
    /// families only other processes sharing the store know.
    fn collect(&self, families: &[Arc<Family>], everything: bool) -> Vec<FamilySnapshot>;
    /// A short name for diagnostics ("local", "shared").
    fn kind(&self) -> &'static str;
    /// Called in a forked child before it writes: claim storage of its own.
    fn after_fork(&self) {}
    /// Problems met since the last call (corrupt files, failed allocations), for logging.
    fn take_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Exemplar entries of one series in shared memory (layout: `format::EXEMPLAR_ENTRY`).
pub struct ExemplarSlots {
    base: *mut u8,
    count: usize,
    // Keeps the mapping behind `base` alive.
    _owner: Arc<dyn Send + Sync>,
}

// SAFETY: `base` points into memory kept alive by `_owner` (itself Send + Sync), and the
// memory is only ever written by `write_entry` with atomic stores, so using it from any thread
// is no data race (two concurrent writers, which the owning series' lock prevents, could at
// worst leave an entry that readers discard or find garbled, never undefined behaviour).
unsafe impl Send for ExemplarSlots {}
// SAFETY: as above: every access through a shared reference is an atomic store or reads `count`.
unsafe impl Sync for ExemplarSlots {}

impl ExemplarSink for ExemplarSlots {
    /// Write `exemplar` at `position` under the entry's seqlock (the caller holds the series'
    /// exemplar lock, so there is one writer per process, and only this process writes here).
    fn write(&self, position: usize, exemplar: &Exemplar) {
        self.write_entry(position, exemplar);
    }
}

impl ExemplarSlots {
    /// Wrap `count` entries at `base`, kept alive by `owner`.
    ///
    /// # Safety
    /// `base` must be 8-aligned and point to `count * format::EXEMPLAR_ENTRY` writable bytes
    /// that stay valid while `owner` lives, written by no one else in this process, and read
    /// by others (other processes) only with 8-byte atomic loads.
    pub unsafe fn from_raw(base: *mut u8, count: usize, owner: Arc<dyn Send + Sync>) -> ExemplarSlots {
        ExemplarSlots { base, count, _owner: owner }
    }

    /// Write `exemplar` at `position` under the entry's seqlock.
    pub fn write_entry(&self, position: usize, exemplar: &Exemplar) {
        let Some(labels) = format::exemplar_labels(&exemplar.labels) else { return };
        if position >= self.count {
            return;
        }
        // SAFETY: the entry lies within the `count` entries `from_raw` was given.
        let entry = unsafe { self.base.add(position * format::EXEMPLAR_ENTRY) };
        let word = |offset: usize| {
            // SAFETY: every word written lies within the entry (offset + 8 <= EXEMPLAR_ENTRY:
            // the fields, then labels.len() <= EXEMPLAR_DATA bytes padded to 8) and is 8-aligned
            // (entries are multiples of 8 from an 8-aligned base); other processes read the
            // entry only with 8-byte atomic loads (`from_raw`'s contract).
            unsafe { &*(entry.add(offset) as *const AtomicU64) }
        };
        let seq = word(0);
        let start = seq.load(Ordering::Relaxed);
        seq.store(start | 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        // Readers in other processes discard what they read while `seq` is odd or has moved.
        word(8).store(exemplar.value.to_bits(), Ordering::Relaxed);
        word(16).store(exemplar.timestamp.to_bits(), Ordering::Relaxed);
        word(24).store(labels.len() as u64, Ordering::Relaxed);
        for (i, chunk) in labels.chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            word(32 + i * 8).store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        seq.store((start | 1) + 1, Ordering::Release);
    }
}

static CURRENT: OnceLock<RwLock<Arc<dyn Store>>> = OnceLock::new();

fn slot() -> &'static RwLock<Arc<dyn Store>> {
    CURRENT.get_or_init(|| RwLock::new(Arc::new(local::LocalStore)))
}

/// The store new series write to and scrapes read from.
pub fn current() -> Arc<dyn Store> {
    Arc::clone(&sync::read(slot()))
}

/// Make `store` the current one (and the backing of new series) and move every existing series
/// into it, values included.
pub fn switch_to<S: Store + 'static>(store: Arc<S>) {
    {
        let mut current = sync::write(slot());
        *current = Arc::clone(&store) as Arc<dyn Store>;
        cell::set_backing(Arc::clone(&store) as Arc<dyn Backing>);
    }
    rebind_all(&*store, true);
}

/// In a forked child: let the store claim its own storage and move every series there, starting
/// from zero (the parent keeps what it counted).
pub fn after_fork() {
    let store = current();
    store.after_fork();
    if store.kind() != "local" {
        rebind_all(&*store, false);
    }
}

fn rebind_all<B: Backing + ?Sized>(store: &B, copy: bool) {
    for fam in family::all_families() {
        for series in fam.all_series() {
            let cells = store.alloc(&fam.desc, &series.labels, series.created());
            // Per-process kinds stay on the heap in every store; a fork keeps their state.
            let keep = copy || matches!(fam.desc.kind, Kind::Info | Kind::Enum);
            // The store allocated `desc.cell_count()` cells, as every series of `fam` has: the
            // lengths match, so this is never refused (and if it were, the series would keep
            // the cells it has).
            let _refused = series.cells.replace_with(cells, keep);
            series.forget_shared_exemplars();
        }
    }
}
