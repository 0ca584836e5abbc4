//! The on-disk layout shared by slot files and the archive: a header, then appended records.
//!
//! ```text
//! header (256 bytes): magic "MRSSLOT\0" | version u32 | pid u32 | used u64 | boot u64 | uid u64
//!                     | reserved | hostname (64 bytes)
//! record:             len u32 | tag u32 | payload, padded so the next record starts 8-aligned
//! family payload:     index u32 | kind u8 | gauge mode u8 | pad u16 | name | help | unit
//!                     | labelnames | buckets | states
//!                     [| native u32 (0: none, 1: these follow) | schema i32 | max buckets u32
//!                      | pad u32 | zero threshold f64]
//! series payload:     family index u32 | cell count u32 | label values | pad to 8
//!                     | created f64 | cells (f64 bits, 8-aligned)
//! ```
//! Once published (below the header's `used`), a record changes only in words other processes
//! read with 8-byte atomic loads: its cells, its exemplar entries, and its first word (len |
//! tag), which its writer replaces atomically to release the record (`TAG_RELEASED`). A gauge
//! cell never written holds `cell::UNWRITTEN`.
//! The native part was added after version 1 shipped: a family record without it (what older
//! writers wrote, and their padding reads as `native 0`) has no native buckets, and an older
//! reader ignores it, then skips the series whose cell count it does not expect.
//! Strings are `u32` length + UTF-8 bytes; lists are `u32` count + items. All little-endian.
//! Every read is bounds-checked: a truncated or foreign file yields an error, never a crash.

use crate::desc::Kind;
use crate::desc::{Desc, GaugeMode};
use crate::error::{Error, Result};
use crate::native::{self, NativeParams};

/// File magic.
pub const MAGIC: &[u8; 8] = b"MRSSLOT\0";
/// Layout version; files of other versions are skipped.
pub const VERSION: u32 = 1;
/// Header size; the first record starts here.
pub const HEADER: usize = 256;
/// Offset of the `used` field (end of the last published record).
pub const USED_AT: usize = 16;
/// Largest record accepted when reading (guards against garbage lengths).
const MAX_RECORD: usize = 16 << 20;

/// Record tag of a family description.
pub const TAG_FAMILY: u32 = 1;
/// Record tag of a series.
pub const TAG_SERIES: u32 = 2;
/// Record tag of the list of slot lives already folded into an archive.
pub const TAG_FOLDED: u32 = 3;
/// Record tag of a series' exemplar entries (slot files only; archives keep none).
pub const TAG_EXEMPLARS: u32 = 4;
/// Record tag of a series or exemplar record that its process released (`remove()`, `clear()`):
/// readers skip it. A live record becomes one by an atomic store of its first word.
pub const TAG_RELEASED: u32 = 5;
/// Bytes an exemplar's serialized labels may take: 128 characters of at most 4 bytes, plus a
/// 2-byte length per name and value (at most 128 pairs, each name at least one character).
pub const EXEMPLAR_DATA: usize = 1024;
/// Bytes of one exemplar entry: seq u64 | value f64 | timestamp f64 | data length u32 | pad u32
/// | labels. A writer makes `seq` odd while it writes and even when done (a seqlock): a reader
/// keeps an entry only if it read the same even, non-zero `seq` before and after.
pub const EXEMPLAR_ENTRY: usize = 32 + EXEMPLAR_DATA;

/// Fixed header fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Process id of the writer.
    pub pid: u32,
    /// End of the published records.
    pub used: u64,
    /// Hash of the kernel boot id (same boot = same kernel = locks are reliable).
    pub boot: u64,
    /// Random id of this slot's life, so a fold is never applied twice.
    pub uid: u64,
    /// Writer's host name.
    pub host: String,
}

/// Encode a header.
pub fn write_header(h: &Header) -> [u8; HEADER] {
    let mut b = [0u8; HEADER];
    b[..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&h.pid.to_le_bytes());
    b[16..24].copy_from_slice(&h.used.to_le_bytes());
    b[24..32].copy_from_slice(&h.boot.to_le_bytes());
    b[32..40].copy_from_slice(&h.uid.to_le_bytes());
    let host = h.host.as_bytes();
    let n = host.len().min(63);
    b[64..64 + n].copy_from_slice(&host[..n]);
    b
}

