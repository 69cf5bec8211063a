//! The dataset's XDM schema, as the Schema Registry exports it (`xed-full` JSON Schema): which
//! type each field has, the platform's conversions into that type, and the platform's checks
//! (lengths, ranges, enums, formats, required fields).
//!
//! This is the one module a shared `xdm` crate will replace; the rest of the crate uses only
//! [`Schema::compile`], [`Schema::field`], [`Schema::conform`] and [`Schema::validate_json`].
//! It follows the rules of the emulator's validator (now the `batchdrop-xdm` crate), without
//! importing it: strings convert to numbers, booleans (Data Prep's `y`/`yes`/`on`/`true`...),
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

use serde_json::{Map, Value};

use crate::dates;
use crate::datum::Datum;
use crate::functions::{float_text, parse_bool};
use crate::path::{FieldPath, Segment};

/// At most this many issues are reported per record.
const MAX_ISSUES: usize = 16;
/// `$ref`/`allOf` nesting deeper than this is refused (a cycle, most likely).
const MAX_DEPTH: usize = 64;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Date,
    DateTime,
    Email,
    Uri,
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
        let root = Compiler { top }.node(json, "", 0)?;
        if !matches!(root.kind, Kind::Object(_)) {
            return Err(SchemaError(
                "the schema's root is not an object: an XDM schema describes records (type: object, properties: ...)".into(),
            ));
        }
        Ok(Schema {
            id: top.get("$id").and_then(Value::as_str).map(str::to_owned),
            root,
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

struct Compiler<'a> {
    top: &'a Map<String, Value>,
}

impl<'a> Compiler<'a> {
    /// Follows `$ref`s (local ones only: an `xed-full` export has no others).
    fn resolve(&self, value: &'a Value, at: &str) -> Result<&'a Value, SchemaError> {
        let mut value = value;
        for _ in 0..MAX_DEPTH {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok(value);
            };
            let Some(local) = reference.strip_prefix("#/") else {
                return Err(SchemaError(format!(
                    "{}: $ref {reference:?} points outside the schema: export it fully resolved (Accept: application/vnd.adobe.xed-full+json; version=1)",
                    where_(at)
                )));
            };
            let mut segments = local.split('/');
            let mut target = self.top.get(&unescape(segments.next().unwrap_or_default()));
            for segment in segments {
                target = target.and_then(|t| t.get(unescape(segment)));
            }
            value = target.ok_or_else(|| {
                SchemaError(format!(
                    "{}: $ref {reference:?} names nothing in the schema",
                    where_(at)
                ))
            })?;
        }
        Err(SchemaError(format!(
            "{}: $ref chain too deep (a cycle?)",
            where_(at)
        )))
    }

    /// Every part of a node: itself and its `allOf` parts (nested too), `$ref`s followed.
    fn parts(
        &self,
        value: &'a Value,
        at: &str,
        depth: usize,
        out: &mut Vec<&'a Map<String, Value>>,
    ) -> Result<(), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError(format!(
                "{}: allOf nests deeper than {MAX_DEPTH} levels (a cycle?)",
                where_(at)
            )));
        }
        if let Value::Object(object) = self.resolve(value, at)? {
            out.push(object);
            if let Some(Value::Array(all)) = object.get("allOf") {
                for part in all {
                    self.parts(part, at, depth + 1, out)?;
                }
            }
        }
        Ok(())
    }

    fn node(&self, value: &'a Value, at: &str, depth: usize) -> Result<Node, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError(format!(
                "{}: the schema nests deeper than {MAX_DEPTH} levels (a $ref cycle?)",
                where_(at)
            )));
        }
        let mut parts = Vec::new();
        self.parts(value, at, 0, &mut parts)?;
        let mut node = Node::default();
        let mut type_name: Option<&str> = None;
        let mut xdm_type: Option<&str> = None;
        let mut properties: Vec<(&String, &Value)> = Vec::new();
        let mut required: Vec<String> = Vec::new();
        let mut additional: Option<&Value> = None;
        let mut items: Option<&Value> = None;
        for part in &parts {
            match part.get("type") {
                Some(Value::String(t)) => type_name = Some(t),
                Some(Value::Array(types)) => {
                    type_name = types
                        .iter()
                        .filter_map(Value::as_str)
                        .find(|t| *t != "null")
                        .or(type_name);
                }
                _ => {}
            }
            if let Some(t) = part.get("meta:xdmType").and_then(Value::as_str) {
                xdm_type = Some(t);
            }
            if let Some(Value::Object(ps)) = part.get("properties") {
                for (name, child) in ps {
                    if !properties.iter().any(|(n, _)| *n == name) {
                        properties.push((name, child));
                    }
                }
            }
            if let Some(Value::Array(r)) = part.get("required") {
                required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            additional = part.get("additionalProperties").or(additional);
            items = part.get("items").or(items);
            let number = |k: &str| part.get(k).and_then(Value::as_f64);
            let unsigned = |k: &str| part.get(k).and_then(Value::as_u64);
            node.minimum = number("minimum").or(node.minimum);
            node.maximum = number("maximum").or(node.maximum);
            // draft-06 numbers, or draft-04 booleans that make minimum/maximum exclusive.
            match part.get("exclusiveMinimum") {
                Some(Value::Bool(true)) => node.exclusive_minimum = node.minimum.take(),
                Some(Value::Number(n)) => node.exclusive_minimum = n.as_f64(),
                _ => {}
            }
            match part.get("exclusiveMaximum") {
                Some(Value::Bool(true)) => node.exclusive_maximum = node.maximum.take(),
                Some(Value::Number(n)) => node.exclusive_maximum = n.as_f64(),
                _ => {}
            }
            node.min_length = unsigned("minLength").or(node.min_length);
            node.max_length = unsigned("maxLength").or(node.max_length);
            node.min_items = unsigned("minItems").or(node.min_items);
            node.max_items = unsigned("maxItems").or(node.max_items);
            if let Some(Value::Array(e)) = part.get("enum") {
                node.enumeration = Some(e.clone());
            }
            match part.get("format").and_then(Value::as_str) {
                Some("date") => node.format = Some(Format::Date),
                Some("date-time") => node.format = Some(Format::DateTime),
                Some("email") => node.format = Some(Format::Email),
                Some("uri") => node.format = Some(Format::Uri),
                _ => {}
            }
        }
        if type_name.is_none() {
            if !properties.is_empty() || additional.is_some() {
                type_name = Some("object");
            } else if items.is_some() {
                type_name = Some("array");
            }
        }
        node.kind = match type_name {
            None | Some("null") => Kind::Any,
            Some("object") => {
                let mut object = Object {
                    required,
                    ..Object::default()
                };
                for (name, child) in properties {
                    let child_at = format!("{at}/{name}");
                    object
                        .properties
                        .push((name.clone(), self.node(child, &child_at, depth + 1)?));
                }
                if object.properties.len() > INDEXED_PROPERTIES {
                    object.index = Some(
                        object
                            .properties
                            .iter()
                            .enumerate()
                            .map(|(i, (name, _))| (name.clone(), i))
                            .collect(),
                    );
                }
                object.additional = match additional {
                    Some(Value::Bool(false)) => Additional::Forbidden,
                    Some(map @ Value::Object(_)) => {
                        Additional::Map(Box::new(self.node(map, &format!("{at}/*"), depth + 1)?))
                    }
                    _ => Additional::Ignored,
                };
                Kind::Object(Box::new(object))
            }
            Some("array") => match items {
                Some(item @ Value::Object(_)) => Kind::Array(Some(Box::new(self.node(
                    item,
                    &format!("{at}/items"),
                    depth + 1,
                )?))),
                _ => Kind::Array(None),
            },
            Some("string") => Kind::String,
            Some("integer") => Kind::Integer(match xdm_type {
                Some("byte") => IntWidth::Byte,
                Some("short") => IntWidth::Short,
                Some("int") => IntWidth::Int,
                _ => IntWidth::Long,
            }),
            Some("number") => Kind::Number,
            Some("boolean") => Kind::Boolean,
            Some(other) => {
                return Err(SchemaError(format!(
                    "{}: unknown type {other:?}: use object, array, string, integer, number, boolean or null",
                    where_(at)
                )));
            }
        };
        Ok(node)
    }
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn where_(at: &str) -> String {
    if at.is_empty() {
        "the schema's root".into()
    } else {
        format!("field {at}")
    }
}

