//! The second step of processing a batch: reading its files, off the async threads, every
//! record through the plan's check; failures grouped per code and field, good rows copied
//! (partial ingestion) and upsert rows captured. A big JSON Lines file is read in parts on
//! several threads, their results merged in order into what reading it whole gives. It reads
//! files and writes the copies; it must not touch the database (that is `record`).

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::AppState;
use crate::codes::Code;
use crate::formats::{
    AcceptAll, Cancelled, GoodWriter, PartOutcome, Reader, RecordCheck, RowFailure, line_parts,
    renumber, splits,
};
use crate::store::{FileRow, FileState, Store};
use crate::validate::{SchemaCheck, UpsertCapture};

use super::plan::Plan;

/// How many failed rows are kept per batch for `GET /export/batches/{id}/failed`.
const MAX_STORED_FAILED_ROWS: usize = 1000;
/// Distinct (code, field) error entries kept per file; further fields are counted per code.
const MAX_GROUPS_PER_FILE: usize = 50;
/// At most this many threads read one file, whatever the machine: two batches are processed
/// at once, and the emulator shares its host with the client it serves.
const MAX_THREADS_PER_FILE: usize = 4;
/// A file is read in parts of at least this size: a smaller file stays on one thread (starting
/// threads and merging their results is not worth it).
const MIN_PART_BYTES: u64 = 32 * 1024 * 1024;

/// How a big file is read in parts, each on its own thread.
#[derive(Debug, Clone, Copy)]
pub(super) struct Split {
    /// The most threads (and parts) one file is read on.
    pub threads: usize,
    /// The least one part holds.
    pub min_part_bytes: u64,
}

impl Split {
    /// As many threads as the machine has cores, up to `MAX_THREADS_PER_FILE`.
    pub fn of_machine() -> Split {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Split {
            threads: cores.clamp(1, MAX_THREADS_PER_FILE),
            min_part_bytes: MIN_PART_BYTES,
        }
    }

    /// How many parts a file of `size` bytes is read in.
    fn parts(self, size: u64) -> usize {
        let parts = size / self.min_part_bytes.max(1);
        parts.clamp(1, self.threads.max(1) as u64) as usize
    }
}

/// A file to read.
pub(super) struct Input {
    pub file_id: String,
    /// The client's path (what messages name).
    pub path: String,
    /// Its bytes.
    pub disk: PathBuf,
    /// Where its good-rows copy goes.
    pub good: PathBuf,
}

/// What reading one file gave.
pub(super) struct FileResult {
    pub file_id: String,
    pub path: String,
    pub size: u64,
    pub records: u64,
    pub ok: u64,
    pub failed: u64,
    pub file_error: Option<(Code, String)>,
    /// The failures kept for `GET .../failed` (capped per batch).
    pub failures: Vec<RowFailure>,
    /// Per (error code, field pointer): how many records, and the first one's message (never
    /// capped; pointers beyond `MAX_GROUPS_PER_FILE` are counted under (code, None)).
    pub groups: Vec<Group>,
    /// The good rows' copy (partial ingestion): where, and its size or why it failed.
    pub good: Option<(PathBuf, io::Result<u64>)>,
}

/// The records of one file that failed with one code at one field.
#[derive(Debug, PartialEq)]
pub(super) struct Group {
    pub code: Code,
    pub pointer: Option<String>,
    pub count: u64,
    /// The first one's message.
    pub first: String,
}

/// What reading all the files gave, and the upsert rows captured (their file, or why it
/// could not be written).
pub(super) type Parsed = (Vec<FileResult>, Option<io::Result<PathBuf>>);

/// The complete files of a batch, to read.
pub(super) fn inputs(store: &Store, batch_id: &str, files: &[FileRow]) -> Vec<Input> {
    files
        .iter()
        .filter(|f| f.state == FileState::Complete)
        .map(|f| Input {
            file_id: f.id.clone(),
            path: f.path.clone(),
            disk: store.file_path(batch_id, &f.id),
            good: store.good_path(batch_id, &f.id),
        })
        .collect()
}

/// The files of a batch refused as a whole: sized, not read.
pub(super) fn unread(inputs: &[Input]) -> Vec<FileResult> {
    inputs
        .iter()
        .map(|i| FileResult {
            file_id: i.file_id.clone(),
            path: i.path.clone(),
            size: std::fs::metadata(&i.disk).map(|m| m.len()).unwrap_or(0),
            records: 0,
            ok: 0,
            failed: 0,
            file_error: None,
            failures: Vec::new(),
            groups: Vec::new(),
            good: None,
        })
        .collect()
}

