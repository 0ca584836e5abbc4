//! Lock-free f64 cells: the unit every metric value is stored in.

use std::sync::atomic::{AtomicU64, Ordering};

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
