//! `batchdrop status [--json] [--dataset D] [FILE|BATCH]`: what the daemon is doing, read from
//! its state database beside it. Without a target: per-dataset file counts by state, the
//! batches in flight with their upload progress, the latest batches that ended and the latest
//! failures with their reasons. With a file or batch: its whole history.
//!
//! The `--json` shape is a stable interface (documented in docs/commands.md, "status --json";
//! changes go to CHANGELOG.md): keys are only ever added. The text form escapes control
//! characters in names, reasons and messages: producers choose file names, and a newline or a
//! terminal escape in one must neither start a line of its own nor reach the operator's
//! terminal as a command (JSON escapes them itself). This module must not change the state or
//! talk to the platform.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    CommandError, Target, find_target, human_bytes, iso, not_found, open_state, pushed_batch,
};
use crate::config::{Config, StateBackend};
use crate::diagnostics::Diagnostics;
use crate::format::Format;
use crate::store::{BatchRow, BatchState, EventRow, FileRow, FileState, Store};
use crate::telemetry::escape_controls;

/// How many failures and ended batches the overview lists.
const RECENT: i64 = 10;

#[derive(Serialize)]
pub struct Overview {
    pub state_dir: String,
    pub daemon: Daemon,
    pub datasets: Vec<DatasetCounts>,
    pub in_flight: Vec<BatchJson>,
    pub recent_batches: Vec<BatchJson>,
    pub recent_failures: Vec<FailureJson>,
    /// Watches that take no files because the platform does not know their dataset.
    pub blocked: Vec<BlockedJson>,
    /// Per watch: the next batch due (when, why) and the daily batch budget used.
    pub schedule: Vec<super::status_schedule::ScheduleJson>,
}

#[derive(Serialize)]
pub struct BlockedJson {
    pub dataset: String,
    /// The configured watches (folder names) of that dataset, else the one that found it.
    pub watches: Vec<String>,
    /// The platform's refusal.
    pub reason: String,
    pub since: String,
    /// Catalog checks since, that found it still missing.
    pub checks: i64,
    pub next_check_at: String,
    /// What to do, in words.
    pub message: String,
}

#[derive(Serialize)]
pub struct Daemon {
    pub running: bool,
    pub pid: Option<i64>,
}

#[derive(Serialize)]
pub struct DatasetCounts {
    pub dataset: String,
    /// Every file state, 0 when none.
    pub files: BTreeMap<String, i64>,
}