/// Decode a header; `used` is read separately by callers that need it atomically.
pub fn read_header(b: &[u8]) -> Result<Header> {
    if b.len() < HEADER {
        return Err(Error::corrupt("file shorter than its header"));
    }
    if &b[..8] != MAGIC {
        return Err(Error::corrupt("not a metrics store file (bad magic)"));
    }
    let version = u32::from_le_bytes(arr4(&b[8..12]));
    if version != VERSION {
        return Err(Error::corrupt(format!("store file version {version}, expected {VERSION}")));
    }
    let host_raw = &b[64..128];
    let end = host_raw.iter().position(|c| *c == 0).unwrap_or(host_raw.len());
    Ok(Header {
        pid: u32::from_le_bytes(arr4(&b[12..16])),
        used: u64::from_le_bytes(arr8(&b[16..24])),
        boot: u64::from_le_bytes(arr8(&b[24..32])),
        uid: u64::from_le_bytes(arr8(&b[32..40])),
        host: String::from_utf8_lossy(&host_raw[..end]).into_owned(),
    })
}

fn arr4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn arr8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::Counter => 1,
        Kind::Gauge => 2,
        Kind::Histogram => 3,
        Kind::Summary => 4,
        Kind::Info => 5,
        Kind::Enum => 6,
    }
}

fn kind_from(c: u8) -> Option<Kind> {
    Some(match c {
        1 => Kind::Counter,
        2 => Kind::Gauge,
        3 => Kind::Histogram,
        4 => Kind::Summary,
        5 => Kind::Info,
        6 => Kind::Enum,
        _ => return None,
    })
}

const MODES: [GaugeMode; 11] = [
    GaugeMode::All,
    GaugeMode::LiveAll,
    GaugeMode::LiveSum,
    GaugeMode::Sum,
    GaugeMode::Max,
    GaugeMode::Min,
    GaugeMode::MostRecent,
    GaugeMode::LiveMax,
    GaugeMode::LiveMin,
    GaugeMode::LiveMostRecent,
    GaugeMode::LiveWorker,
];

fn mode_code(m: GaugeMode) -> u8 {
    MODES.iter().position(|x| *x == m).unwrap_or(0) as u8
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_strs(out: &mut Vec<u8>, list: &[String]) {
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for s in list {
        put_str(out, s);
    }
}

fn pad8(out: &mut Vec<u8>) {
    while out.len() % 8 != 0 {
        out.push(0);
    }
}

fn finish_record(mut rec: Vec<u8>) -> Vec<u8> {
    pad8(&mut rec);
    let len = rec.len() as u32;
    rec[..4].copy_from_slice(&len.to_le_bytes());
    rec
}

/// Encode a family record.
pub fn family_record(index: u32, desc: &Desc) -> Vec<u8> {
    let mut r = Vec::with_capacity(128);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&TAG_FAMILY.to_le_bytes());
    r.extend_from_slice(&index.to_le_bytes());
    r.push(kind_code(desc.kind));
    r.push(mode_code(desc.gauge_mode));
    r.extend_from_slice(&[0, 0]);
    put_str(&mut r, &desc.name);
    put_str(&mut r, &desc.help);
    put_str(&mut r, &desc.unit);
    put_strs(&mut r, &desc.labelnames);
    r.extend_from_slice(&(desc.buckets.len() as u32).to_le_bytes());
    for b in &desc.buckets {
        r.extend_from_slice(&b.to_bits().to_le_bytes());
    }
    put_strs(&mut r, &desc.states);
    if let Some(n) = &desc.native {
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend_from_slice(&n.schema.to_le_bytes());
        r.extend_from_slice(&n.max_buckets.to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&n.zero_threshold.to_bits().to_le_bytes());
    }
    finish_record(r)
}

/// The first word of a record (len | tag, as stored) with its tag replaced by `TAG_RELEASED`.
pub fn released_word(word: u64) -> u64 {
    let len = u64::from_le(word) & 0xffff_ffff;
    (len | (u64::from(TAG_RELEASED) << 32)).to_le()
}

/// Encode a series record whose cells hold the f64 bits `values`; return it and the offset of
/// its first cell within it.
pub fn series_record(family: u32, labels: &[String], created: f64, values: &[u64]) -> (Vec<u8>, usize) {
    let mut r = Vec::with_capacity(64 + values.len() * 8);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&TAG_SERIES.to_le_bytes());
    r.extend_from_slice(&family.to_le_bytes());
    r.extend_from_slice(&(values.len() as u32).to_le_bytes());
    put_strs(&mut r, labels);
    pad8(&mut r);
    r.extend_from_slice(&created.to_bits().to_le_bytes());
    let cells_at = r.len();
    for v in values {
        r.extend_from_slice(&v.to_le_bytes());
    }
    (finish_record(r), cells_at)
}

