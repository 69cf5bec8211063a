//! The typed values kept in the store's columns: the states of files and batches (the text of
//! the migrations' `CHECK` lists), a batch's phase with what each phase knows, the JSON
//! columns, and how `Format` is written. Rules live here, in types: code elsewhere never
//! compares state strings.

use serde::{Deserialize, Serialize};
use sqlx::Database;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;

use crate::format::Format;

/// Where a file is on its way: `Ready` → `Batched` → `Uploaded` → `Done`; or it ends
/// `Failed`, `Duplicate` or `Superseded`. Stored as the lower-case names of the `files.state`
/// `CHECK` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Queued, waiting for a batch.
    Ready,
    /// In a batch, not (yet) acknowledged by the platform.
    Batched,
    /// Acknowledged by the platform; its batch decides the rest.
    Uploaded,
    /// Its batch succeeded.
    Done,
    Failed,
    /// Its content was already in the dataset: not sent again.
    Duplicate,
    /// The file changed on disk after it was queued; its new version is a new record.
    Superseded,
}

impl FileState {
    /// Every state, in the order of the migration's `CHECK` list.
    pub const ALL: [FileState; 7] = [
        FileState::Ready,
        FileState::Batched,
        FileState::Uploaded,
        FileState::Done,
        FileState::Failed,
        FileState::Duplicate,
        FileState::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Ready => "ready",
            FileState::Batched => "batched",
            FileState::Uploaded => "uploaded",
            FileState::Done => "done",
            FileState::Failed => "failed",
            FileState::Duplicate => "duplicate",
            FileState::Superseded => "superseded",
        }
    }

    /// In a batch that has not ended for it: `Batched` or `Uploaded`.
    pub fn in_batch(self) -> bool {
        matches!(self, FileState::Batched | FileState::Uploaded)
    }
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch's state, in order: the first five are in flight, the rest terminal. Stored as the
/// lower-case names of the `batches.state` `CHECK` list. The in-flight states double as the
/// intent log of the remote side effects (see migration 0001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    Sealed,
    Creating,
    Loading,
    Completing,
    Processing,
    Success,
    Failed,
    Aborted,
    Abandoned,
    Reverted,
}

impl BatchState {
    /// Every state, in the order of the migration's `CHECK` list.
    pub const ALL: [BatchState; 10] = [
        BatchState::Sealed,
        BatchState::Creating,
        BatchState::Loading,
        BatchState::Completing,
        BatchState::Processing,
        BatchState::Success,
        BatchState::Failed,
        BatchState::Aborted,
        BatchState::Abandoned,
        BatchState::Reverted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Sealed => "sealed",
            BatchState::Creating => "creating",
            BatchState::Loading => "loading",
            BatchState::Completing => "completing",
            BatchState::Processing => "processing",
            BatchState::Success => "success",
            BatchState::Failed => "failed",
            BatchState::Aborted => "aborted",
            BatchState::Abandoned => "abandoned",
            BatchState::Reverted => "reverted",
        }
    }

    /// Still has remote work to do (the SQL spells this list as `IN_FLIGHT`).
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            BatchState::Sealed
                | BatchState::Creating
                | BatchState::Loading
                | BatchState::Completing
                | BatchState::Processing
        )
    }
}

impl std::fmt::Display for BatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The batch states in flight, as SQL (see `in_flight!`).
pub(super) const IN_FLIGHT: &str = in_flight!();

/// Where a batch is, with what each phase knows: from `Loading` on, the platform's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchPhase {
    /// Nothing was sent for it yet.
    Sealed,
    /// create-batch may have been sent: the platform may hold it under its externalId.
    Creating,
    /// The platform created it: its files are being sent.
    Loading { remote_id: String },
    /// COMPLETE may have been sent.
    Completing { remote_id: String },
    /// The platform accepted COMPLETE: the Catalog is asked until it ends.
    Processing { remote_id: String },
    /// A terminal state (never one in flight), and the platform's id if it ever had one.
    Ended {
        state: BatchState,
        remote_id: Option<String>,
    },
}

impl BatchPhase {
    /// The phase a row's `state` and `remote_id` describe; an error for a row that breaks the
    /// rule (a batch the platform created always has its id).
    pub(super) fn of(state: BatchState, remote_id: Option<String>) -> Result<BatchPhase, String> {
        let known = |remote_id: Option<String>| {
            remote_id.ok_or_else(|| format!("a batch in state {state} has no platform id"))
        };
        Ok(match state {
            BatchState::Sealed => BatchPhase::Sealed,
            BatchState::Creating => BatchPhase::Creating,
            BatchState::Loading => BatchPhase::Loading {
                remote_id: known(remote_id)?,
            },
            BatchState::Completing => BatchPhase::Completing {
                remote_id: known(remote_id)?,
            },
            BatchState::Processing => BatchPhase::Processing {
                remote_id: known(remote_id)?,
            },
            ended => BatchPhase::Ended {
                state: ended,
                remote_id,
            },
        })
    }

