//! The emulator judges data like the platform: XDM schemas (JSON Schema form) checked against
//! every record of every format with the platform's conversions, error codes with the field's
//! pointer and record counts, failed rows with their reasons, partial ingestion, upsert
//! datasets merged into a current view.
//!
//! This module holds the schemas and datasets the tests share and the helpers that read
//! batches back; `rules` (records checked in each format, partial ingestion), `upsert` (the
//! current view of upsert datasets) and `registry` (where schemas come from, bad configs,
//! older data dirs) hold the tests.

mod registry;
mod rules;
mod upsert;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, StructArray,
};
use arrow_schema::Field;
use batchdrop_emulator::{DatasetSeed, Emulator, EmulatorConfig, SchemaSeed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

const PROFILE_ID: &str = "https://ns.adobe.com/batchdrop/schemas/crm-profile";
const FLAT_ID: &str = "https://ns.adobe.com/batchdrop/schemas/crm-flat";
const PROFILES: &str = "profiles";
const FLAT: &str = "flat";
const UPSERT: &str = "profiles-upsert";

/// An XDM-like profile schema as the Schema Registry exports it (`meta:` keys included): it
/// describes the shape of the CRM_profiles.json fixture, plus a few fields of other types.
fn profile_schema() -> Value {
    json!({
        "$id": PROFILE_ID,
        "$schema": "http://json-schema.org/draft-06/schema#",
        "title": "CRM profile",
        "type": "object",
        "meta:class": "https://ns.adobe.com/xdm/context/profile",
        "meta:extensible": false,
        "meta:abstract": false,
        "required": ["person"],
        "properties": {
            "crmId": {"type": "string", "minLength": 2, "meta:xdmType": "string"},
            "person": {
                "type": "object",
                "meta:xdmField": "xdm:person",
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "object",
                        "required": ["lastName"],
                        "properties": {
                            "courtesyTitle": {"type": "string", "maxLength": 10},
                            "firstName": {"type": "string", "maxLength": 30},
                            "lastName": {"type": "string", "minLength": 1}
                        }
                    },
                    "gender": {
                        "type": "string",
                        "enum": ["male", "female", "not_specified", "non_specific"],
                        "meta:enum": {"male": "Male", "female": "Female"}
                    },
                    "birthDate": {"type": "string", "format": "date", "meta:xdmType": "date"},
                    "birthDayAndMonth": {"type": "string", "pattern": "[0-1][0-9]-[0-9][0-9]"},
                    "birthYear": {"type": "integer", "minimum": 1, "maximum": 32767, "meta:xdmType": "short"}
                }
            },
            "identityMap": {
                "type": "object",
                "meta:xdmType": "map",
                "additionalProperties": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id"],
                        "properties": {"id": {"type": "string"}, "primary": {"type": "boolean"}}
                    }
                }
            },
            "homePhone": {"type": "object", "properties": {"number": {"type": "string"}}},
            "personalEmail": {
                "type": "object",
                "properties": {"address": {"type": "string", "format": "email"}}
            },
            "homeAddress": {
                "type": "object",
                "properties": {
                    "street1": {"type": "string"},
                    "city": {"type": "string"},
                    "stateProvince": {"type": "string"},
                    "country": {"type": "string", "maxLength": 2},
                    "postalCode": {"type": "string"},
                    "_schema": {
                        "type": "object",
                        "properties": {
                            "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                            "longitude": {"type": "number", "minimum": -180, "maximum": 180}
                        }
                    }
                }
            },
            "loyalty": {
                "type": "object",
                "properties": {
                    "points": {"type": "number", "minimum": 0},
                    "tier": {"type": "string", "enum": ["bronze", "silver", "gold"]},
                    "joined": {"type": "string", "format": "date-time", "meta:xdmType": "date-time"}
                }
            },
            "optIn": {"type": "boolean"},
            "website": {"type": "string", "format": "uri"},
            "interests": {"type": "array", "items": {"type": "string"}, "maxItems": 3}
        }
    })
}

