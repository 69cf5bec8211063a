//! The emulator judges data like the platform: XDM schemas (JSON Schema form) checked against
//! every record of every format with the platform's conversions, error codes with the field's
//! pointer and record counts, failed rows with their reasons, partial ingestion, upsert
//! datasets merged into a current view.

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

/// The error entry of this code whose description names this field.
fn error_for<'a>(b: &'a Value, code: &str, pointer: &str) -> &'a Value {
    errors_with(b, code)
        .into_iter()
        .find(|e| {
            e["description"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("field {pointer}:")))
        })
        .unwrap_or_else(|| panic!("no {code} error for {pointer} in {b:#}"))
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
    let (s, files) = env
        .get_json(&format!("{EXPORT}/batches/{batch}/files"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut out = Vec::new();
    for f in files["data"].as_array().unwrap() {
        let id = f["dataSetFileId"].as_str().unwrap();
        let r = env
            .req(Method::GET, &format!("{EXPORT}/files/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        out.push((f.clone(), r.bytes().await.unwrap().to_vec()));
    }
    out
}

#[tokio::test]
async fn the_fixtures_pass_their_schemas_in_every_format() {
    let (env, _schemas) = start_with_schemas().await;
    // The multi-line JSON fixture, and the same profiles as JSON Lines.
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json", "isMultiLineJson": true}),
            DIAG(),
            &[("CRM_profiles.json", read(&fixture("CRM_profiles.json")))],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 16);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            DIAG(),
            &[("profiles.json", crm_jsonl())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 16);
    // The CSV fixture against its flat schema.
    let (_, b) = env
        .ingest_into(
            FLAT,
            json!({"format": "csv"}),
            DIAG(),
            &[("CRM_profiles.csv", read(&fixture("CRM_profiles.csv")))],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 259);
    // Parquet carrying a subset of the fields, nested.
    let data = parquet_of(vec![
        ("crmId", strings(&[Some("c1"), Some("c2")])),
        (
            "person",
            structure(vec![(
                "name",
                structure(vec![("lastName", strings(&[Some("Doe"), Some("Roe")]))]),
            )]),
        ),
        (
            "optIn",
            Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef,
        ),
    ]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("p.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 2);
    // A dataset without a schema still takes any well-formed record.
    let (_, _, b) = env
        .ingest(
            json!({"format": "json"}),
            &[("any.json", b"{\"person\": 5}\n{}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
}

#[tokio::test]
async fn every_rule_broken_in_json_is_reported_with_its_field() {
    let (env, _schemas) = start_with_schemas().await;
    let mut rows = vec![good_profile(0)];
    // The platform's conversions: these are all good.
    let mut converted = good_profile(1);
    converted["crmId"] = json!(12345); // number → string
    converted["person"]["birthYear"] = json!("1987"); // string → integer
    converted["loyalty"]["points"] = json!("12.5"); // string → number
    converted["loyalty"]["joined"] = json!(1_700_000_000_000i64); // long → date-time
    converted["homeAddress"] = json!({"_schema": {"latitude": 45, "longitude": "-80.5"}}); // int → double
    converted["unknownField"] = json!({"ignored": true}); // not in the schema: ignored
    rows.push(converted);
    // One broken rule per row: (pointer, code).
    type Breaker = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, &str, Breaker)> = vec![
        (
            "/person/name/lastName",
            "INGEST-1555-400",
            Box::new(|r| {
                r["person"]["name"]
                    .as_object_mut()
                    .unwrap()
                    .remove("lastName");
            }),
        ),
        (
            "/person",
            "INGEST-1555-400",
            Box::new(|r| r["person"] = Value::Null),
        ),
        (
            "/person/birthYear",
            "INGEST-1542-400",
            Box::new(|r| r["person"]["birthYear"] = json!("nineteen")),
        ),
        (
            "/person/birthYear",
            "INGEST-1542-400",
            Box::new(|r| r["person"]["birthYear"] = json!(1990.5)),
        ),
        (
            "/person/birthYear",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["birthYear"] = json!(40000)),
        ),
        (
            "/optIn",
            "INGEST-1542-400",
            Box::new(|r| r["optIn"] = json!("true")),
        ),
        (
            "/crmId",
            "INGEST-1542-400",
            Box::new(|r| r["crmId"] = json!(["c", "d"])),
        ),
        (
            "/interests",
            "INGEST-1542-400",
            Box::new(|r| r["interests"] = json!("golf")),
        ),
        (
            "/interests",
            "INGEST-1543-400",
            Box::new(|r| r["interests"] = json!(["a", "b", "c", "d"])),
        ),
        (
            "/person/gender",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["gender"] = json!("robot")),
        ),
        (
            "/personalEmail/address",
            "INGEST-1543-400",
            Box::new(|r| r["personalEmail"]["address"] = json!("not-an-email")),
        ),
        (
            "/person/birthDate",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["birthDate"] = json!("1990-02-30")),
        ),
        (
            "/loyalty/joined",
            "INGEST-1543-400",
            Box::new(|r| r["loyalty"]["joined"] = json!("last tuesday")),
        ),
        (
            "/website",
            "INGEST-1543-400",
            Box::new(|r| r["website"] = json!("www.example.com")),
        ),
        (
            "/person/name/firstName",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["name"]["firstName"] = json!("x".repeat(31))),
        ),
        (
            "/loyalty/points",
            "INGEST-1543-400",
            Box::new(|r| r["loyalty"]["points"] = json!(-1)),
        ),
        (
            "/identityMap/CRMID/0/id",
            "INGEST-1555-400",
            Box::new(|r| r["identityMap"]["CRMID"] = json!([{"primary": true}])),
        ),
    ];
    for (i, (_, _, f)) in broken.iter().enumerate() {
        let mut r = good_profile(100 + i);
        f(&mut r);
        rows.push(r);
    }
    let mut data = jsonl(&rows);
    data.extend_from_slice(b"{\"person\": {\"name\": \n"); // unparsable
    let total = rows.len() + 1;
    let bad = broken.len() + 1;

    for (format, name, bytes) in [
        (json!({"format": "json"}), "rows.json", data.clone()),
        (
            json!({"format": "json", "isMultiLineJson": true}),
            "rows-array.json",
            serde_json::to_vec_pretty(&rows).unwrap(),
        ),
    ] {
        let multi = format["isMultiLineJson"] == true;
        let (batch, b) = env
            .ingest_into(PROFILES, format, DIAG(), &[(name, bytes)])
            .await;
        let (total, bad) = if multi {
            (rows.len(), broken.len())
        } else {
            (total, bad)
        };
        assert_eq!(b["status"], "failed", "{b:#}");
        assert_eq!(b["metrics"]["inputRecordCount"], total, "{b:#}");
        assert_eq!(b["metrics"]["failedRecordCount"], bad, "{b:#}");
        assert_eq!(b["metrics"]["outputRecordCount"], 0);
        for (pointer, code, _) in &broken {
            let e = error_for(&b, code, pointer);
            assert!(e["recordCount"].as_u64().unwrap() >= 1, "{e}");
            let d = e["description"].as_str().unwrap();
            assert!(d.contains(name) && d.contains("row "), "{d}");
        }
        assert_eq!(
            error_for(&b, "INGEST-1542-400", "/person/birthYear")["recordCount"],
            2
        );
        if !multi {
            assert_eq!(errors_with(&b, "INGEST-1401-400")[0]["recordCount"], 1);
        }
        // The failed rows, each with its reasons and the field's pointer.
        let failed = env.failed_rows(&batch).await;
        assert_eq!(failed.len(), bad);
        for (i, (pointer, code, _)) in broken.iter().enumerate() {
            let row = &failed[i];
            assert_eq!(row["name"], name);
            let errs = row["errors"].as_array().unwrap();
            assert!(
                errs.iter()
                    .any(|e| e["code"] == *code && e["path"] == *pointer),
                "row {i}: {row:#}"
            );
            let record = row["record"].as_str().unwrap();
            assert!(record.contains(&format!("c{}", 100 + i)), "{record}");
        }
        if !multi {
            assert_eq!(failed[bad - 1]["errors"][0]["code"], "INGEST-1401-400");
            assert_eq!(failed[bad - 1]["row"], total);
        }
    }
}

#[tokio::test]
async fn every_rule_broken_in_csv_is_reported_and_cells_convert() {
    let (env, _schemas) = start_with_schemas().await;
    // The fixture with some cells broken.
    let text = String::from_utf8(read(&fixture("CRM_profiles.csv"))).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let set = |lines: &mut Vec<String>, row: usize, col: usize, v: &str| {
        let mut cells: Vec<String> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(lines[row].as_bytes())
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        cells[col] = format!("\"{v}\"");
        lines[row] = cells.join(",");
    };
    // Columns: 2 L_NAME, 3 GENDER, 5 DOB, 6 YOB, 7 EMAIL, 17 COUNTRY, 19 LAT.
    set(&mut lines, 2, 6, "abc"); // YOB → integer
    set(&mut lines, 3, 7, "nobody"); // EMAIL format
    set(&mut lines, 4, 2, ""); // L_NAME required (an empty cell is absent)
    set(&mut lines, 5, 3, "robot"); // GENDER enum
    set(&mut lines, 6, 19, "91.5"); // LAT maximum
    set(&mut lines, 7, 5, "31/12/1999"); // DOB date
    set(&mut lines, 8, 17, "USA"); // COUNTRY maxLength
    set(&mut lines, 9, 6, "1850"); // YOB minimum
    let data = (lines.join("\n") + "\n").into_bytes();
    let (batch, b) = env
        .ingest_into(FLAT, json!({"format": "csv"}), DIAG(), &[("crm.csv", data)])
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["inputRecordCount"], 259);
    assert_eq!(b["metrics"]["failedRecordCount"], 8);
    for (code, pointer) in [
        ("INGEST-1542-400", "/YOB"),
        ("INGEST-1543-400", "/EMAIL"),
        ("INGEST-1555-400", "/L_NAME"),
        ("INGEST-1543-400", "/GENDER"),
        ("INGEST-1543-400", "/LAT"),
        ("INGEST-1543-400", "/DOB"),
        ("INGEST-1543-400", "/COUNTRY"),
    ] {
        error_for(&b, code, pointer);
    }
    assert_eq!(error_for(&b, "INGEST-1543-400", "/YOB")["recordCount"], 1);
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed.len(), 8);
    assert_eq!(failed[0]["row"], 3, "CSV rows count lines, header included");
    assert_eq!(failed[0]["errors"][0]["path"], "/YOB");
    assert!(
        failed[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"abc\" cannot be converted to an integer"),
        "{:#}",
        failed[0]
    );

    // Headers with dots map to nested fields; cells are text that converts, booleans too.
    let csv = b"crmId,person.name.lastName,person.birthYear,optIn,loyalty.joined\n\
                c1,Doe,1990,true,2024-05-01T00:00:00Z\n\
                c2,Roe,,FALSE,\n\
                c3,Poe,1990,yes,\n\
                c4,,1990,true,\n"
        .to_vec();
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "csv"}),
            DIAG(),
            &[("nested.csv", csv)],
        )
        .await;
    assert_eq!(b["metrics"]["failedRecordCount"], 2, "{b:#}");
    error_for(&b, "INGEST-1542-400", "/optIn");
    // c4 carries no name at all (its only name cell is empty).
    error_for(&b, "INGEST-1555-400", "/person/name");
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed[0]["row"], 4);
    assert_eq!(failed[1]["row"], 5);
}

