//! Merging what several processes wrote: sums for counters and histograms, per-mode rules for
//! gauges, and the archive that dead processes' values are folded into.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::format::{self, Header, Record};
use crate::cell;
use crate::desc::{Desc, GaugeMode, Kind};
use crate::error::Result;
use crate::exemplar::Exemplar;
use crate::family::Family;
use crate::native::{self, Layout, NativeParams, Sparse};
use crate::snapshot::{FamilySnapshot, SeriesSnapshot};

/// Where values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A live process's slot: its pid and slot number.
    Live(u32, u32),
    /// The archive, or a dead process's slot being folded into it.
    Dead,
}

#[derive(Clone, Copy)]
enum Op {
    Sum,
    Max,
    Min,
    MostRecent,
    Replace,
}

/// How a series of `desc` from `source` combines, and the per-process label it gets if any;
/// `None` if it is left out.
fn rule(desc: &Desc, source: Source) -> Option<(Op, Option<&'static str>)> {
    let live = matches!(source, Source::Live(..));
    match desc.kind {
        Kind::Counter | Kind::Histogram | Kind::Summary => Some((Op::Sum, None)),
        // Per-process kinds never reach the files.
        Kind::Info | Kind::Enum => None,
        Kind::Gauge => {
            let (op, live_only, per_process) = match desc.gauge_mode {
                GaugeMode::All | GaugeMode::LiveAll => (Op::Replace, true, Some("pid")),
                GaugeMode::LiveWorker => (Op::Replace, true, Some("slot")),
                GaugeMode::LiveSum => (Op::Sum, true, None),
                GaugeMode::LiveMax => (Op::Max, true, None),
                GaugeMode::LiveMin => (Op::Min, true, None),
                GaugeMode::LiveMostRecent => (Op::MostRecent, true, None),
                GaugeMode::Sum => (Op::Sum, false, None),
                GaugeMode::Max => (Op::Max, false, None),
                GaugeMode::Min => (Op::Min, false, None),
                GaugeMode::MostRecent => (Op::MostRecent, false, None),
            };
            if live_only && !live {
                None
            } else {
                Some((op, per_process))
            }
        }
    }
}

fn compatible(a: &Desc, b: &Desc) -> bool {
    a.kind == b.kind
        && a.labelnames == b.labelnames
        && a.gauge_mode == b.gauge_mode
        && a.states == b.states
        && a.buckets.len() == b.buckets.len()
        && a.buckets.iter().zip(&b.buckets).all(|(x, y)| x.to_bits() == y.to_bits())
        && a.native == b.native
}

#[derive(Clone)]
struct Acc {
    values: Vec<f64>,
    created: f64,
    exemplars: Vec<Option<Exemplar>>,
}

#[derive(Clone)]
struct MergedFamily {
    /// The description as written by processes.
    desc: Arc<Desc>,
    /// The description to expose (with a `pid` label for per-process gauges).
    shown: Arc<Desc>,
    series: HashMap<Vec<String>, Acc>,
    order: Vec<Vec<String>>,
}

/// The merged state of several files.
#[derive(Clone, Default)]
pub struct Merge {
    fams: Vec<MergedFamily>,
    index: HashMap<String, usize>,
    /// Slot lives already folded (only meaningful for an archive).
    pub folded: HashSet<u64>,
    /// Problems met while merging.
    pub warnings: Vec<String>,
}

