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
//! The directory is a trust boundary. Every file is opened without following symlinks
//! (`O_NOFOLLOW`), read only when it is a regular file, created exclusively (`O_EXCL`) with the
//! store's mode (0600 unless configured), and owned by the directory's owner when a root process
//! (gunicorn's master) creates it. Slot space is reserved on disk (`posix_fallocate`) before it
//! is mapped, so a full disk is an error at claim or growth (the series stay in process memory),
//! never a SIGBUS on a write through the map. A claim builds its slot under a temporary name and
//! publishes it with `link`, so it never waits for the directory lock and a failed claim leaves
//! nothing behind.
//!
//! The bindings call into this store only with the GIL held. `os.fork` needs the GIL, so no
//! child is forked while this process holds a lock here: an inherited descriptor of a held
//! `flock` would keep it locked for the child's whole life (no claims, no folding).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use super::format::{self, Header};
use super::merge::{self, Merge, Source};
use super::{Backing, Cells, ExemplarSink, ExemplarSlots, Store};
use crate::cell;
use crate::desc::{Desc, Kind};
use crate::error::{Error, Result};
use crate::family::Family;
use crate::snapshot::FamilySnapshot;
use crate::sync;

const INITIAL_SIZE: u64 = 256 * 1024;
const SLOT_PREFIX: &str = "slot-";
const EXT: &str = ".mrs";
const ARCHIVE: &str = "archive.mrs";
const LOCK: &str = "dir.lock";
/// How long a scrape waits for the directory lock before merging without compacting.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Prefix of a slot being built by a claim (published by `link`, then removed).
const CLAIM_PREFIX: &str = ".claim-";
/// Suffix of temporary files (claims, archives being written).
const TMP_EXT: &str = ".tmp";

/// Permission bits of every file the store creates.
static FILE_MODE: AtomicU32 = AtomicU32::new(DEFAULT_FILE_MODE);
/// Owner read and write only: nobody else can read values, take a lock or plant a file.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// Set the permission bits of files the store creates from now on.
///
/// Only read/write bits for owner and group are accepted (owner read and write required):
/// other users never get access, and nothing in the store is executable.
pub fn set_file_mode(mode: u32) -> Result<()> {
    if mode & !0o660 != 0 || mode & 0o600 != 0o600 {
        // A bad argument, not an I/O fault.
        return Err(Error::Invalid(format!(
            "store file mode {mode:#o} is not allowed: use 0600 (the default), 0640 or 0660"
        )));
    }
    FILE_MODE.store(mode, Ordering::Relaxed);
    Ok(())
}

/// The permission bits of files the store creates.
pub fn file_mode() -> u32 {
    FILE_MODE.load(Ordering::Relaxed)
}

fn nofollow_flags() -> libc::c_int {
    // O_NONBLOCK: opening a FIFO planted under a store name must not block; it has no effect on
    // regular files.
    libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK
}

/// Open an existing store file for reading: never through a symlink, only a regular file.
fn open_read(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new().read(true).custom_flags(nofollow_flags()).open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"));
    }
    Ok(file)
}

/// Create `path`, which must not exist (a planted symlink counts as existing), with the store's
/// mode, owned by `owner` when this process may give files away (root).
fn create_new(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<File> {
    let mode = file_mode();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nofollow_flags())
        .open(path)?;
    // The umask may have taken away bits the configuration asked for (group access).
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        // SAFETY: fchown only reads the descriptor, which `file` keeps open for the call.
        if unsafe { libc::fchown(file.as_raw_fd(), uid, gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Create `path` afresh: a leftover file (a stale temporary, a planted link) is removed first.
/// Removing a link never touches its target.
fn create_replacing(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<File> {
    match create_new(path, owner) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            create_new(path, owner)
        }
        other => other,
    }
}

/// Reserve `len` bytes of disk for `file` at `path` (extending it), so writes through a map
/// never fault.
fn reserve(file: &File, path: &Path, len: u64) -> Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| Error::store(path, "slot file too large"))?;
    // SAFETY: posix_fallocate only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        libc::ENOSPC => Err(Error::store(path, "no space left on the store's disk")),
        e => {
            Err(Error::store(path, format!("cannot reserve space: {}", std::io::Error::from_raw_os_error(e))))
        }
    }
}

/// The slot this process writes to.
struct Slot {
    // Held open for the process's life: its flock is the claim.
    _file: File,
    file_ref: File,
    pid: u32,
    // Its published name, for error messages.
    path: PathBuf,
    map: Arc<MmapRaw>,
    capacity: usize,
    used: usize,
    families: HashMap<String, u32>,
    // This process's live series records by the address their cells were handed out at (what
    // `release` is given), and that address by (family index, label values) for the newest
    // series of those labels (what `exemplar_slots` is given).
    placed: HashMap<usize, Placed>,
    newest: HashMap<(u32, Vec<String>), usize>,
}

/// Where one series of this process lies in its slot.
struct Placed {
    // Its family index and label values (an address alone could be reused by other memory
    // once a dropped family's mapping is gone).
    key: (u32, Vec<String>),
    // Start of its series record.
    record: usize,
    // Start of its exemplar record, once it has one.
    exemplars: Option<usize>,
}

