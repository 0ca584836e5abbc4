//! Native (sparse, exponential) histogram buckets: the bucket index of a value, the fixed block
//! of cells a series keeps them in, and the reduction of resolution when they do not fit.
//!
//! A bucket of schema `s` and index `k` holds the values `v` with `2^((k-1)/2^s) < |v| <=
//! 2^(k/2^s)`; values with `|v| <=` the zero threshold go to the zero bucket. Prometheus's
//! schemas run from -4 (each bucket 16 powers of two wide) to 8 (256 buckets per power of two).
//!
//! Cells of a series (after its classic buckets and sum), see [`cell_count`]:
//!
//! ```text
//! layout | zero count | positive counts (max_buckets cells) | negative counts (max_buckets cells)
//! ```
//!
//! The layout word (an integer kept as an f64 like every cell) holds the schema, where each
//! sign's window of `max_buckets` consecutive indices starts, a generation and a busy bit
//! (see [`Layout`]). An observation whose index falls in its window costs one atomic add; one
//! outside it takes the series' lock and re-places the window, halving the resolution (merging
//! pairs of buckets, as the Go client does when it reaches its bucket limit) until every
//! populated index of each sign fits. The limit is thus on the span of indices per sign.

use std::collections::BTreeMap;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::sync;

/// The finest schema Prometheus accepts.
pub const SCHEMA_MAX: i32 = 8;
/// The coarsest schema Prometheus accepts.
pub const SCHEMA_MIN: i32 = -4;
/// The Go client's default zero threshold, 2^-128.
pub const DEFAULT_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// Largest `max_buckets` accepted (keeps every window offset within the layout word).
pub const MAX_BUCKETS_LIMIT: u32 = 1 << 15;

/// Index of the layout word within the native cells.
const LAYOUT: usize = 0;
/// Index of the zero bucket's count.
const ZERO: usize = 1;
/// Index of the first positive bucket.
const POSITIVE: usize = 2;

/// What is fixed about a family's native buckets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NativeParams {
    /// Schema new series start at (from the bucket factor).
    pub schema: i32,
    /// Width of each sign's window of bucket indices.
    pub max_buckets: u32,
    /// Values with an absolute value at or below it go to the zero bucket.
    pub zero_threshold: f64,
}

impl NativeParams {
    /// Parameters from the Go client's knobs: a bucket factor above 1 (each bucket at most this
    /// many times wider than the previous one), a bucket limit and a zero threshold.
    pub fn new(factor: f64, max_buckets: u32, zero_threshold: f64) -> Result<NativeParams> {
        if factor.partial_cmp(&1.0) != Some(std::cmp::Ordering::Greater) || factor.is_infinite() {
            return Err(Error::Invalid("native_histogram_bucket_factor must be a number above 1".into()));
        }
        if max_buckets == 0 || max_buckets > MAX_BUCKETS_LIMIT {
            return Err(Error::Invalid(format!(
                "native_histogram_max_bucket_number must be between 1 and {MAX_BUCKETS_LIMIT}"
            )));
        }
        if zero_threshold.is_nan() || zero_threshold < 0.0 || zero_threshold.is_infinite() {
            return Err(Error::Invalid(
                "native_histogram_zero_threshold must be a finite number >= 0".into(),
            ));
        }
        Ok(NativeParams { schema: pick_schema(factor), max_buckets, zero_threshold })
    }

    fn width(&self) -> usize {
        self.max_buckets as usize
    }
}

/// Number of cells the native buckets of one series take.
pub fn cell_count(params: &NativeParams) -> usize {
    POSITIVE + 2 * params.width()
}

/// The finest schema whose bucket growth factor (`2^(2^-schema)`) is at most `factor` (> 1),
/// clamped to what Prometheus accepts (as the Go client picks it).
pub fn pick_schema(factor: f64) -> i32 {
    let floor = factor.log2().log2().floor();
    if floor <= -f64::from(SCHEMA_MAX) {
        SCHEMA_MAX
    } else if floor >= -f64::from(SCHEMA_MIN) {
        SCHEMA_MIN
    } else {
        -(floor as i32)
    }
}