impl Merge {
    /// Add one series (a gauge whose value is `cell::UNWRITTEN` is left out: never written).
    pub fn add(&mut self, desc: &Desc, labels: &[String], created: f64, values: &[f64], source: Source) {
        if desc.kind == Kind::Gauge && values.first().is_some_and(|v| cell::is_unwritten(v.to_bits())) {
            return;
        }
        let Some((op, per_process)) = rule(desc, source) else { return };
        let idx = match self.index.get(&desc.name) {
            Some(i) => *i,
            None => {
                let shown = Arc::new(shown_desc(desc, per_process));
                self.fams.push(MergedFamily {
                    desc: Arc::new(desc.clone()),
                    shown,
                    series: HashMap::new(),
                    order: Vec::new(),
                });
                self.index.insert(desc.name.clone(), self.fams.len() - 1);
                self.fams.len() - 1
            }
        };
        let fam = &mut self.fams[idx];
        if !compatible(&fam.desc, desc) {
            self.warnings.push(format!(
                "metric {} is defined differently by two processes (type, labels, buckets, native \
                 buckets or mode); the other definition's values are left out",
                desc.name
            ));
            return;
        }
        let mut key = labels.to_vec();
        if let (Some(label), Source::Live(pid, slot)) = (per_process, source) {
            key.push(if label == "pid" { pid } else { slot }.to_string());
        }
        match fam.series.get_mut(&key) {
            None => {
                fam.order.push(key.clone());
                fam.series.insert(key, Acc { values: values.to_vec(), created, exemplars: Vec::new() });
            }
            Some(acc) => {
                acc.created = acc.created.min(created);
                match (&fam.desc.native, fam.desc.buckets.len() + 1) {
                    (Some(params), classic) if acc.values.len() > classic && values.len() > classic => {
                        combine(op, &mut acc.values[..classic], &values[..classic]);
                        combine_native(params, &mut acc.values[classic..], &values[classic..]);
                    }
                    _ => combine(op, &mut acc.values, values),
                }
            }
        }
    }

    /// Offer the exemplars of one series (by position); each position keeps the newest.
    pub fn add_exemplars(&mut self, name: &str, labels: &[String], exemplars: &[Option<Exemplar>]) {
        let Some(fam) = self.index.get(name).and_then(|i| self.fams.get_mut(*i)) else { return };
        let Some(acc) = fam.series.get_mut(labels) else { return };
        if acc.exemplars.len() < exemplars.len() {
            acc.exemplars.resize(exemplars.len(), None);
        }
        for (slot, offered) in acc.exemplars.iter_mut().zip(exemplars) {
            if let Some(new) = offered {
                if slot.as_ref().map_or(true, |old| old.timestamp <= new.timestamp) {
                    *slot = Some(new.clone());
                }
            }
        }
    }

    /// Add every series of a decoded file, and a live file's exemplars.
    pub fn add_file(&mut self, file: &FileData, source: Source) {
        for s in &file.series {
            if let Some(desc) = file.families.get(&s.family) {
                self.add(desc, &s.labels, s.created, &s.values, source);
            }
        }
        // Exemplars point at recent traces: a dead process's are let go with it.
        if matches!(source, Source::Live(..)) {
            for (family, labels, exemplars) in &file.exemplars {
                if let Some(desc) = file.families.get(family) {
                    self.add_exemplars(&desc.name, labels, exemplars);
                }
            }
        }
    }

    /// Snapshots for `local` families in order, then (with `everything`) the families only
    /// other processes know, by name.
    pub fn snapshots(&self, local: &[Arc<Family>], everything: bool) -> Vec<FamilySnapshot> {
        let mut out = Vec::with_capacity(local.len());
        let mut seen = HashSet::new();
        for fam in local {
            seen.insert(fam.desc.name.as_str());
            if matches!(fam.desc.kind, Kind::Info | Kind::Enum) {
                out.push(fam.snapshot());
                continue;
            }
            match self.index.get(&fam.desc.name).map(|i| &self.fams[*i]) {
                Some(m) if compatible(&m.desc, &fam.desc) => out.push(m.snapshot()),
                _ => {
                    let per_process = rule(&fam.desc, Source::Live(0, 0)).and_then(|(_, l)| l);
                    let shown = Arc::new(shown_desc(&fam.desc, per_process));
                    out.push(FamilySnapshot { desc: shown, series: Vec::new() });
                }
            }
        }
        if everything {
            let mut rest: Vec<&MergedFamily> =
                self.fams.iter().filter(|m| !seen.contains(m.desc.name.as_str())).collect();
            rest.sort_by(|a, b| a.desc.name.cmp(&b.desc.name));
            out.extend(rest.into_iter().map(MergedFamily::snapshot));
        }
        out
    }

