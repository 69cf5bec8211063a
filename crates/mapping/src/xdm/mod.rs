//! The dataset's XDM schema, as the Schema Registry exports it (`xed-full` JSON Schema): which
//! type each field has, the platform's conversions into that type, and the platform's checks
//! (lengths, ranges, enums, formats, required fields).
//!
//! The schema is compiled by the `batchdrop-xdm` crate (the emulator's validator: one
//! compiler, so both read a schema alike) and taken over into this module's nodes (`compile`);
//! the rest of the crate uses only [`Schema::compile`], [`Schema::field`], [`Schema::conform`]
//! and [`Schema::validate_json`]. Its conversions follow the platform's rules: strings convert to numbers, booleans (Data Prep's `y`/`yes`/`on`/`true`...),
//! dates and date-times; integers and doubles convert among themselves (a double with a
//! fraction is not an integer); a long converts to a date or date-time (epoch milliseconds);
//! numbers convert to strings; booleans, arrays and objects never convert. A null is an absent
//! field. Fields the schema does not name are left alone unless `additionalProperties` is
//! `false`. Understood keywords: `type` (a name or a list with `"null"`), `properties`,
//! `required`, `enum`, `format` (`date`, `date-time`, `email`, `uri`), `minimum`/`maximum`
//! (and the exclusive forms), `minLength`/`maxLength`, `items`, `minItems`/`maxItems`,
//! `additionalProperties` (`false`, or a schema: a map such as `identityMap`), `allOf`, local
//! `$ref`s, and `meta:xdmType` for the width of integers (`byte`, `short`, `int`, `long`).

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::dates;
use crate::datum::Datum;
use crate::functions::{float_text, parse_bool};
use crate::path::{FieldPath, Segment};

mod compile;
mod convert;
#[cfg(test)]
mod tests;
mod walk;

pub use batchdrop_xdm::Format;
pub use convert::{Scalar, convert_scalar};
use walk::Walk;

/// At most this many issues are reported per record.
const MAX_ISSUES: usize = 16;

/// A compiled schema.
#[derive(Debug)]
pub struct Schema {
    /// Its `$id`, if it has one.
    pub id: Option<String>,
    root: Node,
}

/// One field of the schema.
#[derive(Debug, Default)]
pub struct Node {
    pub kind: Kind,
    pub format: Option<Format>,
    enumeration: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
}

/// A field's type.
#[derive(Debug, Default)]
pub enum Kind {
    /// No `type`: anything goes.
    #[default]
    Any,
    Object(Box<Object>),
    Array(Option<Box<Node>>),
    String,
    Integer(IntWidth),
    Number,
    Boolean,
}

/// XDM's integer types (`meta:xdmType`); plain `integer` is a long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntWidth {
    Byte,
    Short,
    Int,
    Long,
}

impl IntWidth {
    fn range(self) -> (i64, i64) {
        match self {
            IntWidth::Byte => (i64::from(i8::MIN), i64::from(i8::MAX)),
            IntWidth::Short => (i64::from(i16::MIN), i64::from(i16::MAX)),
            IntWidth::Int => (i64::from(i32::MIN), i64::from(i32::MAX)),
            IntWidth::Long => (i64::MIN, i64::MAX),
        }
    }
}

#[derive(Debug, Default)]
pub struct Object {
    /// In the schema's order.
    pub properties: Vec<(String, Node)>,
    /// Where each property is in `properties`, for objects with many (an XDM profile's top
    /// level has dozens): looked up for every field of every row.
    index: Option<HashMap<String, usize>>,
    required: Vec<String>,
    pub additional: Additional,
}

/// Objects with more properties than this are looked up by hash.
const INDEXED_PROPERTIES: usize = 8;

impl Object {
    pub fn property(&self, name: &str) -> Option<&Node> {
        match &self.index {
            Some(index) => index.get(name).map(|&i| &self.properties[i].1),
            None => self
                .properties
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, n)| n),
        }
    }
}

