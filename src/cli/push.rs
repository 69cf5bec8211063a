//! `batchdrop push FILE... --dataset D [--format F] [--replaces X]... [--no-wait]`: one-shot
//! ingestion of the named files in one batch, for scripts and CI, through the daemon's own
//! uploader (create, PUT or chunks with resume, COMPLETE, retries with backoff, Catalog polling).
//!
//! Each push keeps its queue in its own state database, `state_dir/push/KEY/`, with its own
//! lock, so it runs beside a daemon; KEY is derived from the dataset, format, predecessors and
//! the files' identities, so running the same push again (after a crash, a kill, or
//! `--no-wait`) resumes that push rather than starting another: an unfinished batch is
//! continued, a successful one is reported, failed files are tried again, and one reverted
//! since (`batchdrop revert` records it here) is refused: the files go again only once the
//! operator deletes that state. The files stay where they are: a push reads them and never
//! moves them.
//!
//! No content goes twice into the dataset (docs/duplicates.md): a file whose content the
//! daemon ingested is reported as a duplicate (naming the daemon's batch) and not sent; one
//! whose content is in a batch of the daemon's in flight waits for that batch's outcome; of
//! several files of this push with the same content, one is sent and the others wait for its
//! outcome (then duplicates of it, or sent after all if it failed). A file whose content
//! another push (another KEY: other files beside it) ingested is a duplicate too; what another
//! push has in flight is not waited for, since nothing says that push will be run again to
//! finish it. The daemon learns nothing of pushes: a push reads the daemon's state and the
//! other pushes', and the daemon reads no push's.
//!
//! Exit status: 0 when every file was ingested (or is a duplicate), 4 when a batch (or a
//! file) failed, 1 when the dataset does not exist (nothing is failed then: the same push
//! again resumes). This module must not write to the daemon's state or another push's: it
//! only reads them, to resolve `--replaces` and to hold back content they hold.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::push_repeats::{hold_back_repeats, other_pushes};
use super::{CommandError, Connection, human_bytes};
use crate::config::{Config, Format, RECOMMENDED_MAX_FILES};
use crate::replay::{self, Sidecar};
use crate::store::{
    BatchProgress, BatchRow, BatchState, Dedupe, FileRow, FileState, NewBatch, NewFile, Store,
    StoreError,
};
use crate::uploader::Uploader;
use crate::watcher::{Identity, name_problem};

/// The `watch` name of a push's files in its own state database.
pub(super) const WATCH: &str = "push";

pub struct PushArgs {
    pub files: Vec<PathBuf>,
    pub dataset: String,
    pub format: Option<String>,
    pub replaces: Vec<String>,
    pub no_wait: bool,
}

struct Input {
    path: PathBuf,
    name: String,
    identity: Identity,
}