/// Reads the files on the blocking pool, stopping at shutdown (`Err(Cancelled)`). A reader
/// that panics leaves no result (the batch then has no readable file).
pub(super) async fn parse(
    state: &AppState,
    plan: &Plan,
    inputs: Vec<Input>,
) -> Result<Parsed, Cancelled> {
    let cancel = Arc::new(AtomicBool::new(false));
    let cancel_at_shutdown = cancel.clone();
    let mut shutdown = state.shutdown.clone();
    let watcher = tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        cancel_at_shutdown.store(true, Ordering::Relaxed);
    });
    let plan = plan.clone();
    let split = Split::of_machine();
    let parsed =
        tokio::task::spawn_blocking(move || parse_all(&inputs, &plan, split, &cancel)).await;
    watcher.abort();
    match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::error!(error = %e, "parser task panicked");
            Ok((Vec::new(), None))
        }
    }
}

fn parse_all(
    inputs: &[Input],
    plan: &Plan,
    split: Split,
    cancel: &AtomicBool,
) -> Result<Parsed, Cancelled> {
    let mut capture = match &plan.upsert {
        Some(up) => match UpsertCapture::create(&up.capture, &up.identity) {
            Ok(c) => Some(c),
            Err(e) => return Ok((Vec::new(), Some(Err(e)))),
        },
        None => None,
    };
    let mut results = Vec::with_capacity(inputs.len());
    let mut stored = 0usize;
    for input in inputs {
        let parts = if capture.is_some() {
            // The rows an upsert batch captures go to one file, in order: read whole.
            Vec::new()
        } else {
            parts_of(input, plan, split)
        };
        let result = if parts.len() > 1 {
            parse_in_parts(input, plan, &parts, &mut stored, cancel)?
        } else {
            parse_file(input, plan, capture.as_mut(), &mut stored, cancel)?
        };
        results.push(result);
    }
    let captured = capture.map(UpsertCapture::finish);
    Ok((results, captured))
}

fn parse_file(
    input: &Input,
    plan: &Plan,
    capture: Option<&mut UpsertCapture>,
    stored: &mut usize,
    cancel: &AtomicBool,
) -> Result<FileResult, Cancelled> {
    let mut tally = Tally {
        groups: Vec::new(),
        failures: Vec::new(),
        stored,
    };
    let mut good = good_copy(input, plan);
    let mut accept = AcceptAll;
    let mut schema_check;
    let check: &mut dyn RecordCheck = if plan.validates() {
        schema_check = SchemaCheck::new(plan.schema.as_deref(), plan.source(), capture);
        &mut schema_check
    } else {
        &mut accept
    };
    let mut on_failure = |f: RowFailure| tally.add(f);
    let mut reader = Reader {
        check,
        cancel,
        on_failure: &mut on_failure,
        good: good.as_mut(),
    };
    let out = reader.read_file(&input.disk, &input.path, &plan.fmt)?;
    let size = std::fs::metadata(&input.disk).map(|m| m.len()).unwrap_or(0);
    let good = good.map(|g| {
        let path = g.path().to_path_buf();
        (path, g.finish())
    });
    Ok(FileResult {
        file_id: input.file_id.clone(),
        path: input.path.clone(),
        size,
        records: out.records,
        ok: out.ok_records(),
        failed: out.failed,
        file_error: out.file_error,
        failures: tally.failures,
        groups: tally.groups,
        good,
    })
}

/// The failures of one file: grouped per code and field (never capped), and kept whole up to
/// the batch's allowance (`stored`, shared by its files).
struct Tally<'s> {
    groups: Vec<Group>,
    failures: Vec<RowFailure>,
    stored: &'s mut usize,
}

impl Tally<'_> {
    fn add(&mut self, f: RowFailure) {
        for issue in &f.issues {
            count_in(
                &mut self.groups,
                issue.code,
                issue.pointer.clone(),
                1,
                || issue.message.clone(),
            );
        }
        if *self.stored < MAX_STORED_FAILED_ROWS {
            *self.stored += 1;
            self.failures.push(f);
        }
    }
}

/// Counts `count` records that failed with `code` at `pointer` (the first of them saying
/// `first`) in a file's `groups`: its own group, or once the file has `MAX_GROUPS_PER_FILE`
/// groups, a new field's records go to the code's (code, None) group. Counting a part's
/// groups (all its distinct pairs, in the order first met) in order into the file's gives the
/// groups of the whole file read at once: whether a pair has its own group is decided where
/// it is first met, and a (code, None) group is created by the first pair that needs it.
fn count_in(
    groups: &mut Vec<Group>,
    code: Code,
    mut pointer: Option<String>,
    count: u64,
    first: impl FnOnce() -> String,
) {
    let known = groups
        .iter()
        .position(|g| g.code == code && g.pointer == pointer);
    let idx = match known {
        Some(i) => Some(i),
        None if groups.len() >= MAX_GROUPS_PER_FILE => {
            pointer = None;
            groups
                .iter()
                .position(|g| g.code == code && g.pointer.is_none())
        }
        None => None,
    };
    match idx {
        Some(i) => groups[i].count += count,
        None => groups.push(Group {
            code,
            pointer,
            count,
            first: first(),
        }),
    }
}