    /// Encode as an archive file.
    pub fn to_archive(&self, header: &Header) -> Vec<u8> {
        let mut body = Vec::new();
        let mut uids: Vec<u64> = self.folded.iter().copied().collect();
        uids.sort_unstable();
        body.extend(format::folded_record(&uids));
        for (i, fam) in self.fams.iter().enumerate() {
            body.extend(format::family_record(i as u32, &fam.desc));
            for key in &fam.order {
                if let Some(acc) = fam.series.get(key) {
                    let bits: Vec<u64> = acc.values.iter().map(|v| v.to_bits()).collect();
                    body.extend(format::series_record(i as u32, key, acc.created, &bits).0);
                }
            }
        }
        let mut h = header.clone();
        h.used = (format::HEADER + body.len()) as u64;
        let mut out = format::write_header(&h).to_vec();
        out.extend(body);
        out
    }
}

impl MergedFamily {
    fn snapshot(&self) -> FamilySnapshot {
        let series = self
            .order
            .iter()
            .filter_map(|k| {
                self.series.get(k).map(|acc| SeriesSnapshot {
                    labels: k.clone(),
                    values: acc.values.clone(),
                    created: acc.created,
                    info: Vec::new(),
                    exemplars: acc.exemplars.clone(),
                })
            })
            .collect();
        FamilySnapshot { desc: Arc::clone(&self.shown), series }
    }
}

fn combine(op: Op, acc: &mut [f64], new: &[f64]) {
    match op {
        Op::Sum => acc.iter_mut().zip(new).for_each(|(a, b)| *a += b),
        Op::Replace => acc.iter_mut().zip(new).for_each(|(a, b)| *a = *b),
        Op::Max => {
            if let (Some(a), Some(b)) = (acc.first_mut(), new.first()) {
                *a = a.max(*b);
            }
        }
        Op::Min => {
            if let (Some(a), Some(b)) = (acc.first_mut(), new.first()) {
                *a = a.min(*b);
            }
        }
        Op::MostRecent => {
            let newer = new.get(1).copied().unwrap_or(0.0) > acc.get(1).copied().unwrap_or(0.0);
            if newer {
                acc.iter_mut().zip(new).for_each(|(a, b)| *a = *b);
            }
        }
    }
}

/// Add the native buckets `new` to `acc` (both native cell blocks of `params`' layout): both at
/// the coarser schema, summed per bucket index, then placed in `acc`'s window (at a lower
/// resolution where the union does not fit it).
fn combine_native(params: &NativeParams, acc: &mut [f64], new: &[f64]) {
    let (Some(mut sum), Some(other)) = (Sparse::from_cells(acc, params), Sparse::from_cells(new, params))
    else {
        return;
    };
    let prefer = Layout::decode(acc[0], params.schema);
    sum.merge(&other);
    sum.fit(params.max_buckets as usize);
    let placed = sum.to_cells(params, prefer);
    acc.iter_mut().zip(placed).for_each(|(a, v)| *a = v);
}

/// The description to expose: with the per-process label appended, if the mode has one.
fn shown_desc(d: &Desc, per_process: Option<&str>) -> Desc {
    let mut shown = d.clone();
    if let Some(label) = per_process {
        shown.labelnames.push(label.to_owned());
    }
    shown
}

/// One series as read from a file.
pub struct SeriesData {
    family: u32,
    labels: Vec<String>,
    created: f64,
    values: Vec<f64>,
}

