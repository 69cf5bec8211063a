//! Arrow columns built row by row from mapped records, one builder per field of the shape
//! (nested structs, lists and maps included), emptied into a record batch every few thousand
//! rows so that memory stays flat.
//!
//! Values arrive already fitted to their column (`Shape::fit`); this module never converts,
//! and must not decide types (`shape.rs` does).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int8Builder, Int16Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, MapArray, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, FieldRef, Fields};
use chrono::NaiveDate;

use crate::datum::Datum;
use crate::shape::{Shape, list_item, map_entries, map_entry_fields, struct_fields};
use crate::xdm::IntWidth;

pub(crate) enum Column {
    Utf8(StringBuilder),
    Bool(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Struct {
        fields: Fields,
        names: Vec<Arc<str>>,
        children: Vec<Column>,
        validity: NullBufferBuilder,
    },
    List {
        item: FieldRef,
        child: Box<Column>,
        offsets: Vec<i32>,
        validity: NullBufferBuilder,
    },
    Map {
        entries: FieldRef,
        entry_fields: Fields,
        keys: StringBuilder,
        values: Box<Column>,
        offsets: Vec<i32>,
        validity: NullBufferBuilder,
    },
}

const CAPACITY: usize = 1024;

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date")
}

impl Column {
    pub fn new(shape: &Shape) -> Column {
        match shape {
            Shape::Unknown | Shape::Utf8 => Column::Utf8(StringBuilder::new()),
            Shape::Bool => Column::Bool(BooleanBuilder::new()),
            Shape::Int(IntWidth::Byte) => Column::Int8(Int8Builder::new()),
            Shape::Int(IntWidth::Short) => Column::Int16(Int16Builder::new()),
            Shape::Int(IntWidth::Int) => Column::Int32(Int32Builder::new()),
            Shape::Int(IntWidth::Long) => Column::Int64(Int64Builder::new()),
            Shape::Float64 => Column::Float64(Float64Builder::new()),
            Shape::Date32 => Column::Date32(Date32Builder::new()),
            Shape::Timestamp => {
                Column::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            Shape::Struct(fields) => Column::Struct {
                fields: struct_fields(fields),
                names: fields.iter().map(|(n, _)| n.clone()).collect(),
                children: fields.iter().map(|(_, s)| Column::new(s)).collect(),
                validity: NullBufferBuilder::new(CAPACITY),
            },
            Shape::List(item) => Column::List {
                item: Arc::new(list_item(item)),
                child: Box::new(Column::new(item)),
                offsets: vec![0],
                validity: NullBufferBuilder::new(CAPACITY),
            },
            Shape::Map(value) => Column::Map {
                entries: Arc::new(map_entries(value)),
                entry_fields: map_entry_fields(value),
                keys: StringBuilder::new(),
                values: Box::new(Column::new(value)),
                offsets: vec![0],
                validity: NullBufferBuilder::new(CAPACITY),
            },
        }
    }

    /// Appends one value (null when absent, or when it is not of the column's type, which a
    /// fitted value always is).
    pub fn append(&mut self, value: Option<&Datum>) {
        let value = value.filter(|v| !v.is_null());
        match self {
            Column::Utf8(b) => match value {
                Some(Datum::Str(s)) => b.append_value(s),
                _ => b.append_null(),
            },
            Column::Bool(b) => b.append_option(match value {
                Some(Datum::Bool(x)) => Some(*x),
                _ => None,
            }),
            Column::Int8(b) => b.append_option(int(value).and_then(|i| i8::try_from(i).ok())),
            Column::Int16(b) => b.append_option(int(value).and_then(|i| i16::try_from(i).ok())),
            Column::Int32(b) => b.append_option(int(value).and_then(|i| i32::try_from(i).ok())),
            Column::Int64(b) => b.append_option(int(value)),
            Column::Float64(b) => b.append_option(match value {
                Some(Datum::Float(f)) => Some(*f),
                Some(Datum::Int(i)) => Some(*i as f64),
                _ => None,
            }),
            Column::Date32(b) => b.append_option(match value {
                Some(Datum::Date(day)) => i32::try_from((*day - epoch()).num_days()).ok(),
                _ => None,
            }),
            Column::Timestamp(b) => b.append_option(match value {
                Some(Datum::DateTime(at)) => Some(at.timestamp_micros()),
                _ => None,
            }),
            Column::Struct {
                names,
                children,
                validity,
                ..
            } => match value {
                Some(record @ Datum::Object(_)) => {
                    let mut cursor = 0;
                    for (name, child) in names.iter().zip(children.iter_mut()) {
                        child.append(record.field_at(name, &mut cursor));
                    }
                    validity.append_non_null();
                }
                _ => {
                    for child in children.iter_mut() {
                        child.append(None);
                    }
                    validity.append_null();
                }
            },
            Column::List {
                child,
                offsets,
                validity,
                ..
            } => {
                let end = *offsets.last().unwrap_or(&0);
                match value {
                    Some(Datum::Array(items)) => {
                        for item in items {
                            child.append(Some(item));
                        }
                        offsets.push(end + items.len() as i32);
                        validity.append_non_null();
                    }
                    _ => {
                        offsets.push(end);
                        validity.append_null();
                    }
                }
            }
            Column::Map {
                keys,
                values,
                offsets,
                validity,
                ..
            } => {
                let end = *offsets.last().unwrap_or(&0);
                match value {
                    Some(Datum::Object(entries)) => {
                        for (key, v) in entries {
                            keys.append_value(key);
                            values.append(Some(v));
                        }
                        offsets.push(end + entries.len() as i32);
                        validity.append_non_null();
                    }
                    _ => {
                        offsets.push(end);
                        validity.append_null();
                    }
                }
            }
        }
    }

    /// The column's values so far (the builder starts again empty).
    pub fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int8(b) => Arc::new(b.finish()),
            Column::Int16(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Date32(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Struct {
                fields,
                children,
                validity,
                ..
            } => {
                let arrays = children
                    .iter_mut()
                    .map(Column::finish)
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new(
                    fields.clone(),
                    arrays,
                    validity.finish(),
                )?)
            }
            Column::List {
                item,
                child,
                offsets,
                validity,
            } => {
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::try_new(
                    item.clone(),
                    offsets,
                    child.finish()?,
                    validity.finish(),
                )?)
            }
            Column::Map {
                entries,
                entry_fields,
                keys,
                values,
                offsets,
                validity,
            } => {
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let pairs = StructArray::try_new(
                    entry_fields.clone(),
                    vec![Arc::new(keys.finish()), values.finish()?],
                    None,
                )?;
                Arc::new(MapArray::try_new(
                    entries.clone(),
                    offsets,
                    pairs,
                    validity.finish(),
                    false,
                )?)
            }
        })
    }

    /// The columns of the record (the root struct), for a record batch.
    pub fn finish_fields(&mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        match self {
            Column::Struct {
                children, validity, ..
            } => {
                validity.finish();
                children.iter_mut().map(Column::finish).collect()
            }
            other => Ok(vec![other.finish()?]),
        }
    }
}

fn int(value: Option<&Datum>) -> Option<i64> {
    match value {
        Some(Datum::Int(i)) => Some(*i),
        _ => None,
    }
}
