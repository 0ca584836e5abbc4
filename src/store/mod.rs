//! The seam between metric families and where their values live.
//!
//! A family asks its store for the cells of each new series; hot-path writes are atomic
//! operations on those cells, wherever they are. A scrape asks the store for snapshots, so a
//! store that shares values between processes can merge them there.

pub mod format;
pub mod local;
pub mod merge;
pub mod shared;

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::encode::FamilySnapshot;
use crate::family::{Desc, Family};

/// Where metric values live: process-local heap, or (later) files shared between processes.
pub trait Store: Send + Sync {
    /// Return zeroed cells for a new series of `desc` with `labels`, created at `created`.
    fn alloc(&self, desc: &Desc, labels: &[String], created: f64) -> Cells;
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
    /// Room for `count` exemplars of a series that other processes can read, or None where
    /// exemplars stay in process memory (the local store, or no room).
    fn exemplar_slots(&self, _desc: &Desc, _labels: &[String], _count: usize) -> Option<ExemplarSlots> {
        None
    }
}

/// Exemplar entries of one series in shared memory (layout: `format::EXEMPLAR_ENTRY`).
pub struct ExemplarSlots {
    base: *mut u8,
    count: usize,
    // Keeps the mapping behind `base` alive.
    _owner: Arc<dyn Send + Sync>,
}

// SAFETY: `base` points into memory kept alive by `_owner` (itself Send + Sync); every write
// goes through `write`, which the owning series serialises with its own lock.
unsafe impl Send for ExemplarSlots {}
// SAFETY: see above; shared references only read `count`.
unsafe impl Sync for ExemplarSlots {}

impl ExemplarSlots {
    /// Wrap `count` entries at `base`, kept alive by `owner`.
    ///
    /// # Safety
    /// `base` must be 8-aligned and point to `count * format::EXEMPLAR_ENTRY` writable bytes
    /// that stay valid while `owner` lives, written by no one else in this process.
    pub unsafe fn from_raw(base: *mut u8, count: usize, owner: Arc<dyn Send + Sync>) -> ExemplarSlots {
        ExemplarSlots { base, count, _owner: owner }
    }

    /// Write `exemplar` at `position` under the entry's seqlock (the caller holds the series'
    /// exemplar lock, so there is one writer per process, and only this process writes here).
    pub fn write(&self, position: usize, exemplar: &crate::exemplar::Exemplar) {
        let Some(labels) = format::exemplar_labels(&exemplar.labels) else { return };
        if position >= self.count {
            return;
        }
        // SAFETY: the entry lies within the `count` entries `from_raw` was given.
        let entry = unsafe { self.base.add(position * format::EXEMPLAR_ENTRY) };
        // SAFETY: `entry` is 8-aligned (entries are multiples of 8 from an 8-aligned base).
        let seq = unsafe { &*(entry as *const AtomicU64) };
        let start = seq.load(Ordering::Relaxed);
        seq.store(start | 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        // SAFETY: fields and labels lie within the entry (labels.len() <= EXEMPLAR_DATA); readers
        // in other processes discard what they read while `seq` is odd or has moved.
        unsafe {
            std::ptr::write_volatile(entry.add(8) as *mut u64, exemplar.value.to_bits());
            std::ptr::write_volatile(entry.add(16) as *mut u64, exemplar.timestamp.to_bits());
            std::ptr::write_volatile(entry.add(24) as *mut u64, labels.len() as u64);
            std::ptr::copy_nonoverlapping(labels.as_ptr(), entry.add(32), labels.len());
        }
        seq.store((start | 1) + 1, Ordering::Release);
    }
}

/// Old cell memory that a rebind replaced: never freed, as a racing writer may still touch it.
static GRAVEYARD: Mutex<Vec<Arc<dyn Send + Sync>>> = Mutex::new(Vec::new());

/// The cells of one series: a pointer to atomics owned by a store.
pub struct Cells {
    ptr: AtomicPtr<AtomicU64>,
    len: usize,
    // Keeps the memory behind `ptr` alive; replaced only when a store rebinds the series
    // (after fork), when no other thread can be writing.
    owner: Mutex<Arc<dyn Send + Sync>>,
}

impl Cells {
    /// Allocate `len` zeroed cells on the heap.
    pub fn heap(len: usize) -> Cells {
        let block: Arc<[AtomicU64]> = (0..len.max(1)).map(|_| AtomicU64::new(0)).collect();
        let ptr = block.as_ptr() as *mut AtomicU64;
        Cells { ptr: AtomicPtr::new(ptr), len, owner: Mutex::new(Arc::new(block)) }
    }

    /// Wrap `len` cells at `ptr`, kept alive by `owner`.
    ///
    /// # Safety
    /// `ptr` must point to `len` properly aligned `AtomicU64`s that stay valid while `owner` lives.
    pub unsafe fn from_raw(ptr: *mut AtomicU64, len: usize, owner: Arc<dyn Send + Sync>) -> Cells {
        Cells { ptr: AtomicPtr::new(ptr), len, owner: Mutex::new(owner) }
    }

    /// Move these cells to the memory of `other`, copying the current values if `copy`.
    ///
    /// The old memory is kept alive for good, so a thread still writing through an old slice
    /// writes to memory that exists (its write is lost, which only happens while a store is
    /// switched or right after a fork).
    pub fn replace_with(&self, other: Cells, copy: bool) {
        if copy {
            for (dst, src) in other.get().iter().zip(self.get()) {
                dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let Cells { ptr, owner, .. } = other;
        let new_owner = owner.into_inner().unwrap_or_else(|p| p.into_inner());
        let old = match self.owner.lock() {
            Ok(mut slot) => std::mem::replace(&mut *slot, new_owner),
            Err(p) => std::mem::replace(&mut *p.into_inner(), new_owner),
        };
        self.ptr.store(ptr.load(Ordering::Acquire), Ordering::Release);
        if let Ok(mut g) = GRAVEYARD.lock() {
            g.push(old);
        }
    }

    /// The cells, for atomic reads and writes.
    #[inline]
    pub fn get(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` always points to `len` live atomics: the owner keeps them alive, and
        // rebinding replaces pointer and owner together (see `rebind`'s contract).
        unsafe { std::slice::from_raw_parts(self.ptr.load(Ordering::Acquire), self.len) }
    }
}

static CURRENT: OnceLock<RwLock<Arc<dyn Store>>> = OnceLock::new();

fn slot() -> &'static RwLock<Arc<dyn Store>> {
    CURRENT.get_or_init(|| RwLock::new(Arc::new(local::LocalStore)))
}

/// The store new families write to.
pub fn current() -> Arc<dyn Store> {
    match slot().read() {
        Ok(guard) => Arc::clone(&guard),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

/// Make `store` the current one and move every existing series into it, values included.
pub fn switch_to(store: Arc<dyn Store>) {
    match slot().write() {
        Ok(mut guard) => *guard = Arc::clone(&store),
        Err(poisoned) => *poisoned.into_inner() = Arc::clone(&store),
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

fn rebind_all(store: &dyn Store, copy: bool) {
    for fam in crate::family::all_families() {
        for series in fam.all_series() {
            let cells = store.alloc(&fam.desc, &series.labels, series.created());
            // Per-process kinds stay on the heap in every store; a fork keeps their state.
            let keep = copy || matches!(fam.desc.kind, crate::names::Kind::Info | crate::names::Kind::Enum);
            series.cells.replace_with(cells, keep);
            series.forget_shared_exemplars();
        }
    }
}
