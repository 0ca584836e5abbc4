//! Lock-free f64 cells, the unit every metric value is stored in, and the memory behind them.
//!
//! A family asks the current [`Backing`] for the cells of each new series and for room for its
//! exemplars; the stores implement it, so families never depend on a store.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use crate::desc::Desc;
use crate::exemplar::Exemplar;
use crate::sync;

/// Add `delta` to the f64 stored in `cell` (bits of an `f64`), without a lock.
#[inline]
pub fn add(cell: &AtomicU64, delta: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let next = (f64::from_bits(cur) + delta).to_bits();
        match cell.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// Store `value` in `cell`.
#[inline]
pub fn set(cell: &AtomicU64, value: f64) {
    cell.store(value.to_bits(), Ordering::Relaxed);
}

/// Read the f64 stored in `cell`.
#[inline]
pub fn get(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Ordering::Relaxed))
}

/// Raise the f64 in `cell` to at least `value`.
#[inline]
pub fn max(cell: &AtomicU64, value: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    while f64::from_bits(cur) < value {
        match cell.compare_exchange_weak(cur, value.to_bits(), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// Where new series get their cells and exemplar room: the heap, or a store's shared files.
pub trait Backing: Send + Sync {
    /// Return zeroed cells for a new series of `desc` with `labels`, created at `created`.
    fn alloc(&self, desc: &Desc, labels: &[String], created: f64) -> Cells;
    /// Room for `count` exemplars of a series that other processes can read, or None where
    /// exemplars stay in process memory (the heap, or no room).
    fn exemplar_slots(
        &self,
        _desc: &Desc,
        _labels: &[String],
        _count: usize,
    ) -> Option<Box<dyn ExemplarSink>> {
        None
    }
    /// The series of `desc` with `labels` whose values are `cells` was removed (`remove()`,
    /// `clear()`): a store shared between processes drops this process's stored values of it,
    /// so they leave the merge. Writes through `cells` afterwards must stay harmless.
    fn release(&self, _desc: &Desc, _labels: &[String], _cells: &Cells) {}
}

/// Where a series' exemplars are written for other processes to read.
pub trait ExemplarSink: Send + Sync {
    /// Write `exemplar` at `position` (a counter's 0, a histogram's bucket). The caller holds the
    /// series' exemplar lock, so there is one writer per series and process.
    fn write(&self, position: usize, exemplar: &Exemplar);
}

/// Cells on this process's heap: the backing until a store is switched in.
pub struct Heap;

impl Backing for Heap {
    fn alloc(&self, desc: &Desc, _labels: &[String], _created: f64) -> Cells {
        Cells::heap(desc.cell_count())
    }
}

static BACKING: OnceLock<RwLock<Arc<dyn Backing>>> = OnceLock::new();

fn backing_slot() -> &'static RwLock<Arc<dyn Backing>> {
    BACKING.get_or_init(|| RwLock::new(Arc::new(Heap)))
}

/// The backing new series get their cells from.
pub fn backing() -> Arc<dyn Backing> {
    Arc::clone(&sync::read(backing_slot()))
}

/// Make `backing` the one new series get their cells from (the store layer calls this when it
/// switches stores, then moves the existing series itself).
pub fn set_backing(backing: Arc<dyn Backing>) {
    *sync::write(backing_slot()) = backing;
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
        let new_owner = owner.into_inner().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *sync::lock(&self.owner), new_owner);
        self.ptr.store(ptr.load(Ordering::Acquire), Ordering::Release);
        sync::lock(&GRAVEYARD).push(old);
    }

    /// The cells, for atomic reads and writes.
    #[inline]
    pub fn get(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` always points to `len` live atomics: the owner keeps them alive, and
        // rebinding replaces pointer and owner together (see `rebind`'s contract).
        unsafe { std::slice::from_raw_parts(self.ptr.load(Ordering::Acquire), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_adds_lose_nothing() {
        let cell = Arc::new(AtomicU64::new(0f64.to_bits()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cell = Arc::clone(&cell);
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        add(&cell, 1.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(get(&cell), 800_000.0);
    }

    #[test]
    fn max_only_raises() {
        let cell = AtomicU64::new(5f64.to_bits());
        max(&cell, 3.0);
        assert_eq!(get(&cell), 5.0);
        max(&cell, 7.5);
        assert_eq!(get(&cell), 7.5);
    }
}