#[derive(Serialize)]
pub struct BatchJson {
    /// The platform's id; null until create-batch answered.
    pub batch: Option<String>,
    /// Our id (`#N` on the command line).
    pub local_id: i64,
    pub dataset: String,
    pub format: Format,
    pub state: BatchState,
    pub files: i64,
    pub files_uploaded: i64,
    pub files_failed: i64,
    pub bytes: i64,
    pub bytes_uploaded: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub replaces: Option<Vec<String>>,
    pub replaced_by: Option<String>,
    /// Since when the batch is stuck on the platform (`stalled`, or processing past
    /// `max_processing_age`), when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck_since: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize)]
pub struct FailureJson {
    pub file: String,
    pub dataset: String,
    pub batch: Option<String>,
    pub reason: Option<String>,
    pub path: Option<String>,
    pub at: String,
}

#[derive(Serialize)]
pub struct FileJson {
    pub id: i64,
    pub file: String,
    pub folder: String,
    pub dataset: String,
    pub state: FileState,
    pub size: i64,
    pub sha256: Option<String>,
    pub batch: Option<String>,
    pub local_batch: Option<i64>,
    pub reason: Option<String>,
    pub sidecar: Option<String>,
    pub replaces: Option<Vec<String>>,
    pub path: Option<String>,
    pub discovered_at: String,
    pub updated_at: String,
}

#[derive(Serialize)]
pub struct EventJson {
    pub at: String,
    pub kind: String,
    pub detail: Option<String>,
    pub file_id: Option<i64>,
    pub local_batch: Option<i64>,
}

#[derive(Serialize)]
pub struct BatchHistory {
    pub kind: &'static str,
    /// The folder of the push's state, for a batch of `batchdrop push` (the daemon's state
    /// does not know those).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_state: Option<String>,
    pub batch: BatchJson,
    pub files: Vec<FileJson>,
    pub events: Vec<EventJson>,
}

#[derive(Serialize)]
pub struct FileHistory {
    pub kind: &'static str,
    pub file: String,
    /// Every record of that file name, newest first, each with its batch and events.
    pub records: Vec<FileRecord>,
}

#[derive(Serialize)]
pub struct FileRecord {
    #[serde(flatten)]
    pub file: FileJson,
    pub batch_state: Option<BatchState>,
    pub replaced_by: Option<String>,
    /// What the platform's diagnostics said about the file's batch (as in its receipt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Diagnostics>,
    pub events: Vec<EventJson>,
}

pub async fn run(
    config: &Config,
    json: bool,
    dataset: Option<&str>,
    target: Option<&str>,
) -> Result<u8, CommandError> {
    let state = open_state(config).await?;
    let out = match (target, &state) {
        (None, _) => {
            let o = overview(state.as_ref(), config, dataset).await?;
            // Fleet mode: the instances sharing the database, beside this state dir's view.
            let fleet = match &config.state {
                StateBackend::Postgres(pg) => Some(super::status_fleet::fleet(pg).await?),
                StateBackend::Sqlite => None,
            };
            match (json, fleet) {
                (true, None) => serde_json::to_string_pretty(&o).expect("json"),
                (true, Some(fleet)) => serde_json::to_string_pretty(
                    &serde_json::json!({ "overview": o, "fleet": fleet }),
                )
                .expect("json"),
                (false, None) => render_overview(&o),
                (false, Some(fleet)) => {
                    format!(
                        "{}\n{}",
                        render_overview(&o),
                        super::status_fleet::render(&fleet)
                    )
                }
            }
        }
        (Some(arg), None) => pushed_batch_history(config, arg, dataset)
            .await?
            .map(|h| render_batch_history(&h, json))
            .ok_or_else(|| not_found(config, arg))?,
        (Some(arg), Some(store)) => match find_target(store, config, arg, dataset).await? {
            None => pushed_batch_history(config, arg, dataset)
                .await?
                .map(|h| render_batch_history(&h, json))
                .ok_or_else(|| not_found(config, arg))?,
            Some(Target::Batch(b)) => render_batch_history(&batch_history(store, &b).await?, json),
            Some(Target::File { name, rows }) => {
                let h = file_history(store, name, rows).await?;
                if json {
                    serde_json::to_string_pretty(&h).expect("json")
                } else {
                    render_file(&h)
                }
            }
        },
    };
    println!("{out}");
    if let Some(s) = state {
        s.close().await;
    }
    Ok(0)
}

/// The overview; `store` is `None` before the daemon's first run (every count 0).
pub async fn overview(
    store: Option<&Store>,
    config: &Config,
    dataset: Option<&str>,
) -> Result<Overview, CommandError> {
    let mut o = Overview {
        state_dir: config.state_dir.display().to_string(),
        daemon: daemon_info(config),
        datasets: Vec::new(),
        in_flight: Vec::new(),
        recent_batches: Vec::new(),
        recent_failures: Vec::new(),
        blocked: Vec::new(),
        schedule: Vec::new(),
    };
    let keep = |d: &str| dataset.is_none_or(|x| x == d);
    let mut datasets: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    // Configured datasets show even before their first file.
    for w in &config.watches {
        if keep(&w.dataset) {
            datasets.entry(w.dataset.clone()).or_default();
        }
    }
    if let Some(d) = dataset {
        datasets.entry(d.to_owned()).or_default();
    }
    let counts = match store {
        Some(s) => s.file_counts().await?,
        None => Vec::new(),
    };
    for (d, state, n) in counts {
        if keep(&d) {
            *datasets
                .entry(d)
                .or_default()
                .entry(state.as_str().to_owned())
                .or_default() += n;
        }
    }
    o.datasets = datasets
        .into_iter()
        .map(|(dataset, mut files)| {
            for s in FileState::ALL {
                files.entry(s.as_str().to_owned()).or_insert(0);
            }
            DatasetCounts { dataset, files }
        })
        .collect();
    let Some(store) = store else {
        return Ok(o);
    };
    for b in store.blocked_datasets().await? {
        if !keep(&b.dataset) {
            continue;
        }
        let mut watches: Vec<String> = config
            .watches
            .iter()
            .filter(|w| w.dataset == b.dataset)
            .map(|w| w.name.clone())
            .collect();
        if watches.is_empty() {
            watches.push(b.watch.clone());
        }
        o.blocked.push(BlockedJson {
            message: crate::blocked::describe(&b),
            dataset: b.dataset,
            watches,
            reason: b.reason,
            since: iso(b.since),
            checks: b.checks,
            next_check_at: iso(b.next_check_at),
        });
    }
    o.schedule = super::status_schedule::schedule(store, &config.watches, dataset).await?;
    for b in store.batches_in_flight().await? {
        if keep(&b.dataset) {
            o.in_flight.push(batch_json(store, &b).await?);
        }
    }
    for b in store.recent_batches(RECENT * 5).await? {
        if keep(&b.dataset) && o.recent_batches.len() < RECENT as usize {
            o.recent_batches.push(batch_json(store, &b).await?);
        }
    }
    for f in store.recent_failures(RECENT * 5).await? {
        if keep(&f.dataset) && o.recent_failures.len() < RECENT as usize {
            let batch = match f.batch_id {
                Some(id) => Some(store.batch(id).await?),
                None => None,
            };
            o.recent_failures.push(FailureJson {
                file: f.rel_path.clone(),
                dataset: f.dataset.clone(),
                batch: batch
                    .as_ref()
                    .and_then(|b| b.remote_id().map(str::to_owned)),
                reason: f
                    .reason
                    .clone()
                    .or_else(|| batch.as_ref().and_then(batch_errors)),
                path: f.final_path.clone(),
                at: iso(f.updated_at),
            });
        }
    }
    Ok(o)
}

/// A failed batch's errors as the platform reported them (or our last error), for a file that
/// failed with its batch and has no reason of its own.
fn batch_errors(b: &BatchRow) -> Option<String> {
    let outcome = b.outcome.clone().unwrap_or_default();
    let errors: Vec<String> = outcome
        .errors()
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
        .collect();
    if errors.is_empty() {
        b.last_error.clone()
    } else {
        Some(format!("batch {} failed: {}", b.label(), errors.join("; ")))
    }
}

/// Whether the process named in the daemon's lock file is alive.
fn daemon_info(config: &Config) -> Daemon {
    let pid = std::fs::read_to_string(config.state_dir.join("batchdrop.lock"))
        .ok()
        .and_then(|s| s.trim().strip_prefix("pid ")?.trim().parse::<i64>().ok());
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let running = pid.is_some_and(|p| p > 0 && unsafe { libc::kill(p as i32, 0) } == 0);
    Daemon { running, pid }
}

pub async fn batch_json(store: &Store, b: &BatchRow) -> Result<BatchJson, CommandError> {
    let p = store.batch_progress(b.id).await?;
    Ok(BatchJson {
        batch: b.remote_id().map(str::to_owned),
        local_id: b.id,
        dataset: b.dataset.clone(),
        format: b.format,
        state: b.state(),
        files: p.files,
        files_uploaded: p.files_uploaded,
        files_failed: p.files_failed,
        bytes: p.bytes,
        bytes_uploaded: p.bytes_uploaded,
        attempts: b.attempts,
        last_error: b.last_error.clone(),
        replaces: b.replay.as_ref().map(|p| p.0.clone()),
        replaced_by: b.replaced_by.clone(),
        stuck_since: store.stuck_since(b.id).await?.map(iso),
        created_at: iso(b.created_at),
        updated_at: iso(b.updated_at),
    })
}

fn file_json(f: &FileRow, batch: Option<&BatchRow>) -> FileJson {
    FileJson {
        id: f.id,
        file: f.rel_path.clone(),
        folder: f.root.clone(),
        dataset: f.dataset.clone(),
        state: f.state,
        size: f.size,
        sha256: f.sha256.clone(),
        batch: batch.and_then(|b| b.remote_id().map(str::to_owned)),
        local_batch: f.batch_id,
        reason: f.reason.clone(),
        sidecar: f.sidecar.clone(),
        replaces: f.replay.as_ref().map(|p| p.0.clone()),
        path: f.final_path.clone(),
        discovered_at: iso(f.discovered_at),
        updated_at: iso(f.updated_at),
    }
}

fn event_json(e: &EventRow) -> EventJson {
    EventJson {
        at: iso(e.at),
        kind: e.kind.clone(),
        detail: e.detail.clone(),
        file_id: e.file_id,
        local_batch: e.batch_id,
    }
}

pub async fn batch_history(store: &Store, b: &BatchRow) -> Result<BatchHistory, CommandError> {
    let files = store
        .batch_files(b.id)
        .await?
        .iter()
        .map(|f| file_json(f, Some(b)))
        .collect();
    let events = store
        .events_for_batch(b.id)
        .await?
        .iter()
        .map(event_json)
        .collect();
    Ok(BatchHistory {
        kind: "batch",
        push_state: None,
        batch: batch_json(store, b).await?,
        files,
        events,
    })
}

/// The history of a batch of `batchdrop push` whose platform id is `arg` (of `dataset`, if
/// given), from that push's state.
async fn pushed_batch_history(
    config: &Config,
    arg: &str,
    dataset: Option<&str>,
) -> Result<Option<BatchHistory>, CommandError> {
    let Some((store, b, dir)) = pushed_batch(config, arg).await? else {
        return Ok(None);
    };
    let history = if dataset.is_none_or(|d| d == b.dataset) {
        batch_history(&store, &b).await.map(|mut h| {
            h.push_state = Some(dir.display().to_string());
            Some(h)
        })
    } else {
        Ok(None)
    };
    store.close().await;
    history
}

fn render_batch_history(h: &BatchHistory, json: bool) -> String {
    if json {
        serde_json::to_string_pretty(h).expect("json")
    } else {
        render_batch(h)
    }
}

pub async fn file_history(
    store: &Store,
    name: String,
    rows: Vec<FileRow>,
) -> Result<FileHistory, CommandError> {
    let mut records = Vec::new();
    for f in rows {
        let batch = match f.batch_id {
            Some(id) => Some(store.batch(id).await?),
            None => None,
        };
        let events = store
            .events_for_file(f.id)
            .await?
            .iter()
            .map(event_json)
            .collect();
        records.push(FileRecord {
            file: file_json(&f, batch.as_ref()),
            batch_state: batch.as_ref().map(|b| b.state()),
            replaced_by: batch.as_ref().and_then(|b| b.replaced_by.clone()),
            diagnostics: batch
                .as_ref()
                .and_then(|b| b.outcome.as_ref()?.diagnostics())
                .filter(|d| !d.is_empty()),
            events,
        });
    }
    Ok(FileHistory {
        kind: "file",
        file: name,
        records,
    })
}

fn batch_line(b: &BatchJson) -> String {
    let mut s = format!(
        "{} ({}, #{}) {}: {}/{} files, {} of {}",
        b.batch.as_deref().unwrap_or("not created yet"),
        b.dataset,
        b.local_id,
        b.state,
        b.files_uploaded,
        b.files,
        human_bytes(b.bytes_uploaded),
        human_bytes(b.bytes)
    );
    if b.files_failed > 0 {
        s += &format!(", {} failed", b.files_failed);
    }
    if let Some(r) = &b.replaces {
        s += &format!(", replaces {}", r.join(", "));
    }
    if let Some(by) = &b.replaced_by {
        s += &format!(", replaced by {by}");
    }
    if b.attempts > 0 {
        s += &format!(", attempt {}", b.attempts + 1);
    }
    if let Some(since) = &b.stuck_since {
        s += &format!(
            "\n      STUCK on the platform since {since}: `batchdrop abort {0}` fails its files, then `batchdrop retry {0}` sends them again",
            b.batch.as_deref().unwrap_or("?")
        );
    }
    if let Some(e) = &b.last_error
        && b.state != BatchState::Success
    {
        s += &format!("\n      last error: {}", escape_controls(e));
    }
    s
}

pub fn render_overview(o: &Overview) -> String {
    let mut out = format!(
        "state {}: daemon {}\n",
        o.state_dir,
        match (o.daemon.running, o.daemon.pid) {
            (true, Some(p)) => format!("running (pid {p})"),
            _ => "not running".into(),
        }
    );
    for d in &o.datasets {
        let counts: Vec<String> = d
            .files
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        out += &format!(
            "dataset {}: {}\n",
            d.dataset,
            if counts.is_empty() {
                "no files yet".into()
            } else {
                counts.join(", ")
            }
        );
        for s in o.schedule.iter().filter(|s| s.dataset == d.dataset) {
            out += &super::status_schedule::render(s);
        }
    }
    for b in &o.blocked {
        out += &format!(
            "BLOCKED since {}: {} (watches: {}). The platform said: {}\n",
            b.since,
            b.message,
            b.watches.join(", "),
            b.reason
        );
    }
    out += &format!("in flight: {}\n", o.in_flight.len());
    for b in &o.in_flight {
        out += &format!("  {}\n", batch_line(b));
    }
    if !o.recent_batches.is_empty() {
        out += "recent batches:\n";
        for b in &o.recent_batches {
            out += &format!("  {}\n", batch_line(b));
        }
    }
    if !o.recent_failures.is_empty() {
        out += "recent failures:\n";
        for f in &o.recent_failures {
            out += &format!(
                "  {} {} ({}){}: {}\n",
                f.at,
                escape_controls(&f.file),
                f.dataset,
                f.batch
                    .as_deref()
                    .map(|b| format!(" batch {b}"))
                    .unwrap_or_default(),
                escape_controls(f.reason.as_deref().unwrap_or("no reason recorded"))
            );
        }
    }
    out.trim_end().to_owned()
}

fn render_events(out: &mut String, events: &[EventJson]) {
    for e in events {
        *out += &format!(
            "    {} {}{}\n",
            e.at,
            e.kind,
            e.detail
                .as_deref()
                .map(|d| format!(": {}", escape_controls(d)))
                .unwrap_or_default()
        );
    }
}

fn render_batch(h: &BatchHistory) -> String {
    let mut out = format!("batch {}\n", batch_line(&h.batch));
    if let Some(dir) = &h.push_state {
        out += &format!("  pushed by `batchdrop push` (state {dir})\n");
    }
    out += "  files:\n";
    for f in &h.files {
        out += &format!(
            "    {} {} ({}){}\n",
            escape_controls(&f.file),
            f.state,
            human_bytes(f.size),
            f.reason
                .as_deref()
                .map(|r| format!(": {}", escape_controls(r)))
                .unwrap_or_default()
        );
    }
    out += "  history:\n";
    render_events(&mut out, &h.events);
    out.trim_end().to_owned()
}

/// A batch's diagnostics under one of its files: codes, sample rows, the files with the rest.
fn render_diagnostics(out: &mut String, d: &Diagnostics) {
    let codes: Vec<String> = d
        .error_codes
        .iter()
        .map(|c| match c.records {
            Some(n) => format!("{} ({n} records)", c.code),
            None => c.code.clone(),
        })
        .collect();
    if !codes.is_empty() {
        *out += &format!("    batch errors: {}\n", codes.join(", "));
    }
    for row in &d.failed_rows_sample {
        *out += &format!(
            "    failing row: {} {}{}\n",
            row.code,
            escape_controls(&row.message),
            row.record
                .as_deref()
                .map(|r| format!(" in {r:?}"))
                .unwrap_or_default()
        );
    }
    if !d.error_files.is_empty() {
        *out += &format!(
            "    error files (the platform's, all rows): {}\n",
            escape_controls(&d.error_files.join(", "))
        );
    }
}

fn render_file(h: &FileHistory) -> String {
    let mut out = format!(
        "file {}: {} record(s), newest first\n",
        escape_controls(&h.file),
        h.records.len()
    );
    for r in &h.records {
        let f = &r.file;
        out += &format!(
            "  #{} in {} → dataset {}: {}{}{}\n",
            f.id,
            f.folder,
            f.dataset,
            f.state,
            f.batch
                .as_deref()
                .map(|b| format!(
                    ", batch {b} ({})",
                    r.batch_state.map(BatchState::as_str).unwrap_or("?")
                ))
                .unwrap_or_default(),
            r.replaced_by
                .as_deref()
                .map(|b| format!(", replaced by {b}"))
                .unwrap_or_default()
        );
        if let Some(reason) = &f.reason {
            out += &format!("    reason: {}\n", escape_controls(reason));
        }
        if let Some(p) = &f.path {
            out += &format!("    now at: {}\n", escape_controls(p));
        }
        if let Some(d) = &r.diagnostics {
            render_diagnostics(&mut out, d);
        }
        if let Some(s) = &f.sidecar {
            out += &format!(
                "    sidecar: {}{}\n",
                escape_controls(s),
                f.replaces
                    .as_ref()
                    .map(|r| format!(" (replaces {})", r.join(", ")))
                    .unwrap_or_default()
            );
        }
        render_events(&mut out, &r.events);
    }
    out.trim_end().to_owned()
}