    pub fn state(&self) -> BatchState {
        match self {
            BatchPhase::Sealed => BatchState::Sealed,
            BatchPhase::Creating => BatchState::Creating,
            BatchPhase::Loading { .. } => BatchState::Loading,
            BatchPhase::Completing { .. } => BatchState::Completing,
            BatchPhase::Processing { .. } => BatchState::Processing,
            BatchPhase::Ended { state, .. } => *state,
        }
    }

    pub fn remote_id(&self) -> Option<&str> {
        match self {
            BatchPhase::Sealed | BatchPhase::Creating => None,
            BatchPhase::Loading { remote_id }
            | BatchPhase::Completing { remote_id }
            | BatchPhase::Processing { remote_id } => Some(remote_id),
            BatchPhase::Ended { remote_id, .. } => remote_id.as_deref(),
        }
    }
}

/// A step of a batch in flight, as the uploader records it ([`super::Store::advance_batch`]):
/// an intent before a remote call, or the fact after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// Intent: create-batch is about to be sent (its externalId was chosen at sealing).
    Creating,
    /// Fact: the platform created the batch (or it was found by its externalId).
    Loading { remote_id: &'a str },
    /// Intent: COMPLETE is about to be sent.
    Completing,
    /// Fact: the platform accepted COMPLETE (or had it already).
    Processing,
}

impl Step<'_> {
    pub fn state(self) -> BatchState {
        match self {
            Step::Creating => BatchState::Creating,
            Step::Loading { .. } => BatchState::Loading,
            Step::Completing => BatchState::Completing,
            Step::Processing => BatchState::Processing,
        }
    }
}

/// How a batch ended on the platform, as the Catalog (or batchdrop, giving up) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failed,
}

impl Verdict {
    pub fn state(self) -> BatchState {
        match self {
            Verdict::Success => BatchState::Success,
            Verdict::Failed => BatchState::Failed,
        }
    }
}

/// The platform ids of the batches a replay replaces (without the `$` prefix). Kept as a JSON
/// array (`replay_json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Predecessors(pub Vec<String>);

impl std::fmt::Display for Predecessors {
    /// As JSON: `["A","B"]`, the way events, logs and receipts have always shown them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(&self.0).map_err(|_| std::fmt::Error)?)
    }
}

/// The Catalog's final view of a batch (`outcome_json`), kept whole: receipts carry its
/// metrics and errors as the platform gave them. When batchdrop gave the batch up, its one
/// error says why ([`BatchOutcome::local_error`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchOutcome(pub serde_json::Value);

impl BatchOutcome {
    /// An outcome batchdrop decided (the batch was given up), with `why` as its error.
    pub fn local_error(why: &str) -> BatchOutcome {
        BatchOutcome(serde_json::json!({
            "errors": [{ "code": "batchdrop", "description": why }]
        }))
    }

