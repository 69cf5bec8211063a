//! Parquet rows and columns as the platform reads them: a row becomes a JSON object (structs
//! objects, lists arrays, maps objects, timestamps ISO 8601 date-times in UTC, dates
//! `YYYY-MM-DD`; null columns left out) to be checked like any record; a file's columns must
//! be fields of the schema (a file may carry a subset of them; a column the schema lacks
//! refuses the file). Shared by the emulator (processing) and the daemon (checking before
//! upload), so both read a Parquet file alike.
//!
//! It works on decoded Arrow data: it reads no file.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use serde_json::Value;

use crate::{IssueCode, Schema};

/// Whether every column of a Parquet file (`arrow`, its leaves through structs and lists of
/// structs) is a field of `schema`; else the code and message refusing the file.
pub fn check_columns(
    schema: &Schema,
    arrow: &arrow_schema::Schema,
) -> Result<(), (IssueCode, String)> {
    let mut paths: Vec<Vec<String>> = Vec::new();
    for f in arrow.fields() {
        collect_paths(f, Vec::new(), &mut paths);
    }
    for path in &paths {
        let segs: Vec<&str> = path.iter().map(String::as_str).collect();
        if let Err(at) = schema.check_path(&segs) {
            let column = path.join(".");
            let field = path[..=at].join(".");
            let fields = schema.top_fields().join(", ");
            let where_ = if at == 0 {
                format!("the schema's record fields are: {fields}")
            } else {
                format!("'{}' has no field '{}'", path[..at].join("."), path[at])
            };
            return Err((
                IssueCode::Type,
                format!(
                    "Parquet column '{column}' is not a field of schema {} ('{field}' is unknown; {where_}): a Parquet file must carry a subset of the dataset's fields; rename or drop the column",
                    schema.id
                ),
            ));
        }
    }
    Ok(())
}

/// The leaf paths of a Parquet column (through structs and lists of structs).
fn collect_paths(f: &arrow_schema::Field, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    prefix.push(f.name().clone());
    let mut dt = f.data_type();
    while let DataType::List(inner) | DataType::LargeList(inner) = dt {
        dt = inner.data_type();
    }
    match dt {
        DataType::Struct(children) if !children.is_empty() => {
            for c in children {
                collect_paths(c, prefix.clone(), out);
            }
        }
        _ => out.push(prefix),
    }
}

/// A Parquet row as a JSON object: structs become objects, lists arrays, maps objects,
/// timestamps ISO 8601 date-times (UTC), dates `YYYY-MM-DD`; null columns are left out.
pub fn row_json(batch: &RecordBatch, row: usize) -> Value {
    let schema = batch.schema();
    let mut obj = serde_json::Map::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let v = arrow_value(batch.column(i).as_ref(), row);
        if !v.is_null() {
            obj.insert(field.name().clone(), v);
        }
    }
    Value::Object(obj)
}

fn arrow_value(col: &dyn Array, row: usize) -> Value {
    if col.is_null(row) {
        return Value::Null;
    }
    macro_rules! prim {
        ($t:ty) => {
            Value::from(col.as_primitive::<$t>().value(row))
        };
    }
    match col.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(col.as_boolean().value(row)),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float16 => json_num(col.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => json_num(f64::from(col.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => json_num(col.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => json_num(
            col.as_primitive::<Decimal128Type>().value(row) as f64 / 10f64.powi(i32::from(*scale)),
        ),
        DataType::Utf8 => Value::String(col.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(col.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(col.as_string_view().value(row).to_owned()),
        DataType::Binary => {
            Value::String(String::from_utf8_lossy(col.as_binary::<i32>().value(row)).into_owned())
        }
        DataType::LargeBinary => {
            Value::String(String::from_utf8_lossy(col.as_binary::<i64>().value(row)).into_owned())
        }
        DataType::Date32 => {
            let days = i64::from(col.as_primitive::<Date32Type>().value(row));
            date_json(days.saturating_mul(86_400_000))
        }
        DataType::Date64 => date_json(col.as_primitive::<Date64Type>().value(row)),
        DataType::Timestamp(unit, _) => timestamp_json(col, *unit, row),
        DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) => {
            nested_json(col, row)
        }
        other => Value::String(format!("<unsupported Parquet type {other}>")),
    }
}

fn date_json(ms: i64) -> Value {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.date_naive().format("%Y-%m-%d").to_string()),
        None => Value::String(format!("<date {ms}ms out of range>")),
    }
}

fn json_num(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// A timestamp as an ISO 8601 date-time (UTC).
fn timestamp_json(col: &dyn Array, unit: TimeUnit, row: usize) -> Value {
    let (secs, nanos) = match unit {
        TimeUnit::Second => (col.as_primitive::<TimestampSecondType>().value(row), 0),
        TimeUnit::Millisecond => {
            let v = col.as_primitive::<TimestampMillisecondType>().value(row);
            (v.div_euclid(1000), v.rem_euclid(1000) * 1_000_000)
        }
        TimeUnit::Microsecond => {
            let v = col.as_primitive::<TimestampMicrosecondType>().value(row);
            (v.div_euclid(1_000_000), v.rem_euclid(1_000_000) * 1000)
        }
        TimeUnit::Nanosecond => {
            let v = col.as_primitive::<TimestampNanosecondType>().value(row);
            (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000))
        }
    };
    match chrono::DateTime::from_timestamp(secs, nanos as u32) {
        Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        None => Value::String(format!("<timestamp {secs}s out of range>")),
    }
}

/// Structs as objects, lists as arrays, maps as objects.
fn nested_json(col: &dyn Array, row: usize) -> Value {
    match col.data_type() {
        DataType::Struct(fields) => {
            let s = col.as_struct();
            let mut obj = serde_json::Map::new();
            for (i, f) in fields.iter().enumerate() {
                let v = arrow_value(s.column(i).as_ref(), row);
                if !v.is_null() {
                    obj.insert(f.name().clone(), v);
                }
            }
            Value::Object(obj)
        }
        DataType::List(_) => {
            let items = col.as_list::<i32>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| arrow_value(items.as_ref(), i))
                    .collect(),
            )
        }
        DataType::LargeList(_) => {
            let items = col.as_list::<i64>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| arrow_value(items.as_ref(), i))
                    .collect(),
            )
        }
        DataType::Map(_, _) => {
            let entries = col.as_map().value(row);
            let mut obj = serde_json::Map::new();
            for i in 0..arrow_array::Array::len(&entries) {
                let key = match arrow_value(entries.column(0).as_ref(), i) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(key, arrow_value(entries.column(1).as_ref(), i));
            }
            Value::Object(obj)
        }
        _ => Value::Null,
    }
}
