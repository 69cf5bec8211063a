//! SHA-256 of large files computed while they settle, before their upload: the watcher starts
//! one when a large candidate held still between two looks, and cancels it when the candidate
//! changes or goes; the uploader takes the one of exactly the version it sends (by
//! [`Identity`]: device, inode, size, mtime). A hash done by then is the file's, and the upload
//! sends without hashing; one still running is stopped and handed over (the state after the
//! bytes it read), and the upload hashes only the rest, from the pieces it reads anyway. Either
//! way no byte is hashed twice, and the hashing done while the file settled, with the CPUs
//! otherwise idle, no longer sets the upload's pace. Where the batcher reads the file before
//! the seal (the check of its records under `validate`, or the hash of a file sharing its size
//! with another), it takes the hash first, the same way, and gives the whole hash back
//! ([`EarlyHashes::known`]) for the upload.
//!
//! This module owns the registry of those hashes and the blocking threads that compute them.
//! It must not write to the store or talk to the platform, must not trust a hash whose file
//! changed while it was read (its identity is checked before and after), and must not drop
//! pages from the page cache (the upload reads them next, and drops them behind itself). It
//! holds a bounded number of hashes ([`RUNNING_CAP`] being computed, [`DONE_CAP`] in all), each
//! with at most one read buffer.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::disk::Identity;

/// The early hashes of one daemon, shared by its watchers and its uploader (cheap to clone).
/// The default one is off: it never starts a hash, so the uploader hashes as it reads.
#[derive(Clone, Default)]
pub struct EarlyHashes {
    inner: Option<Arc<Registry>>,
}

struct Registry {
    /// Files larger than this are hashed early (the uploader's `large_file_threshold`: smaller
    /// ones are read whole or streamed with their hash, at no cost worth saving).
    threshold: u64,
    jobs: Mutex<HashMap<Identity, Arc<Job>>>,
}

/// One file version's hash, being computed or done.
pub struct Job {
    identity: Identity,
    /// What the computing thread is asked to do at its next piece: go on, stop, hand over.
    stop: std::sync::atomic::AtomicU8,
    /// The registry it was started by: once every holder of it is gone (the daemon stops),
    /// the hash stops too, so that no blocking thread holds the runtime's shutdown.
    registry: std::sync::Weak<Registry>,
    /// Bytes hashed so far.
    hashed: AtomicU64,
    outcome: tokio::sync::watch::Sender<Option<Outcome>>,
}

const GO_ON: u8 = 0;
const CANCEL: u8 = 1;
const HAND_OVER: u8 = 2;

/// How an early hash ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The hex SHA-256 of the whole file, which held still (same identity) while it was read.
    Done(String),
    /// Stopped for its upload after the first `at` bytes, which held still while they were
    /// read: `state` is the hash of those bytes, for the upload to go on from.
    HandedOver { at: u64, state: Sha256 },
    /// The file changed, went, or could not be read: its hash is not known.
    Failed,
    /// Given up: the file changed or went while it settled, or the daemon stopped.
    Cancelled,
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Done(a), Outcome::Done(b)) => a == b,
            (Outcome::HandedOver { at: a, .. }, Outcome::HandedOver { at: b, .. }) => a == b,
            (Outcome::Failed, Outcome::Failed) | (Outcome::Cancelled, Outcome::Cancelled) => true,
            _ => false,
        }
    }
}

/// Hashes being computed at most: one per core of a small machine; a file found when all are
/// busy is hashed by its upload as usual.
const RUNNING_CAP: usize = 2;
/// Hashes kept at most, done or running (a file recorded but never uploaded, e.g. rejected,
/// leaves its hash behind: the oldest done ones make room).
const DONE_CAP: usize = 64;
/// Read in pieces of this size (one buffer per running hash).
const PIECE: usize = 1 << 20;