/// What an object does with fields its `properties` do not name.
#[derive(Debug, Default)]
pub enum Additional {
    /// Left alone.
    #[default]
    Ignored,
    /// `additionalProperties: false`.
    Forbidden,
    /// `additionalProperties: {schema}`: a map whose values follow the schema.
    Map(Box<Node>),
}

/// Where a path leads in the schema.
pub enum FieldLookup<'s> {
    Field(&'s Node),
    /// Inside a part of the schema without a type (anything goes).
    Free,
    /// The schema has no such field; `at` is the first segment it does not know.
    Missing {
        at: usize,
    },
}

/// Why a schema cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

/// One problem of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The field, dotted (`person.name.firstName`, `identityMap.ECID[1].id`); empty for the
    /// record itself.
    pub field: String,
    pub kind: IssueKind,
    /// Starts with the field.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// No conversion turns the value into the field's type.
    Conversion,
    /// A value of the right type that breaks a rule: enum, format, range, length, item count.
    Constraint,
    /// A required field is missing or null.
    Required,
    /// A field the schema forbids (`additionalProperties: false`).
    NotAllowed,
}

impl Schema {
    /// Compiles the JSON Schema form of an XDM schema.
    pub fn compile(json: &Value) -> Result<Schema, SchemaError> {
        let Value::Object(top) = json else {
            return Err(SchemaError(
                "a schema must be a JSON object (the Schema Registry's export: Accept: application/vnd.adobe.xed-full+json; version=1)".into(),
            ));
        };
        let id = top.get("$id").and_then(Value::as_str).map(str::to_owned);
        // The shared compiler wants an id to name the schema by; a mapping names it by none.
        let compiled = batchdrop_xdm::Schema::compile(
            json,
            Some(id.as_deref().unwrap_or("(the mapping's schema)")),
            None,
            None,
        )
        .map_err(SchemaError)?;
        Ok(Schema {
            id,
            root: compile::node(compiled.root()),
        })
    }

    /// The node a path names: object fields, map values (any key), array items.
    pub fn field(&self, path: &FieldPath) -> FieldLookup<'_> {
        let mut node = &self.root;
        for (i, segment) in path.segments.iter().enumerate() {
            node = match (&node.kind, segment) {
                (Kind::Any, _) => return FieldLookup::Free,
                (Kind::Object(object), Segment::Key(name)) => match object.property(name) {
                    Some(child) => child,
                    None => match &object.additional {
                        Additional::Map(values) => values,
                        _ => return FieldLookup::Missing { at: i },
                    },
                },
                (Kind::Array(Some(items)), Segment::Index(_) | Segment::Each) => items,
                (Kind::Array(None), Segment::Index(_) | Segment::Each) => return FieldLookup::Free,
                _ => return FieldLookup::Missing { at: i },
            };
        }
        FieldLookup::Field(node)
    }

    /// The record's root node.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Converts a record's values to their fields' types (the platform's conversions) and
    /// checks the schema's rules, appending the problems to `issues`. Values that cannot be
    /// converted are left as they were.
    pub fn conform(&self, record: &mut Datum, issues: &mut Vec<Issue>) {
        let mut walk = Walk {
            path: String::new(),
            marks: Vec::with_capacity(8),
            issues,
            dropped: 0,
        };
        walk.value(&self.root, record);
        if walk.dropped > 0
            && let Some(last) = walk.issues.last_mut()
        {
            last.message.push_str(&format!(
                " (and {} more problems in this record)",
                walk.dropped
            ));
        }
    }

    /// Checks a JSON record (the function boundary other callers use).
    pub fn validate_json(&self, record: &Value) -> Vec<Issue> {
        let mut datum = Datum::from_json(record);
        let mut issues = Vec::new();
        self.conform(&mut datum, &mut issues);
        issues
    }
}
