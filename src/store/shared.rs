//! The multiprocess store: one slot file per live process under a shared directory, merged at
//! scrape, with dead processes' slots folded into one archive.
//!
//! A process claims a slot by creating `slot-NNNN.mrs` and holding an exclusive `flock` on it
//! for its whole life, so the kernel frees the claim when the process dies, however it dies.
//! Values are 8-byte atomics in the mapped file; new series are appended and published by a
//! release store of the header's `used` field. Under the directory lock (`dir.lock`), a scrape
//! or a claim folds every slot whose lock is free into `archive.mrs` (written to a temporary
//! file and renamed) and deletes it; the archive remembers which slot lives it holds, so a crash
//! between the rename and the delete never counts a slot twice.
//!
//! The bindings call into this store only with the GIL held. `os.fork` needs the GIL, so no
//! child is forked while this process holds a lock here: an inherited descriptor of a held
//! `flock` would keep it locked for the child's whole life (no claims, no folding).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memmap2::{Mmap, MmapRaw};

use super::format::{self, Header};
use super::merge::{self, Merge, Source};
use super::{Cells, Store};
use crate::encode::FamilySnapshot;
use crate::family::{Desc, Family};
use crate::names::Kind;

const INITIAL_SIZE: u64 = 256 * 1024;
const SLOT_PREFIX: &str = "slot-";
const EXT: &str = ".mrs";
const ARCHIVE: &str = "archive.mrs";
const LOCK: &str = "dir.lock";
/// How long a scrape waits for the directory lock before merging without compacting.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The slot this process writes to.
struct Slot {
    // Held open for the process's life: its flock is the claim.
    _file: File,
    file_ref: File,
    pid: u32,
    map: Arc<MmapRaw>,
    capacity: usize,
    used: usize,
    families: HashMap<String, u32>,
}

/// Values shared between the processes using one directory.
pub struct SharedStore {
    dir: PathBuf,
    slot: Mutex<Option<Slot>>,
    warnings: Mutex<Vec<String>>,
    boot: u64,
    host: String,
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn try_lock(file: &File) -> std::io::Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The directory lock; released on drop (closing the file).
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path, wait: Duration) -> Result<DirLock, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join(LOCK))
            .map_err(|e| format!("cannot open {}: {e}", dir.join(LOCK).display()))?;
        let start = Instant::now();
        loop {
            match try_lock(&file) {
                Ok(true) => return Ok(DirLock { _file: file }),
                Ok(false) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(1)),
                Ok(false) => return Err("timed out waiting for the store directory lock".into()),
                Err(e) => return Err(format!("cannot lock the store directory: {e}")),
            }
        }
    }
}