    /// The batch's metrics object (`null` when the platform gave none).
    pub fn metrics(&self) -> serde_json::Value {
        self.0
            .get("metrics")
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The batch's errors as the platform listed them (`[]` when none).
    pub fn errors(&self) -> serde_json::Value {
        self.0
            .get("errors")
            .cloned()
            .unwrap_or(serde_json::json!([]))
    }

    /// Records the platform could not ingest (0 when it did not say).
    pub fn failed_records(&self) -> u64 {
        self.0["metrics"]["failedRecordCount"].as_u64().unwrap_or(0)
    }

    /// Records the platform ingested (0 when it did not say).
    pub fn ingested_records(&self) -> u64 {
        self.0["metrics"]["outputRecordCount"].as_u64().unwrap_or(0)
    }

    /// The platform's view with batchdrop's reading of its error diagnostics beside it (under
    /// a key of batchdrop's own, next to the Catalog's fields).
    pub fn with_diagnostics(mut self, diagnostics: &crate::diagnostics::Diagnostics) -> Self {
        if let (Some(map), Ok(v)) = (self.0.as_object_mut(), serde_json::to_value(diagnostics)) {
            map.insert(DIAGNOSTICS_KEY.into(), v);
        }
        self
    }

    /// The error diagnostics read when the batch ended, if any.
    pub fn diagnostics(&self) -> Option<crate::diagnostics::Diagnostics> {
        serde_json::from_value(self.0.get(DIAGNOSTICS_KEY)?.clone()).ok()
    }
}

/// Where [`BatchOutcome::with_diagnostics`] keeps them.
const DIAGNOSTICS_KEY: &str = "batchdrop_diagnostics";

/// JSON columns: TEXT holding the value's JSON, on each backend.
macro_rules! json_column {
    ($type:ty) => {
        json_column!($type, sqlx::Sqlite);
        json_column!($type, sqlx::Postgres);
    };
    ($type:ty, $db:ty) => {
        impl sqlx::Type<$db> for $type {
            fn type_info() -> <$db as Database>::TypeInfo {
                <str as sqlx::Type<$db>>::type_info()
            }

            fn compatible(ty: &<$db as Database>::TypeInfo) -> bool {
                <&str as sqlx::Type<$db>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, $db> for $type {
            fn encode_by_ref(
                &self,
                buf: &mut <$db as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                let text = serde_json::to_string(self)?;
                <String as sqlx::Encode<$db>>::encode(text, buf)
            }
        }

        impl<'r> sqlx::Decode<'r, $db> for $type {
            fn decode(value: <$db as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as sqlx::Decode<$db>>::decode(value)?;
                Ok(serde_json::from_str(text)?)
            }
        }
    };
}

json_column!(Predecessors);
json_column!(BatchOutcome);

/// `Format` is TEXT holding its name, on each backend.
macro_rules! format_column {
    ($db:ty) => {
        impl sqlx::Type<$db> for Format {
            fn type_info() -> <$db as Database>::TypeInfo {
                <str as sqlx::Type<$db>>::type_info()
            }

            fn compatible(ty: &<$db as Database>::TypeInfo) -> bool {
                <&str as sqlx::Type<$db>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, $db> for Format {
            fn encode_by_ref(
                &self,
                buf: &mut <$db as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<$db>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, $db> for Format {
            fn decode(value: <$db as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as sqlx::Decode<$db>>::decode(value)?;
                Format::parse(text).ok_or_else(|| format!("unknown format {text:?}").into())
            }
        }
    };
}

format_column!(sqlx::Sqlite);
format_column!(sqlx::Postgres);

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in a migration's `CHECK (column IN (...))` list.
    fn check_list(sql: &str, column: &str) -> Vec<String> {
        let start = sql
            .find(&format!("CHECK ({column} IN"))
            .unwrap_or_else(|| panic!("no CHECK list for {column}"));
        let list = &sql[start..];
        let list = &list[list.find("IN").unwrap() + 2..list.find("))").unwrap()];
        list.split(',')
            .map(|name| name.trim().trim_matches(['(', '\'', ' ', '\n']).to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    }

    #[test]
    fn the_states_are_the_migrations_check_lists() {
        let init = include_str!("../../migrations/0001_init.sql");
        let files = init.split("CREATE TABLE batches").next().unwrap();
        let batches = init.split("CREATE TABLE batches").nth(1).unwrap();
        let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_list(files, "state"),
            names(&FileState::ALL.map(FileState::as_str))
        );
        assert_eq!(
            check_list(batches, "state"),
            names(&BatchState::ALL.map(BatchState::as_str))
        );
        assert_eq!(
            check_list(files, "format"),
            names(&[Format::Json, Format::Csv, Format::Parquet].map(Format::as_str))
        );
        let in_flight: Vec<&str> = BatchState::ALL
            .into_iter()
            .filter(|s| s.in_flight())
            .map(BatchState::as_str)
            .collect();
        assert_eq!(IN_FLIGHT, format!("('{}')", in_flight.join("', '")));
    }

    #[test]
    fn a_phase_past_creation_carries_the_platform_id() {
        assert_eq!(
            BatchPhase::of(BatchState::Loading, Some("B".into())),
            Ok(BatchPhase::Loading {
                remote_id: "B".into()
            })
        );
        for state in [
            BatchState::Loading,
            BatchState::Completing,
            BatchState::Processing,
        ] {
            let err = BatchPhase::of(state, None).unwrap_err();
            assert!(err.contains("no platform id"), "{err}");
        }
        for state in BatchState::ALL {
            let phase = BatchPhase::of(state, Some("B".into())).unwrap();
            assert_eq!(phase.state(), state);
            let expected =
                (state != BatchState::Sealed && state != BatchState::Creating).then_some("B");
            assert_eq!(phase.remote_id(), expected, "{state}");
        }
        let failed_early = BatchPhase::of(BatchState::Failed, None).unwrap();
        assert_eq!(failed_early.remote_id(), None);
    }

    #[test]
    fn a_local_outcome_reads_like_the_platforms() {
        let outcome = BatchOutcome::local_error("gave up");
        assert_eq!(outcome.errors()[0]["description"], "gave up");
        assert_eq!(outcome.metrics(), serde_json::Value::Null);
        let platform = BatchOutcome(serde_json::json!({
            "metrics": { "failedRecordCount": 3 }, "errors": []
        }));
        assert_eq!(platform.failed_records(), 3);
        assert_eq!(
            Predecessors(vec!["A".into(), "B".into()]).to_string(),
            r#"["A","B"]"#
        );
    }
}
