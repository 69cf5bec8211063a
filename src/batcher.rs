//! Ready files → sealed batches: grouping per (dataset, format) within the limits.
//!
//! `schedule` is the pure decision (which ready files go together, whether a group is ready to
//! seal, whether the daily budget lets it); `Batcher::run` applies it against the store.
//! Before sealing, files that may repeat content (the same size as another file of the
//! dataset, ingested, on its way or ready beside them) are hashed; the store's seal keeps one
//! copy of any content per dataset (the others wait for its outcome or become duplicates of
//! it); so is a file in flight that was sealed unhashed when a twin of its size waits for it. Every
//! other file is hashed only while it is uploaded. Watches whose dataset is blocked (see
//! `blocked`) are skipped.
//!
//! This module must not talk to the platform or move files.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Validate, Watch};
use crate::disk::{self, Links};
use crate::early_hash::Outcome;
use crate::schedule::{self, Limits};
use crate::stage::{self, Next, Stage};
use crate::store::{Dedupe, FileRow, FileState, NewBatch, Store, StoreError, now_ms};

pub struct Batcher {
    /// Shared with the daemon, which swaps it on a config reload.
    pub watches: Arc<std::sync::RwLock<Vec<Watch>>>,
    /// The local check of each watch's records (by watch name), where its dataset's schema
    /// is known; swapped with `watches`.
    pub validators: Validators,
    /// The daily batch budget of each watch that has one (by watch name); swapped with
    /// `watches`.
    pub budgets: Arc<std::sync::RwLock<std::collections::BTreeMap<String, u32>>>,
    /// The mapping set of each watch that maps its files (by watch name); swapped with
    /// `watches`. Such a watch's files are mapped into staged files (`crate::mapped`), which
    /// the mapping checks against the schema itself.
    pub mappers: crate::mapped::Mappers,
    /// Where staged files are written (below it).
    pub state_dir: std::path::PathBuf,
    /// Files whose records were checked already (and kept): a file waiting for its group is
    /// not read again at every pass.
    pub checked: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    pub store: Store,
    pub health: Arc<crate::telemetry::Health>,
    pub max_inflight_bytes: u64,
    pub wake: Arc<Notify>,
    pub wake_uploader: Arc<Notify>,
    /// In a fleet: a watch's files are sealed by its scanner only (one sealer per watch).
    pub leases: Option<crate::membership::Leases>,
    /// The hashes of large files computed while they settled (shared with the watchers and
    /// the uploader): the local check goes on from a file's, and gives the whole hash back
    /// for its upload, so that a checked file is hashed once.
    pub early: crate::early_hash::EarlyHashes,
}

/// The local checks of records, by watch name (see `preflight::gate`).
pub type Validators = Arc<
    std::sync::RwLock<
        std::collections::BTreeMap<String, Arc<crate::preflight::validate::Validator>>,
    >,
>;

impl Batcher {
    pub async fn run(self, shutdown: CancellationToken, flush: Arc<AtomicBool>) {
        let wake = self.wake.clone();
        let mut stage = Batching {
            batcher: self,
            shutdown: shutdown.clone(),
            flush,
        };
        stage::run(&mut stage, &wake, &shutdown).await;
    }