/// Values shared between the processes using one directory.
pub struct SharedStore {
    dir: PathBuf,
    // Who files created here must belong to: the directory's owner, when this process is root
    // and may give files away (gunicorn's master running as root, workers as the owner).
    owner: Option<(u32, u32)>,
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
    fn open(dir: &Path, owner: Option<(u32, u32)>) -> std::io::Result<File> {
        let path = dir.join(LOCK);
        match open_read(&path) {
            Ok(file) if Self::trusted(&file, dir)? => Ok(file),
            // Planted by another user, who could hold it to stall every scrape and claim.
            Ok(_) => create_replacing(&path, owner),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create_new(&path, owner) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open_read(&path),
                other => other,
            },
            // A symlink (ELOOP) or something else planted under the name: replace it with a
            // file of ours. Removing a link never touches its target.
            Err(_) => create_replacing(&path, owner),
        }
    }

    /// Whether `file` belongs to this process's user or to the directory's owner.
    fn trusted(file: &File, dir: &Path) -> std::io::Result<bool> {
        let uid = file.metadata()?.uid();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Ok(uid == euid || uid == fs::metadata(dir)?.uid())
    }

    /// Take the directory lock, waiting at most `wait` (zero: one try).
    fn acquire(dir: &Path, wait: Duration, owner: Option<(u32, u32)>) -> Result<DirLock> {
        let file =
            Self::open(dir, owner).map_err(|e| Error::store(dir.join(LOCK), format!("cannot open: {e}")))?;
        let start = Instant::now();
        loop {
            match try_lock(&file) {
                Ok(true) => return Ok(DirLock { _file: file }),
                Ok(false) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(1)),
                Ok(false) => {
                    return Err(Error::store(
                        dir.join(LOCK),
                        format!(
                            "held by another process for {:.1} s (a long compaction, or a process \
                         of another user holding it): not waiting longer",
                            wait.as_secs_f64()
                        ),
                    ))
                }
                Err(e) => {
                    return Err(Error::store(dir.join(LOCK), format!("cannot lock the store directory: {e}")))
                }
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

/// What makes `dir` unsafe as a store: another user owns it or may write into it.
fn directory_problems(dir: &Path, meta: &fs::Metadata, euid: u32) -> Vec<String> {
    let mut out = Vec::new();
    if euid != 0 && meta.uid() != euid {
        out.push(format!(
            "{} belongs to uid {}, not to this process's user (uid {euid}): its owner can tamper \
             with every value",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode();
    if mode & 0o022 != 0 {
        out.push(format!(
            "{} is writable by other users (mode {:o}): anyone there can block or tamper with the \
             store; make it 0700, owned by the user the workers run as",
            dir.display(),
            mode & 0o7777
        ));
    }
    out
}

/// The number in `slot-NNNN.mrs`.
fn slot_number(name: &str) -> u32 {
    name.trim_start_matches(SLOT_PREFIX).trim_end_matches(EXT).parse().unwrap_or(0)
}

fn is_slot(name: &str) -> bool {
    name.starts_with(SLOT_PREFIX) && name.ends_with(EXT)
}

/// A store file mapped for reading, with its published length.
///
/// Other processes write into a live slot while it is read, so its memory is never seen
/// through a Rust reference: every read is an 8-byte atomic load (`word`), and the decoder
/// works on a copy made of such loads (`bytes`).
struct Mapped {
    map: MmapRaw,
    used: usize,
}

impl Mapped {
    /// Map `file`, found at `path`.
    fn open(file: &File, path: &Path) -> Result<Option<Mapped>> {
        let len = file.metadata().map_err(|e| Error::store(path, e.to_string()))?.len() as usize;
        if len < format::HEADER {
            // Being created by a claim right now, or empty: nothing to read yet.
            return Ok(None);
        }
        let map = MmapOptions::new()
            .map_raw_read_only(file)
            .map_err(|e| Error::store(path, format!("cannot map: {e}")))?;
        let mut mapped = Mapped { map, used: 0 };
        let used = mapped.word(format::USED_AT);
        // Acquire (after the relaxed load: the mapping is read-only): the records below `used`
        // were written before their writer's release store of it.
        std::sync::atomic::fence(Ordering::Acquire);
        mapped.used = usize::try_from(used).unwrap_or(usize::MAX).min(mapped.map.len());
        Ok(Some(mapped))
    }

    /// The 8-byte word at offset `at`, as stored, by an atomic load; 0 where there is none
    /// (past the mapping, or not 8-aligned: no valid file puts a word there).
    fn word(&self, at: usize) -> u64 {
        if at % 8 != 0 || at.checked_add(8).map_or(true, |end| end > self.map.len()) {
            return 0;
        }
        // SAFETY: the mapping starts page-aligned, so `at` (a multiple of 8) makes the pointer
        // aligned for AtomicU64, and [at, at + 8) lies inside the mapping, which `self.map`
        // keeps mapped while `self` lives; the file is never truncated (dead slots are deleted,
        // the archive is replaced by rename), so the pages stay backed. Every process writes a
        // published word (the header's `used`, cells, exemplar entries, a record's first word)
        // only with 8-byte atomic stores, and `word` loads only below `used` or the header, so
        // this load never races with a plain or a differently sized access. The mapping is
        // read-only: the load is Relaxed and 8 bytes wide, which std's atomics documentation
        // ("Atomic accesses to read-only memory") guarantees never to write.
        unsafe { (*(self.map.as_ptr().add(at) as *const AtomicU64)).load(Ordering::Relaxed) }
    }

    /// A copy of the header and the published records, word by word.
    fn bytes(&self) -> Vec<u8> {
        let end = self.used.max(format::HEADER).min(self.map.len()) / 8 * 8;
        let mut out = Vec::with_capacity(end);
        for at in (0..end).step_by(8) {
            out.extend_from_slice(&self.word(at).to_ne_bytes());
        }
        out
    }

    fn decode(&self) -> Result<(merge::FileData, Option<String>)> {
        merge::decode(&self.bytes(), self.used, |at| self.word(at))
    }
}

impl SharedStore {
    /// Use `dir`, which must exist and be writable.
    pub fn open(dir: &Path) -> Result<SharedStore> {
        let meta = fs::metadata(dir).map_err(|e| Error::store(dir, e.to_string()))?;
        if !meta.is_dir() {
            return Err(Error::store(dir, "not a directory"));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        let owner = (euid == 0 && meta.uid() != 0).then_some((meta.uid(), meta.gid()));
        let probe = dir.join(format!(".probe-{}-{:016x}{TMP_EXT}", std::process::id(), new_uid()));
        create_new(&probe, owner).map_err(|e| Error::store(dir, format!("not writable: {e}")))?;
        let _ = fs::remove_file(&probe);
        let store = SharedStore {
            dir: dir.to_path_buf(),
            owner,
            slot: Mutex::new(None),
            warnings: Mutex::new(Vec::new()),
            boot: boot_id(),
            host: host_name(),
        };
        for problem in directory_problems(dir, &meta, euid) {
            store.warn(problem);
        }
        Ok(store)
    }

    fn warn(&self, msg: String) {
        let mut w = sync::lock(&self.warnings);
        if w.len() < 1000 {
            w.push(msg);
        }
    }

    /// Whether a file with `h` was written on another machine (its locks mean nothing here).
    fn foreign_host(&self, h: &Header) -> bool {
        h.boot != self.boot && h.host != self.host
    }

    fn claim(&self) -> Result<Slot> {
        // Fold what dead processes left, if nobody else is at it: a claim runs inside a request
        // and never waits for the directory lock (scrapes and `child_exit` compact too).
        if let Ok(lock) = DirLock::acquire(&self.dir, Duration::ZERO, self.owner) {
            self.compact_locked();
            drop(lock);
        }
        let pid = std::process::id();
        let tmp = self.dir.join(format!("{CLAIM_PREFIX}{pid}-{:016x}{TMP_EXT}", new_uid()));
        let file =
            create_new(&tmp, self.owner).map_err(|e| Error::store(&tmp, format!("cannot create: {e}")))?;
        let claimed = self.publish_slot(&file, &tmp, pid);
        // Published under its slot name by a hard link, or failed: the temporary name goes.
        let _ = fs::remove_file(&tmp);
        let (map, path) = claimed?;
        let file_ref =
            file.try_clone().map_err(|e| Error::store(&self.dir, format!("cannot reopen a slot: {e}")))?;
        Ok(Slot {
            _file: file,
            file_ref,
            pid,
            path,
            map: Arc::new(map),
            capacity: INITIAL_SIZE as usize,
            used: format::HEADER,
            families: HashMap::new(),
            placed: HashMap::new(),
            newest: HashMap::new(),
        })
    }

    /// Lock, reserve, stamp and map the new slot file `file` (created at `tmp`), then give it
    /// the first free slot name.
    fn publish_slot(&self, file: &File, tmp: &Path, pid: u32) -> Result<(MmapRaw, PathBuf)> {
        if !try_lock(file).map_err(|e| Error::store(tmp, format!("cannot lock: {e}")))? {
            return Err(Error::store(tmp, "locked by another process"));
        }
        reserve(file, tmp, INITIAL_SIZE)?;
        let header = Header {
            pid,
            used: format::HEADER as u64,
            boot: self.boot,
            uid: new_uid(),
            host: self.host.clone(),
        };
        let mut f = file;
        f.write_all(&format::write_header(&header))
            .map_err(|e| Error::store(tmp, format!("cannot write a slot header: {e}")))?;
        let map = MmapRaw::map_raw(file).map_err(|e| Error::store(tmp, format!("cannot map: {e}")))?;
        for i in 0..1_000_000u32 {
            let path = self.dir.join(format!("{SLOT_PREFIX}{i:04}{EXT}"));
            // link(2) never replaces an existing name (nor follows a planted link there).
            match fs::hard_link(tmp, &path) {
                Ok(()) => return Ok((map, path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::store(&path, format!("cannot publish a slot: {e}"))),
            }
        }
        Err(Error::store(&self.dir, "no free slot file name"))
    }

    /// Fold every dead slot into the archive and delete it. Needs the directory lock.
    fn compact_locked(&self) {
        // (path, its lock, its data, whether it decoded completely)
        let mut dead: Vec<(PathBuf, File, Option<merge::FileData>, bool)> = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_EXT) {
                self.remove_stale_temporary(&name, &entry.path());
                continue;
            }
            if !is_slot(&name) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = open_read(&path) else { continue };
            match try_lock(&file) {
                Ok(true) => {}
                _ => continue,
            }
            match Mapped::open(&file, &path) {
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
                        self.warn(format!("{}; moved aside as {name}.bad", e.at(&path)));
                        let _ = fs::rename(&path, self.dir.join(format!("{name}.bad")));
                    }
                },
                Err(e) => self.warn(e.at(&path).to_string()),
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
        let tmp = self.dir.join(format!("{ARCHIVE}.{}{TMP_EXT}", std::process::id()));
        let written = create_replacing(&tmp, self.owner)
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

    /// Remove a temporary file left by a process that died in a claim or a compaction. Needs
    /// the directory lock (compactions write theirs under it, so none is in progress).
    fn remove_stale_temporary(&self, name: &str, path: &Path) {
        if name.starts_with(CLAIM_PREFIX) {
            // A claim in progress holds its file's lock; a free lock means its process is gone.
            match open_read(path) {
                Ok(file) if matches!(try_lock(&file), Ok(true)) => {}
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                // Not a regular file (a planted link or FIFO): not ours to keep.
                Err(_) => {}
            }
        }
        let _ = fs::remove_file(path);
    }

    fn slot_uids(&self) -> std::collections::HashSet<u64> {
        let mut out = std::collections::HashSet::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if is_slot(&e.file_name().to_string_lossy()) {
                    if let Ok(mut f) = open_read(&e.path()) {
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
        let file = match open_read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return merge,
            Err(e) => {
                self.warn(format!("{ARCHIVE}: {e}; left out"));
                return merge;
            }
        };
        match Mapped::open(&file, &path).and_then(|m| m.map(|m| m.decode()).transpose()) {
            Ok(Some((data, err))) => {
                if let Some(e) = err {
                    self.warn(format!("{ARCHIVE}: {e}; the readable part was kept"));
                }
                merge.folded.extend(data.folded.iter().copied());
                merge.add_file(&data, Source::Dead);
            }
            Ok(None) => {}
            Err(e) => {
                self.warn(format!("{}; moved aside as {ARCHIVE}.bad", e.at(&path)));
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
            let file = match open_read(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.warn(format!("{name}: {e}; skipped"));
                    continue;
                }
            };
            let mapped = match Mapped::open(&file, &path) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    self.warn(e.at(&path).to_string());
                    continue;
                }
            };
            let (data, err) = match mapped.decode() {
                Ok(d) => d,
                Err(e) => {
                    self.warn(format!("{}; skipped", e.at(&path)));
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
    pub fn compact(&self) -> Result<()> {
        let _lock = DirLock::acquire(&self.dir, LOCK_WAIT, self.owner)?;
        self.compact_locked();
        Ok(())
    }

    fn append(slot: &mut Slot, rec: &[u8]) -> Result<usize> {
        let need = slot.used + rec.len();
        if need > slot.capacity {
            let mut cap = slot.capacity.max(INITIAL_SIZE as usize);
            while cap < need {
                cap *= 2;
            }
            reserve(&slot.file_ref, &slot.path, cap as u64).map_err(|e| {
                Error::store(&slot.path, format!("cannot grow the slot file: {}", e.message()))
            })?;
            // The old mapping stays alive (cells point into it); both map the same pages.
            let map = MmapRaw::map_raw(&slot.file_ref)
                .map_err(|e| Error::store(&slot.path, format!("cannot map the grown slot file: {e}")))?;
            slot.map = Arc::new(map);
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

    fn alloc_shared(&self, desc: &Desc, labels: &[String], created: f64) -> Result<Cells> {
        let mut guard = sync::lock(&self.slot);
        if guard.as_ref().is_some_and(|s| s.pid != std::process::id()) {
            // Forked without the after-fork hook: never write into the parent's slot.
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.claim()?);
        }
        let Some(slot) = guard.as_mut() else { return Err(Error::store(&self.dir, "no slot")) };
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
        let fill = if cell::starts_unwritten(desc) { cell::UNWRITTEN } else { 0 };
        let (rec, cells_off) = format::series_record(fam_idx, labels, created, &vec![fill; n]);
        let at = Self::append(slot, &rec)?;
        let map = Arc::clone(&slot.map);
        // SAFETY: `append` placed the record at `at` inside the mapping, so its cells at
        // `at + cells_off` are too (`add` stays within one allocated object).
        let ptr = unsafe { map.as_mut_ptr().add(at + cells_off) } as *mut AtomicU64;
        let key = (fam_idx, labels.to_vec());
        slot.newest.insert(key.clone(), ptr as usize);
        slot.placed.insert(ptr as usize, Placed { key, record: at, exemplars: None });
        // SAFETY: `n` cells follow `ptr` within the published record; records and cell offsets
        // are multiples of 8 in a page-aligned mapping, so the cells are aligned; `map` (the
        // owner) keeps the mapping alive, and the file is never truncated while mapped; every
        // process accesses published cells only atomically (the decoder's loads, `cell`'s
        // operations).
        Ok(unsafe { Cells::from_raw(ptr, n, map) })
    }

    /// Replace the first word of this process's record at `at` by its released form.
    fn release_record(slot: &Slot, at: usize) {
        if at % 8 != 0 || at + 8 > slot.used {
            return;
        }
        // SAFETY: `at` is the 8-aligned start of a record this process published inside its
        // mapping (checked against `used` above), so the pointer is aligned and in bounds; once
        // published, a record's first word is only accessed atomically (readers load it with
        // 8-byte atomic loads).
        let word = unsafe { &*(slot.map.as_mut_ptr().add(at) as *const AtomicU64) };
        let current = word.load(Ordering::Relaxed);
        word.store(format::released_word(current), Ordering::Release);
    }
}

impl Backing for SharedStore {
    fn alloc(&self, desc: &Desc, labels: &[String], created: f64) -> Cells {
        if matches!(desc.kind, Kind::Info | Kind::Enum) {
            return Cells::heap(desc.cell_count());
        }
        match self.alloc_shared(desc, labels, created) {
            Ok(c) => c,
            Err(e) => {
                self.warn(format!("metric {}: {e}; this series is kept in process memory only", desc.name));
                Cells::for_series(desc)
            }
        }
    }

    fn exemplar_slots(&self, desc: &Desc, labels: &[String], count: usize) -> Option<Box<dyn ExemplarSink>> {
        let mut guard = sync::lock(&self.slot);
        let slot = guard.as_mut().filter(|s| s.pid == std::process::id())?;
        // The series' family is in this slot when its cells are (else they fell back to memory).
        let family = *slot.families.get(&desc.name)?;
        let (rec, entries_at) = format::exemplars_record(family, labels, count);
        let at = match Self::append(slot, &rec) {
            Ok(at) => at,
            Err(e) => {
                drop(guard);
                self.warn(format!("metric {}: {e}; its exemplars stay in process memory", desc.name));
                return None;
            }
        };
        let newest = slot.newest.get(&(family, labels.to_vec())).copied();
        if let Some(placed) = newest.and_then(|cells| slot.placed.get_mut(&cells)) {
            placed.exemplars = Some(at);
        }
        let map = Arc::clone(&slot.map);
        // SAFETY: the entries lie inside the mapping, 8-aligned (records are), were appended by
        // this process alone (one `ExemplarSlots` per record), `map` keeps the mapping alive as
        // long as the slots, and other processes read them only with `Mapped::word`'s 8-byte
        // atomic loads.
        Some(Box::new(unsafe { ExemplarSlots::from_raw(map.as_mut_ptr().add(at + entries_at), count, map) }))
    }

    /// Tombstone this process's records of the series (its values and exemplars), so no merge
    /// sees them again; a later `alloc` of the same labels appends a fresh record. Cells other
    /// than the ones this store handed out for it (the heap, another store's, a parent's) are
    /// left alone. Writes through `cells` afterwards land in the released record, which nobody
    /// reads.
    fn release(&self, desc: &Desc, labels: &[String], cells: &Cells) {
        let mut guard = sync::lock(&self.slot);
        let Some(slot) = guard.as_mut().filter(|s| s.pid == std::process::id()) else { return };
        let address = cells.get().as_ptr() as usize;
        // Found by its cells, so releasing an old series after its labels were used again
        // releases the old record, not the new one.
        let Some(family) = slot.families.get(&desc.name).copied() else { return };
        let key = (family, labels.to_vec());
        if slot.placed.get(&address).map_or(true, |p| p.key != key) {
            return;
        }
        let Some(placed) = slot.placed.remove(&address) else { return };
        if slot.newest.get(&key) == Some(&address) {
            slot.newest.remove(&key);
        }
        Self::release_record(slot, placed.record);
        if let Some(at) = placed.exemplars {
            Self::release_record(slot, at);
        }
    }
}

impl Store for SharedStore {
    fn collect(&self, families: &[Arc<Family>], everything: bool) -> Vec<FamilySnapshot> {
        let lock = DirLock::acquire(&self.dir, LOCK_WAIT, self.owner);
        match &lock {
            Ok(_) => self.compact_locked(),
            Err(e) => self.warn(format!("{e}; merged without compacting")),
        }
        let mut merge = self.merged();
        drop(lock);
        // Exemplars live in each process's memory: this process's own are offered here.
        for fam in families.iter().filter(|f| matches!(f.desc.kind, Kind::Counter | Kind::Histogram)) {
            for series in fam.all_series() {
                let exemplars = series.exemplars();
                if !exemplars.is_empty() {
                    merge.add_exemplars(&fam.desc.name, &series.labels, &exemplars);
                }
            }
        }
        for w in &merge.warnings {
            self.warn(w.clone());
        }
        merge.snapshots(families, everything)
    }

    fn kind(&self) -> &'static str {
        "shared"
    }

    fn after_fork(&self) {
        let slot = sync::lock(&self.slot).take();
        if let Some(slot) = slot {
            // Closing our copies of the descriptors leaves the parent's lock in place; the
            // mapping itself lives on in the cells until they are rebound.
            drop(slot);
        }
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *sync::lock(&self.warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell;
    use crate::exemplar::Exemplar;
    use proptest::prelude::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "metrics-store-{name}-{}-{:x}",
                std::process::id(),
                new_uid()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn counter() -> Arc<Family> {
        Family::new(Desc::new(Kind::Counter, "c", "C.", vec!["l".into()], "", "", "").unwrap())
    }

    fn histogram() -> Arc<Family> {
        let desc = Desc::new(Kind::Histogram, "h", "H.", vec![], "", "", "").unwrap();
        Family::new(desc.with_buckets(vec![0.1, 1.0]).unwrap())
    }

    fn value_of(snaps: &[FamilySnapshot], name: &str, labels: &[&str]) -> Option<Vec<f64>> {
        let fam = snaps.iter().find(|f| f.desc.name == name)?;
        let series =
            fam.series.iter().find(|s| s.labels.iter().map(String::as_str).eq(labels.iter().copied()))?;
        Some(series.values.clone())
    }

    #[test]
    fn written_values_round_trip_and_survive_the_writer() {
        let dir = TempDir::new("round-trip");
        let (c, h) = (counter(), histogram());
        {
            let store = SharedStore::open(&dir.0).unwrap();
            let cells = store.alloc(&c.desc, &["a".into()], 1.0);
            cell::add(&cells.get()[0], 2.5);
            let hist = store.alloc(&h.desc, &[], 1.0);
            cell::add(&hist.get()[1], 3.0);
            cell::add(&hist.get()[3], 4.0);
            let snaps = store.collect(&[Arc::clone(&c), Arc::clone(&h)], false);
            assert_eq!(value_of(&snaps, "c", &["a"]), Some(vec![2.5]));
            assert_eq!(value_of(&snaps, "h", &[]), Some(vec![0.0, 3.0, 0.0, 4.0]));
            assert!(store.take_warnings().is_empty());
        }
        // The writer is gone (its lock released): a new process folds its slot into the archive.
        let reader = SharedStore::open(&dir.0).unwrap();
        let snaps = reader.collect(&[Arc::clone(&c), Arc::clone(&h)], false);
        assert_eq!(value_of(&snaps, "c", &["a"]), Some(vec![2.5]));
        assert_eq!(value_of(&snaps, "h", &[]), Some(vec![0.0, 3.0, 0.0, 4.0]));
        assert!(dir.0.join(ARCHIVE).exists());
        let slots: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .filter(|e| is_slot(&e.file_name().to_string_lossy()))
            .collect();
        assert!(slots.is_empty(), "the dead slot was folded and deleted");
        // Folding again never counts twice.
        let again = SharedStore::open(&dir.0).unwrap().collect(&[Arc::clone(&c)], false);
        assert_eq!(value_of(&again, "c", &["a"]), Some(vec![2.5]));
    }

    #[test]
    fn native_buckets_merge_across_processes_and_survive_compaction() {
        use crate::native::{NativeState, Sparse};
        use std::collections::BTreeMap;
        let dir = TempDir::new("native");
        let desc = Desc::new(Kind::Histogram, "n", "N.", vec![], "", "", "")
            .unwrap()
            .with_buckets(vec![1.0])
            .unwrap()
            .with_native(1.1, 8, 0.0)
            .unwrap();
        let fam = Family::new(desc.clone());
        let params = desc.native.unwrap();
        let classic = desc.buckets.len() + 1;
        let observe = |cells: &Cells, values: &[f64]| {
            let state = NativeState::new(params);
            for v in values {
                state.observe(&cells.get()[classic..], *v);
            }
        };
        let native_of = |store: &SharedStore| {
            let values = value_of(&store.collect(&[Arc::clone(&fam)], false), "n", &[]).unwrap();
            Sparse::from_cells(&values[classic..], &params).unwrap()
        };
        {
            // Schema 3: indices 0, 2 and 3 fit a window of 8.
            let dead = SharedStore::open(&dir.0).unwrap();
            observe(&dead.alloc(&desc, &[], 1.0), &[1.0, 1.1, 1.2]);
        }
        let live = SharedStore::open(&dir.0).unwrap();
        // Indices 0 and 13 at schema 3 do not fit 8: this process goes down to schema 2 (0, 7).
        observe(&live.alloc(&desc, &[], 1.0), &[1.0, 3.0]);
        // The dead process's buckets (folded into the archive meanwhile) come down to schema 2
        // too, (0, 2, 3) becoming (0, 1, 2), and add up per index with the live one's.
        let want = BTreeMap::from([(0, 2.0), (1, 1.0), (2, 1.0), (7, 1.0)]);
        let merged = native_of(&live);
        assert_eq!((merged.schema, &merged.positive), (2, &want));
        assert!(dir.0.join(ARCHIVE).exists());
        drop(live);
        // Both dead: everything comes from the archive, compaction having kept the buckets.
        let reader = SharedStore::open(&dir.0).unwrap();
        let merged = native_of(&reader);
        assert_eq!((merged.schema, &merged.positive, merged.count()), (2, &want, 5.0));
        assert!(reader.take_warnings().is_empty());
    }

    #[test]
    fn exemplar_entries_round_trip() {
        let dir = TempDir::new("exemplars");
        let c = counter();
        let store = SharedStore::open(&dir.0).unwrap();
        let labels = vec!["x".to_string()];
        let _cells = store.alloc(&c.desc, &labels, 1.0);
        let slots = store.exemplar_slots(&c.desc, &labels, 1).unwrap();
        let ex = Exemplar::new(vec![("trace_id".into(), "abc".into())], 1.0, 42.5, true).unwrap();
        slots.write(0, &ex);
        slots.write(0, &Exemplar { timestamp: 43.5, ..ex.clone() });
        // Read as another process would: through the file.
        let merged = store.merged();
        let snaps = merged.snapshots(&[Arc::clone(&c)], false);
        let series = &snaps[0].series[0];
        assert_eq!(series.exemplars, vec![Some(Exemplar { timestamp: 43.5, ..ex })]);
    }

    #[test]
    fn released_series_leave_the_merge_and_come_back_fresh() {
        let dir = TempDir::new("release");
        let c = counter();
        let store = SharedStore::open(&dir.0).unwrap();
        let labels = vec!["a".to_string()];
        let old = store.alloc(&c.desc, &labels, 1.0);
        cell::add(&old.get()[0], 3.0);
        let kept = store.alloc(&c.desc, &["b".into()], 1.0);
        cell::add(&kept.get()[0], 1.0);
        let ex = Exemplar::new(vec![("trace_id".into(), "old".into())], 3.0, 1.0, true).unwrap();
        store.exemplar_slots(&c.desc, &labels, 1).unwrap().write(0, &ex);
        assert_eq!(value_of(&store.collect(&[Arc::clone(&c)], false), "c", &["a"]), Some(vec![3.0]));
        store.release(&c.desc, &labels, &old);
        let snaps = store.collect(&[Arc::clone(&c)], false);
        assert_eq!(value_of(&snaps, "c", &["a"]), None, "released values leave the merge");
        assert_eq!(value_of(&snaps, "c", &["b"]), Some(vec![1.0]), "other series stay");
        // Writes through the old cells are harmless: they land in the released record.
        cell::add(&old.get()[0], 100.0);
        assert_eq!(value_of(&store.collect(&[Arc::clone(&c)], false), "c", &["a"]), None);
        // Releasing twice, or cells this store did not hand out, changes nothing.
        store.release(&c.desc, &labels, &old);
        store.release(&c.desc, &["b".into()], &Cells::heap(1));
        assert_eq!(value_of(&store.collect(&[Arc::clone(&c)], false), "c", &["b"]), Some(vec![1.0]));
        // The same labels again: a fresh record from 0, merged, without the old exemplar.
        let new = store.alloc(&c.desc, &labels, 2.0);
        assert_eq!(cell::get(&new.get()[0]), 0.0);
        cell::add(&new.get()[0], 2.0);
        let merged = store.merged().snapshots(&[Arc::clone(&c)], false);
        let series = merged[0].series.iter().find(|s| s.labels == labels).unwrap();
        assert_eq!(series.values, vec![2.0]);
        assert_eq!(series.created, 2.0);
        assert!(series.exemplars.iter().all(Option::is_none), "{:?}", series.exemplars);
        assert!(store.take_warnings().is_empty());
        // Old cells released only after their labels were used again: the old record goes, the
        // new one stays.
        let other = store.alloc(&c.desc, &["late".into()], 3.0);
        cell::add(&other.get()[0], 7.0);
        let again = store.alloc(&c.desc, &["late".into()], 4.0);
        cell::add(&again.get()[0], 1.0);
        store.release(&c.desc, &["late".into()], &other);
        assert_eq!(value_of(&store.collect(&[Arc::clone(&c)], false), "c", &["late"]), Some(vec![1.0]));
        drop((other, again));
        // Once the process is gone, its slot folds without resurrecting the released record.
        drop((store, old, kept, new));
        for _ in 0..2 {
            let snaps = SharedStore::open(&dir.0).unwrap().collect(&[Arc::clone(&c)], false);
            assert_eq!(value_of(&snaps, "c", &["a"]), Some(vec![2.0]));
            assert_eq!(value_of(&snaps, "c", &["b"]), Some(vec![1.0]));
        }
    }

    #[test]
    fn a_release_takes_only_the_releasing_process_values() {
        let dir = TempDir::new("release-two");
        let (c, g) = (counter(), gauge(crate::desc::GaugeMode::LiveAll, "ga"));
        let one = SharedStore::open(&dir.0).unwrap();
        let two = SharedStore::open(&dir.0).unwrap();
        let labels = vec!["x".to_string()];
        let (c1, c2) = (one.alloc(&c.desc, &labels, 1.0), two.alloc(&c.desc, &labels, 1.0));
        cell::add(&c1.get()[0], 1.0);
        cell::add(&c2.get()[0], 10.0);
        let (g1, g2) = (one.alloc(&g.desc, &[], 1.0), two.alloc(&g.desc, &[], 1.0));
        cell::set(&g1.get()[0], 4.0);
        cell::set(&g2.get()[0], 5.0);
        let fams = [Arc::clone(&c), Arc::clone(&g)];
        assert_eq!(value_of(&one.collect(&fams, false), "c", &["x"]), Some(vec![11.0]));
        one.release(&c.desc, &labels, &c1);
        one.release(&g.desc, &[], &g1);
        let snaps = one.collect(&fams, false);
        assert_eq!(value_of(&snaps, "c", &["x"]), Some(vec![10.0]));
        let gauges = &snaps.iter().find(|f| f.desc.name == "ga").unwrap().series;
        assert_eq!(gauges.len(), 1, "only the other process's gauge is left");
        assert_eq!(gauges[0].values, vec![5.0]);
        // The releasing process dies: nothing of its released series is folded.
        drop((one, c1, g1));
        let snaps = two.collect(&fams, false);
        assert_eq!(value_of(&snaps, "c", &["x"]), Some(vec![10.0]));
        drop((c2, g2));
    }

    fn gauge(mode: crate::desc::GaugeMode, name: &str) -> Arc<Family> {
        let mut desc = Desc::new(Kind::Gauge, name, "G.", vec![], "", "", "").unwrap();
        desc.gauge_mode = mode;
        Family::new(desc)
    }

    #[test]
    fn gauges_never_written_contribute_nothing() {
        use crate::desc::GaugeMode::*;
        for mode in
            [All, LiveAll, LiveSum, Sum, Max, Min, MostRecent, LiveMax, LiveMin, LiveMostRecent, LiveWorker]
        {
            let dir = TempDir::new("lazy");
            let g = gauge(mode, "lazy");
            let idle = SharedStore::open(&dir.0).unwrap();
            let busy = SharedStore::open(&dir.0).unwrap();
            let idle_cells = idle.alloc(&g.desc, &[], 1.0);
            // In-process reads of a gauge never written are 0, as in prometheus_client.
            assert!(idle_cells.get().iter().all(|c| cell::get(c) == 0.0));
            let snaps = idle.collect(&[Arc::clone(&g)], false);
            assert!(snaps[0].series.is_empty(), "{mode:?}: a gauge nobody wrote is absent");
            let busy_cells = busy.alloc(&g.desc, &[], 1.0);
            cell::set(&busy_cells.get()[0], 5.0);
            if let Some(stamp) = busy_cells.get().get(1) {
                cell::set(stamp, 10.0);
            }
            let snaps = idle.collect(&[Arc::clone(&g)], false);
            assert_eq!(snaps[0].series.len(), 1, "{mode:?}: only the writer's series");
            assert_eq!(snaps[0].series[0].values[0], 5.0, "{mode:?}");
            // `add` starts a never-written gauge from 0.
            cell::add(&idle_cells.get()[0], -2.0);
            let snaps = idle.collect(&[Arc::clone(&g)], false);
            let want = match mode {
                Sum | LiveSum => vec![3.0],
                Min | LiveMin => vec![-2.0],
                Max | LiveMax | MostRecent | LiveMostRecent => vec![5.0],
                // Both "processes" have this test's pid: one series, the later slot's value.
                All | LiveAll => vec![5.0],
                LiveWorker => vec![-2.0, 5.0],
            };
            let mut seen: Vec<f64> = snaps[0].series.iter().map(|s| s.values[0]).collect();
            seen.sort_by(f64::total_cmp);
            assert_eq!(seen, want, "{mode:?}");
            // The idle process dies without writing: folding keeps no zero of it either.
            drop((idle, idle_cells));
            let fresh = SharedStore::open(&dir.0).unwrap();
            let spare = fresh.alloc(&g.desc, &[], 1.0);
            drop(busy);
            drop(busy_cells);
            let snaps = fresh.collect(&[Arc::clone(&g)], false);
            let values: Vec<f64> = snaps[0].series.iter().map(|s| s.values[0]).collect();
            assert!(!values.contains(&0.0), "{mode:?}: {values:?}");
            drop(spare);
        }
    }

    /// A tiny deterministic generator (xorshift), so failures reproduce.
    fn bytes(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn any_bytes_as_slot_or_archive_never_panic() {
        let dir = TempDir::new("garbage");
        let c = counter();
        let store = SharedStore::open(&dir.0).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        // A valid header with garbage after it reaches the record decoder; pure garbage the header check.
        let header = format::write_header(&Header { pid: 1, used: 4096, boot: 1, uid: 7, host: "h".into() });
        for round in 0..300 {
            let mut data = if round % 2 == 0 { header.to_vec() } else { Vec::new() };
            let len = (round * 37) % 5000;
            data.extend(bytes(&mut seed, len));
            fs::write(dir.0.join(if round % 3 == 0 { ARCHIVE } else { "slot-0042.mrs" }), &data).unwrap();
            let _ = store.collect(&[Arc::clone(&c)], false);
            let _ = store.take_warnings();
        }
    }

    /// A gauge summed over live processes.
    fn live_gauge() -> Arc<Family> {
        let mut desc = Desc::new(Kind::Gauge, "g", "G.", vec![], "", "", "").unwrap();
        desc.gauge_mode = crate::desc::GaugeMode::LiveSum;
        Family::new(desc)
    }

    /// One process's life: counter increments (series 0..3, in quarters, so sums are exact),
    /// histogram observations (bucket 0..3), the counter series it removes at the end (released
    /// from the store), whether it writes the live and the `min` gauge (created either way), and
    /// whether it is still alive at the end.
    type Life = (Vec<(usize, u32)>, Vec<usize>, [bool; 3], bool, bool);

    fn life() -> impl Strategy<Value = Life> {
        (
            proptest::collection::vec((0usize..3, 0u32..400), 0..12),
            proptest::collection::vec(0usize..3, 0..12),
            any::<[bool; 3]>(),
            any::<bool>(),
            any::<bool>(),
        )
    }

    /// What a fresh reader (a scrape from another process) sees: counter values by series,
    /// histogram cells, the live gauge, the `min` gauge.
    fn scrape(dir: &Path, fams: &[Arc<Family>]) -> ([f64; 3], Vec<f64>, Option<f64>, Option<f64>) {
        let snaps = SharedStore::open(dir).unwrap().collect(fams, false);
        let mut counters = [0.0; 3];
        for (i, c) in counters.iter_mut().enumerate() {
            *c = value_of(&snaps, "c", &[&i.to_string()]).map_or(0.0, |v| v[0]);
        }
        let hist = value_of(&snaps, "h", &[]).unwrap_or_else(|| vec![0.0; 4]);
        (counters, hist, value_of(&snaps, "g", &[]).map(|v| v[0]), value_of(&snaps, "m", &[]).map(|v| v[0]))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Processes write, remove series, some die (their slots folded into the archive by
        /// whoever scrapes next), and every scrape in between and at the end shows exactly what
        /// was written: counters and histograms from the living and the dead, folded once and
        /// never twice, without what was removed; the live gauge from the living only; gauges
        /// only from the processes that wrote them.
        #[test]
        fn writes_fold_and_merge_exactly(lives in proptest::collection::vec(life(), 1..6)) {
            let dir = TempDir::new("prop");
            let fams = [counter(), histogram(), live_gauge(), gauge(crate::desc::GaugeMode::Min, "m")];
            let mut alive = Vec::new();
            let mut counters = [0.0; 3];
            let mut hist = vec![0.0; 4];
            let mut live = None;
            let mut min: Option<f64> = None;
            for (life_index, (incs, observations, removes, writes_live, stays)) in lives.into_iter().enumerate() {
                let store = SharedStore::open(&dir.0).unwrap();
                let mut cells: HashMap<usize, Cells> = HashMap::new();
                let mut mine = [0.0; 3];
                for (series, quarters) in incs {
                    let c = cells.entry(series).or_insert_with(|| store.alloc(&fams[0].desc, &[series.to_string()], 1.0));
                    cell::add(&c.get()[0], f64::from(quarters) / 4.0);
                    mine[series] += f64::from(quarters) / 4.0;
                }
                for (series, c) in &cells {
                    if removes[*series] {
                        store.release(&fams[0].desc, &[series.to_string()], c);
                        // A write racing the removal lands nowhere anyone reads.
                        cell::add(&c.get()[0], 1000.0);
                    } else {
                        counters[*series] += mine[*series];
                    }
                }
                let h = store.alloc(&fams[1].desc, &[], 1.0);
                for bucket in &observations {
                    cell::add(&h.get()[*bucket], 1.0);
                    hist[*bucket] += 1.0;
                }
                let level = observations.len() as f64;
                let g = store.alloc(&fams[2].desc, &[], 1.0);
                let m = store.alloc(&fams[3].desc, &[], 1.0);
                if writes_live {
                    cell::set(&g.get()[0], level);
                    cell::set(&m.get()[0], level - life_index as f64);
                    min = Some(min.map_or(level - life_index as f64, |v| v.min(level - life_index as f64)));
                }
                prop_assert!(store.take_warnings().is_empty());
                // A process ends when its store and its mappings go (a mapping holds the file,
                // and with it the slot's lock).
                let process = (store, cells, h, g, m);
                if stays {
                    if writes_live {
                        live = Some(live.unwrap_or(0.0) + level);
                    }
                    alive.push(process);
                } else {
                    drop(process);
                }
                let (seen, seen_hist, gauge, seen_min) = scrape(&dir.0, &fams);
                prop_assert_eq!(seen, counters);
                prop_assert_eq!(&seen_hist, &hist);
                prop_assert_eq!(gauge, live);
                prop_assert_eq!(seen_min, min);
            }
            drop(alive);
            // Everyone is gone: the archive alone holds the totals, however often it is folded.
            for _ in 0..2 {
                let (seen, seen_hist, gauge, seen_min) = scrape(&dir.0, &fams);
                prop_assert_eq!(seen, counters);
                prop_assert_eq!(&seen_hist, &hist);
                prop_assert_eq!(gauge, None);
                prop_assert_eq!(seen_min, min);
            }
        }

        /// Series records with any label values and any cell bits decode exactly (bit for bit)
        /// from a file read as a live slot is, released ones are left out, and a cut anywhere
        /// yields an exact prefix of them and never a panic.
        #[test]
        fn files_decode_exactly(
            series in proptest::collection::vec(
                (proptest::collection::vec("[a-zé😀]{0,6}", 1), proptest::collection::vec(any::<u64>(), 1..5), any::<bool>()),
                0..12,
            ),
            cut in any::<proptest::sample::Index>(),
        ) {
            let dir = TempDir::new("exact");
            let desc = Desc::new(Kind::Counter, "c", "C.", vec!["l".into()], "", "", "").unwrap();
            let mut file = format::write_header(&Header { pid: 1, used: 0, boot: 1, uid: 7, host: "h".into() }).to_vec();
            file.extend(format::family_record(0, &desc));
            let mut expected = Vec::new();
            for (labels, bits, released) in &series {
                let (mut rec, _) = format::series_record(0, labels, 1.0, &bits[..1]);
                if *released {
                    let word = u64::from_ne_bytes(rec[..8].try_into().unwrap());
                    rec[..8].copy_from_slice(&format::released_word(word).to_ne_bytes());
                }
                let end = file.len() + rec.len();
                file.extend(rec);
                expected.push((labels.clone(), bits[0], *released, end));
            }
            let used = file.len();
            file[format::USED_AT..format::USED_AT + 8].copy_from_slice(&(used as u64).to_le_bytes());
            // Cut anywhere from the header on: the published length says more than there is.
            let at = format::HEADER + cut.index(used - format::HEADER + 1);
            for (bytes, whole) in [(&file[..], true), (&file[..at], false)] {
                let path = dir.0.join("slot-0001.mrs");
                fs::write(&path, bytes).unwrap();
                let mapped = Mapped::open(&open_read(&path).unwrap(), &path).unwrap().unwrap();
                let (data, err) = mapped.decode().unwrap();
                if whole {
                    prop_assert!(err.is_none());
                }
                let want: Vec<(Vec<String>, u64)> = expected
                    .iter()
                    .filter(|(_, _, released, end)| !released && *end <= bytes.len())
                    .map(|(labels, bits, _, _)| (labels.clone(), *bits))
                    .collect();
                let got: Vec<(Vec<String>, u64)> =
                    data.series_bits().map(|(labels, value)| (labels.to_vec(), value.to_bits())).collect();
                prop_assert_eq!(got, want);
            }
        }

        /// Any bytes after a valid header reach the record decoder, which reports what it cannot
        /// read and never panics or reads past the data; any bytes at all reach the header check.
        #[test]
        fn any_bytes_decode_without_panic(tail in proptest::collection::vec(any::<u8>(), 0..4096), used in 0usize..8192, with_header in any::<bool>()) {
            let header = format::write_header(&Header { pid: 1, used: 4096, boot: 1, uid: 7, host: "h".into() });
            let mut data = if with_header { header.to_vec() } else { Vec::new() };
            data.extend(tail);
            let cells = data.len() / 8;
            let _ = merge::decode(&data, used, |i| if i < cells { 1f64.to_bits() } else { f64::NAN.to_bits() });
            let _ = format::read_header(&data);
        }
    }
}