/// `2^(i/256 - 1)` for i in 0..256: the bounds within `[0.5, 1)` of schema 8, every finer
/// schema's bounds being every `2^(8-schema)`th of them.
fn bounds() -> &'static [f64; 256] {
    static BOUNDS: OnceLock<[f64; 256]> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut b = [0.0; 256];
        for (i, v) in b.iter_mut().enumerate() {
            *v = (i as f64 / 256.0 - 1.0).exp2();
        }
        b
    })
}

/// `v` (positive, finite) as `frac * 2^exp` with `frac` in `[0.5, 1)`.
fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        if v == 0.0 {
            return (0.0, 0);
        }
        // Subnormal: scale into the normal range first.
        let (frac, exp) = frexp(v * f64::from_bits((1023u64 + 64) << 52));
        return (frac, exp - 64);
    }
    (f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52)), biased - 1022)
}

/// The index of the bucket of schema `schema` that holds `v` (> 0; `+Inf` goes one past the
/// bucket of the largest finite value).
pub fn key(v: f64, schema: i32) -> i32 {
    let inf = v.is_infinite();
    let (frac, exp) = frexp(if inf { f64::MAX } else { v });
    let k = if schema > 0 {
        let n = 1usize << schema;
        let stride = 1usize << (SCHEMA_MAX - schema);
        let table = bounds();
        // The first of the schema's bounds at or above `frac` (a binary search).
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if table[mid * stride] < frac {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo as i32 + (exp - 1) * n as i32
    } else {
        // `2^exp` is the bucket's bound at schema 0, unless `v` is a power of two itself.
        let k = if frac == 0.5 { exp - 1 } else { exp };
        let shift = -schema;
        (k + (1 << shift) - 1) >> shift
    };
    k + i32::from(inf)
}

/// The index at schema `schema - 1` of the bucket `k` of schema `schema`: `ceil(k / 2)`.
#[inline]
fn coarser(k: i32) -> i32 {
    (k + 1) >> 1
}

/// The layout word's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Current schema.
    pub schema: i32,
    /// First index of the positive window, once a positive value was seen.
    pub positive: Option<i32>,
    /// First index of the negative window, once a negative value was seen.
    pub negative: Option<i32>,
    /// Incremented (mod 16) by every re-placement, so a reader notices one.
    generation: u8,
    /// Set while the buckets are being re-placed.
    busy: bool,
}

const OFFSET_BIAS: i64 = 1 << 19;

impl Layout {
    /// The layout of a series nothing was placed in yet.
    pub fn empty(schema: i32) -> Layout {
        Layout { schema, positive: None, negative: None, generation: 0, busy: false }
    }

    /// Decode a layout cell's value (0: nothing placed yet, at `default_schema`).
    pub fn decode(value: f64, default_schema: i32) -> Layout {
        let bits = value as u64;
        if bits & 1 == 0 {
            return Layout::empty(default_schema);
        }
        let offset = |shift: u32| ((bits >> shift) & 0xf_ffff) as i64 - OFFSET_BIAS;
        Layout {
            // Four bits hold up to 11: a damaged word must not yield a schema no code expects.
            schema: (((bits >> 1) & 0xf) as i32 + SCHEMA_MIN).min(SCHEMA_MAX),
            positive: (bits & (1 << 5) != 0).then(|| offset(12) as i32),
            negative: (bits & (1 << 6) != 0).then(|| offset(32) as i32),
            busy: bits & (1 << 7) != 0,
            generation: ((bits >> 8) & 0xf) as u8,
        }
    }

    /// Encode as a cell value: an integer below 2^52, exact in an f64.
    pub fn encode(&self) -> f64 {
        let offset = |o: Option<i32>| (i64::from(o.unwrap_or(0)) + OFFSET_BIAS).clamp(0, 0xf_ffff) as u64;
        let bits = 1
            | (((self.schema - SCHEMA_MIN) as u64 & 0xf) << 1)
            | (u64::from(self.positive.is_some()) << 5)
            | (u64::from(self.negative.is_some()) << 6)
            | (u64::from(self.busy) << 7)
            | ((u64::from(self.generation) & 0xf) << 8)
            | (offset(self.positive) << 12)
            | (offset(self.negative) << 32);
        bits as f64
    }

