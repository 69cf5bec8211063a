//! The second step of processing a batch: reading its files, off the async threads, every
//! record through the plan's check; failures grouped per code and field, good rows copied
//! (partial ingestion) and upsert rows captured. It reads files and writes the copies; it must
//! not touch the database (that is `record`).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::AppState;
use crate::codes::Code;
use crate::formats::{AcceptAll, Cancelled, GoodWriter, Reader, RecordCheck, RowFailure};
use crate::store::{FileRow, FileState, Store};
use crate::validate::{SchemaCheck, UpsertCapture};

use super::plan::Plan;

/// How many failed rows are kept per batch for `GET /export/batches/{id}/failed`.
const MAX_STORED_FAILED_ROWS: usize = 1000;
/// Distinct (code, field) error entries kept per file; further fields are counted per code.
const MAX_GROUPS_PER_FILE: usize = 50;

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
    let parsed = tokio::task::spawn_blocking(move || parse_all(&inputs, &plan, &cancel)).await;
    watcher.abort();
    match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::error!(error = %e, "parser task panicked");
            Ok((Vec::new(), None))
        }
    }
}

fn parse_all(inputs: &[Input], plan: &Plan, cancel: &AtomicBool) -> Result<Parsed, Cancelled> {
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
        results.push(parse_file(
            input,
            plan,
            capture.as_mut(),
            &mut stored,
            cancel,
        )?);
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
    let mut good = if plan.keeps_good_rows() {
        GoodWriter::create(&input.good, &plan.fmt)
            .inspect_err(|e| {
                tracing::warn!(file = %input.good.display(), error = %e, "cannot create the good-rows copy");
            })
            .ok()
    } else {
        None
    };
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
            let mut pointer = issue.pointer.clone();
            let known = self
                .groups
                .iter()
                .position(|g| g.code == issue.code && g.pointer == pointer);
            let idx = match known {
                Some(i) => Some(i),
                None if self.groups.len() >= MAX_GROUPS_PER_FILE => {
                    pointer = None;
                    self.groups
                        .iter()
                        .position(|g| g.code == issue.code && g.pointer.is_none())
                }
                None => None,
            };
            match idx {
                Some(i) => self.groups[i].count += 1,
                None => self.groups.push(Group {
                    code: issue.code,
                    pointer,
                    count: 1,
                    first: issue.message.clone(),
                }),
            }
        }
        if *self.stored < MAX_STORED_FAILED_ROWS {
            *self.stored += 1;
            self.failures.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::RowIssue;
    use batchdrop_xdm::IssueCode;

    fn failure(pointer: &str) -> RowFailure {
        RowFailure {
            row: Some(1),
            issues: vec![RowIssue {
                code: IssueCode::Type.into(),
                message: format!("{pointer}: bad"),
                pointer: Some(pointer.to_owned()),
            }],
            raw: None,
        }
    }

    #[test]
    fn failures_group_per_field_until_the_cap_then_per_code() {
        let mut stored = MAX_STORED_FAILED_ROWS - 2;
        let mut tally = Tally {
            groups: Vec::new(),
            failures: Vec::new(),
            stored: &mut stored,
        };
        tally.add(failure("/a"));
        tally.add(failure("/a"));
        assert_eq!(tally.groups.len(), 1);
        assert_eq!(tally.groups[0].count, 2);
        assert_eq!(tally.groups[0].first, "/a: bad");
        for i in 0..MAX_GROUPS_PER_FILE + 3 {
            tally.add(failure(&format!("/f{i}")));
        }
        // One group per field up to the cap, then one for "other fields" of that code.
        assert_eq!(tally.groups.len(), MAX_GROUPS_PER_FILE + 1);
        let other = tally.groups.last().unwrap();
        assert_eq!((other.pointer.as_deref(), other.count), (None, 4));
        // Whole failures are kept up to the batch's allowance only.
        assert_eq!(tally.failures.len(), 2);
        assert_eq!(stored, MAX_STORED_FAILED_ROWS);
    }
}
