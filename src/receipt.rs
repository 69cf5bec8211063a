//! The receipt every finished file gets, `NAME.receipt.json`: its fields and where it is
//! written ([`path_for`]). Receipts are a stable interface (docs/operating.md, "Receipts"):
//! keys are only ever added, and each change is listed in CHANGELOG.md.
//!
//! This module must not read the store or touch files: the archiver gathers what a receipt
//! says and writes it; `retry` removes it; `revert` rewrites it ([`reverted`]).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::format::Format;
use crate::store::{BatchRow, BatchState, FileRow};

/// What became of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failed,
    /// Its content was already ingested: not sent again.
    Duplicate,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Duplicate => "duplicate",
        }
    }
}

/// A receipt. Its fields are in the order receipts have always listed their keys in
/// (alphabetical); the optional ones are left out when they do not apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receipt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_to: Option<String>,
    /// The platform's batch id (null if the batch was never created).
    pub batch: Option<String>,
    /// The platform's metrics of the batch (null without them).
    pub batch_records: Value,
    pub dataset: String,
    /// The batch's error codes with their record counts, a sample of its failing rows and its
    /// diagnostics files, when it failed or lost rows (the platform does not say which file a
    /// row came from: these are the batch's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<crate::diagnostics::Diagnostics>,
    pub discovered_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<DuplicateOf>,
    /// The platform's errors of the batch (the platform's errors never say which file).
    pub errors: Vec<Value>,
    pub file: String,
    /// The file's own record count, where the platform tells it.
    pub file_records: Option<i64>,
    pub finished_at: String,
    pub folder: String,
    pub format: Format,
    /// What the watch's mapping set made of the file, when its watch maps files: the staged
    /// file that was uploaded instead of it. `size` and `sha256` stay the dropped file's;
    /// `format` is what was sent (the staged file's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<Mapping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The batch succeeded with failed records.
    pub partial_ingestion: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `batch_records` under its first name, kept for compatibility.
    pub records: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_reason: Option<String>,
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_archived_to: Option<String>,
    pub size: i64,
    pub status: Status,
}

/// A mapped file's part of its receipt (keys in alphabetical order, as the receipt's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// The mapping set's file, and the SHA-256 of the bytes the file was mapped with.
    pub mapping_set: String,
    pub mapping_sha256: String,
    pub original_format: Format,
    pub original_sha256: String,
    pub records_in: i64,
    pub records_out: i64,
    /// Rows the mapping or the schema rejected (not uploaded): how many, and the first
    /// [`crate::mapped::MAX_REJECTED_KEPT`] with their row numbers and reasons.
    pub rejected: i64,
    pub rejected_rows: Vec<crate::store::RejectedRow>,
    /// The name the staged file was uploaded under.
    pub staged_file: String,
    pub staged_format: Format,
    pub staged_sha256: String,
    pub staged_size: u64,
}

impl Mapping {
    pub fn of(staged: &crate::store::StagedFile) -> Mapping {
        Mapping {
            mapping_set: staged.mapping_path.clone(),
            mapping_sha256: staged.mapping_sha256.clone(),
            original_format: staged.original_format,
            original_sha256: staged.original_sha256.clone(),
            records_in: staged.records_in,
            records_out: staged.records_out,
            rejected: staged.rejected,
            rejected_rows: staged.rejected_rows.clone(),
            staged_file: staged.name.clone(),
            staged_format: staged.format,
            staged_sha256: staged.sha256.clone(),
            staged_size: staged.identity.size,
        }
    }
}

/// The earlier file whose content a duplicate repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateOf {
    pub batch: Option<String>,
    pub file: String,
}

impl Receipt {
    /// A file's receipt as its row and its batch's tell it, finished at `now_ms`. What only
    /// other rows know (a replay's reason, the file a duplicate repeats) is added by the caller.
    pub fn new(f: &FileRow, batch: Option<&BatchRow>, status: Status, now_ms: i64) -> Receipt {
        let outcome = batch.and_then(|b| b.outcome.clone()).unwrap_or_default();
        let metrics = outcome.metrics();
        let all = outcome.errors();
        let mut errors = all.as_array().cloned().unwrap_or_default();
        if errors.is_empty()
            && let Some(b) = batch
            && b.state() != BatchState::Success
            && let Some(e) = &b.last_error
            && f.reason.as_deref() != Some(e.as_str())
        {
            errors = vec![serde_json::json!({ "code": "batchdrop", "description": e })];
        }
        Receipt {
            archived_to: None,
            batch: batch.and_then(|b| b.remote_id()).map(str::to_owned),
            batch_records: metrics.clone(),
            dataset: f.dataset.clone(),
            diagnostics: outcome.diagnostics().filter(|d| !d.is_empty()),
            discovered_at: iso(f.discovered_at),
            duplicate_of: None,
            errors,
            file: f.rel_path.clone(),
            file_records: f.records,
            finished_at: iso(now_ms),
            folder: f.root.clone(),
            format: f.format,
            mapping: None,
            note: None,
            partial_ingestion: status == Status::Success && outcome.failed_records() > 0,
            reason: f.reason.clone(),
            records: metrics,
            replaces: batch.and_then(|b| b.replay.as_ref()).map(|p| p.0.clone()),
            replay_reason: None,
            sha256: f.sha256.clone(),
            sidecar: f.sidecar.clone(),
            sidecar_archived_to: None,
            size: f.size,
            status,
        }
    }

