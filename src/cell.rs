//! Lock-free f64 cells, the unit every metric value is stored in, and the memory behind them.
//!
//! A family asks the current [`Backing`] for the cells of each new series and for room for its
//! exemplars; the stores implement it, so families never depend on a store.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use crate::desc::{Desc, Kind};
use crate::exemplar::Exemplar;
use crate::sync;

/// Bits of a gauge cell that was never written: a signalling NaN with a payload of its own.
///
/// No arithmetic produces it (every operation on a NaN returns a quiet one), so it only ever
/// appears where a store put it. [`add`] and [`get`] read it as 0.0 and [`set`] overwrites it,
/// so in-process reads are unchanged; the multiprocess merge leaves such a gauge series out,
/// so a process that never wrote a gauge does not contribute a zero to `min`, `liveall`...
/// (Writing these exact bits with `set` reads as "never written": Python's float operations
/// never make a signalling NaN.)
pub const UNWRITTEN: u64 = 0x7ff4_6d65_7472_6963;

/// Whether `bits` are those of a gauge cell never written ([`UNWRITTEN`]).
#[inline]
pub fn is_unwritten(bits: u64) -> bool {
    bits == UNWRITTEN
}

/// The f64 that `bits` hold, reading a never-written cell as 0.0.
#[inline]
fn value_of(bits: u64) -> f64 {
    if is_unwritten(bits) {
        0.0
    } else {
        f64::from_bits(bits)
    }
}

