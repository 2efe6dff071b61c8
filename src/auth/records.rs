//! The login guards' records: fixed-size hashed tables (failures per address and per account,
//! trusted address-and-user pairs), session slots and hashing-gate locks, kept in this
//! process's memory or in a state file that every poplar process of the host shares.
//!
//! One layout serves both. A table is buckets of [`BUCKET`] records of [`RECORD`] octets; a
//! key's bucket comes from its (salted) hash, so every operation reads and writes one bucket:
//! constant work however full the table is. In the state file a bucket is changed under an
//! open-file-description lock on its own bytes; session slots are records whose first octet a
//! live process holds locked, so the kernel frees the slot of a process that dies, `kill -9`
//! included; the hashing gate is a row of lock bytes. Nothing in the file is trusted: a bad
//! header or a short file is rebuilt (with a warning), and a record's values are only ever
//! bounded inputs to a delay or a count. (The layout, its locks and its checks are one
//! format and read best together, hence a file past 400 lines.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use sha2::{Digest, Sha256};

use crate::limits;

/// Octets of one record: a 16-octet key, a count, a process id, a time in ms since 1970.
pub const RECORD: usize = 32;
/// Records per bucket: the most any operation on a table looks at.
pub const BUCKET: usize = 8;
const BUCKET_BYTES: usize = RECORD * BUCKET;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "guards";

const MAGIC: &[u8; 16] = b"poplar-guards-v1";
const HEADER: u64 = 64;
/// Lock bytes: one serialises changes to the slots, the rest are the hashing gate.
const SLOTS_LOCK: u64 = HEADER;
const INIT_LOCK: u64 = HEADER + 1;
const GATE_LOCKS: u64 = HEADER + 32;
/// Most hashing-gate slots shared through the file.
pub const MAX_GATE: usize = 32;
const TABLES: u64 = HEADER + 64;

/// The tables, each a fixed number of buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Recent failures per client network.
    Addresses,
    /// Recent failures per account name.
    Accounts,
    /// Address-and-user pairs that logged in successfully.
    Trust,
}

impl Table {
    fn buckets(self) -> u64 {
        let records = match self {
            Table::Addresses => limits::MAX_TRACKED_ADDRESSES,
            Table::Accounts => limits::MAX_TRACKED_ACCOUNTS,
            Table::Trust => limits::MAX_TRUSTED_LOGINS,
        };
        (records / BUCKET) as u64
    }

    fn offset(self) -> u64 {
        let size = |t: Table| t.buckets() * BUCKET_BYTES as u64;
        match self {
            Table::Addresses => TABLES,
            Table::Accounts => TABLES + size(Table::Addresses),
            Table::Trust => TABLES + size(Table::Addresses) + size(Table::Accounts),
        }
    }
}

fn slots_offset() -> u64 {
    Table::Trust.offset() + Table::Trust.buckets() * BUCKET_BYTES as u64
}

fn total_len() -> u64 {
    slots_offset() + (limits::MAX_SHARED_SLOTS * RECORD) as u64
}

/// The header a file of this layout starts with (the salt follows at 48).
fn expected_header() -> [u8; 48] {
    let mut h = [0u8; 48];
    h[..16].copy_from_slice(MAGIC);
    let fields = [
        RECORD as u64,
        BUCKET as u64,
        Table::Addresses.buckets(),
        Table::Accounts.buckets(),
        Table::Trust.buckets(),
        limits::MAX_SHARED_SLOTS as u64,
    ];
    for (i, f) in fields.iter().enumerate() {
        // Four octets each: the values are far below 2^32.
        h[16 + 4 * i..20 + 4 * i].copy_from_slice(&(*f as u32).to_le_bytes());
    }
    h
}

/// One record of a table or of the slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// Whose record (all zero: none).
    pub key: [u8; 16],
    /// Failures counted (tables), unused for trust.
    pub count: u32,
    /// The process holding a slot (for a reader of the file; liveness is the lock).
    pub pid: u32,
    /// When it last changed, in ms since 1970.
    pub last_ms: u64,
}