    /// The receipt's text, as it is written (pretty JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a receipt is plain data")
    }
}

/// A receipt's text rewritten for a batch that `batchdrop revert` took back: `status` becomes
/// `reverted`, with `reverted_at` and a `note`; every other key stays as it was written (by
/// whichever version of batchdrop wrote it).
pub fn reverted(text: &[u8], batch: &str, dataset: &str, at: &str) -> Result<Vec<u8>, String> {
    let mut r: serde_json::Map<String, Value> =
        serde_json::from_slice(text).map_err(|e| format!("it is not a receipt: {e}"))?;
    r.insert("status".into(), "reverted".into());
    r.insert("reverted_at".into(), at.into());
    r.insert(
        "note".into(),
        format!(
            "batch {batch} was reverted (`batchdrop revert`): its data is no longer in dataset {dataset}; the file itself was left where it is"
        )
        .into(),
    );
    Ok(serde_json::to_vec_pretty(&r).expect("JSON read from JSON"))
}

/// Receipts are read by the group (producers see why their file failed), written by
/// batchdrop only.
pub const MODE: u32 = 0o640;

/// Where the receipt of the file that ended at `file` goes: `NAME.receipt.json` beside it. A
/// name too long for that (file names stop at 255 bytes) keeps its first 200 bytes and gets
/// the file's id: `NAME~ID.receipt.json`.
pub fn path_for(file: &Path, id: i64) -> PathBuf {
    let name = file.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
    let mut receipt = name.to_vec();
    if name.len() + ".receipt.json.tmp".len() > 255 {
        let mut cut = 200;
        if let Ok(text) = std::str::from_utf8(name) {
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
        }
        receipt.truncate(cut);
        receipt.extend_from_slice(format!("~{id}").as_bytes());
    }
    receipt.extend_from_slice(b".receipt.json");
    file.with_file_name(OsString::from_vec(receipt))
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_keeps_its_first_bytes_and_gets_the_files_id() {
        let dir = Path::new("/d/_failed");
        assert_eq!(
            path_for(&dir.join("a.json"), 7),
            dir.join("a.json.receipt.json")
        );
        let long = format!("{}.json", "é".repeat(150));
        let receipt = path_for(&dir.join(&long), 42);
        let name = receipt.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with("~42.receipt.json"), "{name}");
        assert!(name.len() + ".tmp".len() <= 255, "{} bytes", name.len());
        assert!(long.starts_with(name.trim_end_matches("~42.receipt.json")));
        let raw = Path::new(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.json"));
        assert_eq!(
            path_for(&dir.join(raw), 7),
            dir.join(std::ffi::OsStr::from_bytes(
                b"latin1-\xe9t\xe9.json.receipt.json"
            ))
        );
    }

    #[test]
    fn keys_are_listed_in_the_order_receipts_always_had() {
        let receipt = Receipt {
            archived_to: Some("/d/_archive/a.json".into()),
            batch: Some("B".into()),
            batch_records: serde_json::json!({ "inputRecordCount": 2 }),
            dataset: "demo".into(),
            diagnostics: Some(crate::diagnostics::Diagnostics {
                error_files: vec!["parsing_errors_0.json".into()],
                ..Default::default()
            }),
            discovered_at: iso(0),
            duplicate_of: None,
            errors: Vec::new(),
            file: "a.json".into(),
            file_records: Some(2),
            finished_at: iso(1),
            folder: "/d".into(),
            format: Format::Parquet,
            mapping: Some(Mapping {
                mapping_set: "/etc/crm.mapping.json".into(),
                mapping_sha256: "m".into(),
                original_format: Format::Csv,
                original_sha256: "o".into(),
                records_in: 3,
                records_out: 2,
                rejected: 1,
                rejected_rows: vec![crate::store::RejectedRow {
                    row: 2,
                    line: Some(3),
                    reasons: vec!["person.name.firstName: too long".into()],
                }],
                staged_file: "a.csv.parquet".into(),
                staged_format: Format::Parquet,
                staged_sha256: "s".into(),
                staged_size: 5,
            }),
            note: None,
            partial_ingestion: false,
            reason: None,
            records: serde_json::json!({ "inputRecordCount": 2 }),
            replaces: None,
            replay_reason: None,
            sha256: None,
            sidecar: None,
            sidecar_archived_to: None,
            size: 10,
            status: Status::Success,
        };
        let text = String::from_utf8(receipt.to_json()).unwrap();
        // What a receipt of the same file has always been: serde_json's sorted map.
        let sorted: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, serde_json::to_string_pretty(&sorted).unwrap());
        assert!(!text.contains("\"note\""), "absent, not null: {text}");
        assert!(text.contains("\"sha256\": null"), "always there: {text}");

        let back = reverted(text.as_bytes(), "B", "demo", "2026-01-01T00:00:00.000Z").unwrap();
        let back: serde_json::Value = serde_json::from_slice(&back).unwrap();
        assert_eq!(back["status"], "reverted");
        assert_eq!(back["reverted_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(back["file_records"], 2, "the other keys stay");
        assert!(reverted(b"[1]", "B", "demo", "now").is_err());
    }
}