impl FileData {
    /// Label values and first value of every series read, in file order (tests).
    #[cfg(test)]
    pub fn series_bits(&self) -> impl Iterator<Item = (&[String], f64)> {
        self.series.iter().map(|s| (s.labels.as_slice(), s.values.first().copied().unwrap_or(0.0)))
    }
}

/// Everything read from one file.
pub struct FileData {
    /// Its header.
    pub header: Header,
    families: HashMap<u32, Desc>,
    series: Vec<SeriesData>,
    // Exemplars by series: family index, label values, entries (slot files only).
    exemplars: Vec<(u32, Vec<String>, Vec<Option<Exemplar>>)>,
    /// Folded slot lives (archives only).
    pub folded: Vec<u64>,
}

/// Decode a file whose bytes are `b`, published up to `used`, reading the words other processes
/// may change (cells, exemplar entries) with `read_word` (the 8-byte word at an offset, as
/// stored; atomic loads for live memory). A gauge series whose value was never written
/// (`cell::UNWRITTEN`) is left out. Returns the data and a warning if it was cut short.
pub fn decode(b: &[u8], used: usize, read_word: impl Fn(usize) -> u64) -> Result<(FileData, Option<String>)> {
    let header = format::read_header(b)?;
    let (records, err) = format::read_records(b, used);
    let mut data = FileData {
        header,
        families: HashMap::new(),
        series: Vec::new(),
        exemplars: Vec::new(),
        folded: Vec::new(),
    };
    for r in records {
        match r {
            Record::Family(i, d) => {
                data.families.insert(i, d);
            }
            Record::Series { family, labels, created, cells_at, cells } => {
                let Some(desc) = data.families.get(&family) else { continue };
                if cells != desc.cell_count() || labels.len() != desc.labelnames.len() {
                    continue;
                }
                let mut bits: Vec<u64> = (0..cells).map(|i| read_word(cells_at + i * 8)).collect();
                if let Some(params) = &desc.native {
                    // Native buckets are moved as a whole now and then: read them settled.
                    let first = desc.buckets.len() + 1;
                    let read = |i: usize| read_value(read_word(cells_at + (first + i) * 8));
                    match native::read_settled(cells - first, params, read) {
                        Some(values) => {
                            bits.truncate(first);
                            bits.extend(values.into_iter().map(f64::to_bits));
                        }
                        // A process that died while moving them: its native buckets are lost
                        // (its classic ones are whole), as an empty block.
                        None => {
                            bits.truncate(first);
                            bits.resize(cells, 0);
                        }
                    }
                }
                // A gauge this process never wrote does not exist for the merge.
                if desc.kind == Kind::Gauge && bits.first().is_some_and(|b| cell::is_unwritten(*b)) {
                    continue;
                }
                let values = bits.into_iter().map(read_value).collect();
                data.series.push(SeriesData { family, labels, created, values });
            }
            Record::Folded(uids) => data.folded.extend(uids),
            Record::Exemplars { family, labels, entries_at, count } => {
                let entries = (0..count)
                    .map(|i| read_exemplar(b, entries_at + i * format::EXEMPLAR_ENTRY, &read_word))
                    .collect();
                data.exemplars.push((family, labels, entries));
            }
        }
    }
    Ok((data, err))
}

/// The value of a cell read as `bits`; a cell never written reads 0.0 (the time cell of a
/// `mostrecent` gauge caught between its value and its stamp).
fn read_value(bits: u64) -> f64 {
    if cell::is_unwritten(bits) {
        0.0
    } else {
        f64::from_bits(bits)
    }
}