/// Walks a record beside its schema, keeping the dotted path of where it is.
struct Walk<'i> {
    /// `person.name.firstName`, `identityMap.ECID[1]`: grown and cut back as the walk goes.
    path: String,
    /// Where each step began in `path`.
    marks: Vec<usize>,
    issues: &'i mut Vec<Issue>,
    dropped: usize,
}

impl Walk<'_> {
    fn enter_key(&mut self, name: &str) {
        self.marks.push(self.path.len());
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(name);
    }

    fn enter_index(&mut self, index: usize) {
        use std::fmt::Write;
        self.marks.push(self.path.len());
        let _ = write!(self.path, "[{index}]");
    }

    fn leave(&mut self) {
        let mark = self.marks.pop().unwrap_or(0);
        self.path.truncate(mark);
    }

    fn issue(&mut self, kind: IssueKind, message: String) {
        if self.issues.len() >= MAX_ISSUES {
            self.dropped += 1;
            return;
        }
        let field = self.path.clone();
        let shown = if field.is_empty() {
            "the record"
        } else {
            &field
        };
        self.issues.push(Issue {
            message: format!("{shown}: {message}"),
            field,
            kind,
        });
    }

    fn value(&mut self, node: &Node, value: &mut Datum) {
        if value.is_null() {
            return;
        }
        match &node.kind {
            Kind::Any => {}
            Kind::Object(object) => match value {
                Datum::Object(fields) => self.object(object, fields),
                other => self.wrong_type(other, "an object"),
            },
            Kind::Array(items) => match value {
                Datum::Array(elements) => {
                    let n = elements.len() as u64;
                    if let Some(min) = node.min_items.filter(|min| n < *min) {
                        self.issue(
                            IssueKind::Constraint,
                            format!("the array has {n} items; at least {min} are required"),
                        );
                    }
                    if let Some(max) = node.max_items.filter(|max| n > *max) {
                        self.issue(
                            IssueKind::Constraint,
                            format!("the array has {n} items; at most {max} are allowed"),
                        );
                    }
                    if let Some(item) = items {
                        for (i, element) in elements.iter_mut().enumerate() {
                            self.enter_index(i);
                            self.value(item, element);
                            self.leave();
                        }
                    }
                }
                other => self.wrong_type(other, "an array (arrays never convert)"),
            },
            Kind::String | Kind::Integer(_) | Kind::Number | Kind::Boolean => {
                match convert(node, value) {
                    Ok(Some(converted)) => *value = converted,
                    Ok(None) => {}
                    Err(message) => {
                        self.issue(IssueKind::Conversion, message);
                        return;
                    }
                }
                self.constraints(node, value);
            }
        }
    }

    fn object(&mut self, object: &Object, fields: &mut [(Cow<'_, str>, Datum<'_>)]) {
        for (name, value) in fields.iter_mut() {
            if value.is_null() {
                continue;
            }
            let child = match object.property(name) {
                Some(child) => Some(child),
                None => match &object.additional {
                    Additional::Ignored => None,
                    Additional::Map(values) => Some(values.as_ref()),
                    Additional::Forbidden => {
                        self.enter_key(name);
                        self.issue(
                            IssueKind::NotAllowed,
                            "the schema does not allow this field (additionalProperties: false): remove its mapping or add it to the schema".into(),
                        );
                        self.leave();
                        continue;
                    }
                },
            };
            if let Some(child) = child {
                self.enter_key(name);
                self.value(child, value);
                self.leave();
            }
        }
        for required in &object.required {
            let present = fields
                .iter()
                .any(|(name, value)| name == required && !value.is_null());
            if !present {
                self.enter_key(required);
                self.issue(
                    IssueKind::Required,
                    "required field is missing or null; map a value to it".into(),
                );
                self.leave();
            }
        }
    }

    fn wrong_type(&mut self, value: &Datum, wanted: &str) {
        self.issue(
            IssueKind::Conversion,
            format!(
                "expected {wanted}, found {} {}; map a value of the field's type",
                value.kind(),
                value.excerpt()
            ),
        );
    }

    fn constraints(&mut self, node: &Node, value: &Datum) {
        let number = match value {
            Datum::Int(i) => Some(*i as f64),
            Datum::Float(f) => Some(*f),
            _ => None,
        };
        if let Some(f) = number {
            // Messages are made only for values that break a rule (this runs for every field
            // of every row).
            if let Some(min) = node.minimum.filter(|min| f < *min) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} is below the minimum {}",
                        value.excerpt(),
                        float_short(min)
                    ),
                );
            }
            if let Some(max) = node.maximum.filter(|max| f > *max) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} is above the maximum {}",
                        value.excerpt(),
                        float_short(max)
                    ),
                );
            }
            if let Some(min) = node.exclusive_minimum.filter(|min| f <= *min) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} must be greater than {}",
                        value.excerpt(),
                        float_short(min)
                    ),
                );
            }
            if let Some(max) = node.exclusive_maximum.filter(|max| f >= *max) {
                self.issue(
                    IssueKind::Constraint,
                    format!("{} must be less than {}", value.excerpt(), float_short(max)),
                );
            }
            if let Kind::Integer(width) = node.kind {
                let (low, high) = width.range();
                if let Datum::Int(i) = value
                    && !(low..=high).contains(i)
                {
                    self.issue(
                        IssueKind::Constraint,
                        format!("{i} is out of range for the field's type ({low} to {high})"),
                    );
                }
            }
        }
        if let Datum::Str(s) = value {
            // Counting characters walks the text: only for fields with a length rule.
            let n = if node.min_length.is_some() || node.max_length.is_some() {
                s.chars().count() as u64
            } else {
                0
            };
            if let Some(min) = node.min_length.filter(|min| n < *min) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} has {n} characters; at least {min} are required",
                        value.excerpt()
                    ),
                );
            }
            if let Some(max) = node.max_length.filter(|max| n > *max) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} has {n} characters; at most {max} are allowed",
                        value.excerpt()
                    ),
                );
            }
            match node.format {
                Some(Format::Email) if !is_email(s) => self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} is not an email address (name@domain.tld)",
                        value.excerpt()
                    ),
                ),
                Some(Format::Uri) if !is_uri(s) => self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} is not a URI: it needs a scheme, e.g. https://example.com/x",
                        value.excerpt()
                    ),
                ),
                _ => {}
            }
        }
        if let Some(allowed) = &node.enumeration {
            let found = allowed.iter().any(|a| match (a, value) {
                (Value::String(x), Datum::Str(y)) => x == y,
                (Value::Number(x), _) => number.is_some() && x.as_f64() == number,
                (Value::Bool(x), Datum::Bool(y)) => x == y,
                _ => false,
            });
            if !found {
                let list: Vec<String> = allowed
                    .iter()
                    .take(20)
                    .map(|a| match a {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                let more = if allowed.len() > 20 { ", ..." } else { "" };
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} is not one of the allowed values: {}{more}",
                        value.excerpt(),
                        list.join(", ")
                    ),
                );
            }
        }
    }
}