    /// One pass over every watch: seals what is due in each that may take a batch (not while
    /// the bytes in flight are over the cap, nor for a dataset the platform does not know).
    /// A state database error in one watch does not keep the others from their pass; the
    /// first is returned once they had it. `flush` seals partial groups (shutdown, `--once`).
    pub async fn pass(
        &self,
        flush: bool,
        shutdown: &CancellationToken,
    ) -> Result<Next, StoreError> {
        let watches = self.watches.read().unwrap().clone();
        let tick = watches
            .iter()
            .map(|w| w.max_wait)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        // Cap on bytes in flight: sealing waits until earlier batches finish.
        let inflight = self.store.inflight_bytes().await.unwrap_or(0);
        let over = inflight >= self.max_inflight_bytes as i64;
        if over != self.health.batching_paused.swap(over, Ordering::SeqCst) && over {
            tracing::warn!(
                inflight,
                cap = self.max_inflight_bytes,
                "intake paused: max_inflight_bytes reached; batches resume as earlier ones finish"
            );
        }
        let mut sealed = false;
        let mut first_error = None;
        // A watch whose dataset the platform does not know takes no new batch until it
        // does (see `blocked`): its files stay queued where they were dropped.
        let blocked = match self.store.blocked_datasets().await {
            Ok(b) => b.into_iter().map(|b| b.dataset).collect(),
            Err(e) => {
                first_error.get_or_insert(e);
                Vec::new()
            }
        };
        // Nor for a watch whose first scan is still recording a backlog (`BacklogScan`).
        let open: Vec<&Watch> = if over {
            Vec::new()
        } else {
            watches
                .iter()
                .filter(|w| !blocked.contains(&w.dataset))
                .filter(|w| !self.health.scanning_backlog(&w.name))
                .collect()
        };
        if !open.is_empty()
            && let Err(e) = self.store.release_waiting().await
        {
            first_error.get_or_insert(e);
        }
        for w in open {
            if let Some(leases) = &self.leases
                && !leases.scan(&w.name).await.unwrap_or(false)
            {
                continue;
            }
            match self.batch_watch(w, flush, shutdown).await {
                Ok(s) => sealed |= s,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if sealed {
            self.wake_uploader.notify_one();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Next::After(tick)),
        }
    }

    /// Seals what is ready in one watch, a page of ready files at a time. Returns whether it
    /// sealed anything; stops early (sealing nothing more) on shutdown.
    async fn batch_watch(
        &self,
        w: &Watch,
        flush: bool,
        shutdown: &CancellationToken,
    ) -> Result<bool, StoreError> {
        // Groups are keyed by (format, multiline): with more than GROUP_KEYS x max_files files in
        // a page, one group at least is full, so every full page seals something.
        let page = (GROUP_KEYS * w.max_files + 1) as i64;
        let dedupe = if w.allow_duplicates {
            Dedupe::AllowDuplicates
        } else {
            Dedupe::OneCopy
        };
        let mut sealed_any = false;
        // Files this watch's seals left waiting for another file's outcome.
        let mut carriers = Vec::new();
        loop {
            let mut ready = self.store.ready_files(&w.name, page).await?;
            if ready.is_empty() {
                return Ok(sealed_any);
            }
            // A full page may leave files of its partial groups for the next one: only the
            // last page seals partial groups (when they waited max_wait, or on flush).
            let more = ready.len() as i64 == page;
            let validator = self.validators.read().unwrap().get(&w.name).cloned();
            let mapper = self.mappers.read().unwrap().get(&w.name).cloned();
            if let Some(mapper) = mapper {
                let staged = crate::mapped::stage_ready(
                    &self.store,
                    mapper,
                    &self.state_dir,
                    ready,
                    shutdown,
                )
                .await?;
                match staged {
                    Some(kept) => ready = kept,
                    None => return Ok(sealed_any),
                }
                if ready.is_empty() {
                    return Ok(sealed_any);
                }
            } else if let Some(validator) = validator.filter(|_| w.validate != Validate::Off) {
                match self.check_locally(w, ready, validator, shutdown).await? {
                    Some(kept) => ready = kept,
                    None => return Ok(sealed_any),
                }
                if ready.is_empty() {
                    return Ok(sealed_any);
                }
            }
            if dedupe == Dedupe::OneCopy {
                match self.hash_where_needed(&w.dataset, ready, shutdown).await? {
                    Some(hashed) => ready = hashed,
                    None => return Ok(sealed_any),
                }
            }
            let mut limits = Limits::of(w);
            if more {
                // Never "waited long enough" (and small enough for plan's millisecond sums).
                limits.max_wait = Duration::from_secs(u32::MAX as u64);
            }
            let mut groups = schedule::plan(&ready, limits, now_ms(), flush && !more);
            let budget = self.budgets.read().unwrap().get(&w.name).copied();
            if let Some(budget) = budget
                && !groups.is_empty()
            {
                if !self.budget_allows(w, budget, flush).await? {
                    // The files wait (and their batch grows) until the next one is due.
                    return Ok(sealed_any);
                }
                // One batch per turn: the next waits its own spacing.
                groups.truncate(1);
            }
            let mut progress = false;
            for ids in &groups {
                let first = ready
                    .iter()
                    .find(|f| f.id == ids[0])
                    .expect("planned from this list");
                let sealed = self
                    .store
                    .seal_batch(
                        &NewBatch {
                            watch: &w.name,
                            dataset: &w.dataset,
                            sandbox: &w.sandbox,
                            format: first.format,
                            multiline_json: first.multiline_json,
                            replay: first.replay.as_ref(),
                        },
                        ids,
                        dedupe,
                    )
                    .await?;
                let name = |id: i64| {
                    ready
                        .iter()
                        .find(|f| f.id == id)
                        .map(|f| f.rel_path.as_str())
                        .unwrap_or_default()
                };
                for d in &sealed.duplicates {
                    tracing::info!(file = %name(d.file), dataset = %w.dataset, earlier = %d.carrier_path, "duplicate content, not ingested again");
                }
                for d in &sealed.waiting {
                    tracing::info!(file = %name(d.file), dataset = %w.dataset, carrier = %d.carrier_path, "waits for the outcome of a file that may carry the same content");
                    carriers.push(d.carrier);
                }
                progress |= sealed.to_hash.len() < ids.len();
                if let Some(batch) = sealed.batch_id {
                    sealed_any = true;
                    tracing::info!(dataset = %w.dataset, batch = batch, files = sealed.files.len(), "batch sealed");
                }
            }
            if sealed_any {
                // Let the uploader start on these while the next page is prepared.
                self.wake_uploader.notify_one();
            }
            if !more || !progress || shutdown.is_cancelled() {
                self.hash_carriers(carriers, shutdown).await?;
                return Ok(sealed_any);
            }
        }
    }

    /// A file sealed alone with its size goes unhashed (its upload hashes it); a file of the
    /// same size queued after that seal waits for it ("same size, content not known yet")
    /// until its upload records its hash, and then goes in a later batch of its own. In a
    /// fleet this is common: the scanner seals the first pages while it still claims the
    /// rest. So the batcher hashes such `carriers` (those in flight with no hash yet) now:
    /// the next pass releases the files whose content differs, and seals them. A big one is
    /// left to its upload (hashing it twice would cost more than its twin's wait), as is one
    /// that cannot be read now (archived meanwhile, replaced).
    async fn hash_carriers(
        &self,
        mut carriers: Vec<i64>,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        carriers.sort_unstable();
        carriers.dedup();
        let mut unknown = Vec::new();
        for id in carriers.into_iter().take(CARRIERS_PER_PASS) {
            if let Some(f) = self.store.file(id).await?
                && f.sha256.is_none()
                && f.size <= CARRIER_HASH_MAX
                && matches!(f.state, FileState::Batched | FileState::Uploaded)
            {
                unknown.push((unknown.len(), f));
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = unknown.iter().map(|(_, f)| f.id).collect();
        let hash = |f: FileRow| sha256_queued(&f, None);
        let Some(hashed) = each_blocking(unknown, shutdown, hash).await else {
            return Ok(());
        };
        let shas: Vec<(i64, String)> = hashed
            .into_iter()
            .filter_map(|(i, sha)| Some((ids[i], sha.ok()??)))
            .collect();
        self.store.set_unknown_shas(&shas).await?;
        if !shas.is_empty() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Whether a watch with a daily budget of `budget` batches may seal one now (see
    /// `schedule::budget_allows`).
    async fn budget_allows(&self, w: &Watch, budget: u32, flush: bool) -> Result<bool, StoreError> {
        let now = now_ms();
        let sealed = self
            .store
            .batches_sealed_since(&w.name, now - schedule::DAY_MS)
            .await?;
        let allowed = schedule::budget_allows(budget, sealed, now, flush);
        if !allowed && sealed.count >= i64::from(budget) {
            tracing::debug!(watch = %w.name, budget, "daily batch budget used up; files wait");
        }
        Ok(allowed)
    }

    /// Runs `work` on the rows of `page` at `picked`, in one blocking task, each with its early
    /// hash: of exactly the version queued, taken from the registry and stopped where it got
    /// to (done, or the state after the bytes it read), for a read of the file that goes on
    /// from it (None when there is none: a small file, or none was started). Returns the page
    /// and each picked row's result by its index, or no results if shutdown came first.
    ///
    /// The blocking task shares the page rather than copies of the picked rows: a page is up to
    /// six batches of full rows, and when files share their sizes every one of them is picked;
    /// copies of it were the largest part of the daemon's peak memory.
    async fn each_picked<R: Send + 'static>(
        &self,
        page: Vec<FileRow>,
        picked: Vec<usize>,
        shutdown: &CancellationToken,
        work: impl Fn(&FileRow, Option<Outcome>) -> R + Send + 'static,
    ) -> (Vec<FileRow>, Option<Vec<(usize, R)>>) {
        let mut with_early = Vec::with_capacity(picked.len());
        for i in picked {
            let early = match self.early.take(page[i].identity()) {
                Some(job) => job.hand_over().await,
                None => None,
            };
            // The first index labels the result, the second tells the work its row.
            with_early.push((i, (i, early)));
        }
        let page = Arc::new(page);
        let rows = page.clone();
        let results = each_blocking(with_early, shutdown, move |(i, early)| {
            work(&rows[i], early)
        })
        .await;
        // The blocking task and its share of the page are gone once it answered.
        let page = Arc::try_unwrap(page).unwrap_or_else(|shared| shared.as_ref().clone());
        (page, results)
    }

    /// Reads each ready file not checked yet once, hashing it and checking its records against
    /// the dataset's schema: a file with bad rows is failed with the platform's codes, rows
    /// and fields (`validate = "reject"`) or goes on with a warning (`"warn"`); clean files are
    /// recorded as such. Returns the files that go on, or None if shutdown came first.
    async fn check_locally(
        &self,
        w: &Watch,
        ready: Vec<FileRow>,
        validator: Arc<crate::preflight::validate::Validator>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<FileRow>>, StoreError> {
        let to_check: Vec<usize> = {
            let checked = self.checked.lock().unwrap();
            ready
                .iter()
                .enumerate()
                .filter(|(_, f)| !checked.contains(&f.id))
                .map(|(i, _)| i)
                .collect()
        };
        if to_check.is_empty() {
            return Ok(Some(ready));
        }
        // A file's early hash, taken from the registry and stopped where it got to: the
        // check's read goes on from it rather than hashing those bytes again.
        let check = move |f: &FileRow, early: Option<Outcome>| {
            crate::preflight::local::check_queued(&validator, f, early)
        };
        let (mut ready, results) = self.each_picked(ready, to_check, shutdown, check).await;
        let Some(results) = results else {
            return Ok(None);
        };
        let mut shas = Vec::new();
        let mut clean = Vec::new();
        let mut dropped = std::collections::HashSet::new();
        for (i, result) in results {
            let f = &mut ready[i];
            match result {
                Ok(Some(c)) => {
                    if !c.check.is_clean() {
                        let why = crate::preflight::local::refusal(f, &c.check);
                        if w.validate == Validate::Reject {
                            tracing::warn!(file = %f.rel_path, dataset = %w.dataset, "{why}");
                            self.store.fail_file(f.id, &why).await?;
                            dropped.insert(f.id);
                            continue;
                        }
                        tracing::warn!(file = %f.rel_path, dataset = %w.dataset, "uploaded anyway (validate = \"warn\"): {why}");
                    } else {
                        clean.push(f.id);
                    }
                    self.checked.lock().unwrap().insert(f.id);
                    // Read from a descriptor of the version queued, which held still: its
                    // upload sends it without hashing it again.
                    self.early.known(f.identity(), &c.sha256);
                    f.sha256 = Some(c.sha256.clone());
                    shas.push((f.id, c.sha256));
                }
                // Not the version queued, or short of descriptors: later.
                Ok(None) => {
                    dropped.insert(f.id);
                }
                Err(e) => {
                    let why = format!(
                        "cannot read {} to check its records: {e}; fix the file or its permissions and drop it again",
                        f.abs_path().display()
                    );
                    tracing::warn!(file = %f.rel_path, dataset = %w.dataset, "{why}");
                    self.store.fail_file(f.id, &why).await?;
                    dropped.insert(f.id);
                }
            }
        }
        self.store.set_shas(&shas).await?;
        self.store.mark_validated(&clean).await?;
        ready.retain(|f| !dropped.contains(&f.id));
        Ok(Some(ready))
    }

    /// Hashes the ready files whose size matches another file of the dataset (ingested, on its
    /// way, or ready beside them): only those can repeat content, and `Store::seal_batch`
    /// needs their content to keep one copy of it. Every other file is hashed only while it is
    /// uploaded. Returns the page with the hashes filled in, or None if shutdown came first
    /// (nothing is sealed then: files not checked yet must not go out unchecked).
    ///
    /// Costs per page, not per file, where it can: one size query per distinct size, the
    /// hashing in one blocking task, the hashes recorded in one transaction.
    async fn hash_where_needed(
        &self,
        dataset: &str,
        ready: Vec<FileRow>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<FileRow>>, StoreError> {
        // Whether another file of that size is in the dataset. Exact per size for the whole
        // page: the first file asking proves the size to every other file of that size.
        let mut seen: std::collections::HashMap<i64, bool> = Default::default();
        let mut to_hash = Vec::new();
        for (i, f) in ready.iter().enumerate() {
            // A replay replaces what it names: the same content again is its point, not a repeat.
            if f.sha256.is_some() || f.replay.is_some() {
                continue;
            }
            let known = match seen.get(&f.size) {
                Some(&known) => known,
                None => {
                    let known = self.store.size_seen(dataset, f.size, f.id).await?;
                    seen.insert(f.size, known);
                    known
                }
            };
            if known {
                to_hash.push(i);
            }
        }
        if to_hash.is_empty() {
            return Ok(Some(ready));
        }
        // As the check does: a file's early hash (a large twin, e.g. a file dropped again) is
        // gone on from, not done again.
        let (mut ready, hashed) = self
            .each_picked(ready, to_hash, shutdown, sha256_queued)
            .await;
        let Some(hashed) = hashed else {
            return Ok(None);
        };
        let mut shas: Vec<(i64, String)> = Vec::with_capacity(hashed.len());
        let mut held_back = std::collections::HashSet::new();
        for (i, sha) in hashed {
            let f = &mut ready[i];
            match sha {
                Ok(Some(sha)) => {
                    // Of the version queued, which held still: its upload need not hash it.
                    self.early.known(f.identity(), &sha);
                    f.sha256 = Some(sha.clone());
                    shas.push((f.id, sha));
                }
                // No longer the version queued (the watcher records the new one), or a
                // transient shortage of descriptors or memory: not now, and not failed.
                Ok(None) => {
                    held_back.insert(f.id);
                }
                // It cannot be checked for repeated content, so it cannot go: say why.
                Err(e) => {
                    let why = if e.kind() == std::io::ErrorKind::NotFound {
                        format!(
                            "{} was deleted before it could be uploaded; drop it again to ingest it",
                            f.rel_path
                        )
                    } else {
                        format!(
                            "cannot read {} to check it for repeated content: {e}; fix the file or its permissions and drop it again",
                            f.abs_path().display()
                        )
                    };
                    tracing::warn!(file = %f.rel_path, dataset, "{why}");
                    self.store.fail_file(f.id, &why).await?;
                    held_back.insert(f.id);
                }
            }
        }
        ready.retain(|f| !held_back.contains(&f.id));
        self.store.set_shas(&shas).await?;
        Ok(Some(ready))
    }
}

/// The largest file in flight that the batcher hashes for its twins (see
/// `Batcher::hash_carriers`): 64 MiB, a fraction of a second.
const CARRIER_HASH_MAX: i64 = 64 << 20;

/// At most this many such files are hashed per watch and pass (a fraction of a second for
/// small files); the others' twins wait for the next pass, or for the upload's hash.
const CARRIERS_PER_PASS: usize = 64;

/// How many groups `plan` can make of one page: one per (format, multiline JSON).
const GROUP_KEYS: u64 = 6;

/// The SHA-256 of a queued file, read from a descriptor checked against the queued identity
/// and bounded by the size queued (a file replaced or grown since is not hashed at all), going
/// on from what its early hash gave (`early`, of exactly that version: a whole hash is taken
/// as is, a partial one gone on from). `Ok(None)` when what is there now is not the version
/// queued, or it changed while it was read, or the system is short of descriptors or memory
/// (all pass: try again later); `Err` when it cannot be read.
pub fn sha256_queued(f: &FileRow, early: Option<Outcome>) -> std::io::Result<Option<String>> {
    let Some(opened) = open_queued(f)? else {
        return Ok(None);
    };
    let (mut state, from) = match early {
        Some(Outcome::Done(sha256)) => return Ok(Some(sha256)),
        Some(Outcome::HandedOver { at, state }) => (state, at),
        Some(Outcome::Failed | Outcome::Cancelled) | None => (Sha256::new(), 0),
    };
    if let Err(e) = disk::hash_range(&opened.file, from, f.identity().size, &mut state) {
        return not_now(e);
    }
    if !still_queued(&opened.file, f) {
        return Ok(None);
    }
    Ok(Some(format!("{:x}", state.finalize())))
}

/// `work` on each `(index, item)` in turn (an item is a file, with what its work needs), on
/// one blocking thread (the checks and the mappings read whole files). `None` as soon as
/// `shutdown` is cancelled, or if the thread panicked: a stop does not wait for the rest of
/// the page, and the caller seals none of it.
pub(crate) async fn each_blocking<T: Send + 'static, R: Send + 'static>(
    items: Vec<(usize, T)>,
    shutdown: &CancellationToken,
    work: impl Fn(T) -> R + Send + 'static,
) -> Option<Vec<(usize, R)>> {
    let stop = shutdown.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items {
            if stop.is_cancelled() {
                return None;
            }
            out.push((i, work(item)));
        }
        Some(out)
    })
    .await
    .unwrap_or(None)
}

/// The queued version of a file, opened as it was queued: `Ok(None)` when what is there now
/// is another version, or when the system is short of descriptors or memory (try later).
pub fn open_queued(f: &FileRow) -> std::io::Result<Option<disk::Opened>> {
    let opened = match disk::open_below(Path::new(&f.root), &f.abs_path(), Links::Anywhere) {
        Ok(opened) => opened,
        Err(e) => return not_now(e),
    };
    if opened.stat.kind != disk::Kind::File || opened.stat.identity != f.identity() {
        return Ok(None);
    }
    Ok(Some(opened))
}

/// Whether the opened `file` is still the version queued of `f` after a read of it: a write
/// meanwhile changed its mtime (or size), and the bytes read may mix versions.
pub fn still_queued(file: &std::fs::File, f: &FileRow) -> bool {
    file.metadata()
        .is_ok_and(|m| disk::Identity::of(&m) == f.identity())
}

/// A transient shortage is "not now" (`Ok(None)`); any other error stays one.
fn not_now<T>(e: std::io::Error) -> std::io::Result<Option<T>> {
    if disk::is_transient(&e) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// The batcher as a stage, with what its passes need.
struct Batching {
    batcher: Batcher,
    shutdown: CancellationToken,
    /// Set for `--once` (and never cleared): seal partial groups without waiting.
    flush: Arc<AtomicBool>,
}

impl Stage for Batching {
    const NAME: &'static str = "batcher";

    async fn pass(&mut self) -> Result<Next, StoreError> {
        let flush = self.flush.load(Ordering::SeqCst);
        self.batcher.pass(flush, &self.shutdown).await
    }
}

#[cfg(test)]
mod tests;