/// Read one exemplar entry written under its seqlock (see `format::EXEMPLAR_ENTRY`): None when
/// empty, being written, or changed while read.
fn read_exemplar(b: &[u8], at: usize, read_word: &impl Fn(usize) -> u64) -> Option<Exemplar> {
    let word = |offset: usize| read_word(at + offset);
    let seq = word(0);
    if seq == 0 || seq % 2 == 1 {
        return None;
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    let value = f64::from_bits(word(8));
    let timestamp = f64::from_bits(word(16));
    let len = (word(24) & 0xffff_ffff) as usize;
    if len > format::EXEMPLAR_DATA {
        return None;
    }
    let mut data = Vec::with_capacity(len.div_ceil(8) * 8);
    for i in 0..len.div_ceil(8) {
        data.extend_from_slice(&word(32 + i * 8).to_le_bytes());
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    if word(0) != seq || b.len() < at + format::EXEMPLAR_ENTRY {
        return None;
    }
    let labels = format::parse_exemplar_labels(&data, len)?;
    Some(Exemplar { labels, value, timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(mode: GaugeMode) -> Desc {
        let mut d = Desc::new(Kind::Gauge, "g", "", vec![], "", "", "").unwrap();
        d.gauge_mode = mode;
        d
    }

    proptest::proptest! {
        /// Any mix of written and never-written gauge values from live and dead sources merges
        /// exactly as the mode says over the written ones only; never-written ones add nothing,
        /// and a series nobody wrote is absent.
        #[test]
        fn gauges_merge_only_what_was_written(
            mode in 0usize..11,
            inputs in proptest::collection::vec(
                (proptest::option::of(-1000i32..1000), proptest::option::of(1u32..4)),
                0..8,
            ),
        ) {
            use GaugeMode::*;
            let modes = [All, LiveAll, LiveSum, Sum, Max, Min, MostRecent, LiveMax, LiveMin, LiveMostRecent, LiveWorker];
            let mode = modes[mode];
            let desc = gauge(mode);
            let live_only = matches!(mode, All | LiveAll | LiveSum | LiveMax | LiveMin | LiveMostRecent | LiveWorker);
            let mut m = Merge::default();
            // (value, time) of every written input the mode keeps, in order.
            let mut kept: Vec<(f64, f64, u32)> = Vec::new();
            for (i, (value, pid)) in inputs.iter().enumerate() {
                let source = pid.map_or(Source::Dead, |p| Source::Live(p, p));
                let time = i as f64 + 1.0;
                let cells: Vec<f64> = match value {
                    Some(v) => vec![f64::from(*v), time],
                    None => vec![f64::from_bits(cell::UNWRITTEN); 2],
                };
                let cells = &cells[..desc.cell_count()];
                m.add(&desc, &[], 0.0, cells, source);
                if let Some(v) = value {
                    if pid.is_some() || !live_only {
                        kept.push((f64::from(*v), time, pid.unwrap_or(0)));
                    }
                }
            }
            let snaps = m.snapshots(&[], true);
            let mut got: Vec<f64> = snaps.first().map_or(Vec::new(), |f| f.series.iter().map(|s| s.values[0]).collect());
            let values = kept.iter().map(|k| k.0);
            let mut want: Vec<f64> = match mode {
                Sum | LiveSum => vec![values.sum()],
                Max | LiveMax => vec![values.fold(f64::NEG_INFINITY, f64::max)],
                Min | LiveMin => vec![values.fold(f64::INFINITY, f64::min)],
                MostRecent | LiveMostRecent => kept.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|k| k.0).into_iter().collect(),
                All | LiveAll | LiveWorker => {
                    // One series per process: the last value each wrote.
                    let mut last: HashMap<u32, f64> = HashMap::new();
                    for (v, _, pid) in &kept {
                        last.insert(*pid, *v);
                    }
                    last.into_values().collect()
                }
            };
            if kept.is_empty() {
                want.clear();
            }
            got.sort_by(f64::total_cmp);
            want.sort_by(f64::total_cmp);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn counters_add_up_and_live_gauges_of_the_dead_vanish() {
        let c = Desc::new(Kind::Counter, "c", "", vec![], "", "", "").unwrap();
        let mut m = Merge::default();
        m.add(&c, &[], 5.0, &[2.0], Source::Live(1, 1));
        m.add(&c, &[], 3.0, &[3.0], Source::Dead);
        let g = gauge(GaugeMode::LiveSum);
        m.add(&g, &[], 0.0, &[4.0], Source::Live(1, 1));
        m.add(&g, &[], 0.0, &[100.0], Source::Dead);
        let snaps = m.snapshots(&[], true);
        assert_eq!(snaps[0].series[0].values, vec![5.0]);
        assert_eq!(snaps[0].series[0].created, 3.0);
        assert_eq!(snaps[1].series[0].values, vec![4.0]);
    }

    #[test]
    fn gauge_modes() {
        let mut m = Merge::default();
        m.add(&gauge(GaugeMode::Max), &[], 0.0, &[4.0], Source::Live(1, 1));
        m.add(&gauge(GaugeMode::Max), &[], 0.0, &[9.0], Source::Dead);
        assert_eq!(m.snapshots(&[], true)[0].series[0].values, vec![9.0]);
        let mut m = Merge::default();
        m.add(&gauge(GaugeMode::MostRecent), &[], 0.0, &[1.0, 20.0], Source::Live(1, 1));
        m.add(&gauge(GaugeMode::MostRecent), &[], 0.0, &[2.0, 10.0], Source::Live(2, 2));
        assert_eq!(m.snapshots(&[], true)[0].series[0].values[0], 1.0);
        let mut m = Merge::default();
        m.add(&gauge(GaugeMode::LiveAll), &[], 0.0, &[1.0], Source::Live(7, 7));
        m.add(&gauge(GaugeMode::LiveAll), &[], 0.0, &[2.0], Source::Live(8, 8));
        m.add(&gauge(GaugeMode::LiveAll), &[], 0.0, &[3.0], Source::Dead);
        let s = &m.snapshots(&[], true)[0];
        assert_eq!(s.desc.labelnames, vec!["pid".to_string()]);
        assert_eq!(s.series.len(), 2);
        assert_eq!(s.series[1].labels, vec!["8".to_string()]);
        let mut m = Merge::default();
        m.add(&gauge(GaugeMode::LiveWorker), &[], 0.0, &[1.0], Source::Live(700, 0));
        m.add(&gauge(GaugeMode::LiveWorker), &[], 0.0, &[2.0], Source::Live(800, 3));
        let s = &m.snapshots(&[], true)[0];
        assert_eq!(s.desc.labelnames, vec!["slot".to_string()]);
        assert_eq!(s.series[1].labels, vec!["3".to_string()]);
    }

    #[test]
    fn incompatible_definitions_are_reported() {
        let mut m = Merge::default();
        let a = Desc::new(Kind::Counter, "x", "", vec![], "", "", "").unwrap();
        let b = Desc::new(Kind::Counter, "x", "", vec!["l".into()], "", "", "").unwrap();
        m.add(&a, &[], 0.0, &[1.0], Source::Dead);
        m.add(&b, &["v".into()], 0.0, &[1.0], Source::Dead);
        assert_eq!(m.warnings.len(), 1);
    }

    #[test]
    fn archive_round_trips() {
        let mut m = Merge::default();
        let h = Desc::new(Kind::Histogram, "h", "help", vec!["a".into()], "", "", "")
            .unwrap()
            .with_buckets(vec![1.0])
            .unwrap();
        m.add(&h, &["x".into()], 1.0, &[1.0, 2.0, 3.5], Source::Dead);
        m.folded.insert(42);
        let bytes = m.to_archive(&Header::default());
        let used = format::read_header(&bytes).unwrap().used as usize;
        let (data, err) =
            decode(&bytes, used, |at| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())).unwrap();
        assert!(err.is_none());
        assert_eq!(data.folded, vec![42]);
        let mut back = Merge::default();
        back.add_file(&data, Source::Dead);
        assert_eq!(back.snapshots(&[], true)[0].series[0].values, vec![1.0, 2.0, 3.5]);
    }
}