/// Add `delta` to the f64 stored in `cell` (bits of an `f64`), without a lock.
#[inline]
pub fn add(cell: &AtomicU64, delta: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let next = (value_of(cur) + delta).to_bits();
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

/// Read the f64 stored in `cell` (0.0 if it was never written).
#[inline]
pub fn get(cell: &AtomicU64) -> f64 {
    value_of(cell.load(Ordering::Relaxed))
}

/// Raise the f64 in `cell` to at least `value` (a never-written cell takes `value`).
#[inline]
pub fn max(cell: &AtomicU64, value: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    while is_unwritten(cur) || f64::from_bits(cur) < value {
        match cell.compare_exchange_weak(cur, value.to_bits(), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// Whether a new series of `desc` starts as "never written" ([`UNWRITTEN`]) rather than 0: gauges,
/// so a process that never writes one contributes nothing to the multiprocess merge.
pub fn starts_unwritten(desc: &Desc) -> bool {
    desc.kind == Kind::Gauge
}

/// Where new series get their cells and exemplar room: the heap, or a store's shared files.
pub trait Backing: Send + Sync {
    /// Return fresh cells for a new series of `desc` with `labels`, created at `created`: zeroed,
    /// or [`UNWRITTEN`] where [`starts_unwritten`] says so.
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
        Cells::for_series(desc)
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
///
/// Invariant (what [`Cells::get`] relies on): `ptr` always points to `len` properly aligned,
/// live `AtomicU64`s. Every constructor establishes it (`heap` allocates them, `from_raw` makes
/// its caller promise it), and `replace_with` only installs memory of the same `len`, keeping
/// the old memory alive for good (a thread that loaded the old pointer may still use it).
pub struct Cells {
    ptr: AtomicPtr<AtomicU64>,
    len: usize,
    // Keeps the memory behind `ptr` alive; replaced only when a store rebinds the series
    // (a store switch, or after fork).
    owner: Mutex<Arc<dyn Send + Sync>>,
}

impl Cells {
    /// Allocate `len` zeroed cells on the heap.
    pub fn heap(len: usize) -> Cells {
        Cells::heap_filled(len, 0)
    }

    /// Allocate the heap cells of a new series of `desc`: zeroed, or [`UNWRITTEN`] for the kinds
    /// [`starts_unwritten`] names.
    pub fn for_series(desc: &Desc) -> Cells {
        let bits = if starts_unwritten(desc) { UNWRITTEN } else { 0 };
        Cells::heap_filled(desc.cell_count(), bits)
    }

    fn heap_filled(len: usize, bits: u64) -> Cells {
        // At least one element, so the pointer is non-null and aligned even for `len == 0`.
        let block: Arc<[AtomicU64]> = (0..len.max(1)).map(|_| AtomicU64::new(bits)).collect();
        let ptr = block.as_ptr() as *mut AtomicU64;
        Cells { ptr: AtomicPtr::new(ptr), len, owner: Mutex::new(Arc::new(block)) }
    }

    /// Wrap `len` cells at `ptr`, kept alive by `owner`.
    ///
    /// # Safety
    /// `ptr` must be non-null and point to `len` properly aligned `AtomicU64`s that stay valid
    /// (mapped or allocated, never freed nor unmapped) while `owner` lives, and that are only
    /// ever accessed atomically (by this process and by any other that shares the memory).
    pub unsafe fn from_raw(ptr: *mut AtomicU64, len: usize, owner: Arc<dyn Send + Sync>) -> Cells {
        Cells { ptr: AtomicPtr::new(ptr), len, owner: Mutex::new(owner) }
    }

    /// The number of cells.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no cells (an info series).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Move these cells to the memory of `other`, copying the current values if `copy`; return
    /// `other` untouched (and change nothing) if its length differs.
    ///
    /// The old memory is kept alive for good, so a thread still writing through an old slice
    /// writes to memory that exists (its write is lost, which only happens while a store is
    /// switched or right after a fork).
    pub fn replace_with(&self, other: Cells, copy: bool) -> Result<(), Cells> {
        // `get` reads `len` of whatever `ptr` points to: only memory of the same length may
        // take the place of the current one.
        if other.len != self.len {
            return Err(other);
        }
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
        Ok(())
    }

    /// The cells, for atomic reads and writes.
    #[inline]
    pub fn get(&self) -> &[AtomicU64] {
        // SAFETY: by the invariant on `Cells`, `ptr` points to `len` aligned, live atomics: the
        // constructors establish it, `replace_with` keeps the length and never frees the memory
        // it replaces (it goes to GRAVEYARD), so a slice handed out earlier stays valid too.
        unsafe { std::slice::from_raw_parts(self.ptr.load(Ordering::Acquire), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn filled(values: &[u64]) -> Cells {
        let cells = Cells::heap(values.len());
        for (c, v) in cells.get().iter().zip(values) {
            c.store(*v, Ordering::Relaxed);
        }
        cells
    }

    fn bits(cells: &Cells) -> Vec<u64> {
        cells.get().iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    proptest! {
        /// Any pair of lengths: equal ones rebind (copying exactly when asked), others are refused
        /// and change nothing; `get` always returns as many cells as the series has.
        #[test]
        fn replace_with_is_safe_for_any_lengths(
            old in proptest::collection::vec(any::<u64>(), 0..40),
            new in proptest::collection::vec(any::<u64>(), 0..40),
            copy in any::<bool>(),
        ) {
            let cells = filled(&old);
            match cells.replace_with(filled(&new), copy) {
                Ok(()) => {
                    prop_assert_eq!(old.len(), new.len());
                    prop_assert_eq!(bits(&cells), if copy { old.clone() } else { new.clone() });
                    // The cells are the new memory now: a write shows through `get`.
                    if let Some(c) = cells.get().first() {
                        set(c, 2.5);
                        prop_assert_eq!(get(&cells.get()[0]), 2.5);
                    }
                }
                Err(refused) => {
                    prop_assert_ne!(old.len(), new.len());
                    prop_assert_eq!(bits(&cells), old.clone());
                    prop_assert_eq!(bits(&refused), new.clone());
                }
            }
            prop_assert_eq!(cells.get().len(), old.len());
        }

        /// Never-written cells read as 0, add from 0, take any set value, and max raises them.
        #[test]
        fn unwritten_cells_behave_as_zero(delta in -1e9f64..1e9, value in any::<f64>()) {
            let c = AtomicU64::new(UNWRITTEN);
            prop_assert_eq!(get(&c), 0.0);
            add(&c, delta);
            prop_assert_eq!(get(&c), delta);
            let c = AtomicU64::new(UNWRITTEN);
            max(&c, value);
            prop_assert_eq!(c.load(Ordering::Relaxed), value.to_bits());
            let c = AtomicU64::new(UNWRITTEN);
            set(&c, value);
            prop_assert_eq!(c.load(Ordering::Relaxed), value.to_bits());
            // No arithmetic on a NaN yields the sentinel.
            prop_assert!(!is_unwritten((f64::from_bits(UNWRITTEN) + delta).to_bits()));
        }
    }

    #[test]
    fn gauges_start_unwritten_and_everything_else_at_zero() {
        use crate::desc::Kind;
        let gauge = Desc::new(Kind::Gauge, "g", "", vec![], "", "", "").unwrap();
        let counter = Desc::new(Kind::Counter, "c", "", vec![], "", "", "").unwrap();
        assert_eq!(bits(&Cells::for_series(&gauge)), vec![UNWRITTEN]);
        assert_eq!(bits(&Cells::for_series(&counter)), vec![0]);
        assert_eq!(Heap.alloc(&gauge, &[], 0.0).get().len(), 1);
    }

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