#[tokio::test]
async fn parquet_columns_are_checked_against_the_schema() {
    let (env, _schemas) = start_with_schemas().await;
    let last = strings(&[Some("Doe"), None, Some("Poe"), Some("Zoe")]);
    let data = parquet_of(vec![
        (
            "crmId",
            strings(&[Some("c1"), Some("c2"), Some("c3"), Some("c4")]),
        ),
        (
            "person",
            structure(vec![
                ("name", structure(vec![("lastName", last)])),
                (
                    "gender",
                    strings(&[Some("male"), Some("female"), Some("robot"), None]),
                ),
                (
                    "birthYear",
                    Arc::new(Int64Array::from(vec![1990, 1991, 1992, 99_999])) as ArrayRef,
                ),
            ]),
        ),
        (
            "loyalty",
            structure(vec![(
                "points",
                Arc::new(Float64Array::from(vec![1.5, 2.0, 3.0, 4.0])) as ArrayRef,
            )]),
        ),
    ]);
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("p.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["inputRecordCount"], 4);
    assert_eq!(b["metrics"]["failedRecordCount"], 3);
    error_for(&b, "INGEST-1555-400", "/person/name/lastName");
    error_for(&b, "INGEST-1543-400", "/person/gender");
    error_for(&b, "INGEST-1543-400", "/person/birthYear");
    let failed = env.failed_rows(&batch).await;
    assert_eq!(
        failed.iter().map(|f| f["row"].clone()).collect::<Vec<_>>(),
        vec![json!(2), json!(3), json!(4)]
    );
    assert!(failed[1]["record"].as_str().unwrap().contains("robot"));

    // Booleans never convert: a boolean column into an integer field fails its rows.
    let data = parquet_of(vec![(
        "person",
        structure(vec![
            (
                "name",
                structure(vec![("lastName", strings(&[Some("Doe")]))]),
            ),
            (
                "birthYear",
                Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
            ),
        ]),
    )]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("bool.parquet", data)],
        )
        .await;
    error_for(&b, "INGEST-1542-400", "/person/birthYear");

    // A column the schema lacks refuses the file, naming it.
    let data = parquet_of(vec![
        ("crmId", strings(&[Some("c1")])),
        (
            "person",
            structure(vec![
                (
                    "name",
                    structure(vec![("lastName", strings(&[Some("Doe")]))]),
                ),
                ("shoeSize", Arc::new(Int64Array::from(vec![42])) as ArrayRef),
            ]),
        ),
    ]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("extra.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    let d = b["errors"][0]["description"].as_str().unwrap();
    assert!(
        d.contains("extra.parquet") || d.contains("person.shoeSize"),
        "{d}"
    );
    assert!(d.contains("person.shoeSize") && d.contains("subset"), "{d}");
}

#[tokio::test]
async fn partial_ingestion_under_and_over_its_threshold() {
    let (env, _schemas) = start_with_schemas().await;
    // 100 rows, 3 bad (3%).
    let rows: Vec<Value> = (0..100)
        .map(|i| {
            let mut r = good_profile(i);
            if i % 33 == 32 {
                r["person"]["gender"] = json!("robot");
            }
            r
        })
        .collect();
    let data = jsonl(&rows);

    // Under the threshold: success, the good rows only.
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 5}),
            &[("p.json", data.clone())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(
        b["metrics"],
        json!({"inputFileCount": 1, "inputByteSize": data.len(), "inputRecordCount": 100,
               "outputRecordCount": 97, "failedRecordCount": 3})
    );
    let summary = &b["errors"][0];
    assert_eq!(summary["code"], "INGEST-1212-400", "{b:#}");
    let d = summary["description"].as_str().unwrap();
    assert!(d.contains("3 errors") && d.contains("97 rows"), "{d}");
    assert_eq!(
        error_for(&b, "INGEST-1543-400", "/person/gender")["recordCount"],
        3
    );
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["row"], 33);
    assert!(
        failed[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("robot")
    );
    // Data Access serves the good rows: records and content.
    let files = download_files(&env, &batch).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0["records"], 97);
    let served = String::from_utf8(files[0].1.clone()).unwrap();
    assert_eq!(files[0].0["size"], served.len());
    assert_eq!(served.lines().count(), 97);
    assert!(!served.contains("robot"));
    assert!(served.contains("\"c0\"") && served.contains("\"c99\""));

    // Over the threshold (the other spelling of the option): failed, nothing ingested.
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercent": 2}),
            &[("p.json", data.clone())],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 0);
    assert_eq!(b["metrics"]["failedRecordCount"], 3);
    assert!(errors_with(&b, "INGEST-1212-400").is_empty(), "{b:#}");
    assert_eq!(
        error_for(&b, "INGEST-1543-400", "/person/gender")["recordCount"],
        3
    );
    assert!(download_files(&env, &batch).await.is_empty());

    // Without partial ingestion one bad row fails the batch; without diagnostics the errors
    // are the platform's one summary.
    let one_bad = jsonl(&rows[..33]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({}),
            &[("p.json", one_bad)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["failedRecordCount"], 1);
    assert_eq!(b["errors"].as_array().unwrap().len(), 1);
    assert_eq!(b["errors"][0]["code"], "INGEST-1211-400");
    // Partial ingestion without diagnostics: success, and the summary says to turn them on.
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({"partialIngestionPercentage": 5}),
            &[("p.json", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["failedRecordCount"], 3);
    assert_eq!(b["errors"][0]["code"], "INGEST-1211-400");

    // CSV and Parquet: the good rows are served in the file's own format.
    let csv = b"crmId,person.name.lastName,person.gender\nc1,Doe,male\nc2,Roe,robot\nc3,\"Poe, Jr\",female\n"
        .to_vec();
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "csv"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("p.csv", csv)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    let files = download_files(&env, &batch).await;
    assert_eq!(files[0].0["records"], 2);
    assert_eq!(
        String::from_utf8(files[0].1.clone()).unwrap(),
        "crmId,person.name.lastName,person.gender\nc1,Doe,male\nc3,\"Poe, Jr\",female\n"
    );
    let data = parquet_of(vec![
        (
            "crmId",
            strings(&[Some("c1"), Some("c2"), Some("c3"), Some("c4")]),
        ),
        (
            "person",
            structure(vec![
                (
                    "name",
                    structure(vec![(
                        "lastName",
                        strings(&[Some("A"), Some("B"), None, Some("D")]),
                    )]),
                ),
                (
                    "gender",
                    strings(&[Some("male"), Some("robot"), Some("male"), Some("male")]),
                ),
            ]),
        ),
    ]);
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("p.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 2);
    let files = download_files(&env, &batch).await;
    assert_eq!(files[0].0["records"], 2);
    assert_eq!(parquet_rows(files[0].1.clone()), 2);
    // A multi-line JSON array is served as an array of its good elements.
    let arr = serde_json::to_vec_pretty(&rows[..34]).unwrap();
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json", "isMultiLineJson": true}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 5}),
            &[("arr.json", arr)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    let files = download_files(&env, &batch).await;
    let served: Vec<Value> = serde_json::from_slice(&files[0].1).unwrap();
    assert_eq!(served.len(), 33);
    assert_eq!(served[32]["crmId"], "c33");
}

async fn current(env: &Env, ds: &str, query: &str) -> (StatusCode, Value) {
    env.get_json(&format!("{EXPORT}/dataSets/{ds}/current{query}"))
        .await
}

#[tokio::test]
async fn two_upsert_batches_merge_into_the_current_view() {
    let (env, _schemas) = start_with_schemas().await;
    // Batch 1: two profiles with names and points.
    let first = parquet_of(vec![
        ("crmId", strings(&[Some("c1"), Some("c2")])),
        (
            "person",
            structure(vec![(
                "name",
                structure(vec![
                    ("firstName", strings(&[Some("Ada"), Some("Bob")])),
                    ("lastName", strings(&[Some("Doe"), Some("Roe")])),
                ]),
            )]),
        ),
        (
            "loyalty",
            structure(vec![
                (
                    "points",
                    Arc::new(Float64Array::from(vec![10.0, 5.0])) as ArrayRef,
                ),
                ("tier", strings(&[Some("silver"), Some("bronze")])),
            ]),
        ),
    ]);
    let (_, b) = env
        .ingest_into(
            UPSERT,
            json!({"format": "parquet"}),
            DIAG(),
            &[("day1.parquet", first)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    // Batch 2: only the loyalty points of c1, its first name, and a new profile c3; one row
    // without its identity fails (partial ingestion keeps the others).
    let second = parquet_of(vec![
        ("crmId", strings(&[Some("c1"), Some("c3"), None])),
        (
            "person",
            structure(vec![(
                "name",
                structure(vec![("firstName", strings(&[Some("Ada-Lou"), None, None]))]),
            )]),
        ),
        (
            "loyalty",
            structure(vec![(
                "points",
                Arc::new(Float64Array::from(vec![20.0, 1.0, 3.0])) as ArrayRef,
            )]),
        ),
    ]);
    let (b2, b) = env
        .ingest_into(
            UPSERT,
            json!({"format": "parquet"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("day2.parquet", second)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["failedRecordCount"], 1);
    error_for(&b, "INGEST-1555-400", "/crmId");

    let (s, view) = current(&env, UPSERT, "").await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["_page"]["total"], 3);
    let by_id: std::collections::HashMap<&str, &Value> = view["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["identity"].as_str().unwrap(), &r["record"]))
        .collect();
    // c1: the fields batch 2 carried changed, the others stayed.
    assert_eq!(
        *by_id["c1"],
        json!({"crmId": "c1", "person": {"name": {"firstName": "Ada-Lou", "lastName": "Doe"}},
               "loyalty": {"points": 20.0, "tier": "silver"}})
    );
    // c2: untouched by batch 2.
    assert_eq!(by_id["c2"]["person"]["name"]["firstName"], "Bob");
    assert_eq!(by_id["c2"]["loyalty"]["points"], 5.0);
    // c3: only what batch 2 carried.
    assert_eq!(
        *by_id["c3"],
        json!({"crmId": "c3", "person": {"name": {}}, "loyalty": {"points": 1.0}})
    );
    let (_, one) = current(&env, UPSERT, "?identity=c1").await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["lastBatchId"], b2.as_str());
    let (_, page) = current(&env, UPSERT, "?limit=2&start=2").await;
    assert_eq!(page["data"][0]["identity"], "c3");

    // Only Parquet goes into an upsert dataset.
    let (_, b) = env
        .ingest_into(
            UPSERT,
            json!({"format": "json"}),
            DIAG(),
            &[("rows.json", jsonl(&[good_profile(1)]))],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["errors"][0]["code"], "INGEST-1560-400");
    let d = b["errors"][0]["description"].as_str().unwrap();
    assert!(d.contains("Parquet") && d.contains("upsert"), "{d}");
    let (_, view) = current(&env, UPSERT, "?identity=c1").await;
    assert_eq!(view["data"][0]["record"]["loyalty"]["points"], 20.0);
    // A dataset that is not an upsert dataset has no current view.
    let (s, e) = current(&env, PROFILES, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("not an upsert"));
}

#[tokio::test]
async fn upsert_datasets_created_through_the_catalog_take_the_schemas_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = schema_config(dir.path());
    config.schemas[0].identity_field = "/personalEmail/address".into();
    let env = start(config).await;
    let r = env
        .req(Method::POST, &format!("{CATALOG}/dataSets"))
        .json(&json!({"name": "profiles", "schemaRef": {"id": PROFILE_ID,
                      "contentType": "application/vnd.adobe.xed-full+json;version=1"},
                      "tags": {"unifiedProfile": ["enabled:true", "isUpsert:true"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let ds = v[0].as_str().unwrap().trim_start_matches("@/dataSets/");
    let rows = |points: f64| {
        parquet_of(vec![
            (
                "personalEmail",
                structure(vec![("address", strings(&[Some("a@x.io")]))]),
            ),
            (
                "loyalty",
                structure(vec![(
                    "points",
                    Arc::new(Float64Array::from(vec![points])) as ArrayRef,
                )]),
            ),
        ])
    };
    for points in [1.0, 2.0] {
        let (_, b) = env
            .ingest_into(
                ds,
                json!({"format": "parquet"}),
                DIAG(),
                &[("p.parquet", rows(points))],
            )
            .await;
        assert_eq!(b["status"], "success", "{b:#}");
    }
    let (_, view) = current(&env, ds, "").await;
    assert_eq!(view["_page"]["total"], 1);
    assert_eq!(view["data"][0]["identity"], "a@x.io");
    assert_eq!(view["data"][0]["record"]["loyalty"]["points"], 2.0);

    // The flat schema names EMAIL as its identity field.
    let create_upsert = |schema: &str| {
        env.req(Method::POST, &format!("{CATALOG}/dataSets"))
            .json(&json!({"name": "u", "schemaRef": {"id": schema},
                          "tags": {"unifiedProfile": ["enabled:true", "isUpsert:true"]}}))
            .send()
    };
    let v: Value = create_upsert(FLAT_ID).await.unwrap().json().await.unwrap();
    let flat = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    let data = parquet_of(vec![
        ("EMAIL", strings(&[Some("a@x.io")])),
        ("L_NAME", strings(&[Some("Doe")])),
    ]);
    let (_, b) = env
        .ingest_into(
            &flat,
            json!({"format": "parquet"}),
            DIAG(),
            &[("f.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    let (_, view) = current(&env, &flat, "").await;
    assert_eq!(view["data"][0]["identity"], "a@x.io");

    // An upsert dataset whose schema names no identity field: the batch fails saying how to
    // fix it.
    env.emu()
        .register_schema(
            "urn:no-identity",
            &json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        )
        .await
        .unwrap();
    let v: Value = create_upsert("urn:no-identity")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let none = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    let data = parquet_of(vec![("a", strings(&[Some("x")]))]);
    let (_, b) = env
        .ingest_into(
            &none,
            json!({"format": "parquet"}),
            DIAG(),
            &[("a.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["errors"][0]["code"], "INGEST-1560-400");
    let d = b["errors"][0]["description"].as_str().unwrap();
    assert!(d.contains("identity_field"), "{d}");
}

#[tokio::test]
async fn schemas_come_from_the_config_the_catalog_and_the_embedded_api() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(schema_config(dir.path())).await;
    // The config's dataset references its schema.
    let (_, d) = env
        .get_json(&format!("{CATALOG}/dataSets/{PROFILES}"))
        .await;
    assert_eq!(d[PROFILES]["schemaRef"]["id"], PROFILE_ID);
    // POST /dataSets with a registered schemaRef gets it; an unknown one is refused.
    let create = |schema: &str| {
        env.req(Method::POST, &format!("{CATALOG}/dataSets"))
            .json(&json!({"name": "d", "schemaRef": {"id": schema,
                          "contentType": "application/vnd.adobe.xed-full+json;version=1"}}))
            .send()
    };
    let r = create(PROFILE_ID).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let ds = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    let bad = jsonl(&[json!({"person": {"name": {"firstName": "x"}}})]);
    let (_, b) = env
        .ingest_into(
            &ds,
            json!({"format": "json"}),
            DIAG(),
            &[("b.json", bad.clone())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    error_for(&b, "INGEST-1555-400", "/person/name/lastName");
    let r = create("https://ns.adobe.com/tenant/schemas/unknown")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("unknown") && detail.contains(PROFILE_ID),
        "{detail}"
    );

    // The embedded API: register a schema later and attach it to a dataset.
    let emu = env.emu();
    let tiny =
        json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}});
    emu.register_schema("urn:tiny", &tiny).await.unwrap();
    emu.ensure_dataset_with_schema("folder-tiny", "tiny", "urn:tiny")
        .await
        .unwrap();
    let err = emu
        .ensure_dataset_with_schema("folder-x", "x", "urn:nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("urn:nope") && err.contains("register"),
        "{err}"
    );
    let err = emu
        .register_schema("urn:bad", &json!({"type": "array"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("urn:bad") && err.contains("root"), "{err}");
    // A keyword of the wrong JSON type would silently check nothing: refused, by name.
    let err = emu
        .register_schema(
            "urn:loose",
            &json!({"type": "object", "required": "id", "properties": {"id": {"type": "string"}}}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("urn:loose") && err.contains("required must be a list of strings"),
        "{err}"
    );
    let (_, b) = env
        .ingest_into(
            "folder-tiny",
            json!({"format": "json"}),
            DIAG(),
            &[("t.json", b"{\"id\": \"7\"}\n{\"id\": \"seven\"}\n".to_vec())],
        )
        .await;
    assert_eq!(b["metrics"]["failedRecordCount"], 1, "{b:#}");
    error_for(&b, "INGEST-1542-400", "/id");

    // Registered schemas survive a restart, even without the config that named them.
    let env = env.restart(cfg()).await;
    let (_, b) = env
        .ingest_into(
            "folder-tiny",
            json!({"format": "json"}),
            DIAG(),
            &[("t.json", b"{\"id\": \"seven\"}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    let (_, b) = env
        .ingest_into(&ds, json!({"format": "json"}), DIAG(), &[("b.json", bad)])
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
}

#[tokio::test]
async fn bad_schema_configs_stop_the_start_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let try_start = |config: EmulatorConfig| {
        let data = data.path().to_path_buf();
        async move {
            Emulator::start("127.0.0.1:0".parse().unwrap(), &data, config)
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    };
    let missing = EmulatorConfig {
        schemas: vec![SchemaSeed {
            file: PathBuf::from("/nonexistent/schema.json"),
            ..SchemaSeed::default()
        }],
        ..cfg()
    };
    let e = try_start(missing).await;
    assert!(
        e.contains("/nonexistent/schema.json") && e.contains("cannot be read"),
        "{e}"
    );
    let external = dir.path().join("ext.json");
    std::fs::write(
        &external,
        json!({"$id": "urn:x", "type": "object", "allOf": [{"$ref": "https://ns.adobe.com/xdm/context/profile"}]})
            .to_string(),
    )
    .unwrap();
    let e = try_start(EmulatorConfig {
        schemas: vec![SchemaSeed {
            file: external,
            ..SchemaSeed::default()
        }],
        ..cfg()
    })
    .await;
    assert!(e.contains("xed-full"), "{e}");
    let e = try_start(EmulatorConfig {
        datasets: vec![DatasetSeed {
            id: "d".into(),
            schema: "no-such-schema".into(),
            ..DatasetSeed::default()
        }],
        ..cfg()
    })
    .await;
    assert!(
        e.contains("no-such-schema") && e.contains("[[schemas]]"),
        "{e}"
    );
    // The TOML form, with a file relative to the config file.
    std::fs::write(dir.path().join("p.json"), profile_schema().to_string()).unwrap();
    let toml_path = dir.path().join("emulator.toml");
    std::fs::write(
        &toml_path,
        "[[schemas]]\nfile = \"p.json\"\nidentity_field = \"crmId\"\n\n[[datasets]]\nid = \"x\"\nschema = \"CRM profile\"\ntags = { unifiedProfile = [\"enabled:true\", \"isUpsert:true\"] }\n",
    )
    .unwrap();
    let config = EmulatorConfig::from_file(&toml_path).unwrap();
    let env = start(config).await;
    let (_, d) = env.get_json(&format!("{CATALOG}/dataSets/x")).await;
    assert_eq!(d["x"]["schemaRef"]["id"], PROFILE_ID);
    assert_eq!(d["x"]["tags"]["unifiedProfile"][1], "isUpsert:true");
}

#[tokio::test]
async fn a_data_dir_of_an_older_emulator_gets_the_new_columns() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    {
        // The tables as the first release made them (without the columns added since).
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("emulator.sqlite").display()
        );
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for stmt in [
            "CREATE TABLE datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL, schema_ref TEXT,
                tags TEXT NOT NULL DEFAULT '{}', extra TEXT NOT NULL DEFAULT '{}',
                ims_org TEXT NOT NULL DEFAULT '', sandbox TEXT NOT NULL DEFAULT '',
                created INTEGER NOT NULL, updated INTEGER NOT NULL)",
            "CREATE TABLE files (id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, path TEXT NOT NULL,
                kind TEXT NOT NULL, state TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0,
                records INTEGER, created INTEGER NOT NULL, updated INTEGER NOT NULL,
                UNIQUE (batch_id, path))",
            "CREATE TABLE failed_rows (batch_id TEXT NOT NULL, seq INTEGER NOT NULL,
                file_path TEXT NOT NULL, row_no INTEGER, code TEXT NOT NULL, message TEXT NOT NULL,
                raw TEXT, PRIMARY KEY (batch_id, seq))",
            "INSERT INTO datasets (id, name, created, updated) VALUES ('old', 'old one', 1, 1)",
        ] {
            sqlx::query(stmt).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
    }
    let env = start_in(dir, cfg()).await;
    let (s, d) = env.get_json(&format!("{CATALOG}/dataSets/old")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["old"]["name"], "old one");
    let (batch, b) = env
        .ingest_into(
            "old",
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("a.json", b"{\"a\": 1}\nnope\n{\"a\": 3}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(
        env.failed_rows(&batch).await[0]["errors"][0]["code"],
        "INGEST-1401-400"
    );
    let files = download_files(&env, &batch).await;
    assert_eq!(files[0].1, b"{\"a\": 1}\n{\"a\": 3}\n");
}