pub async fn run(config: &Config, args: PushArgs) -> Result<u8, CommandError> {
    let dataset = args.dataset.trim().to_owned();
    if dataset.is_empty() {
        return Err(CommandError::Usage("--dataset is empty".into()));
    }
    let inputs = inputs(&args.files)?;
    let format = format_of(&inputs, args.format.as_deref())?;

    let replay = if args.replaces.is_empty() {
        None
    } else {
        // Names resolve against the daemon's state; without one, only batch ids can be given
        // (resolved against an empty state, which passes them on to the platform).
        let main = match Store::open_for_command(&config.state_dir).await? {
            Some(s) => s,
            None => Store::open_shared(&config.state_dir.join("push").join("empty")).await?,
        };
        let sc = Sidecar {
            replaces: args.replaces.clone(),
            reason: None,
        };
        let r = replay::resolve(
            &main,
            &dataset,
            &inputs[0].name,
            &replay::Origin::PushOption,
            None,
            &sc,
        )
        .await;
        main.close().await;
        Some(r.map_err(|e| CommandError::Usage(e.to_string()))?)
    };

    let key = push_key(
        &dataset,
        format,
        replay
            .as_ref()
            .map(|r| r.predecessors.to_string())
            .as_deref(),
        &inputs,
    );
    let dir = config.state_dir.join("push").join(&key);
    let store = match Store::open_exclusive(&dir, config.allow_network_state_dir).await {
        Ok(s) => s,
        Err(StoreError::Locked { holder, .. }) => {
            return Err(CommandError::Refused(format!(
                "the same push (of these files into dataset {dataset}) is already running ({holder}, state {}); wait for it to end",
                dir.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let conn = Connection::open(config).await?;
    if let Some(emu) = &conn.embedded {
        let _ = emu.ensure_dataset(&dataset, &dataset).await;
    }
    // A block left by an earlier run of this push (the dataset was missing) is checked again.
    store.unblock_dataset(&dataset).await?;
    // The daemon's state, read only: what it ingested, or is ingesting, is not pushed again.
    let beside = match Store::open_for_command(&config.state_dir).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "warning: cannot read the daemon's state in {} ({e}); this push is not checked against the content the daemon ingested",
                config.state_dir.display()
            );
            None
        }
    };
    let pushes = other_pushes(&config.state_dir.join("push"), &dir);
    let result = drive(
        config,
        &store,
        beside.as_ref(),
        &pushes,
        &conn,
        &dataset,
        format,
        replay,
        &inputs,
        args.no_wait,
    )
    .await;
    if let Some(b) = beside {
        b.close().await;
    }
    conn.close().await;
    store.close().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    config: &Config,
    store: &Store,
    beside: Option<&Store>,
    pushes: &[PathBuf],
    conn: &Connection,
    dataset: &str,
    format: Format,
    replay: Option<crate::store::ReplayRequest>,
    inputs: &[Input],
    no_wait: bool,
) -> Result<u8, CommandError> {
    for i in inputs {
        let root = i
            .path
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let f = NewFile {
            watch: WATCH.into(),
            dataset: dataset.into(),
            format,
            multiline_json: false,
            root,
            rel_path: i.name.clone(),
            dev: i.identity.dev as i64,
            ino: i.identity.ino as i64,
            size: i.identity.size as i64,
            mtime_ns: i.identity.mtime_ns,
            raw_path: None,
        };
        store.record_ready_with(&f, replay.as_ref()).await?;
    }
    if replay.is_none() {
        hold_back_repeats(store, beside, pushes, dataset).await?;
    }
    let mut batch = match seal(store, config.sandbox_of(dataset), dataset, format).await? {
        Some(id) => store.batch(id).await?,
        None => match store.latest_batch().await? {
            Some(b) => {
                if b.state() == BatchState::Success {
                    println!(
                        "{} success: these files were already ingested into dataset {dataset} by an earlier push (state {})",
                        b.label(),
                        state_folder(store).display()
                    );
                    print_duplicates(store).await?;
                    return Ok(0);
                }
                if b.state() == BatchState::Reverted {
                    // Sending the files again is a decision the operator made the revert to
                    // undo; a script that pushes on a schedule must not make it for them.
                    return Err(CommandError::Refused(format!(
                        "batch {} of an earlier push of these files (state {}) was reverted: its data is no longer in dataset {dataset}, and nothing is sent again; to ingest these files again, delete that folder and push again",
                        b.label(),
                        state_folder(store).display()
                    )));
                }
                b
            }
            None if print_duplicates(store).await? > 0 => return Ok(0),
            None => {
                return Err(CommandError::Refused(format!(
                    "nothing to push: the push state {} knows these files but has no batch for them; delete that folder and push again",
                    state_folder(store).display()
                )));
            }
        },
    };
    let mut failures = Vec::new();
    loop {
        let Some(batch_ended) =
            follow(config, store, conn, dataset, format, batch, no_wait).await?
        else {
            return Ok(0); // --no-wait: the platform accepted the batch
        };
        if let Err(e) = report(store, dataset, &batch_ended).await? {
            failures.push(e);
        }
        // Copies of its content in this push waited for its outcome (see `Sealed::waiting`):
        // duplicates of it now, or a batch of their own if it failed.
        store.release_waiting().await?;
        match seal(store, config.sandbox_of(dataset), dataset, format).await? {
            Some(id) => batch = store.batch(id).await?,
            None => break,
        }
    }
    print_duplicates(store).await?;
    if failures.is_empty() {
        Ok(0)
    } else {
        Err(CommandError::IngestFailed(failures.join("\n")))
    }
}

/// Drives one batch until it ends (`None` when `--no-wait` let go of it once the platform
/// accepted it).
#[allow(clippy::too_many_arguments)]
async fn follow(
    config: &Config,
    store: &Store,
    conn: &Connection,
    dataset: &str,
    format: Format,
    mut batch: BatchRow,
    no_wait: bool,
) -> Result<Option<BatchRow>, CommandError> {
    let wake = Arc::new(Notify::new());
    let uploader = Uploader::new(
        store.clone(),
        conn.api.clone(),
        config.upload.clone(),
        wake.clone(),
        Arc::new(Notify::new()),
        Arc::new(std::sync::RwLock::new(crate::uploader::outcomes_by_watch(
            &config.watches,
        ))),
        // `push` drives its own batch in its own SQLite state, never a fleet's.
        None,
        // Nothing settles before a push: its files are hashed as they are sent.
        crate::early_hash::EarlyHashes::default(),
    );
    let token = CancellationToken::new();
    let task = tokio::spawn(uploader.run(token.clone(), config.shutdown_grace));
    let mut progress = Progress::new();
    let ended = loop {
        let p = store.batch_progress(batch.id).await?;
        progress.show(&batch, &p);
        match batch.state() {
            BatchState::Abandoned => {
                // The platform lost or refused the batch midway: the uploader put its files
                // back in the queue; they travel in a new batch, as in the daemon.
                match seal(store, config.sandbox_of(dataset), dataset, format).await? {
                    Some(id) => {
                        batch = store.batch(id).await?;
                        wake.notify_one();
                        continue;
                    }
                    None => break false,
                }
            }
            BatchState::Success
            | BatchState::Failed
            | BatchState::Aborted
            | BatchState::Reverted => break true,
            BatchState::Processing if no_wait => break false,
            _ => {}
        }
        if let Some(b) = store.blocked_datasets().await?.first() {
            // Nobody lifts a push's block: say what to do, and let a later run resume.
            token.cancel();
            let _ = task.await;
            progress.finish();
            return Err(CommandError::Platform(format!(
                "dataset {dataset} does not exist (or is not visible in the configured sandbox), so nothing was pushed and nothing failed: create it or pass the right --dataset, then run the same push again. The platform said: {}",
                b.reason
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        batch = store.batch(batch.id).await?;
    };
    token.cancel();
    let _ = task.await;
    progress.finish();

    let label = batch.label();
    if !ended {
        if no_wait && batch.state() == BatchState::Processing {
            println!(
                "{label} processing: the platform accepted the batch; run the same push again to wait for its outcome"
            );
            return Ok(None);
        }
        return Err(CommandError::IngestFailed(format!(
            "batch {label} ended {} without its files; see `{}`",
            batch.state(),
            state_folder(store).display()
        )));
    }
    Ok(Some(batch))
}

/// Records the end of a batch's files and prints its line; `Err` holds what failed.
async fn report(
    store: &Store,
    dataset: &str,
    batch: &BatchRow,
) -> Result<Result<(), String>, CommandError> {
    let label = batch.label();
    let files = store.batch_files(batch.id).await?;
    let succeeded = batch.state() == BatchState::Success;
    for f in &files {
        if !f.finalized {
            let ok = succeeded && matches!(f.state, FileState::Uploaded | FileState::Done);
            store
                .mark_finalized(
                    f.id,
                    if ok {
                        FileState::Done
                    } else {
                        FileState::Failed
                    },
                    &format!("push ended: batch {label} {}", batch.state()),
                )
                .await?;
        }
    }
    let files = store.batch_files(batch.id).await?;
    let outcome: serde_json::Value = batch
        .outcome
        .as_ref()
        .map(|o| o.0.clone())
        .unwrap_or_default();
    let m = &outcome["metrics"];
    let count = |k: &str| m[k].as_u64().unwrap_or(0);
    let failed: Vec<&FileRow> = files
        .iter()
        .filter(|f| f.state == FileState::Failed)
        .collect();
    // The batch's errors come once, below; a file that failed with the batch carries the
    // daemon's advice (its failed folder, `retry`), which a push replaces with its own.
    let with_batch = |f: &FileRow| {
        f.reason
            .as_deref()
            .is_some_and(|r| crate::outcome::is_failed_with_batch(r, &label))
    };
    let failed_files: Vec<String> = failed
        .iter()
        .map(|f| {
            let why = match f.reason.as_deref() {
                Some(_) if with_batch(f) => "failed with the batch",
                Some(reason) => reason,
                None => "failed",
            };
            crate::telemetry::escape_controls(&format!("{}: {why}", f.abs_path().display()))
                .into_owned()
        })
        .collect();
    let with_batch_count = failed.iter().filter(|f| with_batch(f)).count();
    if succeeded && failed_files.is_empty() {
        println!(
            "{label} success: {} file(s) into dataset {dataset}, {} records in, {} ingested, {} failed{}",
            files.len(),
            count("inputRecordCount"),
            count("outputRecordCount"),
            count("failedRecordCount"),
            batch
                .replay
                .as_ref()
                .map(|r| format!("; replaces {r}"))
                .unwrap_or_default()
        );
        return Ok(Ok(()));
    }
    let errors: Vec<String> = outcome["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {}",
                e["code"].as_str().unwrap_or("?"),
                e["description"].as_str().unwrap_or("")
            )
        })
        .chain(batch.last_error.clone().filter(|_| !succeeded))
        .collect();
    let mut msg = format!("batch {label} {} (dataset {dataset})", batch.state());
    if !errors.is_empty() {
        msg += &format!(": {}", errors.join("; "));
    }
    if !failed_files.is_empty() {
        msg += &format!("\nfailed files:\n  {}", failed_files.join("\n  "));
    }
    msg += if with_batch_count > 1 {
        "\nthe platform does not say which file held the bad rows: fix the file at fault and push again"
    } else {
        "\nfix the files and push again"
    };
    msg += &format!(
        " (this push's state is in {})",
        state_folder(store).display()
    );
    Ok(Err(msg))
}

/// Prints a line per duplicate of this push (on stdout, like the batches' lines); returns how
/// many.
async fn print_duplicates(store: &Store) -> Result<usize, CommandError> {
    let mut n = 0;
    for f in store.files_in_state(WATCH, FileState::Duplicate).await? {
        let why = match (&f.reason, f.duplicate_of) {
            (Some(reason), _) => reason.clone(),
            (None, Some(of)) => {
                let earlier = store.file(of).await?;
                let batch = match earlier.as_ref().and_then(|e| e.batch_id) {
                    Some(id) => Some(store.batch(id).await?.label()),
                    None => None,
                };
                format!(
                    "the same content as {} of this push{}; not pushed twice",
                    earlier.map(|e| e.rel_path).unwrap_or_default(),
                    batch
                        .map(|b| format!(", ingested in batch {b}"))
                        .unwrap_or_default()
                )
            }
            (None, None) => "the same content is already in the dataset".into(),
        };
        println!(
            "{}",
            crate::telemetry::escape_controls(&format!(
                "{} duplicate: {why}",
                f.abs_path().display()
            ))
        );
        n += 1;
    }
    Ok(n)
}

/// Seals the push's queued files into one batch; `None` when none are queued.
async fn seal(
    store: &Store,
    sandbox: &str,
    dataset: &str,
    format: Format,
) -> Result<Option<i64>, StoreError> {
    let ready = store.ready_files(WATCH, i64::MAX).await?;
    if ready.is_empty() {
        return Ok(None);
    }
    let ids: Vec<i64> = ready.iter().map(|f| f.id).collect();
    let batch = NewBatch {
        watch: WATCH,
        dataset,
        sandbox,
        format,
        multiline_json: false,
        replay: ready.iter().find_map(|f| f.replay.as_ref()),
    };
    Ok(store
        .seal_batch(&batch, &ids, Dedupe::OneCopy)
        .await?
        .batch_id)
}

fn inputs(files: &[PathBuf]) -> Result<Vec<Input>, CommandError> {
    if files.len() as u64 > RECOMMENDED_MAX_FILES {
        return Err(CommandError::Usage(format!(
            "{} files in one push: a pushed batch holds at most {RECOMMENDED_MAX_FILES} (the platform's recommended limit); push them in several runs",
            files.len()
        )));
    }
    let mut out: Vec<Input> = Vec::new();
    for p in files {
        let cannot_read = |e: std::io::Error| {
            CommandError::Io(format!("cannot read {}: {e}; check the path", p.display()))
        };
        // What it is first: a pipe (`/dev/stdin`) has no path to canonicalize.
        let meta = std::fs::metadata(p).map_err(cannot_read)?;
        if !meta.is_file() {
            // A push reads its files more than once (to hash, to upload, again after a
            // restart): a pipe's bytes would be gone, a folder is not one file.
            return Err(CommandError::Usage(format!(
                "{} is {}; push takes regular files: write the data to a file first",
                p.display(),
                crate::disk::Kind::of_type(meta.file_type()).describe()
            )));
        }
        let path = std::fs::canonicalize(p).map_err(cannot_read)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(problem) = name_problem(&name) {
            return Err(CommandError::Usage(problem));
        }
        if let Some(other) = out.iter().find(|i| i.name == name) {
            return Err(CommandError::Usage(format!(
                "{} and {} have the same name, which a batch cannot hold twice; push them separately",
                other.path.display(),
                path.display()
            )));
        }
        out.push(Input {
            identity: Identity {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            },
            path,
            name,
        });
    }
    Ok(out)
}

fn format_of(inputs: &[Input], given: Option<&str>) -> Result<Format, CommandError> {
    if let Some(g) = given {
        return Format::parse(g).ok_or_else(|| {
            CommandError::Usage(format!(
                "--format {g:?} is not a format: use json, csv or parquet"
            ))
        });
    }
    let mut found: Option<Format> = None;
    for i in inputs {
        let f = Format::from_extension(&i.name).ok_or_else(|| {
            CommandError::Usage(format!(
                "cannot tell the format of {}: name it *.json, *.csv or *.parquet, or pass --format",
                i.path.display()
            ))
        })?;
        match found {
            Some(prev) if prev != f => {
                return Err(CommandError::Usage(format!(
                    "{} is {} but other files are {}: one batch has one format; push them separately",
                    i.path.display(),
                    f.as_str(),
                    prev.as_str()
                )));
            }
            _ => found = Some(f),
        }
    }
    Ok(found.expect("at least one file"))
}

fn push_key(dataset: &str, format: Format, replay: Option<&str>, inputs: &[Input]) -> String {
    let mut h = Sha256::new();
    h.update(dataset.as_bytes());
    h.update([0]);
    h.update(format.as_str().as_bytes());
    h.update([0]);
    h.update(replay.unwrap_or("").as_bytes());
    for i in inputs {
        h.update([0]);
        h.update(i.path.to_string_lossy().as_bytes());
        let id = i.identity;
        h.update(format!("|{}|{}|{}|{}", id.dev, id.ino, id.size, id.mtime_ns).as_bytes());
    }
    format!("{:x}", h.finalize())[..16].to_owned()
}

/// A progress bar on a terminal; plain lines (on stderr) when something changed otherwise.
struct Progress {
    bar: ProgressBar,
    tty: bool,
    last: String,
}

impl Progress {
    fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {bytes}/{total_bytes} {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            tty,
            last: String::new(),
        }
    }

    fn show(&mut self, b: &BatchRow, p: &BatchProgress) {
        let line = format!(
            "batch {}: {}, {}/{} files, {} of {}",
            b.label(),
            b.state(),
            p.files_uploaded,
            p.files,
            human_bytes(p.bytes_uploaded),
            human_bytes(p.bytes)
        );
        if self.tty {
            self.bar.set_length(p.bytes.max(0) as u64);
            self.bar.set_position(p.bytes_uploaded.max(0) as u64);
            self.bar.set_message(format!("{} {}", b.label(), b.state()));
        } else if line != self.last {
            eprintln!("{line}");
        }
        self.last = line;
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The folder of this push's state (`state_dir/push/KEY/`): what the operator deletes to start
/// the push afresh.
fn state_folder(store: &Store) -> &std::path::Path {
    store.path().parent().unwrap_or(store.path())
}