/// A flat schema for the CRM_profiles.csv fixture.
fn flat_schema() -> Value {
    let s = |extra: Value| {
        let mut base = json!({"type": "string"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    json!({
        "$id": FLAT_ID,
        "title": "CRM flat",
        "type": "object",
        "required": ["L_NAME", "EMAIL"],
        "properties": {
            "TITLE": s(json!({})), "F_NAME": s(json!({})), "L_NAME": s(json!({})),
            "GENDER": s(json!({"enum": ["male", "female", "not_specified", "non_specific"]})),
            "MONTH_AND_DATE": s(json!({})),
            "DOB": s(json!({"format": "date"})),
            "YOB": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "EMAIL": s(json!({"format": "email"})),
            "ID1": s(json!({})), "ID2": s(json!({})), "ID3": s(json!({})), "ID4": s(json!({})),
            "PHONE": s(json!({})),
            "EMAIL2": s(json!({"format": "email"})),
            "STREET": s(json!({})), "CITY": s(json!({})), "STATE": s(json!({})),
            "COUNTRY": s(json!({"maxLength": 2})),
            "ZIP": s(json!({})),
            "LAT": {"type": "number", "minimum": -90, "maximum": 90},
            "LONG": {"type": "number", "minimum": -180, "maximum": 180}
        }
    })
}

/// Writes the schemas to files and returns a config that registers them and seeds a dataset
/// for each, plus an upsert dataset of profiles merged by `/crmId`.
fn schema_config(dir: &Path) -> EmulatorConfig {
    let profile = dir.join("profile.schema.json");
    std::fs::write(&profile, profile_schema().to_string()).unwrap();
    let flat = dir.join("flat.schema.json");
    std::fs::write(&flat, flat_schema().to_string()).unwrap();
    EmulatorConfig {
        schemas: vec![
            SchemaSeed {
                file: profile,
                ..SchemaSeed::default()
            },
            SchemaSeed {
                file: flat,
                identity_field: "EMAIL".into(),
                ..SchemaSeed::default()
            },
        ],
        datasets: vec![
            DatasetSeed {
                id: PROFILES.into(),
                schema: PROFILE_ID.into(),
                ..DatasetSeed::default()
            },
            DatasetSeed {
                id: FLAT.into(),
                // By name (the schema's title).
                schema: "CRM flat".into(),
                ..DatasetSeed::default()
            },
            DatasetSeed {
                id: UPSERT.into(),
                schema: PROFILE_ID.into(),
                tags: [(
                    "unifiedProfile".to_owned(),
                    vec!["enabled:true".to_owned(), "isUpsert:true".to_owned()],
                )]
                .into_iter()
                .collect(),
                identity_field: "crmId".into(),
                ..DatasetSeed::default()
            },
        ],
        ..cfg()
    }
}

async fn start_with_schemas() -> (Env, tempfile::TempDir) {
    let schemas = tempfile::tempdir().unwrap();
    let env = start(schema_config(schemas.path())).await;
    (env, schemas)
}

const DIAG: fn() -> Value = || json!({"enableErrorDiagnostics": true});

fn jsonl(rows: &[Value]) -> Vec<u8> {
    rows.iter()
        .flat_map(|r| format!("{r}\n").into_bytes())
        .collect()
}

fn good_profile(i: usize) -> Value {
    json!({
        "crmId": format!("c{i}"),
        "person": {"name": {"firstName": "Ada", "lastName": format!("Doe{i}")}, "gender": "female",
                   "birthDate": "1990-01-02", "birthYear": 1990},
        "personalEmail": {"address": format!("ada{i}@example.com")},
        "identityMap": {"CRMID": [{"id": format!("c{i}"), "primary": true}]},
        "loyalty": {"points": 10, "tier": "gold", "joined": "2024-05-01T12:30:00Z"},
        "optIn": true
    })
}

/// The batch's errors with this code.
fn errors_with<'a>(b: &'a Value, code: &str) -> Vec<&'a Value> {
    b["errors"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["code"] == code).collect())
        .unwrap_or_default()
}

/// The emulator's own explanation (in `emulatorDetails`) of the records of this code at this
/// field: `file 'NAME', field P: N record(s); first: ...` (the platform's descriptions are
/// generic).
fn error_for(b: &Value, code: &str, pointer: &str) -> String {
    errors_with(b, code)
        .into_iter()
        .flat_map(|e| e["emulatorDetails"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d.as_str().map(str::to_owned))
        .find(|d| d.contains(&format!("field {pointer}:")))
        .unwrap_or_else(|| panic!("no {code} error for {pointer} in {b:#}"))
}

/// How many records of this code failed at this field, as the emulator's explanation counts them.
fn count_for(b: &Value, code: &str, pointer: &str) -> u64 {
    let d = error_for(b, code, pointer);
    let (_, after) = d.split_once(": ").unwrap();
    after.split_once(' ').unwrap().0.parse().unwrap()
}

fn parquet_of(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

fn strings(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn structure(fields: Vec<(&str, ArrayRef)>) -> ArrayRef {
    Arc::new(StructArray::from(
        fields
            .into_iter()
            .map(|(n, a)| (Arc::new(Field::new(n, a.data_type().clone(), true)), a))
            .collect::<Vec<_>>(),
    ))
}

fn parquet_rows(bytes: Vec<u8>) -> usize {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

async fn download_files(env: &Env, batch: &str) -> Vec<(Value, Vec<u8>)> {
    env.batch_downloads(batch).await
}
