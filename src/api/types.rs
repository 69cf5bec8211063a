//! The types the rest of batchdrop sees when it talks to the platform: requests it builds
//! (`CreateBatch`, `BatchQuery`, …) and answers it reads (`BatchInfo`, `DataSetFile`, …).
//! They describe the platform in the daemon's terms; how they look on the wire (`$`-prefixed
//! predecessors, maps keyed by id, aliases of statuses) is `wire.rs`'s business, not theirs.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::format::Format;

/// A replay: the new batch replaces its predecessors once it succeeds. Predecessor ids are
/// kept bare here; the client adds the `$` the platform wants in requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub predecessors: Vec<String>,
    pub reason: String,
}

/// Body of `POST /batches`. Build it with [`CreateBatch::new`] and set what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateBatch {
    pub dataset_id: String,
    pub format: Format,
    /// JSON only: the file is one array of objects rather than JSON Lines.
    pub multiline_json: bool,
    /// Our idempotency key: lets a crashed or retried create be found again in Catalog.
    pub external_id: Option<String>,
    pub replay: Option<Replay>,
    pub tags: BTreeMap<String, Vec<String>>,
    pub enable_error_diagnostics: bool,
    /// 0–100: the share of rows that may fail while the batch still succeeds.
    pub partial_ingestion_percent: Option<u8>,
}

impl CreateBatch {
    pub fn new(dataset_id: impl Into<String>, format: Format) -> CreateBatch {
        CreateBatch {
            dataset_id: dataset_id.into(),
            format,
            multiline_json: false,
            external_id: None,
            replay: None,
            tags: BTreeMap::new(),
            enable_error_diagnostics: false,
            partial_ingestion_percent: None,
        }
    }
}

/// Signals sent with `POST /batches/{id}?action=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchAction {
    Complete,
    Abort,
    Revert,
    Fail,
}

impl BatchAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchAction::Complete => "COMPLETE",
            BatchAction::Abort => "ABORT",
            BatchAction::Revert => "REVERT",
            BatchAction::Fail => "FAIL",
        }
    }
}

impl fmt::Display for BatchAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of a batch, with the platform's aliases folded together (`active` is `Success`,
/// `failure` is `Failed`). Anything unknown is kept in `Other` rather than rejected, so a new
/// status on the platform does not break polling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BatchStatus {
    Loading,
    Staging,
    Processing,
    Retrying,
    /// Waiting for the platform to start processing it.
    Queued,
    /// Loaded, not yet promoted (in progress).
    Loaded,
    /// All the platform's retries were exhausted: it will not move on by itself.
    Stalled,
    Success,
    Failed,
    Aborted,
    Abandoned,
    Inactive,
    Deleted,
    Other(String),
}

impl BatchStatus {
    /// Tolerant of case, surrounding blanks and the documented aliases.
    pub fn parse(s: &str) -> BatchStatus {
        match s.trim().to_ascii_lowercase().as_str() {
            "loading" => BatchStatus::Loading,
            "staging" | "staged" => BatchStatus::Staging,
            "processing" => BatchStatus::Processing,
            "retrying" => BatchStatus::Retrying,
            "queued" => BatchStatus::Queued,
            "loaded" => BatchStatus::Loaded,
            "stalled" => BatchStatus::Stalled,
            "success" | "active" => BatchStatus::Success,
            "failed" | "failure" => BatchStatus::Failed,
            "aborted" => BatchStatus::Aborted,
            "abandoned" => BatchStatus::Abandoned,
            "inactive" => BatchStatus::Inactive,
            "deleted" => BatchStatus::Deleted,
            _ => BatchStatus::Other(s.trim().to_string()),
        }
    }

    /// The canonical lower-case name (what Catalog filters accept).
    pub fn as_str(&self) -> &str {
        match self {
            BatchStatus::Loading => "loading",
            BatchStatus::Staging => "staging",
            BatchStatus::Processing => "processing",
            BatchStatus::Retrying => "retrying",
            BatchStatus::Queued => "queued",
            BatchStatus::Loaded => "loaded",
            BatchStatus::Stalled => "stalled",
            BatchStatus::Success => "success",
            BatchStatus::Failed => "failed",
            BatchStatus::Aborted => "aborted",
            BatchStatus::Abandoned => "abandoned",
            BatchStatus::Inactive => "inactive",
            BatchStatus::Deleted => "deleted",
            BatchStatus::Other(s) => s,
        }
    }

