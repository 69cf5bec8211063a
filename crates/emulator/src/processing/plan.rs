//! The first step of processing a batch: what it asks for, from its own options and its
//! dataset. How to read its files, which schema checks their records, whether rows are merged
//! into an upsert dataset's current view, and whether the batch is refused as a whole before
//! anything is read. Pure: no I/O.

use std::path::PathBuf;
use std::sync::Arc;

use batchdrop_xdm::{Schema, Source};
use serde_json::Value;

use crate::codes::Code;
use crate::formats::InputFormat;
use crate::schemas::Registry;
use crate::store::{BatchRow, DatasetRow};

/// One entry of a batch's `errors`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BatchError {
    pub code: Code,
    pub description: String,
    /// How many records it concerns; the summaries the platform sends carry none.
    pub record_count: Option<u64>,
    /// The emulator's own explanations (which file, which row, which field), sent as
    /// `emulatorDetails`: a field no client of the real platform reads, since the platform's
    /// descriptions are generic.
    pub details: Vec<String>,
}

impl BatchError {
    pub fn new(code: Code, description: String, record_count: Option<u64>) -> BatchError {
        BatchError {
            code,
            description,
            record_count,
            details: Vec::new(),
        }
    }

    /// This entry with the emulator's own explanations added.
    pub fn with_details(mut self, details: Vec<String>) -> BatchError {
        self.details = details;
        self
    }

    pub fn to_json(&self) -> Value {
        let mut e =
            serde_json::json!({"code": self.code.as_str(), "description": self.description});
        if let Some(n) = self.record_count {
            e["recordCount"] = n.into();
        }
        if !self.details.is_empty() {
            e["emulatorDetails"] = self.details.clone().into();
        }
        e
    }
}

/// Rows of an upsert dataset: the identity to merge them by, and where the good ones wait
/// until the batch succeeds.
#[derive(Debug, Clone)]
pub(super) struct Upsert {
    pub identity: String,
    pub capture: PathBuf,
}

/// What processing a batch needs to know.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub fmt: InputFormat,
    /// `enableErrorDiagnostics`: an error entry per code and field, and the failed rows.
    pub diagnostics: bool,
    /// `partialIngestionPercentage`: the share of records (percent) that may fail.
    pub partial_pct: Option<f64>,
    pub schema: Option<Arc<Schema>>,
    pub upsert: Option<Upsert>,
    /// Why the batch is refused as a whole (nothing is read then).
    pub refusals: Vec<BatchError>,
}

impl Plan {
    /// Whether records are looked at beyond being well-formed.
    pub fn validates(&self) -> bool {
        self.schema.is_some() || self.upsert.is_some()
    }

    /// Partial ingestion is on: each file's good rows are copied.
    pub fn keeps_good_rows(&self) -> bool {
        self.partial_pct.is_some()
    }

    pub fn source(&self) -> Source {
        match self.fmt.format.as_str() {
            "csv" => Source::Csv,
            "parquet" => Source::Parquet,
            _ => Source::Json,
        }
    }
}

/// The plan of `batch`, whose dataset is `dataset`; an upsert dataset's good rows wait at
/// `capture`.
pub(super) fn plan(
    batch: &BatchRow,
    dataset: Option<&DatasetRow>,
    schemas: &Registry,
    capture: PathBuf,
) -> Plan {
    let fmt = InputFormat::from_json(
        &serde_json::from_str::<Value>(&batch.input_format).unwrap_or(Value::Null),
    );
    let options: Value = serde_json::from_str(&batch.options).unwrap_or(Value::Null);
    let diagnostics = options
        .get("enableErrorDiagnostics")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let partial_pct = options
        .get("partialIngestionPercentage")
        .and_then(Value::as_f64)
        .filter(|p| *p > 0.0);
    let schema = dataset
        .and_then(|d| d.schema_id())
        .and_then(|sid| schemas.get(&sid));
    let mut plan = Plan {
        fmt,
        diagnostics,
        partial_pct,
        schema,
        upsert: None,
        refusals: Vec::new(),
    };
    if let Some(d) = dataset.filter(|d| d.is_upsert()) {
        plan_upsert(&mut plan, &batch.id, d, capture);
    }
    plan
}