/// Encode the list of folded slot lives.
pub fn folded_record(uids: &[u64]) -> Vec<u8> {
    let mut r = Vec::with_capacity(16 + uids.len() * 8);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&TAG_FOLDED.to_le_bytes());
    r.extend_from_slice(&(uids.len() as u32).to_le_bytes());
    pad8(&mut r);
    for u in uids {
        r.extend_from_slice(&u.to_le_bytes());
    }
    finish_record(r)
}

/// Encode an exemplar record for `count` entries of a series, all empty; return it and the
/// offset of the first entry within it.
pub fn exemplars_record(family: u32, labels: &[String], count: usize) -> (Vec<u8>, usize) {
    let mut r = Vec::with_capacity(64 + count * EXEMPLAR_ENTRY);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&TAG_EXEMPLARS.to_le_bytes());
    r.extend_from_slice(&family.to_le_bytes());
    r.extend_from_slice(&(count as u32).to_le_bytes());
    put_strs(&mut r, labels);
    pad8(&mut r);
    let entries_at = r.len();
    r.resize(entries_at + count * EXEMPLAR_ENTRY, 0);
    (finish_record(r), entries_at)
}

/// Serialize exemplar labels (u16 length + UTF-8 per name and value), padded to 8 bytes; None
/// if they do not fit an entry.
pub fn exemplar_labels(labels: &[(String, String)]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    for (name, value) in labels {
        for part in [name, value] {
            out.extend_from_slice(&u16::try_from(part.len()).ok()?.to_le_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    pad8(&mut out);
    (out.len() <= EXEMPLAR_DATA).then_some(out)
}

/// Parse what `exemplar_labels` wrote (`len` bytes of it); None if malformed.
pub fn parse_exemplar_labels(b: &[u8], len: usize) -> Option<Vec<(String, String)>> {
    let b = b.get(..len)?;
    let mut at = 0;
    let mut out = Vec::new();
    // What follows the last pair is zero padding.
    while b[at..].iter().any(|byte| *byte != 0) {
        let mut pair = [String::new(), String::new()];
        for part in &mut pair {
            let n = u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
            *part = std::str::from_utf8(b.get(at + 2..at + 2 + n)?).ok()?.to_owned();
            at += 2 + n;
        }
        let [name, value] = pair;
        if name.is_empty() {
            return None;
        }
        out.push((name, value));
    }
    Some(out)
}

/// A bounds-checked reader over a record payload.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| Error::corrupt("record truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(arr4(self.take(4)?)))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(arr8(self.take(8)?)))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::corrupt("invalid UTF-8 in record"))
    }
    fn strings(&mut self) -> Result<Vec<String>> {
        let n = self.u32()? as usize;
        if n > self.b.len() {
            return Err(Error::corrupt("list longer than its record"));
        }
        (0..n).map(|_| self.string()).collect()
    }
    fn align8(&mut self) {
        self.at = self.at.div_ceil(8) * 8;
    }
}

/// One decoded record.
pub enum Record {
    /// A family description and its index within the file.
    Family(u32, Desc),
    /// A series.
    Series {
        /// Index of its family record.
        family: u32,
        /// Label values.
        labels: Vec<String>,
        /// Creation time (Unix seconds).
        created: f64,
        /// Absolute offset of its first cell in the file.
        cells_at: usize,
        /// Number of cells.
        cells: usize,
    },
    /// Slot lives already folded into this archive.
    Folded(Vec<u64>),
    /// A series' exemplar entries.
    Exemplars {
        /// Index of its family record.
        family: u32,
        /// The series' label values.
        labels: Vec<String>,
        /// Absolute offset of the first entry in the file.
        entries_at: usize,
        /// Number of entries.
        count: usize,
    },
}

/// Decode the records in `b[HEADER..used]`; stop at the first malformed one, returning what
/// was read and the error.
pub fn read_records(b: &[u8], used: usize) -> (Vec<Record>, Option<String>) {
    let mut out = Vec::new();
    let used = used.min(b.len());
    let mut at = HEADER;
    while at + 8 <= used {
        let len = u32::from_le_bytes(arr4(&b[at..at + 4])) as usize;
        let tag = u32::from_le_bytes(arr4(&b[at + 4..at + 8]));
        if len < 8 || len % 8 != 0 || len > MAX_RECORD || at + len > used {
            return (out, Some(format!("bad record length {len} at offset {at}")));
        }
        let mut c = Cursor { b: &b[at..at + len], at: 8 };
        let rec = match tag {
            TAG_FAMILY => read_family(&mut c),
            TAG_SERIES => read_series(&mut c, at),
            TAG_FOLDED => read_folded(&mut c),
            TAG_EXEMPLARS => read_exemplars(&mut c, at),
            TAG_RELEASED => {
                at += len;
                continue;
            }
            other => Err(Error::corrupt(format!("unknown record tag {other}"))),
        };
        match rec {
            Ok(r) => out.push(r),
            Err(e) => return (out, Some(format!("{e} at offset {at}"))),
        }
        at += len;
    }
    (out, None)
}

fn read_family(c: &mut Cursor<'_>) -> Result<Record> {
    let index = c.u32()?;
    let head = c.take(4)?;
    let kind = kind_from(head[0]).ok_or_else(|| Error::corrupt("unknown metric kind"))?;
    let mode = *MODES.get(head[1] as usize).ok_or_else(|| Error::corrupt("unknown gauge mode"))?;
    let name = c.string()?;
    let help = c.string()?;
    let unit = c.string()?;
    let labelnames = c.strings()?;
    let nb = c.u32()? as usize;
    if nb > c.b.len() {
        return Err(Error::corrupt("bucket list longer than its record"));
    }
    let buckets = (0..nb).map(|_| c.u64().map(f64::from_bits)).collect::<Result<Vec<_>, _>>()?;
    let states = c.strings()?;
    let native = read_native(c)?;
    Ok(Record::Family(
        index,
        Desc { name, help, kind, unit, labelnames, buckets, states, gauge_mode: mode, native },
    ))
}

/// The optional native part of a family record (see the module's layout).
fn read_native(c: &mut Cursor<'_>) -> Result<Option<NativeParams>> {
    // Fewer than 4 bytes left, or a zero word: padding of a record without one.
    if c.b.len().saturating_sub(c.at) < 4 || c.u32()? == 0 {
        return Ok(None);
    }
    let schema = c.u32()? as i32;
    let max_buckets = c.u32()?;
    let _pad = c.u32()?;
    let zero_threshold = f64::from_bits(c.u64()?);
    let sane = (native::SCHEMA_MIN..=native::SCHEMA_MAX).contains(&schema)
        && (1..=native::MAX_BUCKETS_LIMIT).contains(&max_buckets)
        && zero_threshold >= 0.0
        && zero_threshold.is_finite();
    if !sane {
        return Err(Error::corrupt("invalid native histogram parameters"));
    }
    Ok(Some(NativeParams { schema, max_buckets, zero_threshold }))
}

fn read_folded(c: &mut Cursor<'_>) -> Result<Record> {
    let n = c.u32()? as usize;
    c.align8();
    if n > c.b.len() / 8 {
        return Err(Error::corrupt("folded list longer than its record"));
    }
    (0..n).map(|_| c.u64()).collect::<Result<Vec<_>, _>>().map(Record::Folded)
}

fn read_exemplars(c: &mut Cursor<'_>, record_at: usize) -> Result<Record> {
    let family = c.u32()?;
    let count = c.u32()? as usize;
    let labels = c.strings()?;
    c.align8();
    let entries_at = c.at;
    c.take(count.checked_mul(EXEMPLAR_ENTRY).ok_or_else(|| Error::corrupt("exemplar count overflow"))?)?;
    Ok(Record::Exemplars { family, labels, entries_at: record_at + entries_at, count })
}

fn read_series(c: &mut Cursor<'_>, record_at: usize) -> Result<Record> {
    let family = c.u32()?;
    let cells = c.u32()? as usize;
    let labels = c.strings()?;
    c.align8();
    let created = f64::from_bits(c.u64()?);
    let cells_at = c.at;
    c.take(cells.checked_mul(8).ok_or_else(|| Error::corrupt("cell count overflow"))?)?;
    Ok(Record::Series { family, labels, created, cells_at: record_at + cells_at, cells })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemplar_labels_round_trip_and_limits() {
        let labels = vec![("trace_id".to_string(), "abc".to_string()), ("平".to_string(), String::new())];
        let bytes = exemplar_labels(&labels).unwrap();
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(parse_exemplar_labels(&bytes, bytes.len()).unwrap(), labels);
        // 128 four-byte characters with their lengths still fit an entry.
        let widest = vec![("a".to_string(), "😀".repeat(127))];
        assert!(exemplar_labels(&widest).unwrap().len() <= EXEMPLAR_DATA);
        assert!(exemplar_labels(&[("a".into(), "x".repeat(2000))]).is_none());
        // Garbage never panics.
        assert!(parse_exemplar_labels(&[5, 0, 0xff, 0xfe, 0, 0, 0, 0], 8).is_none());
        let (rec, at) = exemplars_record(3, &["v".to_string()], 2);
        assert_eq!(rec.len() % 8, 0);
        assert_eq!(at % 8, 0);
        assert_eq!(rec.len() - at, 2 * EXEMPLAR_ENTRY);
    }

    #[test]
    fn native_parameters_round_trip_and_records_without_them_have_none() {
        let plain =
            Desc::new(Kind::Histogram, "h", "", vec![], "", "", "").unwrap().with_buckets(vec![1.0]).unwrap();
        let native = plain.clone().with_native(1.1, 40, 0.5).unwrap();
        for (desc, want) in [(&native, native.native), (&plain, None)] {
            let mut file = write_header(&Header::default()).to_vec();
            file.extend(family_record(0, desc));
            let used = file.len();
            let (recs, err) = read_records(&file, used);
            assert!(err.is_none());
            let Some(Record::Family(_, back)) = recs.first() else { panic!("expected a family") };
            assert_eq!(back.native, want);
            assert_eq!(back.cell_count(), desc.cell_count());
        }
        // A record as version 1 wrote it (states last, then zero padding) reads as no native
        // buckets, whatever the padding's length.
        for states in [vec![], vec!["a".to_string()], vec!["ab".to_string()], vec!["abcd".to_string()]] {
            let desc = Desc { states, ..plain.clone() };
            let rec = family_record(0, &desc);
            let (recs, err) = read_records(
                &[write_header(&Header::default()).as_slice(), &rec].concat(),
                HEADER + rec.len(),
            );
            assert!(err.is_none());
            assert!(matches!(recs.first(), Some(Record::Family(_, d)) if d.native.is_none()));
        }
        // Nonsense parameters are refused, not trusted.
        let mut rec = family_record(0, &native);
        let half = 0.5f64.to_bits().to_le_bytes();
        let at = rec.windows(8).position(|w| w == half).unwrap();
        rec[at..at + 8].copy_from_slice(&(-1.0f64).to_bits().to_le_bytes());
        let (recs, err) =
            read_records(&[write_header(&Header::default()).as_slice(), &rec].concat(), HEADER + rec.len());
        assert!(recs.is_empty() && err.is_some());
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let desc = Desc::new(Kind::Histogram, "h", "help", vec!["a".into()], "", "", "")
            .unwrap()
            .with_buckets(vec![1.0])
            .unwrap();
        let mut file = write_header(&Header { pid: 7, host: "box".into(), ..Header::default() }).to_vec();
        file.extend(family_record(0, &desc));
        let (series, cells_at) =
            series_record(0, &["x".into()], 12.5, &[1f64.to_bits(), 2f64.to_bits(), 3f64.to_bits()]);
        let series_at = file.len();
        file.extend(series);
        let used = file.len();
        let (recs, err) = read_records(&file, used);
        assert!(err.is_none());
        assert_eq!(recs.len(), 2);
        match &recs[1] {
            Record::Series { labels, created, cells_at: at, cells, .. } => {
                assert_eq!(labels, &vec!["x".to_string()]);
                assert_eq!(*created, 12.5);
                assert_eq!(*at, series_at + cells_at);
                assert_eq!(*at % 8, 0);
                assert_eq!(*cells, 3);
            }
            _ => panic!("expected a series"),
        }
        assert_eq!(read_header(&file).unwrap().host, "box");
        // Truncation anywhere yields the records before it and an error, never a panic.
        for cut in HEADER..used {
            let (recs, _err) = read_records(&file[..cut], used);
            assert!(recs.len() < 2);
        }
        assert!(read_header(b"garbage").is_err());
        let mut wrong = file.clone();
        wrong[8] = 9;
        assert!(read_header(&wrong).is_err());
    }
}
