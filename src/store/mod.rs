//! The seam between metric families and where their values live.
//!
//! A family asks its store for the cells of each new series; hot-path writes are atomic
//! operations on those cells, wherever they are. A scrape asks the store for snapshots, so a
//! store that shares values between processes can merge them there.

pub mod local;

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::encode::FamilySnapshot;
use crate::family::{Desc, Family};

/// Where metric values live: process-local heap, or (later) files shared between processes.
pub trait Store: Send + Sync {
    /// Return zeroed cells for a new series of `desc` with `labels`.
    fn alloc(&self, desc: &Desc, labels: &[String]) -> Cells;
    /// Return the samples of `families` as this store sees them.
    fn collect(&self, families: &[Arc<Family>]) -> Vec<FamilySnapshot>;
    /// A short name for diagnostics ("local", "shared").
    fn kind(&self) -> &'static str;
}

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

    /// Point these cells at new memory (a store moving a series to another slot).
    ///
    /// # Safety
    /// As for [`Cells::from_raw`]; no other thread may hold a slice from [`Cells::get`].
    pub unsafe fn rebind(&self, ptr: *mut AtomicU64, owner: Arc<dyn Send + Sync>) {
        if let Ok(mut slot) = self.owner.lock() {
            *slot = owner;
        }
        self.ptr.store(ptr, Ordering::Release);
    }

    /// The cells, for atomic reads and writes.
    #[inline]
    pub fn get(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` always points to `len` live atomics: the owner keeps them alive, and
        // rebinding replaces pointer and owner together (see `rebind`'s contract).
        unsafe { std::slice::from_raw_parts(self.ptr.load(Ordering::Acquire), self.len) }
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

/// Replace the store new families write to.
pub fn set_current(store: Arc<dyn Store>) {
    match slot().write() {
        Ok(mut guard) => *guard = store,
        Err(poisoned) => *poisoned.into_inner() = store,
    }
}