    /// True once the platform will not change the batch on its own any more. `Retrying` and
    /// unknown statuses are not terminal: the safe reading of "don't know" is "keep waiting".
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            BatchStatus::Success
                | BatchStatus::Failed
                | BatchStatus::Aborted
                | BatchStatus::Abandoned
                | BatchStatus::Inactive
                | BatchStatus::Deleted
        )
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metrics` of a Catalog batch. Every field is optional: the platform fills them in as
/// processing goes on, and omits those that do not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchMetrics {
    pub input_file_count: Option<u64>,
    pub input_byte_size: Option<u64>,
    pub input_record_count: Option<u64>,
    pub output_record_count: Option<u64>,
    pub output_byte_size: Option<u64>,
    pub output_file_count: Option<u64>,
    pub failed_record_count: Option<u64>,
}

/// One entry of a batch's `errors` (e.g. code `106` for an empty file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub code: String,
    pub description: String,
    pub record_count: Option<u64>,
}

/// A batch as Catalog (or create-batch) describes it. `raw` keeps the whole object for
/// receipts and for fields this struct does not model.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInfo {
    pub id: String,
    pub status: BatchStatus,
    pub external_id: Option<String>,
    pub dataset_id: Option<String>,
    /// Epoch milliseconds.
    pub created: Option<i64>,
    pub updated: Option<i64>,
    pub started: Option<i64>,
    pub completed: Option<i64>,
    pub metrics: BatchMetrics,
    pub errors: Vec<BatchError>,
    /// Predecessors without the `$` prefix.
    pub replay: Option<Replay>,
    pub tags: BTreeMap<String, Vec<String>>,
    pub raw: serde_json::Value,
}

/// Filters of `GET {catalog}/batches`. Unset fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchQuery {
    pub dataset_id: Option<String>,
    pub external_id: Option<String>,
    pub status: Option<BatchStatus>,
    /// Page size; the platform's default is 20 and its maximum 100.
    pub limit: Option<u32>,
    /// Offset of the first result.
    pub start: Option<u64>,
    /// E.g. `desc:created`. Catalog answers with a map, whose order does not survive JSON
    /// parsing, so the client re-sorts by `created`/`updated` when asked to order by them.
    pub order_by: Option<String>,
}

/// `schemaRef` of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRef {
    pub id: String,
    /// e.g. `application/vnd.adobe.xed-full+json;version=1`
    pub content_type: String,
}

/// A Catalog dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub id: String,
    pub name: Option<String>,
    pub schema_ref: Option<SchemaRef>,
    pub tags: BTreeMap<String, Vec<String>>,
    pub raw: serde_json::Value,
}

impl Dataset {
    /// Tagged `unifiedProfile: ["enabled:true", …]`: Profile-enabled, so its batches count
    /// against the sandbox's daily batch guardrail.
    pub fn is_profile_enabled(&self) -> bool {
        self.unified_profile_flag("enabled")
    }

    /// Tagged `unifiedProfile: [… "isUpsert:true"]`: its batches update profiles (Parquet only).
    pub fn is_upsert(&self) -> bool {
        self.unified_profile_flag("isUpsert")
    }

    /// `name:true` among the `unifiedProfile` tags, spelled with or without the space after the
    /// colon (the platform's docs and spec examples write `"isUpsert: true"`).
    fn unified_profile_flag(&self, name: &str) -> bool {
        self.tags.get("unifiedProfile").is_some_and(|values| {
            values.iter().any(|v| {
                v.split_once(':').is_some_and(|(key, value)| {
                    key.trim() == name && value.trim().eq_ignore_ascii_case("true")
                })
            })
        })
    }
}

/// A schema as the Schema Registry resolves it (`xed-full`): the JSON Schema records are
/// checked against, and the version it had when it was fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySchema {
    /// Its `$id` (what a dataset's `schemaRef.id` names).
    pub id: String,
    /// Its `version` (`meta:...` revisions move it on), or empty when the answer has none.
    pub version: String,
    pub document: serde_json::Value,
}

/// A dataset file produced by a batch (Data Access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSetFile {
    pub id: String,
    pub dataset_id: Option<String>,
    /// The name the platform gives it, when it gives one (the emulator: the uploaded file's
    /// path; the platform's documented listing has none).
    pub name: Option<String>,
    pub records: Option<u64>,
    pub size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fold_aliases_and_case() {
        for (text, status) in [
            ("loading", BatchStatus::Loading),
            ("Staging", BatchStatus::Staging),
            ("processing", BatchStatus::Processing),
            ("retrying", BatchStatus::Retrying),
            ("success", BatchStatus::Success),
            ("ACTIVE", BatchStatus::Success),
            ("failed", BatchStatus::Failed),
            (" failure ", BatchStatus::Failed),
            ("aborted", BatchStatus::Aborted),
            ("abandoned", BatchStatus::Abandoned),
            ("inactive", BatchStatus::Inactive),
            ("deleted", BatchStatus::Deleted),
        ] {
            assert_eq!(BatchStatus::parse(text), status, "{text}");
        }
        assert_eq!(BatchStatus::parse("Queued"), BatchStatus::Queued);
        assert_eq!(BatchStatus::parse(" stalled"), BatchStatus::Stalled);
        assert_eq!(
            BatchStatus::parse("Mystery"),
            BatchStatus::Other("Mystery".into())
        );
        assert_eq!(BatchStatus::parse("active").as_str(), "success");
    }

    #[test]
    fn terminal_statuses() {
        let terminal = [
            "success",
            "active",
            "failed",
            "failure",
            "aborted",
            "abandoned",
            "inactive",
            "deleted",
        ];
        for s in terminal {
            assert!(BatchStatus::parse(s).is_terminal(), "{s}");
        }
        for s in [
            "loading",
            "staging",
            "processing",
            "retrying",
            "something-new",
        ] {
            assert!(!BatchStatus::parse(s).is_terminal(), "{s}");
        }
    }

    #[test]
    fn actions_are_spelled_as_the_platform_wants() {
        assert_eq!(BatchAction::Complete.as_str(), "COMPLETE");
        assert_eq!(BatchAction::Revert.to_string(), "REVERT");
    }
}