/// The good-rows copy of a file, if partial ingestion keeps one and it can be created.
fn good_copy(input: &Input, plan: &Plan) -> Option<GoodWriter> {
    if !plan.keeps_good_rows() {
        return None;
    }
    GoodWriter::create(&input.good, &plan.fmt)
        .inspect_err(|e| {
            tracing::warn!(file = %input.good.display(), error = %e, "cannot create the good-rows copy");
        })
        .ok()
}

/// The parts a file is read in: one (or none) unless its format can be cut and it is big.
fn parts_of(input: &Input, plan: &Plan, split: Split) -> Vec<Range<u64>> {
    if !splits(&plan.fmt) {
        return Vec::new();
    }
    let Ok(size) = std::fs::metadata(&input.disk).map(|m| m.len()) else {
        return Vec::new(); // the reader of the whole file says why
    };
    let parts = split.parts(size);
    if parts < 2 {
        return Vec::new();
    }
    line_parts(&input.disk, size, parts).unwrap_or_default()
}

/// Where part `k` (from 1) of a file's good-rows copy is written before it is appended to the
/// copy (part 0 is written to the copy itself).
fn part_copy_path(good: &Path, k: usize) -> PathBuf {
    let mut name = good.as_os_str().to_owned();
    name.push(format!(".part{k}"));
    PathBuf::from(name)
}

/// What reading one part of a file gave, its rows numbered from the part's start.
struct PartResult {
    read: PartOutcome,
    tally: PartTally,
    /// Its good rows, when they are kept (or why they cannot be).
    good: Option<io::Result<GoodWriter>>,
}

/// The most distinct (code, field) pairs one part counts. A part cannot cap its groups as the
/// file does: a field beyond its own first `MAX_GROUPS_PER_FILE` may be one of the file's
/// groups (met in an earlier part), counted apart. Pointers hold array indices, so the pairs
/// are not bounded by the schema: past this many, the file is read again whole.
const MAX_GROUPS_PER_PART: usize = 10_000;

/// The failures of one part: every distinct (code, field) in the order met (up to
/// `MAX_GROUPS_PER_PART`), and the failures the batch's allowance may still keep.
struct PartTally {
    groups: Vec<Group>,
    /// Where each field's groups are in `groups`.
    index: std::collections::HashMap<Option<String>, Vec<usize>>,
    failures: Vec<RowFailure>,
    /// How many failures the batch had kept when the file was started, and this part since.
    stored: usize,
    /// More distinct pairs than `MAX_GROUPS_PER_PART`: the groups are incomplete.
    overflowed: bool,
}

impl PartTally {
    fn add(&mut self, f: RowFailure) {
        for issue in &f.issues {
            let at = self.index.entry(issue.pointer.clone()).or_default();
            match at.iter().find(|&&i| self.groups[i].code == issue.code) {
                Some(&i) => self.groups[i].count += 1,
                None if self.groups.len() >= MAX_GROUPS_PER_PART => self.overflowed = true,
                None => {
                    at.push(self.groups.len());
                    self.groups.push(Group {
                        code: issue.code,
                        pointer: issue.pointer.clone(),
                        count: 1,
                        first: issue.message.clone(),
                    });
                }
            }
        }
        if self.stored < MAX_STORED_FAILED_ROWS {
            self.stored += 1;
            self.failures.push(f);
        }
    }
}