/// An upsert dataset takes Parquet only, and needs an identity field.
fn plan_upsert(plan: &mut Plan, batch_id: &str, dataset: &DatasetRow, capture: PathBuf) {
    let identity = dataset
        .identity_field
        .clone()
        .or_else(|| plan.schema.as_ref().and_then(|s| s.identity_field.clone()));
    if plan.fmt.format != "parquet" {
        plan.refusals.push(BatchError::new(
            Code::Upsert,
            format!(
                "dataset {} is an upsert dataset (tags unifiedProfile: isUpsert:true): it takes Parquet files only, and batch {batch_id} is {}; send the rows as Parquet in a new batch",
                dataset.id, plan.fmt.format
            ),
            Some(0),
        ));
    }
    match identity {
        None => plan.refusals.push(BatchError::new(
            Code::Upsert,
            format!(
                "upsert dataset {} has no identity field to merge rows by: set identity_field in its [[datasets]] entry or in its schema's [[schemas]] entry of the emulator config",
                dataset.id
            ),
            Some(0),
        )),
        Some(identity) => plan.upsert = Some(Upsert { identity, capture }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BatchStatus;

    fn batch(input_format: &str, options: &str) -> BatchRow {
        BatchRow {
            id: "b1".into(),
            dataset_id: "d1".into(),
            status: BatchStatus::Processing,
            input_format: input_format.into(),
            external_id: None,
            tags: "{}".into(),
            replay: None,
            options: options.into(),
            ims_org: String::new(),
            sandbox: String::new(),
            created_user: String::new(),
            created: 0,
            updated: 0,
            started: None,
            completed: None,
            metrics: None,
            errors: None,
        }
    }

    fn dataset(tags: &str, identity_field: Option<&str>) -> DatasetRow {
        DatasetRow {
            id: "d1".into(),
            name: "d".into(),
            schema_ref: None,
            tags: tags.into(),
            extra: "{}".into(),
            ims_org: String::new(),
            sandbox: String::new(),
            created: 0,
            updated: 0,
            identity_field: identity_field.map(str::to_owned),
        }
    }

    const UPSERT: &str = r#"{"unifiedProfile": ["enabled:true", "isUpsert:true"]}"#;

    #[test]
    fn options_and_format_come_from_the_batch() {
        let b = batch(
            r#"{"format": "csv", "delimiter": ";"}"#,
            r#"{"enableErrorDiagnostics": true, "partialIngestionPercentage": 5}"#,
        );
        let p = plan(
            &b,
            Some(&dataset("{}", None)),
            &Registry::default(),
            "c".into(),
        );
        assert_eq!(p.fmt.format, "csv");
        assert_eq!(p.fmt.delimiter, b';');
        assert!(p.diagnostics && p.keeps_good_rows() && !p.validates());
        assert_eq!(p.partial_pct, Some(5.0));
        assert_eq!(p.source(), Source::Csv);
        assert!(p.refusals.is_empty() && p.upsert.is_none());
        let p = plan(
            &batch("{}", r#"{"partialIngestionPercentage": 0}"#),
            None,
            &Registry::default(),
            "c".into(),
        );
        assert_eq!(p.fmt.format, "json");
        assert!(!p.diagnostics && !p.keeps_good_rows());
    }

    #[test]
    fn an_upsert_dataset_takes_parquet_with_an_identity_only() {
        let registry = Registry::default();
        let p = plan(
            &batch(r#"{"format": "parquet"}"#, "{}"),
            Some(&dataset(UPSERT, Some("/id"))),
            &registry,
            "capture".into(),
        );
        assert!(p.refusals.is_empty());
        let upsert = p.upsert.expect("upsert rows are captured");
        assert_eq!(
            (upsert.identity.as_str(), upsert.capture),
            ("/id", "capture".into())
        );

        let p = plan(
            &batch(r#"{"format": "json"}"#, "{}"),
            Some(&dataset(UPSERT, None)),
            &registry,
            "capture".into(),
        );
        assert_eq!(p.refusals.len(), 2, "{:?}", p.refusals);
        assert!(p.refusals.iter().all(|r| r.code == Code::Upsert));
        assert!(p.refusals[0].description.contains("Parquet files only"));
        assert!(p.refusals[1].description.contains("no identity field"));
        assert_eq!(p.refusals[0].to_json()["recordCount"], 0);
    }
}