fn boot_id() -> u64 {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    // FNV-1a: stable across processes and versions, unlike std's randomised hasher.
    id.trim().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|c| *c == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn new_uid() -> u64 {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut x = (t as u64) ^ ((std::process::id() as u64) << 32) ^ (&t as *const _ as u64);
    // splitmix64 finaliser spreads the bits.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The number in `slot-NNNN.mrs`.
fn slot_number(name: &str) -> u32 {
    name.trim_start_matches(SLOT_PREFIX).trim_end_matches(EXT).parse().unwrap_or(0)
}

fn is_slot(name: &str) -> bool {
    name.starts_with(SLOT_PREFIX) && name.ends_with(EXT)
}

/// A file mapped for reading, with its published length and a volatile cell reader.
struct Mapped {
    map: Mmap,
    used: usize,
}

impl Mapped {
    fn open(file: &File) -> Result<Option<Mapped>, String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
        if len < format::HEADER {
            // Being created by a claim right now, or empty: nothing to read yet.
            return Ok(None);
        }
        // SAFETY: the file is only ever extended while mapped (never truncated: dead slots are
        // deleted and the archive is replaced by rename), so the mapped range stays backed.
        let map = unsafe { Mmap::map(file) }.map_err(|e| e.to_string())?;
        // SAFETY: the header is within the mapping (len >= HEADER) and `used` is 8-aligned in a
        // page-aligned mapping; a volatile read sees a whole value written by an atomic store.
        let used = unsafe { std::ptr::read_volatile(map.as_ptr().add(format::USED_AT) as *const u64) };
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(Some(Mapped { used: (used as usize).min(map.len()), map }))
    }

    fn decode(&self) -> Result<(merge::FileData, Option<String>), String> {
        let base = self.map.as_ptr();
        let len = self.map.len();
        merge::decode(&self.map, self.used, |at| {
            if at + 8 > len {
                return 0.0;
            }
            // SAFETY: `at` is 8-aligned (records and cells are) and in bounds; the writer
            // updates cells with 8-byte atomic stores, so a volatile load never tears.
            f64::from_bits(unsafe { std::ptr::read_volatile(base.add(at) as *const u64) })
        })
    }
}

impl SharedStore {
    /// Use `dir`, which must exist and be writable.
    pub fn open(dir: &Path) -> Result<SharedStore, String> {
        let meta = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
        let _ = fs::remove_file(&probe);
        Ok(SharedStore {
            dir: dir.to_path_buf(),
            slot: Mutex::new(None),
            warnings: Mutex::new(Vec::new()),
            boot: boot_id(),
            host: host_name(),
        })
    }

    fn warn(&self, msg: String) {
        if let Ok(mut w) = self.warnings.lock() {
            if w.len() < 1000 {
                w.push(msg);
            }
        }
    }

    /// Whether a file with `h` was written on another machine (its locks mean nothing here).
    fn foreign_host(&self, h: &Header) -> bool {
        h.boot != self.boot && h.host != self.host
    }

    fn claim(&self) -> Result<Slot, String> {
        let _lock = DirLock::acquire(&self.dir, Duration::from_secs(30))?;
        self.compact_locked();
        for i in 0..1_000_000u32 {
            let path = self.dir.join(format!("{SLOT_PREFIX}{i:04}{EXT}"));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            };
            if !try_lock(&file).map_err(|e| e.to_string())? {
                return Err(format!("{} is locked by another process", path.display()));
            }
            let pid = std::process::id();
            let header = Header {
                pid,
                used: format::HEADER as u64,
                boot: self.boot,
                uid: new_uid(),
                host: self.host.clone(),
            };
            let mut f = &file;
            f.write_all(&format::write_header(&header)).map_err(|e| e.to_string())?;
            file.set_len(INITIAL_SIZE).map_err(|e| e.to_string())?;
            let map = MmapRaw::map_raw(&file).map_err(|e| e.to_string())?;
            let file_ref = file.try_clone().map_err(|e| e.to_string())?;
            return Ok(Slot {
                _file: file,
                file_ref,
                pid,
                map: Arc::new(map),
                capacity: INITIAL_SIZE as usize,
                used: format::HEADER,
                families: HashMap::new(),
            });
        }
        Err("no free slot file name".into())
    }

    /// Fold every dead slot into the archive and delete it. Needs the directory lock.
    fn compact_locked(&self) {
        // (path, its lock, its data, whether it decoded completely)
        let mut dead: Vec<(PathBuf, File, Option<merge::FileData>, bool)> = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_slot(&name) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = File::open(&path) else { continue };
            match try_lock(&file) {
                Ok(true) => {}
                _ => continue,
            }
            match Mapped::open(&file) {
                Ok(None) => dead.push((path, file, None, true)),
                Ok(Some(m)) => match m.decode() {
                    Ok((data, err)) => {
                        let complete = err.is_none();
                        if let Some(e) = err {
                            self.warn(format!("{name}: {e}; the readable part was kept"));
                        }
                        if self.foreign_host(&data.header) {
                            self.warn(format!(
                                "{name} comes from host {:?}, not this one: left alone",
                                data.header.host
                            ));
                            continue;
                        }
                        dead.push((path, file, Some(data), complete));
                    }
                    Err(e) => {
                        self.warn(format!("{name}: {e}; moved aside as {name}.bad"));
                        let _ = fs::rename(&path, self.dir.join(format!("{name}.bad")));
                    }
                },
                Err(e) => self.warn(format!("{name}: {e}")),
            }
        }
        if dead.is_empty() {
            return;
        }
        let mut archive = self.read_archive();
        for (_, _, data, complete) in &dead {
            if let Some(d) = data {
                if archive.folded.contains(&d.header.uid) {
                    continue;
                }
                // Only a whole file's life is remembered: a damaged copy must not shadow it.
                if *complete {
                    archive.folded.insert(d.header.uid);
                }
                archive.add_file(d, Source::Dead);
            }
        }
        // Forget folded lives whose files are gone (they can never be seen again).
        let present: std::collections::HashSet<u64> = self.slot_uids();
        archive.folded.retain(|u| present.contains(u));
        let header =
            Header { pid: std::process::id(), boot: self.boot, host: self.host.clone(), ..Header::default() };
        let bytes = archive.to_archive(&header);
        let tmp = self.dir.join(format!("{ARCHIVE}.{}.tmp", std::process::id()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|_| fs::rename(&tmp, self.dir.join(ARCHIVE)));
        if let Err(e) = written {
            self.warn(format!("cannot write the archive: {e}; dead slots kept for the next try"));
            let _ = fs::remove_file(&tmp);
            return;
        }
        for (path, _, _, _) in dead {
            let _ = fs::remove_file(path);
        }
        for w in archive.warnings {
            self.warn(w);
        }
    }

    fn slot_uids(&self) -> std::collections::HashSet<u64> {
        let mut out = std::collections::HashSet::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if is_slot(&e.file_name().to_string_lossy()) {
                    if let Ok(mut f) = File::open(e.path()) {
                        let mut buf = [0u8; format::HEADER];
                        if std::io::Read::read_exact(&mut f, &mut buf).is_ok() {
                            if let Ok(h) = format::read_header(&buf) {
                                out.insert(h.uid);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn read_archive(&self) -> Merge {
        let mut merge = Merge::default();
        let path = self.dir.join(ARCHIVE);
        let Ok(file) = File::open(&path) else { return merge };
        match Mapped::open(&file).and_then(|m| m.map(|m| m.decode()).transpose()) {
            Ok(Some((data, err))) => {
                if let Some(e) = err {
                    self.warn(format!("{ARCHIVE}: {e}; the readable part was kept"));
                }
                merge.folded.extend(data.folded.iter().copied());
                merge.add_file(&data, Source::Dead);
            }
            Ok(None) => {}
            Err(e) => {
                self.warn(format!("{ARCHIVE}: {e}; moved aside as {ARCHIVE}.bad"));
                let _ = fs::rename(&path, self.dir.join(format!("{ARCHIVE}.bad")));
            }
        }
        merge
    }

    /// Read the archive plus every slot; dead slots not yet folded count as dead.
    fn merged(&self) -> Merge {
        let mut merge = self.read_archive();
        let Ok(entries) = fs::read_dir(&self.dir) else { return merge };
        let mut names: Vec<(String, PathBuf)> = entries
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| is_slot(n))
            .collect();
        names.sort();
        for (name, path) in names {
            let Ok(file) = File::open(&path) else { continue };
            let mapped = match Mapped::open(&file) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    self.warn(format!("{name}: {e}"));
                    continue;
                }
            };
            let (data, err) = match mapped.decode() {
                Ok(d) => d,
                Err(e) => {
                    self.warn(format!("{name}: {e}; skipped"));
                    continue;
                }
            };
            if let Some(e) = err {
                self.warn(format!("{name}: {e}; the readable part was used"));
            }
            if self.foreign_host(&data.header) {
                self.warn(format!("{name} comes from host {:?}, not this one: skipped", data.header.host));
                continue;
            }
            // Free lock: its process is gone (compaction did not run); locked: live.
            let source = match try_lock(&file) {
                Ok(true) if merge.folded.contains(&data.header.uid) => continue,
                Ok(true) => Source::Dead,
                _ => Source::Live(data.header.pid, slot_number(&name)),
            };
            merge.add_file(&data, source);
        }
        merge
    }

    /// Fold dead slots into the archive now (gunicorn's `child_exit`, uWSGI's hooks).
    pub fn compact(&self) -> Result<(), String> {
        let _lock = DirLock::acquire(&self.dir, LOCK_WAIT)?;
        self.compact_locked();
        Ok(())
    }

    fn append(slot: &mut Slot, rec: &[u8]) -> Result<usize, String> {
        let need = slot.used + rec.len();
        if need > slot.capacity {
            let mut cap = slot.capacity.max(INITIAL_SIZE as usize);
            while cap < need {
                cap *= 2;
            }
            slot.file_ref.set_len(cap as u64).map_err(|e| format!("cannot grow the slot file: {e}"))?;
            // The old mapping stays alive (cells point into it); both map the same pages.
            slot.map = Arc::new(MmapRaw::map_raw(&slot.file_ref).map_err(|e| e.to_string())?);
            slot.capacity = cap;
        }
        let at = slot.used;
        // SAFETY: [at, at + len) is inside the mapping (capacity checked above) and past `used`,
        // so no reader looks at it until the release store below publishes it.
        unsafe {
            std::ptr::copy_nonoverlapping(rec.as_ptr(), slot.map.as_mut_ptr().add(at), rec.len());
        }
        slot.used = need;
        // SAFETY: USED_AT is 8-aligned inside the page-aligned mapping; the header field is
        // only ever accessed atomically once the slot is live.
        let used = unsafe { &*(slot.map.as_mut_ptr().add(format::USED_AT) as *const AtomicU64) };
        used.store(need as u64, Ordering::Release);
        Ok(at)
    }

    fn alloc_shared(&self, desc: &Desc, labels: &[String], created: f64) -> Result<Cells, String> {
        let mut guard = self.slot.lock().map_err(|_| "store lock poisoned".to_string())?;
        if guard.as_ref().is_some_and(|s| s.pid != std::process::id()) {
            // Forked without the after-fork hook: never write into the parent's slot.
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.claim()?);
        }
        let Some(slot) = guard.as_mut() else { return Err("no slot".into()) };
        let fam_idx = match slot.families.get(&desc.name) {
            Some(i) => *i,
            None => {
                let i = slot.families.len() as u32;
                Self::append(slot, &format::family_record(i, desc))?;
                slot.families.insert(desc.name.clone(), i);
                i
            }
        };
        let n = desc.cell_count();
        let (rec, cells_off) = format::series_record(fam_idx, labels, created, &vec![0.0; n]);
        let at = Self::append(slot, &rec)?;
        let map = Arc::clone(&slot.map);
        // SAFETY: the cells lie inside the mapping, 8-aligned (records and cell offsets are),
        // and `map` (the owner) keeps the mapping alive as long as the cells.
        let ptr = unsafe { map.as_mut_ptr().add(at + cells_off) as *mut AtomicU64 };
        // SAFETY: see above; `len` cells follow `ptr` within the published record.
        Ok(unsafe { Cells::from_raw(ptr, n, map) })
    }
}

impl Store for SharedStore {
    fn alloc(&self, desc: &Desc, labels: &[String], created: f64) -> Cells {
        if matches!(desc.kind, Kind::Info | Kind::Enum) {
            return Cells::heap(desc.cell_count());
        }
        match self.alloc_shared(desc, labels, created) {
            Ok(c) => c,
            Err(e) => {
                self.warn(format!("metric {}: {e}; this series is kept in process memory only", desc.name));
                Cells::heap(desc.cell_count())
            }
        }
    }

    fn collect(&self, families: &[Arc<Family>], everything: bool) -> Vec<FamilySnapshot> {
        let lock = DirLock::acquire(&self.dir, LOCK_WAIT);
        match &lock {
            Ok(_) => self.compact_locked(),
            Err(e) => self.warn(format!("{e}; merged without compacting")),
        }
        let merge = self.merged();
        drop(lock);
        for w in &merge.warnings {
            self.warn(w.clone());
        }
        merge.snapshots(families, everything)
    }

    fn kind(&self) -> &'static str {
        "shared"
    }

    fn after_fork(&self) {
        let slot = match self.slot.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(slot) = slot {
            // Closing our copies of the descriptors leaves the parent's lock in place; the
            // mapping itself lives on in the cells until they are rebound.
            drop(slot);
        }
    }

    fn take_warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default()
    }
}