fn float_short(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The scalar types values convert to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
    Date,
    DateTime,
}

impl Node {
    /// The scalar type of the field, if it is a scalar (a string with `format: date` is a
    /// date).
    pub fn scalar(&self) -> Option<Scalar> {
        Some(match (&self.kind, self.format) {
            (Kind::Integer(_), _) => Scalar::Integer,
            (Kind::Number, _) => Scalar::Number,
            (Kind::Boolean, _) => Scalar::Boolean,
            (Kind::String, Some(Format::Date)) => Scalar::Date,
            (Kind::String, Some(Format::DateTime)) => Scalar::DateTime,
            (Kind::String, _) => Scalar::String,
            _ => return None,
        })
    }
}

fn convert<'a>(node: &Node, value: &Datum<'a>) -> Result<Option<Datum<'a>>, String> {
    match node.scalar() {
        Some(target) => convert_scalar(target, value),
        None => Ok(None),
    }
}

/// The platform's conversion of a value to a scalar type: `Ok(None)` when it already has the
/// type, `Ok(Some(converted))`, or `Err` (the message) when no conversion applies. Null is
/// never passed in (an absent value has no type to check).
pub fn convert_scalar<'a>(target: Scalar, value: &Datum<'a>) -> Result<Option<Datum<'a>>, String> {
    let refuse = |wanted: &str| {
        let why = match value {
            Datum::Bool(_) => " (booleans never convert)",
            Datum::Array(_) => " (arrays never convert)",
            Datum::Object(_) => " (objects never convert)",
            _ => "",
        };
        Err(format!(
            "{} {} cannot be converted to {wanted}{why}",
            value.kind(),
            value.excerpt()
        ))
    };
    match target {
        Scalar::Integer => match value {
            Datum::Int(_) => Ok(None),
            Datum::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
                Ok(Some(Datum::Int(*f as i64)))
            }
            Datum::Float(_) => Err(format!(
                "{} is not an integer (a double converts to an integer only without a fraction)",
                value.excerpt()
            )),
            Datum::Str(s) => {
                let t = s.trim();
                if let Ok(i) = t.parse::<i64>() {
                    Ok(Some(Datum::Int(i)))
                } else if let Ok(f) = t.parse::<f64>()
                    && f.is_finite()
                    && f.fract() == 0.0
                    && f.abs() < 9.2e18
                {
                    Ok(Some(Datum::Int(f as i64)))
                } else {
                    refuse("an integer")
                }
            }
            _ => refuse("an integer"),
        },
        Scalar::Number => match value {
            Datum::Float(_) => Ok(None),
            Datum::Int(i) => Ok(Some(Datum::Float(*i as f64))),
            Datum::Str(s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Some(Datum::Float(f))),
                _ => refuse("a number"),
            },
            _ => refuse("a number"),
        },
        Scalar::Boolean => match value {
            Datum::Bool(_) => Ok(None),
            Datum::Str(s) => match parse_bool(s) {
                Some(b) => Ok(Some(Datum::Bool(b))),
                None => refuse("a boolean (true/false, yes/no, y/n, on/off)"),
            },
            _ => refuse("a boolean"),
        },
        Scalar::Date => match value {
            Datum::Date(_) => Ok(None),
            Datum::DateTime(at) => Ok(Some(Datum::Date(at.date_naive()))),
            Datum::Int(ms) => dates::from_epoch_millis(*ms)
                .map(|at| Some(Datum::Date(at.date_naive())))
                .ok_or_else(|| format!("{ms} is out of range for a date in epoch milliseconds")),
            Datum::Str(s) => dates::parse_iso_date(s)
                .or_else(|| dates::parse_any(s).map(|at| at.date_naive()))
                .map(|day| Some(Datum::Date(day)))
                .ok_or_else(|| {
                    format!(
                        "{} is not a date: use YYYY-MM-DD, or read it with date(FIELD, FORMAT)",
                        value.excerpt()
                    )
                }),
            _ => refuse("a date"),
        },
        Scalar::DateTime => match value {
            Datum::DateTime(_) => Ok(None),
            Datum::Date(day) => Ok(Some(Datum::DateTime(
                day.and_time(chrono::NaiveTime::MIN).and_utc().fixed_offset(),
            ))),
            Datum::Int(ms) => dates::from_epoch_millis(*ms)
                .map(|at| Some(Datum::DateTime(at)))
                .ok_or_else(|| {
                    format!("{ms} is out of range for a date-time in epoch milliseconds")
                }),
            Datum::Str(s) => dates::parse_any(s)
                .map(|at| Some(Datum::DateTime(at)))
                .ok_or_else(|| {
                    format!(
                        "{} is not a date-time: use ISO 8601, e.g. 2024-05-01T12:30:00Z, or read it with date(FIELD, FORMAT)",
                        value.excerpt()
                    )
                }),
            _ => refuse("a date-time"),
        },
        Scalar::String => match value {
            Datum::Str(_) => Ok(None),
            Datum::Int(i) => Ok(Some(Datum::Str(Cow::Owned(i.to_string())))),
            Datum::Float(f) => Ok(Some(Datum::Str(Cow::Owned(float_text(*f))))),
            Datum::Date(d) => Ok(Some(Datum::Str(Cow::Owned(crate::datum::date_text(d))))),
            Datum::DateTime(t) => Ok(Some(Datum::Str(Cow::Owned(
                crate::datum::date_time_text(t),
            )))),
            _ => refuse("a string"),
        },
    }
}

