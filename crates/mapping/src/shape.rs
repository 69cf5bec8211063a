//! The Parquet columns of a mapped file: only the fields the mapping set writes, typed by the
//! dataset's schema where it names them and by the values of the first rows elsewhere.
//!
//! - A field the schema types gets its type: `string` → UTF-8, `format: date` → DATE,
//!   `format: date-time` → TIMESTAMP (microseconds, UTC), `integer` → INT8/16/32/64 by
//!   `meta:xdmType` (byte, short, int, long; plain `integer` is a long), `number` → DOUBLE,
//!   `boolean` → BOOLEAN, `array` → LIST, `object` → a struct of the fields written.
//! - An object with no `properties` and an `additionalProperties` schema (XDM's maps, such as
//!   `identityMap`) is a Parquet MAP from string keys to that schema's values: the emulator
//!   and the platform read a MAP as an object, and a struct would need a column per key.
//! - Without a schema (or outside it), the first rows decide: objects are structs of the keys
//!   seen, arrays lists, text UTF-8, integers INT64 (DOUBLE if a fraction shows up), dates
//!   DATE and date-times TIMESTAMP; a field that was always null is UTF-8.
//!
//! A later row that does not fit (a key not seen in the first rows, text where a number was)
//! is converted when a conversion applies and rejected otherwise, naming the field. This
//! module must not write files (`columns.rs` and `write.rs` do).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, TimeUnit};

use crate::datum::{Datum, same_name};
use crate::mapping_set::MappingSet;
use crate::path::Segment;
use crate::xdm::{self, Additional, IntWidth, Kind, Node, Scalar};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// Nothing known yet (UTF-8 once fixed).
    Unknown,
    Utf8,
    Bool,
    Int(IntWidth),
    Float64,
    Date32,
    Timestamp,
    /// Names shared with the mapping set's destinations where they come from there.
    Struct(Vec<(Arc<str>, Shape)>),
    List(Box<Shape>),
    Map(Box<Shape>),
}

/// Why a value does not fit its column.
#[derive(Debug)]
pub(crate) struct Misfit {
    /// The field, dotted.
    pub field: String,
    pub message: String,
}

impl Shape {
    /// The fields the destinations name, in the mapping set's order, types unknown.
    pub fn skeleton(set: &MappingSet) -> Shape {
        let mut root = Shape::Struct(Vec::new());
        for destination in set.destinations() {
            root.add_path(&destination.segments);
        }
        root
    }

    fn add_path(&mut self, path: &[Segment]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        match first {
            Segment::Key(name) => {
                if *self == Shape::Unknown {
                    *self = Shape::Struct(Vec::new());
                }
                if let Shape::Struct(fields) = self {
                    field_entry(fields, name, Some(name)).add_path(rest);
                }
            }
            Segment::Index(_) | Segment::Each => {
                if *self == Shape::Unknown {
                    *self = Shape::List(Box::new(Shape::Unknown));
                }
                if let Shape::List(item) = self {
                    item.add_path(rest);
                }
            }
        }
    }

    /// Learns from a mapped record (before the columns are fixed).
    pub fn observe(&mut self, value: &Datum) {
        match value {
            Datum::Null => {}
            Datum::Array(items) => {
                if *self == Shape::Unknown {
                    *self = Shape::List(Box::new(Shape::Unknown));
                }
                if let Shape::List(item) = self {
                    for element in items {
                        item.observe(element);
                    }
                }
            }
            Datum::Object(entries) => {
                if *self == Shape::Unknown {
                    *self = Shape::Struct(Vec::new());
                }
                match self {
                    Shape::Struct(fields) => {
                        for (name, v) in entries {
                            field_entry(fields, name, None).observe(v);
                        }
                    }
                    Shape::Map(values) => {
                        for (_, v) in entries {
                            values.observe(v);
                        }
                    }
                    _ => {}
                }
            }
            scalar => {
                let seen = match scalar {
                    Datum::Bool(_) => Shape::Bool,
                    Datum::Int(_) => Shape::Int(IntWidth::Long),
                    Datum::Float(_) => Shape::Float64,
                    Datum::Date(_) => Shape::Date32,
                    Datum::DateTime(_) => Shape::Timestamp,
                    _ => Shape::Utf8,
                };
                if self.is_scalar() || *self == Shape::Unknown {
                    *self = merge_scalars(self, &seen);
                }
            }
        }
    }

    fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Shape::Unknown | Shape::Struct(_) | Shape::List(_) | Shape::Map(_)
        )
    }

    /// Types the shape with the schema (the node of the same field).
    pub fn apply_schema(&mut self, node: &Node) {
        match &node.kind {
            Kind::Any => {}
            Kind::Array(items) => {
                if !matches!(self, Shape::List(_)) {
                    *self = Shape::List(Box::new(Shape::Unknown));
                }
                if let (Shape::List(item), Some(items)) = (self, items) {
                    item.apply_schema(items);
                }
            }
            Kind::Object(object) => {
                if let (true, Additional::Map(values)) =
                    (object.properties.is_empty(), &object.additional)
                {
                    let mut value = match std::mem::replace(self, Shape::Unknown) {
                        Shape::Struct(fields) => fields
                            .into_iter()
                            .fold(Shape::Unknown, |acc, (_, shape)| merge(acc, shape)),
                        Shape::Map(value) => *value,
                        _ => Shape::Unknown,
                    };
                    value.apply_schema(values);
                    *self = Shape::Map(Box::new(value));
                    return;
                }
                if !matches!(self, Shape::Struct(_)) {
                    *self = Shape::Struct(Vec::new());
                }
                if let Shape::Struct(fields) = self {
                    for (name, shape) in fields.iter_mut() {
                        match object.property(name) {
                            Some(child) => shape.apply_schema(child),
                            None => {
                                if let Additional::Map(values) = &object.additional {
                                    shape.apply_schema(values);
                                }
                            }
                        }
                    }
                }
            }
            _ => {
                *self = match (node.scalar(), &node.kind) {
                    (Some(Scalar::Integer), Kind::Integer(width)) => Shape::Int(*width),
                    (Some(Scalar::Number), _) => Shape::Float64,
                    (Some(Scalar::Boolean), _) => Shape::Bool,
                    (Some(Scalar::Date), _) => Shape::Date32,
                    (Some(Scalar::DateTime), _) => Shape::Timestamp,
                    _ => Shape::Utf8,
                };
            }
        }
    }

    /// Fixes what is still unknown: UTF-8; objects never written with a field are left out
    /// (Parquet has no empty groups).
    pub fn finish(self) -> Shape {
        match self {
            Shape::Unknown => Shape::Utf8,
            Shape::Struct(fields) => Shape::Struct(
                fields
                    .into_iter()
                    .map(|(name, shape)| (name, shape.finish()))
                    .filter(|(_, shape)| !shape.is_empty_struct())
                    .collect(),
            ),
            Shape::List(item) => Shape::List(Box::new(item.finish().or_text())),
            Shape::Map(value) => Shape::Map(Box::new(value.finish().or_text())),
            scalar => scalar,
        }
    }

    fn is_empty_struct(&self) -> bool {
        matches!(self, Shape::Struct(fields) if fields.is_empty())
    }

    fn or_text(self) -> Shape {
        if self.is_empty_struct() {
            Shape::Utf8
        } else {
            self
        }
    }

    /// Converts a value to its column's type where a conversion applies, or says why it does
    /// not fit.
    pub fn fit(&self, value: &mut Datum) -> Result<(), Misfit> {
        let misfit = |message: String| Misfit {
            field: String::new(),
            message,
        };
        if value.is_null() {
            return Ok(());
        }
        match self {
            Shape::Struct(fields) => {
                let Datum::Object(entries) = value else {
                    return Err(misfit(format!(
                        "expected an object, found {} {}",
                        value.kind(),
                        value.excerpt()
                    )));
                };
                // A record lists its fields in the columns' order: look where the last one
                // was found first.
                let mut cursor = 0;
                for (name, v) in entries.iter_mut() {
                    let at = match fields.get(cursor) {
                        Some((n, _)) if same_name(n, name) => Some(cursor),
                        _ => fields.iter().position(|(n, _)| same_name(n, name)),
                    };
                    match at {
                        Some(i) => {
                            cursor = i + 1;
                            fields[i].1.fit(v).map_err(|e| e.inside(name))?
                        }
                        None if v.is_null() || matches!(v, Datum::Object(o) if o.is_empty()) => {}
                        None => {
                            return Err(Misfit {
                                field: name.to_string(),
                                message: "this field is not a column of the output: its columns were fixed by the schema and the first rows; give the dataset's schema (--schema), or write JSON Lines".into(),
                            });
                        }
                    }
                }
                Ok(())
            }
            Shape::List(item) => {
                let Datum::Array(elements) = value else {
                    return Err(misfit(format!(
                        "expected an array, found {} {}",
                        value.kind(),
                        value.excerpt()
                    )));
                };
                for (i, element) in elements.iter_mut().enumerate() {
                    item.fit(element).map_err(|e| e.inside(&format!("[{i}]")))?;
                }
                Ok(())
            }
            Shape::Map(values) => {
                let Datum::Object(entries) = value else {
                    return Err(misfit(format!(
                        "expected an object (a map), found {} {}",
                        value.kind(),
                        value.excerpt()
                    )));
                };
                for (name, v) in entries.iter_mut() {
                    values.fit(v).map_err(|e| e.inside(name))?;
                }
                Ok(())
            }
            Shape::Unknown | Shape::Utf8 if matches!(value, Datum::Bool(_)) => {
                // A column typed by the first rows: a boolean among text is text.
                let text = if matches!(value, Datum::Bool(true)) {
                    "true"
                } else {
                    "false"
                };
                *value = Datum::Str(text.into());
                Ok(())
            }
            scalar => {
                let target = match scalar {
                    Shape::Bool => Scalar::Boolean,
                    Shape::Int(_) => Scalar::Integer,
                    Shape::Float64 => Scalar::Number,
                    Shape::Date32 => Scalar::Date,
                    Shape::Timestamp => Scalar::DateTime,
                    _ => Scalar::String,
                };
                if let Some(converted) = xdm::convert_scalar(target, value).map_err(misfit)? {
                    *value = converted;
                }
                if let (Shape::Int(width), Datum::Int(i)) = (scalar, &*value) {
                    let (low, high) = width_range(*width);
                    if !(low..=high).contains(i) {
                        return Err(misfit(format!(
                            "{i} is out of range for the column ({low} to {high})"
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// The Arrow type of the column.
    pub fn data_type(&self) -> DataType {
        match self {
            Shape::Unknown | Shape::Utf8 => DataType::Utf8,
            Shape::Bool => DataType::Boolean,
            Shape::Int(IntWidth::Byte) => DataType::Int8,
            Shape::Int(IntWidth::Short) => DataType::Int16,
            Shape::Int(IntWidth::Int) => DataType::Int32,
            Shape::Int(IntWidth::Long) => DataType::Int64,
            Shape::Float64 => DataType::Float64,
            Shape::Date32 => DataType::Date32,
            Shape::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Shape::Struct(fields) => DataType::Struct(struct_fields(fields)),
            Shape::List(item) => DataType::List(Arc::new(list_item(item))),
            Shape::Map(value) => DataType::Map(Arc::new(map_entries(value)), false),
        }
    }
}

pub(crate) fn struct_fields(fields: &[(Arc<str>, Shape)]) -> Fields {
    fields
        .iter()
        .map(|(name, shape)| Field::new(name.as_ref(), shape.data_type(), true))
        .collect()
}

pub(crate) fn list_item(item: &Shape) -> Field {
    Field::new("element", item.data_type(), true)
}

pub(crate) fn map_entries(value: &Shape) -> Field {
    Field::new(
        "key_value",
        DataType::Struct(map_entry_fields(value)),
        false,
    )
}

pub(crate) fn map_entry_fields(value: &Shape) -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", value.data_type(), true),
    ])
}

fn width_range(width: IntWidth) -> (i64, i64) {
    match width {
        IntWidth::Byte => (i64::from(i8::MIN), i64::from(i8::MAX)),
        IntWidth::Short => (i64::from(i16::MIN), i64::from(i16::MAX)),
        IntWidth::Int => (i64::from(i32::MIN), i64::from(i32::MAX)),
        IntWidth::Long => (i64::MIN, i64::MAX),
    }
}

impl Misfit {
    fn inside(mut self, name: &str) -> Misfit {
        self.field = if self.field.is_empty() {
            name.to_owned()
        } else if self.field.starts_with('[') {
            format!("{name}{}", self.field)
        } else {
            format!("{name}.{}", self.field)
        };
        self
    }
}

/// The shape of a struct's field, added if new (with `shared` as its name when given, so that
/// records built from the destinations find it by address).
fn field_entry<'s>(
    fields: &'s mut Vec<(Arc<str>, Shape)>,
    name: &str,
    shared: Option<&Arc<str>>,
) -> &'s mut Shape {
    let i = match fields.iter().position(|(n, _)| same_name(n, name)) {
        Some(i) => i,
        None => {
            let name = shared.cloned().unwrap_or_else(|| Arc::from(name));
            fields.push((name, Shape::Unknown));
            fields.len() - 1
        }
    };
    &mut fields[i].1
}

/// The type that holds both scalars: numbers widen to DOUBLE, dates to TIMESTAMP, anything
/// else mixed becomes text.
fn merge_scalars(a: &Shape, b: &Shape) -> Shape {
    match (a, b) {
        (Shape::Unknown, x) | (x, Shape::Unknown) => x.clone(),
        (x, y) if x == y => x.clone(),
        (Shape::Int(_), Shape::Float64) | (Shape::Float64, Shape::Int(_)) => Shape::Float64,
        (Shape::Int(x), Shape::Int(y)) => Shape::Int(if width_range(*x).1 >= width_range(*y).1 {
            *x
        } else {
            *y
        }),
        (Shape::Date32, Shape::Timestamp) | (Shape::Timestamp, Shape::Date32) => Shape::Timestamp,
        _ => Shape::Utf8,
    }
}

/// Two shapes of the same place (values of one map, from different keys).
fn merge(a: Shape, b: Shape) -> Shape {
    match (a, b) {
        (Shape::Unknown, x) | (x, Shape::Unknown) => x,
        (Shape::Struct(mut x), Shape::Struct(y)) => {
            for (name, shape) in y {
                let slot = field_entry(&mut x, &name, Some(&name));
                *slot = merge(std::mem::replace(slot, Shape::Unknown), shape);
            }
            Shape::Struct(x)
        }
        (Shape::List(x), Shape::List(y)) => Shape::List(Box::new(merge(*x, *y))),
        (Shape::Map(x), Shape::Map(y)) => Shape::Map(Box::new(merge(*x, *y))),
        (x, y) if x.is_scalar() && y.is_scalar() => merge_scalars(&x, &y),
        (x, _) => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape_of(
        mappings: serde_json::Value,
        rows: &[serde_json::Value],
        schema: Option<serde_json::Value>,
    ) -> Shape {
        let set =
            MappingSet::from_json(json!({"mappings": mappings}).to_string().as_bytes()).unwrap();
        let mut shape = Shape::skeleton(&set);
        for row in rows {
            shape.observe(&Datum::from_json(row));
        }
        if let Some(schema) = schema {
            let schema = xdm::Schema::compile(&schema).unwrap();
            shape.apply_schema(schema.root());
        }
        shape.finish()
    }

    fn attr(source: &str, destination: &str) -> serde_json::Value {
        json!({"sourceType": "ATTRIBUTE", "source": source, "destination": destination})
    }

    #[test]
    fn the_first_rows_type_what_the_schema_does_not() {
        let shape = shape_of(
            json!([
                attr("a", "p.n"),
                attr("b", "p.x"),
                attr("c", "ids.E[0].id"),
                attr("d", "never")
            ]),
            &[
                json!({"p": {"n": 1, "x": "t"}, "ids": {"E": [{"id": "1", "primary": true}]}}),
                json!({"p": {"n": 2.5}}),
            ],
            None,
        );
        assert_eq!(
            shape,
            Shape::Struct(vec![
                (
                    "p".into(),
                    Shape::Struct(vec![
                        ("n".into(), Shape::Float64),
                        ("x".into(), Shape::Utf8)
                    ])
                ),
                (
                    "ids".into(),
                    Shape::Struct(vec![(
                        "E".into(),
                        Shape::List(Box::new(Shape::Struct(vec![
                            ("id".into(), Shape::Utf8),
                            ("primary".into(), Shape::Bool)
                        ])))
                    )])
                ),
                ("never".into(), Shape::Utf8),
            ])
        );
    }

    #[test]
    fn the_schema_types_fields_and_makes_maps() {
        let schema = json!({"type": "object", "properties": {
            "person": {"type": "object", "properties": {
                "birthYear": {"type": "integer", "meta:xdmType": "short"},
                "birthDate": {"type": "string", "format": "date"},
                "seen": {"type": "string", "format": "date-time"},
                "middleName": {"type": "string"}}},
            "identityMap": {"type": "object", "additionalProperties": {"type": "array", "items": {
                "type": "object", "properties": {"id": {"type": "string"}, "primary": {"type": "boolean"}}}}}
        }});
        let shape = shape_of(
            json!([
                attr("y", "person.birthYear"), attr("d", "person.birthDate"), attr("s", "person.seen"),
                attr("a", "identityMap.CRMID[0].id"), attr("b", "identityMap.ECID[0].id"),
                {"sourceType": "STATIC", "source": "false", "destination": "identityMap.ECID[0].primary"}
            ]),
            &[],
            Some(schema),
        );
        let identity = Shape::Map(Box::new(Shape::List(Box::new(Shape::Struct(vec![
            ("id".into(), Shape::Utf8),
            ("primary".into(), Shape::Bool),
        ])))));
        assert_eq!(
            shape,
            Shape::Struct(vec![
                (
                    "person".into(),
                    Shape::Struct(vec![
                        ("birthYear".into(), Shape::Int(IntWidth::Short)),
                        ("birthDate".into(), Shape::Date32),
                        ("seen".into(), Shape::Timestamp),
                    ])
                ),
                ("identityMap".into(), identity),
            ]),
            "only the written fields; middleName is not a column"
        );
        let DataType::Struct(fields) = shape.data_type() else {
            panic!("the record is a struct")
        };
        assert_eq!(
            fields[0].data_type(),
            &DataType::Struct(struct_fields(&[
                ("birthYear".into(), Shape::Int(IntWidth::Short)),
                ("birthDate".into(), Shape::Date32),
                ("seen".into(), Shape::Timestamp),
            ]))
        );
        let DataType::Map(entries, false) = fields[1].data_type() else {
            panic!("identityMap is a map: {:?}", fields[1])
        };
        assert_eq!(entries.name(), "key_value");
    }

    #[test]
    fn later_rows_convert_or_are_refused_naming_the_field() {
        let shape = shape_of(
            json!([attr("a", "p.n"), attr("b", "p.t")]),
            &[json!({"p": {"n": 1, "t": "x"}})],
            None,
        );
        let mut ok = Datum::from_json(&json!({"p": {"n": "7", "t": 5}})).into_owned();
        shape.fit(&mut ok).unwrap();
        assert_eq!(ok.to_json(), json!({"p": {"n": 7, "t": "5"}}));
        let mut bad = Datum::from_json(&json!({"p": {"n": "seven"}})).into_owned();
        let e = shape.fit(&mut bad).unwrap_err();
        assert_eq!(e.field, "p.n");
        let mut extra = Datum::from_json(&json!({"p": {"z": 1}})).into_owned();
        let e = shape.fit(&mut extra).unwrap_err();
        assert_eq!(e.field, "p.z");
        assert!(e.message.contains("--schema"));
    }
}