/// Reads a file in `parts` (of `line_parts`), each on its own thread, and merges their results
/// in order: what `parse_file` gives for the whole file, with the same row numbers, failures
/// (and the batch's allowance of them, `stored`), groups and good-rows copy.
fn parse_in_parts(
    input: &Input,
    plan: &Plan,
    parts: &[Range<u64>],
    stored: &mut usize,
    cancel: &AtomicBool,
) -> Result<FileResult, Cancelled> {
    let allowance_used = *stored;
    let first_copy = good_copy(input, plan).map(Ok);
    let read = std::thread::scope(|scope| {
        let others: Vec<_> = parts
            .iter()
            .enumerate()
            .skip(1)
            .map(|(k, range)| {
                let copy = plan
                    .keeps_good_rows()
                    .then(|| GoodWriter::create(&part_copy_path(&input.good, k), &plan.fmt));
                let range = range.clone();
                scope.spawn(move || parse_part(input, plan, range, allowance_used, copy, cancel))
            })
            .collect();
        let first = parse_part(
            input,
            plan,
            parts[0].clone(),
            allowance_used,
            first_copy,
            cancel,
        );
        let mut read = vec![first];
        for part in others {
            read.push(
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        read
    });
    let overflowed = read
        .iter()
        .any(|part| part.as_ref().is_ok_and(|part| part.tally.overflowed));
    let merged = if overflowed {
        drop(read);
        tracing::info!(file = %input.path, "too many distinct failing fields to read in parts; reading the file whole");
        parse_file(input, plan, None, stored, cancel)
    } else {
        merge_parts(input, read, stored)
    };
    for k in 1..parts.len() {
        let _ = std::fs::remove_file(part_copy_path(&input.good, k));
    }
    merged
}

fn parse_part(
    input: &Input,
    plan: &Plan,
    range: Range<u64>,
    allowance_used: usize,
    good: Option<io::Result<GoodWriter>>,
    cancel: &AtomicBool,
) -> Result<PartResult, Cancelled> {
    let mut tally = PartTally {
        groups: Vec::new(),
        index: Default::default(),
        failures: Vec::new(),
        stored: allowance_used,
        overflowed: false,
    };
    let mut good = good;
    let mut accept = AcceptAll;
    let mut schema_check;
    let check: &mut dyn RecordCheck = if plan.validates() {
        schema_check = SchemaCheck::new(plan.schema.as_deref(), plan.source(), None);
        &mut schema_check
    } else {
        &mut accept
    };
    let mut on_failure = |f: RowFailure| tally.add(f);
    let mut reader = Reader {
        check,
        cancel,
        on_failure: &mut on_failure,
        good: good.as_mut().and_then(|g| g.as_mut().ok()),
    };
    let read = reader.read_part(&input.disk, &input.path, range)?;
    Ok(PartResult { read, tally, good })
}

/// The parts' results put together in order, as if the file had been read whole: reading
/// stops at the first part that could not be read to its end (an I/O error).
fn merge_parts(
    input: &Input,
    read: Vec<Result<PartResult, Cancelled>>,
    stored: &mut usize,
) -> Result<FileResult, Cancelled> {
    let mut result = FileResult {
        file_id: input.file_id.clone(),
        path: input.path.clone(),
        size: std::fs::metadata(&input.disk).map(|m| m.len()).unwrap_or(0),
        records: 0,
        ok: 0,
        failed: 0,
        file_error: None,
        failures: Vec::new(),
        groups: Vec::new(),
        good: None,
    };
    let mut copies = Vec::new();
    let mut lines_before = 0u64;
    for part in read {
        let part = part?;
        copies.push(part.good);
        let out = part.read.outcome;
        result.records += out.records;
        result.ok += out.ok_records();
        result.failed += out.failed;
        for group in part.tally.groups {
            count_in(
                &mut result.groups,
                group.code,
                group.pointer,
                group.count,
                || {
                    let mut first = group.first;
                    renumber(&mut first, &input.path, lines_before);
                    first
                },
            );
        }
        for mut failure in part.tally.failures {
            if *stored < MAX_STORED_FAILED_ROWS {
                *stored += 1;
                failure.renumber(&input.path, lines_before);
                result.failures.push(failure);
            }
        }
        lines_before += part.read.lines;
        if out.file_error.is_some() {
            result.file_error = out.file_error;
            break;
        }
    }
    result.good = join_copies(&input.good, copies);
    Ok(result)
}

/// The parts' good-rows copies, in order, appended to the first (the file's copy): its path
/// and size, or why it is incomplete. None when no copy is kept.
fn join_copies(
    path: &Path,
    copies: Vec<Option<io::Result<GoodWriter>>>,
) -> Option<(PathBuf, io::Result<u64>)> {
    let mut copies = copies.into_iter();
    let first = copies.next().flatten()?;
    let joined = (|| -> io::Result<u64> {
        first?.finish()?;
        let mut out = std::fs::OpenOptions::new().append(true).open(path)?;
        for copy in copies {
            let copy = copy.ok_or_else(|| io::Error::other("a part's copy is missing"))??;
            let part = copy.path().to_path_buf();
            copy.finish()?;
            io::copy(&mut std::fs::File::open(&part)?, &mut out)?;
        }
        Ok(std::fs::metadata(path)?.len())
    })();
    Some((path.to_path_buf(), joined))
}

#[cfg(test)]
mod tests;