    /// Whether the buckets were being re-placed when this was read.
    pub fn busy(&self) -> bool {
        self.busy
    }
}

/// Cell operations (as `cell`'s, which sits above this module: a histogram's cells are never
/// `cell::UNWRITTEN`, so their bits are always the f64 they hold).
mod cell {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Add `delta` to the f64 in `c`, without a lock.
    #[inline]
    pub fn add(c: &AtomicU64, delta: f64) {
        let mut cur = c.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + delta).to_bits();
            match c.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The f64 in `c`.
    #[inline]
    pub fn get(c: &AtomicU64) -> f64 {
        f64::from_bits(c.load(Ordering::Relaxed))
    }

    /// Store `v` in `c`.
    #[inline]
    pub fn set(c: &AtomicU64, v: f64) {
        c.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// Native buckets as a sparse map: what a merge and an encoder work with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sparse {
    /// Schema of the indices.
    pub schema: i32,
    /// Count of the zero bucket.
    pub zero: f64,
    /// Counts of the positive buckets by index.
    pub positive: BTreeMap<i32, f64>,
    /// Counts of the negative buckets by index (of the absolute value).
    pub negative: BTreeMap<i32, f64>,
}

fn span(map: &BTreeMap<i32, f64>) -> usize {
    match (map.keys().next(), map.keys().next_back()) {
        (Some(lo), Some(hi)) => (i64::from(*hi) - i64::from(*lo) + 1) as usize,
        _ => 0,
    }
}

fn reduce_map(map: &mut BTreeMap<i32, f64>) {
    let old = std::mem::take(map);
    for (k, v) in old {
        *map.entry(coarser(k)).or_insert(0.0) += v;
    }
}

impl Sparse {
    /// Read the native `cells` values of a series (the block [`cell_count`] sizes) laid out for
    /// `params`; None if they are too few.
    pub fn from_cells(values: &[f64], params: &NativeParams) -> Option<Sparse> {
        let w = params.width();
        if values.len() < cell_count(params) {
            return None;
        }
        let layout = Layout::decode(values[LAYOUT], params.schema);
        let mut out = Sparse { schema: layout.schema, zero: values[ZERO], ..Sparse::default() };
        for (offset, base, map) in [
            (layout.positive, POSITIVE, &mut out.positive),
            (layout.negative, POSITIVE + w, &mut out.negative),
        ] {
            let Some(offset) = offset else { continue };
            for (i, v) in values[base..base + w].iter().enumerate() {
                if *v != 0.0 {
                    map.insert(offset + i as i32, *v);
                }
            }
        }
        Some(out)
    }

    /// Total count: the zero bucket plus every bucket.
    pub fn count(&self) -> f64 {
        self.zero + self.positive.values().sum::<f64>() + self.negative.values().sum::<f64>()
    }

    /// Bring the indices down to `schema` (if coarser than the current one), each bucket
    /// merged with its neighbour as the resolution halves.
    pub fn reduce_to(&mut self, schema: i32) {
        while self.schema > schema {
            reduce_map(&mut self.positive);
            reduce_map(&mut self.negative);
            self.schema -= 1;
        }
    }

    /// Add `other`'s counts: both at the coarser of the two schemas, summed per index.
    pub fn merge(&mut self, other: &Sparse) {
        let mut other = other.clone();
        let schema = self.schema.min(other.schema);
        self.reduce_to(schema);
        other.reduce_to(schema);
        self.zero += other.zero;
        for (mine, theirs) in [(&mut self.positive, other.positive), (&mut self.negative, other.negative)] {
            for (k, v) in theirs {
                *mine.entry(k).or_insert(0.0) += v;
            }
        }
    }

