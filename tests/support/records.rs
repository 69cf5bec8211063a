//! Reading records back for comparison: JSON Lines bytes as values, a Parquet file as JSON
//! (through the mapping crate's own reader), and field-for-field equality with doubles within
//! 1e-6 (the guide's sample rounds some coordinates differently from its CSV).
//!
//! Shared by the daemon's tests (`support::records`) and the mapping crate's own tests (by
//! `#[path]`): it may use only serde_json and batchdrop_mapping.
#![allow(dead_code)]

use std::path::Path;

use batchdrop_mapping::{InputFormat, Mapper, MappingSet, Options, Output, OutputFormat};
use serde_json::{Value, json};

/// Every non-empty line of JSON Lines bytes, parsed.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Every record of a Parquet file of the CRM profile shape as JSON, read by a mapping that
/// copies its top-level fields.
pub fn parquet_as_json(path: &Path) -> Vec<Value> {
    let copy: Vec<Value> = [
        "person",
        "identityMap",
        "homePhone",
        "personalEmail",
        "homeAddress",
    ]
    .iter()
    .map(|f| json!({"sourceType": "ATTRIBUTE", "source": f, "destination": f}))
    .collect();
    let set = MappingSet::from_json(json!({ "mappings": copy }).to_string().as_bytes()).unwrap();
    let mut out = Vec::new();
    batchdrop_mapping::map_file(
        &Mapper::new(set, None),
        path,
        &InputFormat::Parquet,
        Some(Output {
            format: OutputFormat::JsonLines,
            writer: &mut out,
        }),
        &Options::default(),
        &mut |r| panic!("{}: {r:?}", path.display()),
    )
    .unwrap();
    json_lines(&out)
}

/// Equal field for field (the same fields, the same items); numbers where either side is a
/// double within 1e-6. `at` names the value in the failure.
pub fn assert_same(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let mut fields: (Vec<&String>, Vec<&String>) = (e.keys().collect(), a.keys().collect());
            fields.0.sort();
            fields.1.sort();
            assert_eq!(fields.0, fields.1, "the fields of {at}");
            for (k, v) in e {
                assert_same(v, &a[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "the items of {at}");
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                assert_same(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(e), Value::Number(a)) if e.is_f64() || a.is_f64() => {
            let (x, y) = (e.as_f64().unwrap(), a.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-6, "{at}: {x} against {y}");
        }
        _ => assert_eq!(expected, actual, "{at}"),
    }
}