/// `local@domain.tld`, no spaces.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.len() >= 3
        && domain.contains('.')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && !domain.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'))
}

/// `scheme:rest` (RFC 3986 scheme), no spaces.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::compile(&json!({
            "$id": "https://ns.adobe.com/t/schemas/p",
            "type": "object",
            "definitions": {"name": {"type": "object", "properties": {
                "firstName": {"type": "string", "minLength": 4, "maxLength": 8}}}},
            "required": ["id"],
            "properties": {
                "id": {"type": "string"},
                "year": {"type": "integer", "meta:xdmType": "short", "minimum": 1},
                "lat": {"type": "number"},
                "vip": {"type": "boolean"},
                "born": {"type": "string", "format": "date"},
                "seen": {"type": ["string", "null"], "format": "date-time"},
                "mail": {"type": "string", "format": "email"},
                "gender": {"type": "string", "enum": ["male", "female"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "name": {"$ref": "#/definitions/name"},
                "closed": {"type": "object", "additionalProperties": false,
                           "properties": {"a": {"type": "string"}}},
                "identityMap": {"type": "object", "additionalProperties": {"type": "array",
                    "items": {"type": "object", "required": ["id"],
                              "properties": {"id": {"type": "string"}, "primary": {"type": "boolean"}}}}},
                "extra": {"allOf": [{"properties": {"x": {"type": "integer"}}}, {"properties": {"y": {"type": "string"}}}]}
            }
        }))
        .unwrap()
    }

    fn conform(record: serde_json::Value) -> (serde_json::Value, Vec<Issue>) {
        let s = schema();
        let mut datum = Datum::from_json(&record);
        let mut issues = Vec::new();
        s.conform(&mut datum, &mut issues);
        (datum.to_json(), issues)
    }

    #[test]
    fn values_convert_to_their_fields_types() {
        let (out, issues) = conform(json!({
            "id": 7, "year": "2004", "lat": "33.708276", "vip": "false", "born": "1979-01-3",
            "seen": 1571829875000i64, "tags": ["a", 5], "identityMap": {"CRMID": [{"id": "x", "primary": "no"}]},
            "extra": {"x": "5", "y": 6}, "unknown": "kept"
        }));
        assert_eq!(issues, vec![]);
        assert_eq!(
            out,
            json!({
                "id": "7", "year": 2004, "lat": 33.708276, "vip": false, "born": "1979-01-03",
                "seen": "2019-10-23T11:24:35Z", "tags": ["a", "5"],
                "identityMap": {"CRMID": [{"id": "x", "primary": false}]},
                "extra": {"x": 5, "y": "6"}, "unknown": "kept"
            })
        );
        let (out, issues) = conform(
            json!({"id": "a", "year": 1999.0, "seen": "2019-10-23 11:24:00", "born": "20191023"}),
        );
        assert_eq!(issues, vec![]);
        assert_eq!(out["year"], json!(1999));
        assert_eq!(out["seen"], json!("2019-10-23T11:24:00Z"));
        assert_eq!(out["born"], json!("2019-10-23"));
    }

    #[test]
    fn values_that_do_not_convert_or_break_rules_are_reported_by_field() {
        let (_, issues) = conform(json!({
            "year": "two thousand", "lat": true, "vip": "maybe", "born": "yesterday",
            "mail": "nope", "gender": "other", "tags": ["a", "b", "c"], "name": {"firstName": "Friederike"},
            "closed": {"b": "x"}, "identityMap": {"ECID": [{"primary": true}]}
        }));
        let by_field: Vec<(&str, IssueKind)> =
            issues.iter().map(|i| (i.field.as_str(), i.kind)).collect();
        for expected in [
            ("year", IssueKind::Conversion),
            ("lat", IssueKind::Conversion),
            ("vip", IssueKind::Conversion),
            ("born", IssueKind::Conversion),
            ("mail", IssueKind::Constraint),
            ("gender", IssueKind::Constraint),
            ("tags", IssueKind::Constraint),
            ("name.firstName", IssueKind::Constraint),
            ("closed.b", IssueKind::NotAllowed),
            ("identityMap.ECID[0].id", IssueKind::Required),
            ("id", IssueKind::Required),
        ] {
            assert!(by_field.contains(&expected), "{expected:?} in {issues:#?}");
        }
        let first_name = issues.iter().find(|i| i.field == "name.firstName").unwrap();
        assert_eq!(
            first_name.message,
            "name.firstName: \"Friederike\" has 10 characters; at most 8 are allowed"
        );
        let (_, issues) = conform(json!({"id": "x", "year": 1.5}));
        assert!(issues[0].message.contains("fraction"), "{issues:?}");
        let (_, issues) = conform(json!({"id": "x", "year": 40000}));
        assert!(issues[0].message.contains("out of range"), "{issues:?}");
        let (_, issues) = conform(json!({"id": "x", "year": 0}));
        assert!(issues[0].message.contains("minimum 1"), "{issues:?}");
        let (_, issues) = conform(json!({"id": ["x"]}));
        assert!(
            issues[0].message.contains("arrays never convert"),
            "{issues:?}"
        );
    }

    #[test]
    fn paths_lead_through_maps_and_arrays() {
        let s = schema();
        let at = |p: &str| s.field(&FieldPath::parse(p).unwrap());
        assert!(
            matches!(at("identityMap.CRMID[0].id"), FieldLookup::Field(n) if matches!(n.kind, Kind::String))
        );
        assert!(matches!(at("tags[*]"), FieldLookup::Field(_)));
        assert!(matches!(
            at("name.lastName"),
            FieldLookup::Missing { at: 1 }
        ));
        assert!(matches!(
            at("homeAddress.city"),
            FieldLookup::Missing { at: 0 }
        ));
        assert!(matches!(at("extra.y"), FieldLookup::Field(n) if matches!(n.kind, Kind::String)));
    }

    #[test]
    fn the_fixture_schema_compiles() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/objectXDM.schema.json"
        ))
        .unwrap();
        let s = Schema::compile(&serde_json::from_str(&text).unwrap()).unwrap();
        let issues = s
            .validate_json(&json!({"person": {"name": {"firstName": "Val"}, "birthYear": "1982"}}));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].field, "person.name.firstName");
        assert!(matches!(
            s.field(&FieldPath::parse("person.birthYear").unwrap()),
            FieldLookup::Field(Node {
                kind: Kind::Integer(IntWidth::Short),
                ..
            })
        ));
    }

    #[test]
    fn bad_schemas_say_why() {
        let e = Schema::compile(&json!({"type": "string"})).unwrap_err();
        assert!(e.to_string().contains("root"), "{e}");
        let e = Schema::compile(&json!({"type": "object", "properties": {
            "a": {"$ref": "https://ns.adobe.com/xdm/context/profile"}}}))
        .unwrap_err();
        assert!(
            e.to_string().contains("xed-full") && e.to_string().contains("/a"),
            "{e}"
        );
        let e = Schema::compile(
            &json!({"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("names nothing"), "{e}");
        let e = Schema::compile(&json!({"type": "object", "properties": {"a": {"type": "text"}}}))
            .unwrap_err();
        assert!(e.to_string().contains("unknown type"), "{e}");
    }
}