    /// Reduce the resolution until each sign's indices span at most `width`; at the coarsest
    /// schema, fold what still does not fit into the window's lowest bucket.
    pub fn fit(&mut self, width: usize) {
        while (span(&self.positive) > width || span(&self.negative) > width) && self.schema > SCHEMA_MIN {
            self.reduce_to(self.schema - 1);
        }
        for map in [&mut self.positive, &mut self.negative] {
            if span(map) > width {
                let Some(hi) = map.keys().next_back().copied() else { continue };
                let lo = hi - (width as i32 - 1);
                let below: Vec<i32> = map.range(..lo).map(|(k, _)| *k).collect();
                for k in below {
                    if let Some(v) = map.remove(&k) {
                        *map.entry(lo).or_insert(0.0) += v;
                    }
                }
            }
        }
    }

    /// The native cells holding these buckets (which must [`Sparse::fit`] `params`' width),
    /// keeping each sign's window at `prefer` where everything fits in it.
    pub fn to_cells(&self, params: &NativeParams, prefer: Layout) -> Vec<f64> {
        let w = params.width();
        let mut out = vec![0.0; cell_count(params)];
        let same_schema = prefer.schema == self.schema;
        let place = |map: &BTreeMap<i32, f64>, prefer: Option<i32>| -> Option<i32> {
            let (lo, hi) = (*map.keys().next()?, *map.keys().next_back()?);
            match prefer {
                Some(p) if same_schema && lo >= p && i64::from(hi) < i64::from(p) + w as i64 => Some(p),
                // Centred, so the window has room on both sides for what comes next.
                _ => Some(lo - ((w as i32) - (hi - lo + 1)).max(0) / 2),
            }
        };
        let positive =
            place(&self.positive, prefer.positive).or(if same_schema { prefer.positive } else { None });
        let negative =
            place(&self.negative, prefer.negative).or(if same_schema { prefer.negative } else { None });
        for (offset, base, map) in
            [(positive, POSITIVE, &self.positive), (negative, POSITIVE + w, &self.negative)]
        {
            let Some(offset) = offset else { continue };
            for (k, v) in map {
                let i = (i64::from(*k) - i64::from(offset)).clamp(0, w as i64 - 1) as usize;
                out[base + i] += v;
            }
        }
        let layout = Layout {
            schema: self.schema,
            positive,
            negative,
            generation: prefer.generation.wrapping_add(1) & 0xf,
            busy: false,
        };
        out[LAYOUT] = layout.encode();
        out[ZERO] = self.zero;
        out
    }
}

/// What a series with native buckets keeps besides its cells.
pub struct NativeState {
    /// The family's parameters.
    pub params: NativeParams,
    // Held while the buckets are re-placed (never on an observation that fits its window).
    lock: Mutex<()>,
}

impl NativeState {
    /// State for a series of a family with `params`.
    pub fn new(params: NativeParams) -> NativeState {
        NativeState { params, lock: Mutex::new(()) }
    }

    /// Record `value` in the native `cells` of a series (the block [`cell_count`] sizes). A NaN is
    /// counted in no bucket, as in the classic ones.
    #[inline]
    pub fn observe(&self, cells: &[AtomicU64], value: f64) {
        if value.is_nan() || cells.len() < cell_count(&self.params) {
            return;
        }
        let magnitude = value.abs();
        if magnitude <= self.params.zero_threshold {
            cell::add(&cells[ZERO], 1.0);
            return;
        }
        let layout = Layout::decode(cell::get(&cells[LAYOUT]), self.params.schema);
        if !layout.busy {
            if let Some(c) = self.cell_of(cells, &layout, value, magnitude) {
                cell::add(c, 1.0);
                return;
            }
        }
        self.replace(cells, value, magnitude);
    }