impl EarlyHashes {
    /// A registry that hashes files larger than `threshold` bytes early.
    pub fn new(threshold: u64) -> EarlyHashes {
        EarlyHashes {
            inner: Some(Arc::new(Registry {
                threshold,
                jobs: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// Whether a file of `size` bytes would be hashed early (the registry is on and the file
    /// is large): the watcher looks at such a file again soon after it is found, so that its
    /// hash can start early in its settle.
    pub fn wants(&self, size: u64) -> bool {
        self.inner.as_ref().is_some_and(|r| size > r.threshold)
    }

    /// Starts hashing `path` below the drop folder `root`, seen as `identity` on two looks in
    /// a row, unless it is small,
    /// already hashed or being hashed at that identity, or the registry is busy. Returns the job
    /// when one was started. Call it from async code: the hash runs on the blocking pool.
    pub fn start(&self, root: &Path, path: &Path, identity: Identity) -> Option<Arc<Job>> {
        let registry = self.inner.as_ref()?;
        if !self.wants(identity.size) {
            return None;
        }
        let mut jobs = registry.jobs.lock().unwrap();
        if jobs.contains_key(&identity) {
            return None;
        }
        let running = jobs.values().filter(|j| j.outcome().is_none()).count();
        if running >= RUNNING_CAP {
            return None;
        }
        make_room(&mut jobs);
        let (outcome, _) = tokio::sync::watch::channel(None);
        let job = Arc::new(Job {
            identity,
            stop: std::sync::atomic::AtomicU8::new(GO_ON),
            registry: Arc::downgrade(registry),
            hashed: AtomicU64::new(0),
            outcome,
        });
        jobs.insert(identity, job.clone());
        let (root, path, running) = (root.to_owned(), path.to_owned(), job.clone());
        tokio::task::spawn_blocking(move || {
            let ended = running.compute(&root, &path);
            running.outcome.send_replace(Some(ended));
        });
        Some(job)
    }

    /// Cancels and forgets the hash of `identity` (a candidate that changed or went).
    pub fn forget(&self, identity: Identity) {
        let Some(registry) = &self.inner else {
            return;
        };
        if let Some(job) = registry.jobs.lock().unwrap().remove(&identity) {
            job.stop.store(CANCEL, Ordering::Relaxed);
        }
    }

    /// The hash of exactly `identity`, done or being computed, for its upload (it leaves the
    /// registry); None when there is none or it failed.
    pub fn take(&self, identity: Identity) -> Option<Arc<Job>> {
        let registry = self.inner.as_ref()?;
        let job = registry.jobs.lock().unwrap().remove(&identity)?;
        match job.outcome() {
            Some(Outcome::Failed | Outcome::Cancelled) => None,
            _ => Some(job),
        }
    }

    /// Keeps `sha256` as the hash of exactly `identity`, computed elsewhere from a read of
    /// that version which held still (the batcher's, before the seal): its upload then sends
    /// without hashing. Small files are not kept (their upload hashes them at no cost worth
    /// saving).
    pub fn known(&self, identity: Identity, sha256: &str) {
        let Some(registry) = &self.inner else {
            return;
        };
        if !self.wants(identity.size) {
            return;
        }
        let (outcome, _) = tokio::sync::watch::channel(Some(Outcome::Done(sha256.to_owned())));
        let job = Arc::new(Job {
            identity,
            stop: std::sync::atomic::AtomicU8::new(GO_ON),
            registry: Arc::downgrade(registry),
            hashed: AtomicU64::new(identity.size),
            outcome,
        });
        let mut jobs = registry.jobs.lock().unwrap();
        make_room(&mut jobs);
        jobs.insert(identity, job);
    }
}

/// Forgets done hashes until there is room for one more under [`DONE_CAP`] (the oldest can no
/// longer be told apart from the others: any done ones).
fn make_room(jobs: &mut HashMap<Identity, Arc<Job>>) {
    if jobs.len() < DONE_CAP {
        return;
    }
    let done: Vec<Identity> = jobs
        .iter()
        .filter(|(_, j)| j.outcome().is_some())
        .map(|(id, _)| *id)
        .take(jobs.len() + 1 - DONE_CAP)
        .collect();
    for id in done {
        jobs.remove(&id);
    }
}

impl Job {
    /// How it ended, if it did.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    /// The file's hex SHA-256 once the hash ends; None when it failed or was cancelled.
    pub async fn finish(&self) -> Option<String> {
        match self.ended().await {
            Outcome::Done(sha) => Some(sha),
            _ => None,
        }
    }

    /// For its upload: the whole hash if it is done, else the hash of what was read so far,
    /// the thread stopped at its next piece (a few milliseconds at most). None when it failed.
    pub async fn hand_over(&self) -> Option<Outcome> {
        let _ = self
            .stop
            .compare_exchange(GO_ON, HAND_OVER, Ordering::Relaxed, Ordering::Relaxed);
        match self.ended().await {
            ended @ (Outcome::Done(_) | Outcome::HandedOver { .. }) => Some(ended),
            Outcome::Failed | Outcome::Cancelled => None,
        }
    }

    async fn ended(&self) -> Outcome {
        let mut rx = self.outcome.subscribe();
        let ended = rx.wait_for(|o| o.is_some()).await.map(|o| o.clone());
        // The sender lives in `self`: it cannot be dropped while this waits.
        ended.ok().flatten().unwrap_or(Outcome::Failed)
    }

    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// Reads and hashes the file at `path` if it is still this job's version, from its start
    /// (until asked to stop), then checks that it held still. Opened as its upload opens it
    /// (`disk::open_below`), and read only once its descriptor is this version.
    fn compute(&self, root: &Path, path: &Path) -> Outcome {
        let Ok(opened) = crate::disk::open_below(root, path, crate::disk::Links::Anywhere) else {
            return Outcome::Failed;
        };
        let file = opened.file;
        let same = |file: &std::fs::File| {
            file.metadata()
                .is_ok_and(|m| m.is_file() && Identity::of(&m) == self.identity)
        };
        if opened.stat.kind != crate::disk::Kind::File || !same(&file) {
            return Outcome::Failed;
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; PIECE];
        let size = self.identity.size;
        let mut at = 0u64;
        while at < size {
            match self.stop.load(Ordering::Relaxed) {
                HAND_OVER => break,
                CANCEL => return Outcome::Cancelled,
                _ if self.registry.strong_count() == 0 => return Outcome::Cancelled,
                _ => {}
            }
            let want = (size - at).min(PIECE as u64) as usize;
            let n = match file.read_at(&mut buf[..want], at) {
                Ok(0) => return Outcome::Failed, // cut short
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Outcome::Failed,
            };
            hasher.update(&buf[..n]);
            at += n as u64;
            self.hashed.store(at, Ordering::Relaxed);
        }
        // A write since the start changed its mtime (or size): the bytes read may mix versions.
        if !same(&file) {
            return Outcome::Failed;
        }
        if at < size {
            return Outcome::HandedOver { at, state: hasher };
        }
        Outcome::Done(format!("{:x}", hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(path: &Path) -> Identity {
        Identity::read(path).unwrap()
    }

    #[tokio::test]
    async fn a_large_file_is_hashed_and_taken_once_by_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let early = EarlyHashes::new(1 << 20);
        let identity = identity_of(&path);
        let job = early.start(dir.path(), &path, identity).expect("started");
        assert!(
            early.start(dir.path(), &path, identity).is_none(),
            "one job per version"
        );
        assert_eq!(
            job.finish().await.unwrap(),
            format!("{:x}", Sha256::digest(&data))
        );
        let other = Identity {
            mtime_ns: identity.mtime_ns + 1,
            ..identity
        };
        assert!(early.take(other).is_none(), "another version is not it");
        assert!(early.take(identity).is_some());
        assert!(early.take(identity).is_none(), "taken once");
        // Small files are not hashed early.
        std::fs::write(dir.path().join("small.json"), b"{}\n").unwrap();
        let small = dir.path().join("small.json");
        assert!(
            early
                .start(dir.path(), &small, identity_of(&small))
                .is_none()
        );
        assert!(
            EarlyHashes::default()
                .start(dir.path(), &path, identity)
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_file_written_while_it_is_hashed_gives_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        std::fs::write(&path, vec![b'a'; 3 << 20]).unwrap();
        let early = EarlyHashes::new(1 << 20);
        let stale = identity_of(&path);
        std::fs::write(&path, vec![b'b'; (3 << 20) + 1]).unwrap();
        // Started for a version the file no longer is: no hash of it.
        let job = early.start(dir.path(), &path, stale).unwrap();
        assert!(job.finish().await.is_none());
        assert!(
            early.take(stale).is_none(),
            "a failed hash is not handed out"
        );
    }

    #[tokio::test]
    async fn a_hash_handed_over_covers_exactly_the_bytes_before_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 241) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let early = EarlyHashes::new(1 << 20);
        let identity = identity_of(&path);
        let job = early.start(dir.path(), &path, identity).unwrap();
        let taken = early.take(identity).unwrap();
        assert!(Arc::ptr_eq(&taken, &job));
        // Done by now, or stopped wherever it was: either way its figures are right.
        match taken.hand_over().await.unwrap() {
            Outcome::Done(sha) => assert_eq!(sha, format!("{:x}", Sha256::digest(&data))),
            Outcome::HandedOver { at, mut state } => {
                assert!(at < data.len() as u64);
                state.update(&data[at as usize..]);
                assert_eq!(
                    format!("{:x}", state.finalize()),
                    format!("{:x}", Sha256::digest(&data))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_forgotten_hash_is_cancelled_and_no_longer_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        std::fs::write(&path, vec![b'x'; 64 << 20]).unwrap();
        let early = EarlyHashes::new(1 << 20);
        let identity = identity_of(&path);
        let job = early.start(dir.path(), &path, identity).unwrap();
        early.forget(identity);
        assert!(early.take(identity).is_none());
        // Stopped at its next piece, unless it had already read every byte.
        match job.ended().await {
            Outcome::Cancelled => assert!(job.hashed() < 64 << 20),
            Outcome::Done(_) => assert_eq!(job.hashed(), 64 << 20),
            other => panic!("{other:?}"),
        }
        // A cancelled hash never blocks a new start of the same version.
        assert!(early.start(dir.path(), &path, identity).is_some());
    }
}