impl Record {
    fn read(b: &[u8]) -> Record {
        let mut key = [0u8; 16];
        key.copy_from_slice(&b[..16]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 octets"));
        Record {
            key,
            count: u32_at(16),
            pid: u32_at(20),
            last_ms: u64::from_le_bytes(b[24..32].try_into().expect("8 octets")),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[..16].copy_from_slice(&self.key);
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
        b[20..24].copy_from_slice(&self.pid.to_le_bytes());
        b[24..32].copy_from_slice(&self.last_ms.to_le_bytes());
    }

    /// Whether the record holds nothing.
    pub fn is_empty(&self) -> bool {
        self.key == [0; 16]
    }

    /// Whether the record is older than `memory` at `now` (or from a future no clock jump
    /// explains, which only garbage is): then it counts as empty.
    pub fn expired(&self, now: u64, memory: Duration) -> bool {
        let memory = memory.as_millis() as u64;
        self.is_empty()
            || now.saturating_sub(self.last_ms) >= memory
            || self.last_ms > now + limits::GUARD_CLOCK_SKEW.as_millis() as u64
    }
}

/// One bucket: what a table operation sees and changes.
pub type Bucket = [Record; BUCKET];

/// The wall clock in ms since 1970: the one time every process agrees on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Backing {
    Memory(Mutex<Vec<u8>>),
    File { file: File, path: PathBuf },
}

/// The guards' records, in memory or in the shared state file.
pub struct Records {
    backing: Backing,
    /// Keys are hashed with this, so an attacker cannot aim many keys at one bucket.
    salt: [u8; 16],
    /// Slots and gate bytes this process holds: the kernel shows another process's locks, not
    /// our own (one open file description), so these are remembered here.
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    slots: Vec<u32>,
    gate: [bool; MAX_GATE],
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backing {
            Backing::Memory(_) => f.write_str("Records(memory)"),
            Backing::File { path, .. } => write!(f, "Records({})", path.display()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Records {
    fn default() -> Self {
        Records::memory()
    }
}

impl Records {
    /// Records in this process's memory (a daemon, where every session shares them). The
    /// zeroed buffer costs pages only as buckets are used.
    pub fn memory() -> Records {
        Records {
            backing: Backing::Memory(Mutex::new(vec![0u8; slots_offset() as usize])),
            salt: random_salt(),
            held: Mutex::default(),
        }
    }

    /// The state file in `dir`, created if missing, rebuilt (with a warning) if it is not
    /// one of ours or is cut short.
    pub fn open(dir: &Path) -> io::Result<Records> {
        let path = dir.join(STATE_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let salt = match lock_range(&file, INIT_LOCK, 1, limits::GUARD_LOCK_WAIT) {
            Ok(()) => {
                let salt = check_or_build(&file, &path);
                unlock_range(&file, INIT_LOCK, 1);
                salt
            }
            // A process stuck while checking the file must not keep every other one out: a
            // good file is used without the lock, only a rebuild needs it.
            Err(e) => read_salt(&file)?.ok_or(e),
        };
        Ok(Records {
            backing: Backing::File { file, path },
            salt: salt?,
            held: Mutex::default(),
        })
    }

    /// Whether these records are shared with other processes.
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::File { .. })
    }

    /// The key for `parts` (a kind, then its values): a salted hash, never all zero.
    pub fn key(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(self.salt);
        for p in parts {
            h.update((p.len() as u32).to_le_bytes());
            h.update(p);
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&h.finalize()[..16]);
        key[0] |= 1;
        key
    }

    /// Runs `f` on `key`'s bucket of `table` and stores what it changed; `None` (warned) when
    /// the state file cannot be used.
    pub fn update<R>(
        &self,
        table: Table,
        key: &[u8; 16],
        f: impl FnOnce(&mut Bucket) -> R,
    ) -> Option<R> {
        let index = u64::from_le_bytes(key[8..16].try_into().expect("8 octets")) % table.buckets();
        let at = table.offset() + index * BUCKET_BYTES as u64;
        match &self.backing {
            Backing::Memory(m) => {
                let mut bytes = lock(m);
                let raw = &mut bytes[at as usize..at as usize + BUCKET_BYTES];
                Some(apply(raw, f))
            }
            Backing::File { file, path } => {
                let done = (|| {
                    lock_range(file, at, BUCKET_BYTES as u64, limits::GUARD_LOCK_WAIT)?;
                    let mut raw = [0u8; BUCKET_BYTES];
                    let result = file.read_exact_at(&mut raw, at).and_then(|()| {
                        let before = raw;
                        let r = apply(&mut raw, f);
                        if raw != before {
                            file.write_all_at(&raw, at)?;
                        }
                        Ok(r)
                    });
                    unlock_range(file, at, BUCKET_BYTES as u64);
                    result
                })();
                done.map_err(|e| log::warn!("login guard state {}: {e}", path.display()))
                    .ok()
            }
        }
    }

    /// Takes a slot for `key` unless `max` live ones hold it already: `Ok(None)` then.
    /// Only for the state file (in memory, the callers count themselves).
    pub fn claim(&self, key: &[u8; 16], max: usize) -> io::Result<Option<u32>> {
        let Backing::File { file, .. } = &self.backing else {
            return Err(io::Error::other("slots live in the state file only"));
        };
        lock_range(file, SLOTS_LOCK, 1, limits::GUARD_LOCK_WAIT)?;
        let claimed = self.claim_locked(file, key, max);
        unlock_range(file, SLOTS_LOCK, 1);
        claimed
    }

    fn claim_locked(&self, file: &File, key: &[u8; 16], max: usize) -> io::Result<Option<u32>> {
        let base = slots_offset();
        let mut raw = vec![0u8; limits::MAX_SHARED_SLOTS * RECORD];
        file.read_exact_at(&mut raw, base)?;
        let mut held = lock(&self.held);
        let mut live = 0;
        // Empty records first; then the others not ours, which a lock proves stale (their
        // process died without clearing them).
        let (mut free, mut others) = (Vec::new(), Vec::new());
        for (i, chunk) in raw.chunks_exact(RECORD).enumerate() {
            let i = i as u32;
            let r = Record::read(chunk);
            let at = base + u64::from(i) * RECORD as u64;
            if held.slots.contains(&i) {
                live += usize::from(r.key == *key);
            } else if r.is_empty() {
                free.push(i);
            } else if r.key == *key && is_locked(file, at)? {
                live += 1;
            } else {
                others.push(i);
            }
        }
        if live >= max {
            return Ok(None);
        }
        for i in free.into_iter().chain(others) {
            let at = base + u64::from(i) * RECORD as u64;
            if try_lock(file, at, 1, libc::F_WRLCK)? {
                let mut bytes = [0u8; RECORD];
                Record {
                    key: *key,
                    count: 1,
                    pid: std::process::id(),
                    last_ms: now_ms(),
                }
                .write(&mut bytes);
                if let Err(e) = file.write_all_at(&bytes, at) {
                    unlock_range(file, at, 1);
                    return Err(e);
                }
                held.slots.push(i);
                return Ok(Some(i));
            }
        }
        // Every slot without our key is held (or stale and not yet seen as such): the file
        // holds as many sessions as it can.
        Ok(None)
    }

    /// [`Records::claim`], as a [`Hold`] that gives the slot back when dropped.
    pub fn hold(self: &Arc<Self>, key: &[u8; 16], max: usize) -> io::Result<Option<Hold>> {
        Ok(self.claim(key, max)?.map(|index| Hold {
            records: self.clone(),
            index,
        }))
    }

    /// Gives back slot `index` taken by [`Records::claim`].
    pub fn release(&self, index: u32) {
        let Backing::File { file, .. } = &self.backing else {
            return;
        };
        let at = slots_offset() + u64::from(index) * RECORD as u64;
        // Cleared first, so no one sees our key on a slot we no longer hold.
        let _ = file.write_all_at(&[0u8; RECORD], at);
        unlock_range(file, at, 1);
        lock(&self.held).slots.retain(|&i| i != index);
    }

    /// Takes one of the first `slots` gate bytes if one is free now, across processes.
    pub fn try_gate(&self, slots: usize) -> io::Result<Option<usize>> {
        let Backing::File { file, .. } = &self.backing else {
            return Ok(Some(0));
        };
        let mut held = lock(&self.held);
        for i in 0..slots.clamp(1, MAX_GATE) {
            if !held.gate[i] && try_lock(file, GATE_LOCKS + i as u64, 1, libc::F_WRLCK)? {
                held.gate[i] = true;
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Gives back gate byte `i` (one out of range is none: nothing to give back).
    pub fn release_gate(&self, i: usize) {
        if let Backing::File { file, .. } = &self.backing
            && i < MAX_GATE
        {
            unlock_range(file, GATE_LOCKS + i as u64, 1);
            lock(&self.held).gate[i] = false;
        }
    }
}

/// A slot of the state file this process holds; given back on drop (and by the kernel if the
/// process dies first).
#[derive(Debug)]
pub struct Hold {
    records: Arc<Records>,
    index: u32,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.records.release(self.index);
    }
}

fn apply<R>(raw: &mut [u8], f: impl FnOnce(&mut Bucket) -> R) -> R {
    let mut bucket: Bucket = [Record::default(); BUCKET];
    for (r, chunk) in bucket.iter_mut().zip(raw.chunks_exact(RECORD)) {
        *r = Record::read(chunk);
    }
    let before = bucket;
    let result = f(&mut bucket);
    // Only what changed is written: a lookup leaves the (lazily zeroed) pages alone.
    for ((r, old), chunk) in bucket.iter().zip(&before).zip(raw.chunks_exact_mut(RECORD)) {
        if r != old {
            r.write(chunk);
        }
    }
    result
}

fn random_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    // Without randomness the keys are still correct, only guessable.
    let _ = getrandom::fill(&mut salt);
    salt
}

/// The salt of a file whose header and length are of this layout; `None` for any other.
fn read_salt(file: &File) -> io::Result<Option<[u8; 16]>> {
    let len = file.metadata()?.len();
    let mut header = [0u8; HEADER as usize];
    if len < total_len() || file.read_exact_at(&mut header, 0).is_err() {
        return Ok(None);
    }
    if header[..48] != expected_header() {
        return Ok(None);
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&header[48..64]);
    Ok(Some(salt))
}

/// Checks the file's header and length (under the init lock); rebuilds a file that is empty,
/// not ours, of another layout or cut short. Returns the salt.
fn check_or_build(file: &File, path: &Path) -> io::Result<[u8; 16]> {
    if let Some(salt) = read_salt(file)? {
        return Ok(salt);
    }
    let len = file.metadata()?.len();
    if len > 0 {
        log::warn!(
            "login guard state {} is not usable (wrong header or cut short): starting it afresh",
            path.display()
        );
    }
    file.set_len(0)?;
    file.set_len(total_len())?;
    let salt = random_salt();
    let mut header = [0u8; HEADER as usize];
    header[..48].copy_from_slice(&expected_header());
    header[48..].copy_from_slice(&salt);
    file.write_all_at(&header, 0)?;
    Ok(salt)
}

fn flock(l_type: libc::c_int, start: u64, len: u64) -> libc::flock {
    libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start as libc::off_t,
        l_len: len as libc::off_t,
        // Must be 0 for open-file-description locks.
        l_pid: 0,
    }
}

/// Tries an open-file-description lock on `len` octets at `start`; `false` if another holds
/// them.
fn try_lock(file: &File, start: u64, len: u64, l_type: libc::c_int) -> io::Result<bool> {
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLK(&flock(l_type, start, len))) {
            Ok(_) => return Ok(true),
            Err(Errno::EAGAIN | Errno::EACCES) => return Ok(false),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Write-locks `len` octets at `start`, waiting at most `wait`: a process holds such a lock
/// only for a read and a write, so a longer wait means something is wrong.
fn lock_range(file: &File, start: u64, len: u64, wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_micros(200);
    while !try_lock(file, start, len, libc::F_WRLCK)? {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "a lock on it stayed held",
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    Ok(())
}

fn unlock_range(file: &File, start: u64, len: u64) {
    let _ = fcntl(
        file,
        FcntlArg::F_OFD_SETLK(&flock(libc::F_UNLCK, start, len)),
    );
}

/// Whether another open file description holds a lock on the octet at `at`.
fn is_locked(file: &File, at: u64) -> io::Result<bool> {
    let mut probe = flock(libc::F_WRLCK, at, 1);
    fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe))?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_survives_a_round_trip_in_memory_and_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for records in [Records::memory(), Records::open(dir.path()).unwrap()] {
            let key = records.key(&[b"test", b"x"]);
            records
                .update(Table::Accounts, &key, |b| {
                    b[3] = Record {
                        key,
                        count: 7,
                        pid: 1,
                        last_ms: 99,
                    }
                })
                .unwrap();
            let seen = records.update(Table::Accounts, &key, |b| b[3]).unwrap();
            assert_eq!((seen.key, seen.count, seen.last_ms), (key, 7, 99));
        }
    }

    #[test]
    fn a_second_opener_shares_the_records_and_a_garbage_file_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let a = Records::open(dir.path()).unwrap();
        let b = Records::open(dir.path()).unwrap();
        let key = a.key(&[b"k"]);
        assert_eq!(key, b.key(&[b"k"]), "one salt for every process");
        a.update(Table::Addresses, &key, |r| r[0].count = 5)
            .unwrap();
        assert_eq!(b.update(Table::Addresses, &key, |r| r[0].count), Some(5));
        drop((a, b));
        let path = dir.path().join(STATE_FILE);
        for garbage in [vec![0xa5u8; 5000], b"poplar-guards-v1".to_vec(), Vec::new()] {
            std::fs::write(&path, &garbage).unwrap();
            let r = Records::open(dir.path()).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), total_len());
            let k = r.key(&[b"k"]);
            assert_eq!(r.update(Table::Trust, &k, |b| b[0].count), Some(0));
        }
    }

    #[test]
    fn a_process_stuck_holding_the_init_lock_keeps_no_one_out_of_a_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = Records::open(dir.path()).unwrap();
        let stuck = File::options()
            .read(true)
            .write(true)
            .open(dir.path().join(STATE_FILE))
            .unwrap();
        lock_range(&stuck, INIT_LOCK, 1, Duration::ZERO).unwrap();
        let second = Records::open(dir.path()).unwrap();
        assert_eq!(first.key(&[b"k"]), second.key(&[b"k"]));
        // A bad file cannot be rebuilt without the lock: refused, not guessed at.
        std::fs::write(dir.path().join(STATE_FILE), b"garbage").unwrap();
        assert!(Records::open(dir.path()).is_err());
    }

    #[test]
    fn slots_count_live_holders_across_openers_and_a_closed_opener_frees_its_own() {
        let dir = tempfile::tempdir().unwrap();
        // Two opens are two open file descriptions: to the kernel's locks, two processes.
        let a = Records::open(dir.path()).unwrap();
        let b = Records::open(dir.path()).unwrap();
        let key = a.key(&[b"user", b"alice"]);
        let first = a.claim(&key, 2).unwrap().unwrap();
        let _second = b.claim(&key, 2).unwrap().unwrap();
        assert_eq!(a.claim(&key, 2).unwrap(), None);
        assert_eq!(b.claim(&key, 2).unwrap(), None);
        a.release(first);
        let again = b.claim(&key, 2).unwrap().unwrap();
        assert_eq!(a.claim(&key, 2).unwrap(), None);
        // b goes away without releasing (as a killed process would): its locks go with it.
        drop(b);
        let c = Records::open(dir.path()).unwrap();
        assert!(c.claim(&key, 2).unwrap().is_some());
        assert!(c.claim(&key, 2).unwrap().is_some());
        assert_eq!(c.claim(&key, 2).unwrap(), None);
        let _ = again;
    }

    #[test]
    fn the_gate_bytes_bound_holders_across_openers() {
        let dir = tempfile::tempdir().unwrap();
        let a = Records::open(dir.path()).unwrap();
        let b = Records::open(dir.path()).unwrap();
        let i = a.try_gate(2).unwrap().unwrap();
        let j = a.try_gate(2).unwrap().unwrap();
        assert_ne!(i, j);
        assert_eq!(b.try_gate(2).unwrap(), None);
        a.release_gate(i);
        assert_eq!(b.try_gate(2).unwrap(), Some(i));
        assert_eq!(a.try_gate(2).unwrap(), None);
    }
}