    /// The cell of `value`'s bucket under `layout`, if its window holds it.
    #[inline]
    fn cell_of<'c>(
        &self,
        cells: &'c [AtomicU64],
        layout: &Layout,
        value: f64,
        magnitude: f64,
    ) -> Option<&'c AtomicU64> {
        let k = key(magnitude, layout.schema);
        let w = self.params.width();
        let (offset, base) =
            if value > 0.0 { (layout.positive?, POSITIVE) } else { (layout.negative?, POSITIVE + w) };
        let i = usize::try_from(i64::from(k) - i64::from(offset)).ok().filter(|i| *i < w)?;
        cells.get(base + i)
    }

    /// Re-place the buckets so `value`'s fits, lowering the resolution if it must, and count it.
    ///
    /// Under the lock, the layout is marked busy, every bucket count is taken out (swapped for
    /// 0) and added back at its new place, and the new layout published. A reader in another
    /// process retries while it sees the busy mark or a new generation. An observation by
    /// another thread of this process that read the old layout just before (possible only
    /// where Python runs without the GIL) stays counted, perhaps in a neighbouring bucket.
    #[cold]
    fn replace(&self, cells: &[AtomicU64], value: f64, magnitude: f64) {
        let _guard = sync::lock(&self.lock);
        let layout = Layout::decode(cell::get(&cells[LAYOUT]), self.params.schema);
        // Another thread may have made room meanwhile.
        if let Some(c) = self.cell_of(cells, &layout, value, magnitude) {
            cell::add(c, 1.0);
            return;
        }
        let w = self.params.width();
        cell::set(&cells[LAYOUT], Layout { busy: true, ..layout }.encode());
        fence(Ordering::SeqCst);
        let mut sparse = Sparse { schema: layout.schema, ..Sparse::default() };
        for (offset, base, map) in [
            (layout.positive, POSITIVE, &mut sparse.positive),
            (layout.negative, POSITIVE + w, &mut sparse.negative),
        ] {
            for (i, c) in cells[base..base + w].iter().enumerate() {
                let v = f64::from_bits(c.swap(0, Ordering::AcqRel));
                if let (Some(offset), true) = (offset, v != 0.0) {
                    *map.entry(offset + i as i32).or_insert(0.0) += v;
                }
            }
        }
        let k = key(magnitude, layout.schema);
        let map = if value > 0.0 { &mut sparse.positive } else { &mut sparse.negative };
        *map.entry(k).or_insert(0.0) += 1.0;
        sparse.fit(w);
        let placed = sparse.to_cells(&self.params, layout);
        for (c, v) in cells[POSITIVE..].iter().zip(&placed[POSITIVE..]) {
            if *v != 0.0 {
                cell::add(c, *v);
            }
        }
        fence(Ordering::SeqCst);
        cell::set(&cells[LAYOUT], placed[LAYOUT]);
    }
}

/// Read the native cells of a series in another process's memory with `read` (the value of
/// cell `i`), retrying while they are being re-placed; None if they never settle.
pub fn read_settled(n: usize, params: &NativeParams, read: impl Fn(usize) -> f64) -> Option<Vec<f64>> {
    for attempt in 0..1000 {
        let before = read(LAYOUT);
        if !Layout::decode(before, params.schema).busy {
            fence(Ordering::Acquire);
            let values: Vec<f64> = (0..n).map(&read).collect();
            fence(Ordering::Acquire);
            if read(LAYOUT).to_bits() == before.to_bits() {
                return Some(values);
            }
        }
        if attempt > 10 {
            std::thread::yield_now();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bucket of `v` from its definition, by exact comparison with computed bounds where
    /// `v` is not within rounding of one.
    fn reference_key(v: f64, schema: i32) -> Option<i32> {
        let scaled = v.log2() * 2f64.powi(schema);
        let k = scaled.ceil();
        // Too close to a bound for a float log2 to decide.
        if (scaled - scaled.round()).abs() < 1e-9 {
            return None;
        }
        Some(k as i32)
    }

    #[test]
    fn schemas_from_factors_follow_the_go_client() {
        assert_eq!(pick_schema(1.1), 3);
        assert_eq!(pick_schema(2.0), 0);
        assert_eq!(pick_schema(1.0001), 8);
        assert_eq!(pick_schema(4.0), -1);
        assert_eq!(pick_schema(1e300), -4);
        assert_eq!(pick_schema(1.5), 1);
    }

    #[test]
    fn documented_bucket_indices() {
        // 1 is a bound of every schema, and powers of two are bounds of schemas >= 0.
        for schema in SCHEMA_MIN..=SCHEMA_MAX {
            assert_eq!(key(1.0, schema), 0, "schema {schema}");
        }
        assert_eq!(key(2.0, 0), 1);
        assert_eq!(key(2.0, 3), 8);
        assert_eq!(key(0.5, 3), -8);
        assert_eq!(key(1.5, 0), 1);
        assert_eq!(key(3.0, -1), 1);
        assert_eq!(key(4.0, -1), 1);
        assert_eq!(key(4.1, -1), 2);
        assert_eq!(key(1.1, 3), 2);
        assert_eq!(key(f64::INFINITY, 0), 1025);
        assert_eq!(key(f64::MAX, 0), 1024);
        assert_eq!(key(f64::from_bits(1), 0), -1074);
        assert_eq!(key(f64::from_bits(1), -4), -67);
    }

    #[test]
    fn layouts_round_trip() {
        for l in [
            Layout::empty(3),
            Layout { schema: -4, positive: Some(-300_000), negative: None, generation: 15, busy: true },
            Layout { schema: 8, positive: Some(262_500), negative: Some(-1), generation: 3, busy: false },
        ] {
            let v = l.encode();
            assert_eq!(v, v.trunc());
            assert!(v < 2f64.powi(53));
            assert_eq!(
                Layout::decode(v, 0),
                if l == Layout::empty(3) { Layout { schema: 3, ..l } } else { l }
            );
        }
        assert_eq!(Layout::decode(0.0, 5), Layout::empty(5));
        // Whatever a damaged cell holds decodes to a schema Prometheus accepts.
        for v in [f64::NAN, -1.0, f64::MAX, 31.0, (1u64 << 52) as f64 - 1.0] {
            assert!((SCHEMA_MIN..=SCHEMA_MAX).contains(&Layout::decode(v, 0).schema));
        }
    }

    fn state(schema: i32, max: u32) -> (NativeState, Vec<AtomicU64>) {
        let params = NativeParams { schema, max_buckets: max, zero_threshold: DEFAULT_ZERO_THRESHOLD };
        let cells = (0..cell_count(&params)).map(|_| AtomicU64::new(0)).collect();
        (NativeState::new(params), cells)
    }

    fn sparse_of(s: &NativeState, cells: &[AtomicU64]) -> Sparse {
        let values: Vec<f64> = cells.iter().map(cell::get).collect();
        Sparse::from_cells(&values, &s.params).unwrap()
    }

    /// The buckets `values` fall in at `schema`, reduced to `target`, computed from scratch.
    fn expected(values: &[f64], schema: i32, target: i32) -> Sparse {
        let mut s = Sparse { schema, ..Sparse::default() };
        for v in values {
            if v.abs() <= DEFAULT_ZERO_THRESHOLD {
                s.zero += 1.0;
            } else {
                let map = if *v > 0.0 { &mut s.positive } else { &mut s.negative };
                *map.entry(key(v.abs(), schema)).or_insert(0.0) += 1.0;
            }
        }
        s.reduce_to(target);
        s
    }

    proptest! {
        /// The index agrees with the bucket's definition wherever a float log2 can tell.
        #[test]
        fn bucket_indices_match_their_definition(mantissa in 1.0f64..2.0, exp in -1070i32..1020, schema in SCHEMA_MIN..=SCHEMA_MAX) {
            // In two steps: 2^-1070 alone is fine, but `powi` computes it as 1 / 2^1070.
            let v = mantissa * 2f64.powi(exp / 2) * 2f64.powi(exp - exp / 2);
            if let Some(k) = reference_key(v, schema).filter(|_| v > 0.0) {
                prop_assert_eq!(key(v, schema), k);
            }
        }

        /// Any values, any bucket limit: every observation is counted once, the buckets are
        /// exactly those of the original schema reduced to the one reached, and each sign's
        /// indices fit the limit.
        #[test]
        fn observations_are_counted_exactly_at_a_reduced_resolution(
            values in proptest::collection::vec(prop_oneof![-1e6f64..1e6, 1e-3f64..10.0, Just(0.0)], 1..200),
            max in 1u32..40,
            schema in 0i32..=8,
        ) {
            let (s, cells) = state(schema, max);
            for v in &values {
                s.observe(&cells, *v);
            }
            let got = sparse_of(&s, &cells);
            prop_assert!(span(&got.positive) <= max as usize && span(&got.negative) <= max as usize || got.schema == SCHEMA_MIN);
            prop_assert_eq!(got.count(), values.len() as f64);
            if got.schema > SCHEMA_MIN || (span(&expected(values.as_slice(), schema, SCHEMA_MIN).positive) <= max as usize
                && span(&expected(values.as_slice(), schema, SCHEMA_MIN).negative) <= max as usize) {
                prop_assert_eq!(got.clone(), expected(&values, schema, got.schema));
            }
        }

        /// Merging histograms of different schemas gives what observing everything at the
        /// coarser schema gives.
        #[test]
        fn merges_of_different_schemas_are_exact(
            a in proptest::collection::vec(1e-3f64..1e3, 0..50),
            b in proptest::collection::vec(-1e3f64..1e3, 0..50),
            sa in -4i32..=8,
            sb in -4i32..=8,
        ) {
            let mut merged = expected(&a, sa, sa);
            merged.merge(&expected(&b, sb, sb));
            let coarse = sa.min(sb);
            let mut want = expected(&a, sa, coarse);
            let other = expected(&b, sb, coarse);
            want.zero += other.zero;
            for (k, v) in other.positive { *want.positive.entry(k).or_insert(0.0) += v; }
            for (k, v) in other.negative { *want.negative.entry(k).or_insert(0.0) += v; }
            prop_assert_eq!(merged.schema, coarse);
            prop_assert_eq!(merged, want);
        }
    }

    #[test]
    fn reaching_the_limit_halves_the_resolution_like_the_go_client() {
        let (s, cells) = state(3, 8);
        // 1.0 (index 0) and 2.5 (index ceil(8 * log2 2.5) = 11): 12 indices at schema 3, 6 at 2.
        s.observe(&cells, 1.0);
        s.observe(&cells, 2.5);
        let got = sparse_of(&s, &cells);
        assert_eq!(got.schema, 2);
        assert_eq!(got.positive, BTreeMap::from([(0, 1.0), (6, 1.0)]));
        // Pairs merge as ceil(k / 2): indices 1 and 2 of schema 3 become index 1 of schema 2.
        let mut sp = Sparse {
            schema: 3,
            positive: BTreeMap::from([(1, 1.0), (2, 2.0), (-1, 4.0), (-2, 8.0)]),
            ..Sparse::default()
        };
        sp.reduce_to(2);
        assert_eq!(sp.positive, BTreeMap::from([(1, 3.0), (0, 4.0), (-1, 8.0)]));
    }

    #[test]
    fn values_in_the_window_cost_no_replacement() {
        let (s, cells) = state(3, 16);
        s.observe(&cells, 1.0);
        let first = cell::get(&cells[LAYOUT]);
        for v in [1.05, 0.95, 1.2, 0.8] {
            s.observe(&cells, v);
        }
        assert_eq!(cell::get(&cells[LAYOUT]).to_bits(), first.to_bits());
        assert_eq!(sparse_of(&s, &cells).count(), 5.0);
        s.observe(&cells, 0.0);
        s.observe(&cells, -1.0);
        s.observe(&cells, f64::NAN);
        let got = sparse_of(&s, &cells);
        assert_eq!((got.zero, got.count()), (1.0, 7.0));
    }

    #[test]
    fn settled_reads_wait_for_a_replacement() {
        let params = NativeParams { schema: 3, max_buckets: 2, zero_threshold: 0.0 };
        let busy = Layout { busy: true, ..Layout::empty(3) }.encode();
        let values = [busy, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert!(read_settled(6, &params, |i| values[i]).is_none());
        let calm = vec![Layout::empty(3).encode(), 1.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(read_settled(6, &params, |i| calm[i]), Some(calm.clone()));
    }

    #[test]
    fn concurrent_observations_lose_nothing() {
        let (s, cells) = state(8, 4);
        let (s, cells) = (std::sync::Arc::new(s), std::sync::Arc::new(cells));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (s, cells) = (std::sync::Arc::clone(&s), std::sync::Arc::clone(&cells));
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        s.observe(&cells, f64::from(i % 97 + 1) * if t % 2 == 0 { 1.0 } else { -0.01 });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sparse_of(&s, &cells).count(), 20_000.0);
    }
}
