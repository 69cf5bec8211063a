//! Dataset schemas: the JSON Schema form that the platform's Schema Registry exports for an XDM
//! schema, compiled once and checked against every record, with the platform's conversions.
//!
//! Understood: `type` (a name or a list, `"null"` allowed), `properties`, `required`, `enum`,
//! `format` (`date-time`, `date`, `email`, `uri`), `minimum`/`maximum` (and the exclusive
//! forms), `minLength`/`maxLength`, `items`, `minItems`/`maxItems`, `additionalProperties`
//! (`false`, or a schema for map-like objects such as `identityMap`), `allOf` and local
//! `$ref`s (`#/definitions/...`). `meta:` keys, titles, descriptions and `pattern` are ignored.
//!
//! Conversions (the platform's): strings convert to numbers, dates and date-times; integers
//! and doubles convert among themselves (a double with a fraction is not an integer); a long
//! converts to a date or date-time (epoch milliseconds); numbers convert to strings; booleans,
//! arrays and objects never convert. CSV cells are text, so they also convert to booleans from
//! `true`/`false`. A `null` counts as an absent field. Fields the schema does not name are
//! ignored unless `additionalProperties` is `false`.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// A record field missing (or null) though the schema requires it (the platform's code).
pub const CODE_REQUIRED: &str = "INGEST-1555-400";
/// A value of a type that no conversion turns into the field's type (the emulator's code: the
/// platform's public documentation names none).
pub const CODE_TYPE: &str = "INGEST-1542-400";
/// A value of the right type that breaks a rule of the field: enum, format, range, length,
/// item count, or a field the schema forbids (the emulator's code).
pub const CODE_CONSTRAINT: &str = "INGEST-1543-400";

/// At most this many issues are reported per record (the rest are counted in the last one).
const MAX_ISSUES_PER_RECORD: usize = 16;
/// `$ref`/`allOf` nesting deeper than this is refused (a cycle, most likely).
const MAX_DEPTH: usize = 64;

/// A compiled schema.
#[derive(Debug)]
pub struct Schema {
    /// The id datasets reference it by (`schemaRef.id`): the config's `id`, else the schema's
    /// `$id`.
    pub id: String,
    /// Its title (or the config's `name`): datasets of the config may reference it by name.
    pub name: String,
    /// JSON pointer of the field that identifies a row in upsert datasets, if configured.
    pub identity_field: Option<String>,
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    ty: Ty,
    format: Option<Format>,
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

#[derive(Debug, Default)]
enum Ty {
    /// No `type`: anything goes.
    #[default]
    Any,
    Object(Box<Obj>),
    Array(Option<Box<Node>>),
    String,
    Integer,
    Number,
    Boolean,
    Null,
}

#[derive(Debug, Default)]
struct Obj {
    props: HashMap<String, Node>,
    required: Vec<String>,
    additional: Additional,
}

#[derive(Debug, Default)]
enum Additional {
    /// Unknown fields are ignored.
    #[default]
    Ignored,
    /// `additionalProperties: false`.
    Forbidden,
    /// `additionalProperties: {schema}`: a map whose values follow the schema.
    Schema(Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DateTime,
    Date,
    Email,
    Uri,
}

/// Where a record comes from: CSV cells are text, so they convert to booleans too, and an empty
/// cell is an absent value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Json,
    Csv,
    Parquet,
}

/// One problem of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub code: &'static str,
    /// JSON pointer of the field (RFC 6901), `""` for the record itself.
    pub pointer: String,
    pub message: String,
}

/// How to check a record.
#[derive(Debug, Clone, Copy)]
pub struct CheckMode {
    pub source: Source,
    /// Upsert rows carry only the fields they change: required fields are not checked.
    pub skip_required: bool,
}

impl Schema {
    /// Compiles a schema from its JSON form. `id`/`name` override the schema's `$id`/`title`.
    pub fn compile(
        json: &Value,
        id: Option<&str>,
        name: Option<&str>,
        identity_field: Option<&str>,
    ) -> Result<Schema, String> {
        let Value::Object(top) = json else {
            return Err(
                "a schema must be a JSON object (the Schema Registry's JSON Schema export)".into(),
            );
        };
        let id = id
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| top.get("$id").and_then(Value::as_str).map(str::to_owned))
            .ok_or(
                "the schema has no $id: give it an id (in the config: [[schemas]] id = \"...\")",
            )?;
        let name = name
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| top.get("title").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| id.clone());
        let compiler = Compiler { top };
        let root = compiler.node(json, "", 0)?;
        if !matches!(root.ty, Ty::Object(_)) {
            return Err(
                "the schema's root is not an object: an XDM schema describes records (type: object, properties: ...)"
                    .into(),
            );
        }
        let identity_field = identity_field
            .filter(|s| !s.is_empty())
            .map(normalize_pointer);
        let schema = Schema {
            id,
            name,
            identity_field,
            root,
        };
        if let Some(p) = &schema.identity_field {
            match schema.node_at(p) {
                None => {
                    return Err(format!(
                        "identity field {p} is not a field of the schema: name a field of it (a JSON pointer such as /person/crmId, or dotted: person.crmId)"
                    ));
                }
                Some(n) if !matches!(n.ty, Ty::String | Ty::Integer | Ty::Number | Ty::Any) => {
                    return Err(format!(
                        "identity field {p} is not a string or a number: an identity must be a scalar"
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(schema)
    }

    fn root_obj(&self) -> &Obj {
        match &self.root.ty {
            Ty::Object(o) => o,
            _ => unreachable!("compile checks that the root is an object"),
        }
    }

    /// Whether the record level names this field.
    pub fn has_top_field(&self, name: &str) -> bool {
        self.root_obj().props.contains_key(name)
    }

    /// The names of the record's fields, for messages.
    pub fn top_fields(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.root_obj().props.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    fn node_at(&self, pointer: &str) -> Option<&Node> {
        let mut node = &self.root;
        for seg in pointer.split('/').skip(1) {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            node = match &node.ty {
                Ty::Object(o) => o.props.get(&seg)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Whether a nested path of field names (a CSV header `a.b.c`, a Parquet struct) exists,
    /// and where it stops existing. `Ok(())` also when it enters a map or an untyped object.
    pub fn check_path(&self, path: &[&str]) -> Result<(), usize> {
        let mut node = &self.root;
        for (i, seg) in path.iter().enumerate() {
            while let Ty::Array(Some(items)) = &node.ty {
                node = items;
            }
            match &node.ty {
                Ty::Object(o) => match o.props.get(*seg) {
                    Some(n) => node = n,
                    // A map (additionalProperties: {schema}) takes any key; otherwise the
                    // field must exist (Parquet carries a subset of the schema's fields).
                    None if matches!(o.additional, Additional::Schema(_)) => return Ok(()),
                    None => return Err(i),
                },
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Checks one record, appending its issues to `out`.
    pub fn check(&self, record: &Map<String, Value>, mode: CheckMode, out: &mut Vec<Issue>) {
        let mut cx = Cx {
            mode,
            path: Vec::with_capacity(8),
            out,
            dropped: 0,
        };
        cx.object(self.root_obj(), record);
        if cx.dropped > 0
            && let Some(last) = cx.out.last_mut()
        {
            last.message.push_str(&format!(
                " (and {} more problems in this record)",
                cx.dropped
            ));
        }
    }
}

/// The registered schemas, by id (and by name for the config's datasets).
#[derive(Debug, Default)]
pub struct Registry {
    schemas: std::sync::RwLock<Vec<std::sync::Arc<Schema>>>,
}

impl Registry {
    /// Adds a schema, replacing one with the same id.
    pub fn insert(&self, schema: Schema) -> std::sync::Arc<Schema> {
        let schema = std::sync::Arc::new(schema);
        let mut all = self.schemas.write().expect("schema registry");
        all.retain(|s| s.id != schema.id);
        all.push(schema.clone());
        schema
    }

    /// The schema with this id, else the one with this name.
    pub fn get(&self, key: &str) -> Option<std::sync::Arc<Schema>> {
        let all = self.schemas.read().expect("schema registry");
        all.iter()
            .find(|s| s.id == key)
            .or_else(|| all.iter().find(|s| s.name == key))
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.schemas.read().expect("schema registry").is_empty()
    }

    /// The ids, for messages.
    pub fn ids(&self) -> Vec<String> {
        self.schemas
            .read()
            .expect("schema registry")
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }
}

/// `person.crmId` or `/person/crmId` → `/person/crmId`.
pub fn normalize_pointer(p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        p.split('.')
            .map(escape_segment)
            .fold(String::new(), |mut acc, s| {
                acc.push('/');
                acc.push_str(&s);
                acc
            })
    }
}

fn escape_segment(s: &str) -> String {
    if s.contains(['~', '/']) {
        s.replace('~', "~0").replace('/', "~1")
    } else {
        s.to_owned()
    }
}

/// Reads the value at a JSON pointer.
pub fn value_at<'v>(record: &'v Map<String, Value>, pointer: &str) -> Option<&'v Value> {
    let mut segs = pointer.split('/').skip(1);
    let first = segs.next()?;
    let mut v = record.get(&first.replace("~1", "/").replace("~0", "~"))?;
    for seg in segs {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        v = match v {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

struct Compiler<'a> {
    top: &'a Map<String, Value>,
}

impl Compiler<'_> {
    fn resolve<'v>(&'v self, v: &'v Value, at: &str) -> Result<&'v Value, String> {
        let mut v = v;
        for _ in 0..MAX_DEPTH {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return Ok(v);
            };
            let Some(local) = r.strip_prefix("#/") else {
                return Err(format!(
                    "{}: $ref {r:?} points outside the schema: export it fully resolved (Schema Registry: Accept: application/vnd.adobe.xed-full+json; version=1)",
                    display_at(at)
                ));
            };
            let mut target: Option<&Value> = None;
            for (i, seg) in local.split('/').enumerate() {
                let seg = seg.replace("~1", "/").replace("~0", "~");
                target = if i == 0 {
                    self.top.get(&seg)
                } else {
                    target.and_then(|t| t.get(&seg))
                };
            }
            v = target.ok_or_else(|| {
                format!("{}: $ref {r:?} names nothing in the schema", display_at(at))
            })?;
        }
        Err(format!(
            "{}: $ref chain too deep (a cycle?)",
            display_at(at)
        ))
    }

    fn node(&self, v: &Value, at: &str, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{}: the schema nests deeper than {MAX_DEPTH} levels (a $ref cycle?)",
                display_at(at)
            ));
        }
        let v = self.resolve(v, at)?;
        let Value::Object(o) = v else {
            // `true` / `{}`-like: anything goes.
            return Ok(Node::default());
        };
        let mut node = Node::default();
        // allOf: merge the parts.
        let mut parts: Vec<&Map<String, Value>> = vec![o];
        if let Some(all) = o.get("allOf").and_then(Value::as_array) {
            for part in all {
                if let Value::Object(p) = self.resolve(part, at)? {
                    parts.push(p);
                    // One level of nested allOf is common in registry exports.
                    if let Some(inner) = p.get("allOf").and_then(Value::as_array) {
                        for ip in inner {
                            if let Value::Object(ipo) = self.resolve(ip, at)? {
                                parts.push(ipo);
                            }
                        }
                    }
                }
            }
        }
        let mut type_name: Option<&str> = None;
        let mut props: Vec<(&String, &Value)> = Vec::new();
        let mut required: Vec<String> = Vec::new();
        let mut additional: Option<&Value> = None;
        let mut items: Option<&Value> = None;
        for p in &parts {
            match p.get("type") {
                Some(Value::String(t)) => type_name = Some(t),
                Some(Value::Array(ts)) => {
                    if let Some(t) = ts.iter().filter_map(Value::as_str).find(|t| *t != "null") {
                        type_name = Some(t);
                    } else if type_name.is_none() && !ts.is_empty() {
                        type_name = Some("null");
                    }
                }
                _ => {}
            }
            if let Some(Value::Object(ps)) = p.get("properties") {
                props.extend(ps.iter());
            }
            if let Some(Value::Array(r)) = p.get("required") {
                required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            if let Some(a) = p.get("additionalProperties") {
                additional = Some(a);
            }
            if let Some(i) = p.get("items") {
                items = Some(i);
            }
            let num = |k: &str| p.get(k).and_then(Value::as_f64);
            let uint = |k: &str| p.get(k).and_then(Value::as_u64);
            node.minimum = num("minimum").or(node.minimum);
            node.maximum = num("maximum").or(node.maximum);
            // draft-06 numbers, or draft-04 booleans that make minimum/maximum exclusive.
            match p.get("exclusiveMinimum") {
                Some(Value::Bool(true)) => node.exclusive_minimum = node.minimum.take(),
                Some(Value::Number(n)) => node.exclusive_minimum = n.as_f64(),
                _ => {}
            }
            match p.get("exclusiveMaximum") {
                Some(Value::Bool(true)) => node.exclusive_maximum = node.maximum.take(),
                Some(Value::Number(n)) => node.exclusive_maximum = n.as_f64(),
                _ => {}
            }
            node.min_length = uint("minLength").or(node.min_length);
            node.max_length = uint("maxLength").or(node.max_length);
            node.min_items = uint("minItems").or(node.min_items);
            node.max_items = uint("maxItems").or(node.max_items);
            if let Some(Value::Array(e)) = p.get("enum") {
                node.enumeration = Some(e.clone());
            }
            if let Some(f) = p.get("format").and_then(Value::as_str) {
                node.format = match f {
                    "date-time" => Some(Format::DateTime),
                    "date" => Some(Format::Date),
                    "email" => Some(Format::Email),
                    "uri" => Some(Format::Uri),
                    _ => node.format,
                };
            }
        }
        if type_name.is_none() {
            if !props.is_empty() || additional.is_some() {
                type_name = Some("object");
            } else if items.is_some() {
                type_name = Some("array");
            }
        }
        node.ty = match type_name {
            None => Ty::Any,
            Some("object") => {
                let mut obj = Obj {
                    required,
                    ..Obj::default()
                };
                for (k, pv) in props {
                    let child = self.node(pv, &format!("{at}/{}", escape_segment(k)), depth + 1)?;
                    obj.props.insert(k.clone(), child);
                }
                obj.additional = match additional {
                    None | Some(Value::Bool(true)) => Additional::Ignored,
                    Some(Value::Bool(false)) => Additional::Forbidden,
                    Some(s @ Value::Object(_)) => {
                        Additional::Schema(Box::new(self.node(s, &format!("{at}/*"), depth + 1)?))
                    }
                    Some(_) => Additional::Ignored,
                };
                Ty::Object(Box::new(obj))
            }
            Some("array") => match items {
                Some(i @ Value::Object(_)) => Ty::Array(Some(Box::new(self.node(
                    i,
                    &format!("{at}/items"),
                    depth + 1,
                )?))),
                _ => Ty::Array(None),
            },
            Some("string") => Ty::String,
            Some("integer") => Ty::Integer,
            Some("number") => Ty::Number,
            Some("boolean") => Ty::Boolean,
            Some("null") => Ty::Null,
            Some(other) => {
                return Err(format!(
                    "{}: unknown type {other:?}: use object, array, string, integer, number, boolean or null",
                    display_at(at)
                ));
            }
        };
        Ok(node)
    }
}

fn display_at(at: &str) -> String {
    if at.is_empty() {
        "the schema's root".into()
    } else {
        format!("field {at}")
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

struct Cx<'a, 'o> {
    mode: CheckMode,
    path: Vec<Seg<'a>>,
    out: &'o mut Vec<Issue>,
    dropped: usize,
}

/// A scalar after conversion to the field's type.
enum Conv<'v> {
    Num(f64),
    Text(std::borrow::Cow<'v, str>),
    Bool,
}

impl<'a> Cx<'a, '_> {
    fn pointer(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            s.push('/');
            match seg {
                Seg::Key(k) => s.push_str(&escape_segment(k)),
                Seg::Index(i) => s.push_str(&i.to_string()),
            }
        }
        s
    }

    fn issue(&mut self, code: &'static str, message: String) {
        if self.out.len() >= MAX_ISSUES_PER_RECORD {
            self.dropped += 1;
            return;
        }
        let pointer = self.pointer();
        let at = if pointer.is_empty() { "/" } else { &pointer };
        self.out.push(Issue {
            code,
            message: format!("{at}: {message}"),
            pointer,
        });
    }

    fn object(&mut self, o: &'a Obj, m: &'a Map<String, Value>) {
        for (k, v) in m {
            if v.is_null() {
                continue;
            }
            match o.props.get(k) {
                Some(node) => {
                    self.path.push(Seg::Key(k));
                    self.value(node, v);
                    self.path.pop();
                }
                None => match &o.additional {
                    Additional::Ignored => {}
                    Additional::Forbidden => {
                        self.path.push(Seg::Key(k));
                        self.issue(
                            CODE_CONSTRAINT,
                            "the schema does not allow this field (additionalProperties: false); remove it or add it to the schema".into(),
                        );
                        self.path.pop();
                    }
                    Additional::Schema(node) => {
                        self.path.push(Seg::Key(k));
                        self.value(node, v);
                        self.path.pop();
                    }
                },
            }
        }
        if !self.mode.skip_required {
            for r in &o.required {
                if m.get(r).is_none_or(Value::is_null) {
                    self.path.push(Seg::Key(r));
                    self.issue(
                        CODE_REQUIRED,
                        "required field is missing or null; add a value to this field".into(),
                    );
                    self.path.pop();
                }
            }
        }
    }

    fn value(&mut self, node: &'a Node, v: &'a Value) {
        if v.is_null() {
            return;
        }
        match &node.ty {
            Ty::Any | Ty::Null => {}
            Ty::Object(o) => match v {
                Value::Object(m) => self.object(o, m),
                _ => self.type_issue(v, "an object"),
            },
            Ty::Array(items) => match v {
                Value::Array(a) => {
                    let n = a.len() as u64;
                    if let Some(min) = node.min_items
                        && n < min
                    {
                        self.issue(
                            CODE_CONSTRAINT,
                            format!("the array has {n} items; at least {min} are required"),
                        );
                    }
                    if let Some(max) = node.max_items
                        && n > max
                    {
                        self.issue(
                            CODE_CONSTRAINT,
                            format!("the array has {n} items; at most {max} are allowed"),
                        );
                    }
                    if let Some(item) = items {
                        for (i, it) in a.iter().enumerate() {
                            self.path.push(Seg::Index(i));
                            self.value(item, it);
                            self.path.pop();
                        }
                    }
                }
                _ => self.type_issue(v, "an array (arrays never convert)"),
            },
            Ty::Boolean => match v {
                Value::Bool(_) => {}
                Value::String(s)
                    if self.mode.source == Source::Csv
                        && (s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false")) => {}
                _ if self.mode.source == Source::Csv => {
                    self.type_issue(v, "a boolean (true or false)")
                }
                _ => self.type_issue(v, "a boolean (booleans never convert)"),
            },
            Ty::Integer | Ty::Number | Ty::String => {
                if let Some(c) = self.convert(node, v) {
                    self.constraints(node, v, c);
                }
            }
        }
    }

    fn type_issue(&mut self, v: &Value, wanted: &str) {
        self.issue(
            CODE_TYPE,
            format!(
                "expected {wanted}, found {} {}; send a value of the field's type",
                kind(v),
                excerpt(v)
            ),
        );
    }

    /// Converts a value to the field's scalar type, or reports why it cannot.
    fn convert<'v>(&mut self, node: &Node, v: &'v Value) -> Option<Conv<'v>> {
        match (&node.ty, v) {
            (_, Value::Bool(_)) | (_, Value::Array(_)) | (_, Value::Object(_)) => {
                let wanted = match (&node.ty, node.format) {
                    (Ty::Integer, _) => "an integer",
                    (Ty::Number, _) => "a number",
                    (_, Some(Format::DateTime)) => "a date-time",
                    (_, Some(Format::Date)) => "a date",
                    _ => "a string",
                };
                let why = match v {
                    Value::Bool(_) => " (booleans never convert)",
                    Value::Array(_) => " (arrays never convert)",
                    _ => "",
                };
                self.type_issue(v, &format!("{wanted}{why}"));
                None
            }
            (Ty::Integer, Value::Number(n)) => {
                if n.is_i64() || n.is_u64() {
                    Some(Conv::Num(n.as_f64().unwrap_or(0.0)))
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f.fract() == 0.0 && f.is_finite() {
                        Some(Conv::Num(f))
                    } else {
                        self.issue(
                            CODE_TYPE,
                            format!("{n} is not an integer (a double converts to an integer only without a fraction)"),
                        );
                        None
                    }
                }
            }
            (Ty::Integer, Value::String(s)) => {
                let t = s.trim();
                if let Ok(i) = t.parse::<i64>() {
                    Some(Conv::Num(i as f64))
                } else if let Ok(f) = t.parse::<f64>()
                    && f.is_finite()
                    && f.fract() == 0.0
                {
                    Some(Conv::Num(f))
                } else {
                    self.issue(
                        CODE_TYPE,
                        format!("{} cannot be converted to an integer", excerpt(v)),
                    );
                    None
                }
            }
            (Ty::Number, Value::Number(n)) => Some(Conv::Num(n.as_f64().unwrap_or(0.0))),
            (Ty::Number, Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Some(Conv::Num(f)),
                _ => {
                    self.issue(
                        CODE_TYPE,
                        format!("{} cannot be converted to a number", excerpt(v)),
                    );
                    None
                }
            },
            (Ty::String, Value::Number(n)) => match node.format {
                Some(Format::DateTime) | Some(Format::Date) => {
                    if n.is_i64() || n.is_u64() {
                        // A long is epoch milliseconds.
                        let ms = n.as_i64().unwrap_or(i64::MAX);
                        if chrono::DateTime::from_timestamp_millis(ms).is_some() {
                            Some(Conv::Bool) // valid; no further text constraints
                        } else {
                            self.issue(
                                CODE_CONSTRAINT,
                                format!(
                                    "{n} is out of range for a date-time in epoch milliseconds"
                                ),
                            );
                            None
                        }
                    } else {
                        self.issue(
                            CODE_TYPE,
                            format!("{n} cannot be converted to a date-time: only a long (epoch milliseconds) or an ISO 8601 string can"),
                        );
                        None
                    }
                }
                _ => Some(Conv::Text(std::borrow::Cow::Owned(n.to_string()))),
            },
            (Ty::String, Value::String(s)) => Some(Conv::Text(std::borrow::Cow::Borrowed(s))),
            (_, Value::Null) => None,
            _ => None,
        }
    }

    fn constraints(&mut self, node: &Node, v: &Value, c: Conv<'_>) {
        match c {
            Conv::Bool => {}
            Conv::Num(f) => {
                if let Some(min) = node.minimum
                    && f < min
                {
                    self.issue(
                        CODE_CONSTRAINT,
                        format!("{} is below the minimum {}", excerpt(v), num(min)),
                    );
                }
                if let Some(max) = node.maximum
                    && f > max
                {
                    self.issue(
                        CODE_CONSTRAINT,
                        format!("{} is above the maximum {}", excerpt(v), num(max)),
                    );
                }
                if let Some(min) = node.exclusive_minimum
                    && f <= min
                {
                    self.issue(
                        CODE_CONSTRAINT,
                        format!("{} must be greater than {}", excerpt(v), num(min)),
                    );
                }
                if let Some(max) = node.exclusive_maximum
                    && f >= max
                {
                    self.issue(
                        CODE_CONSTRAINT,
                        format!("{} must be less than {}", excerpt(v), num(max)),
                    );
                }
                if let Some(e) = &node.enumeration
                    && !e.iter().any(|x| x.as_f64() == Some(f))
                {
                    self.enum_issue(v, e);
                }
            }
            Conv::Text(s) => {
                match node.format {
                    Some(Format::DateTime) if !is_date_time(&s) => self.issue(
                        CODE_CONSTRAINT,
                        format!(
                            "{} is not a date-time: use ISO 8601, e.g. 2024-05-01T12:30:00Z (or a long in epoch milliseconds)",
                            excerpt(v)
                        ),
                    ),
                    Some(Format::Date) if !is_date(&s) => self.issue(
                        CODE_CONSTRAINT,
                        format!("{} is not a date: use YYYY-MM-DD, e.g. 2024-05-01", excerpt(v)),
                    ),
                    Some(Format::Email) if !is_email(&s) => self.issue(
                        CODE_CONSTRAINT,
                        format!("{} is not an email address (name@domain.tld)", excerpt(v)),
                    ),
                    Some(Format::Uri) if !is_uri(&s) => self.issue(
                        CODE_CONSTRAINT,
                        format!(
                            "{} is not a URI: it needs a scheme, e.g. https://example.com/x",
                            excerpt(v)
                        ),
                    ),
                    _ => {}
                }
                if node.min_length.is_some() || node.max_length.is_some() {
                    let n = s.chars().count() as u64;
                    if let Some(min) = node.min_length
                        && n < min
                    {
                        self.issue(
                            CODE_CONSTRAINT,
                            format!(
                                "{} has {n} characters; at least {min} are required",
                                excerpt(v)
                            ),
                        );
                    }
                    if let Some(max) = node.max_length
                        && n > max
                    {
                        self.issue(
                            CODE_CONSTRAINT,
                            format!(
                                "{} has {n} characters; at most {max} are allowed",
                                excerpt(v)
                            ),
                        );
                    }
                }
                if let Some(e) = &node.enumeration
                    && !e.iter().any(|x| match x {
                        Value::String(es) => es == s.as_ref(),
                        Value::Number(en) => en.to_string() == s.as_ref(),
                        _ => false,
                    })
                {
                    self.enum_issue(v, e);
                }
            }
        }
    }

    fn enum_issue(&mut self, v: &Value, allowed: &[Value]) {
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
            CODE_CONSTRAINT,
            format!(
                "{} is not one of the allowed values: {}{more}",
                excerpt(v),
                list.join(", ")
            ),
        );
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn excerpt(v: &Value) -> String {
    let s = match v {
        Value::Array(_) => return "[...]".into(),
        Value::Object(_) => return "{...}".into(),
        other => other.to_string(),
    };
    if s.len() <= 80 {
        return s;
    }
    let mut end = 77;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

fn two(b: &[u8]) -> u32 {
    u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0')
}

/// The length of a leading `YYYY-M[M]-D[D]` that is a real calendar day, if any. Months and
/// days may have one digit (`1979-01-3`), as the platform's conversion accepts.
fn date_prefix(b: &[u8]) -> Option<usize> {
    if b.len() < 8 || !digits(&b[0..4]) || b[4] != b'-' {
        return None;
    }
    let number = |from: usize| -> Option<(u32, usize)> {
        let n = b[from..]
            .iter()
            .take(2)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 {
            return None;
        }
        let v = b[from..from + n]
            .iter()
            .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
        Some((v, from + n))
    };
    let (month, at) = number(5)?;
    if b.get(at) != Some(&b'-') {
        return None;
    }
    let (day, end) = number(at + 1)?;
    if b.get(end).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let year = two(&b[0..2]) * 100 + two(&b[2..4]);
    chrono::NaiveDate::from_ymd_opt(year as i32, month, day).map(|_| end)
}

/// `YYYY-MM-DD` (months and days may have one digit), a real calendar day.
pub fn is_date(s: &str) -> bool {
    date_prefix(s.as_bytes()) == Some(s.len())
}

/// ISO 8601 date-time: a date (as [`is_date`]), then `THH:MM[:SS[.fff]]` with `Z`, an offset,
/// or none (a space may replace the `T`); a date alone converts too (midnight).
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(d) = date_prefix(b) else {
        return false;
    };
    if d == b.len() {
        return true;
    }
    if b.len() < d + 6 || !matches!(b[d], b'T' | b't' | b' ') {
        return false;
    }
    let t = &b[d + 1..];
    // HH:MM
    if !(digits(&t[0..2]) && t[2] == b':' && digits(&t[3..5])) {
        return false;
    }
    if two(&t[0..2]) > 23 || two(&t[3..5]) > 59 {
        return false;
    }
    let mut rest = &t[5..];
    if rest.first() == Some(&b':') {
        if rest.len() < 3 || !digits(&rest[1..3]) || two(&rest[1..3]) > 60 {
            return false;
        }
        rest = &rest[3..];
        if rest.first() == Some(&b'.') || rest.first() == Some(&b',') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            rest = &rest[1 + n..];
        }
    }
    match rest {
        [] | [b'Z'] | [b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] | [b'+' | b'-', h1, h2, m1, m2] => {
            let (h, m) = ([*h1, *h2], [*m1, *m2]);
            digits(&h) && digits(&m) && two(&h) <= 23 && two(&m) <= 59
        }
        [b'+' | b'-', h1, h2] => digits(&[*h1, *h2]) && two(&[*h1, *h2]) <= 23,
        _ => false,
    }
}

/// `local@domain.tld`, no spaces.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
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
pub fn is_uri(s: &str) -> bool {
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

    fn issues(schema: &Schema, v: Value, source: Source) -> Vec<Issue> {
        let mut out = Vec::new();
        schema.check(
            v.as_object().unwrap(),
            CheckMode {
                source,
                skip_required: false,
            },
            &mut out,
        );
        out
    }

    fn profile() -> Schema {
        Schema::compile(
            &json!({
                "$id": "https://ns.adobe.com/t/schemas/p", "title": "P", "type": "object",
                "meta:extends": ["x"],
                "definitions": {"addr": {"type": "object", "properties": {"city": {"type": "string", "minLength": 2}}}},
                "required": ["id"],
                "properties": {
                    "id": {"type": "string"},
                    "age": {"type": "integer", "minimum": 0, "maximum": 150},
                    "score": {"type": "number"},
                    "vip": {"type": "boolean"},
                    "seen": {"type": "string", "format": "date-time"},
                    "born": {"type": "string", "format": "date"},
                    "mail": {"type": "string", "format": "email"},
                    "site": {"type": "string", "format": "uri"},
                    "tier": {"type": "string", "enum": ["gold", "silver"]},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}},
                    "home": {"$ref": "#/definitions/addr"},
                    "ids": {"type": "object", "additionalProperties": {"type": "array", "items": {
                        "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "primary": {"type": "boolean"}}}}}
                }
            }),
            None,
            None,
            Some("id"),
        )
        .unwrap()
    }

    #[test]
    fn conversions_and_rules() {
        let s = profile();
        assert_eq!(s.id, "https://ns.adobe.com/t/schemas/p");
        assert_eq!(s.identity_field.as_deref(), Some("/id"));
        let ok = json!({"id": "a", "age": "42", "score": "1.5", "vip": true, "seen": 1700000000000i64,
                        "born": "2001-02-03", "mail": "a@b.co", "site": "https://x", "tier": "gold",
                        "tags": ["a", "bc"], "home": {"city": "Rome"}, "ids": {"ECID": [{"id": "1", "primary": true}]},
                        "unknown": [1, 2], "age2": null});
        assert_eq!(issues(&s, ok, Source::Json), vec![]);
        let ok2 = json!({"id": 7, "age": 42.0, "seen": "2024-05-01T10:00:00.123+02:00", "born": "2024-02-29"});
        assert_eq!(issues(&s, ok2, Source::Json), vec![]);

        let bad = json!({"age": "old", "score": true, "vip": "true", "seen": "yesterday", "born": "2023-02-29",
                         "mail": "nope", "site": "no scheme", "tier": "bronze", "tags": ["abcd", 5],
                         "home": {"city": "R"}, "ids": {"ECID": [{"primary": true}]}});
        let got = issues(&s, bad, Source::Json);
        let by_ptr: HashMap<&str, &str> =
            got.iter().map(|i| (i.pointer.as_str(), i.code)).collect();
        assert_eq!(by_ptr["/id"], CODE_REQUIRED);
        assert_eq!(by_ptr["/age"], CODE_TYPE);
        assert_eq!(by_ptr["/score"], CODE_TYPE);
        assert_eq!(by_ptr["/vip"], CODE_TYPE);
        assert_eq!(by_ptr["/seen"], CODE_CONSTRAINT);
        assert_eq!(by_ptr["/born"], CODE_CONSTRAINT);
        assert_eq!(by_ptr["/mail"], CODE_CONSTRAINT);
        assert_eq!(by_ptr["/site"], CODE_CONSTRAINT);
        assert_eq!(by_ptr["/tier"], CODE_CONSTRAINT);
        assert_eq!(by_ptr["/tags/0"], CODE_CONSTRAINT);
        assert!(
            !by_ptr.contains_key("/tags/1"),
            "numbers convert to strings"
        );
        assert_eq!(by_ptr["/home/city"], CODE_CONSTRAINT);
        assert_eq!(by_ptr["/ids/ECID/0/id"], CODE_REQUIRED);
        assert!(got.iter().all(|i| i.message.starts_with(&i.pointer)));

        // Integers: a fraction does not convert; a double without one does.
        let got = issues(&s, json!({"id": "x", "age": 1.5}), Source::Json);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].code, CODE_TYPE);
        assert_eq!(
            issues(&s, json!({"id": "x", "age": 200}), Source::Json)[0].code,
            CODE_CONSTRAINT
        );
        // CSV text converts to booleans; JSON strings do not.
        assert_eq!(
            issues(&s, json!({"id": "x", "vip": "TRUE"}), Source::Csv),
            vec![]
        );
        assert_eq!(
            issues(&s, json!({"id": "x", "vip": "TRUE"}), Source::Json).len(),
            1
        );
        // Arrays never convert, in either direction.
        assert_eq!(
            issues(&s, json!({"id": "x", "tags": "a"}), Source::Json)[0].code,
            CODE_TYPE
        );
        assert_eq!(
            issues(&s, json!({"id": ["x"]}), Source::Json)[0].code,
            CODE_TYPE
        );
    }

    #[test]
    fn the_fixture_schema_compiles_and_checks_lengths() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/objectXDM.schema.json"),
        );
        let Ok(text) = text else {
            panic!("fixture objectXDM.schema.json not found");
        };
        let s = Schema::compile(
            &serde_json::from_str(&text).unwrap(),
            Some("obj"),
            None,
            None,
        )
        .unwrap();
        let got = issues(
            &s,
            json!({"person": {"name": {"firstName": "Bob"}, "birthDay": 32, "gender": "male",
                              "createdByBatchID": "not a uri", "timestamp": "17"}}),
            Source::Json,
        );
        let mut ptrs: Vec<&str> = got.iter().map(|i| i.pointer.as_str()).collect();
        ptrs.sort_unstable();
        assert_eq!(
            ptrs,
            vec![
                "/person/birthDay",
                "/person/createdByBatchID",
                "/person/name/firstName",
            ],
            "{got:?}"
        );
    }

    #[test]
    fn compile_errors_say_what_to_do() {
        let e = Schema::compile(&json!({"type": "string"}), Some("x"), None, None).unwrap_err();
        assert!(e.contains("root"), "{e}");
        let e = Schema::compile(
            &json!({"type": "object", "properties": {"a": {"$ref": "https://ns.adobe.com/xdm/context/profile"}}}),
            Some("x"),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("xed-full") && e.contains("/a"), "{e}");
        let e = Schema::compile(&json!({"type": "object"}), None, None, None).unwrap_err();
        assert!(e.contains("$id"), "{e}");
        let e = Schema::compile(
            &json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            Some("x"),
            None,
            Some("b"),
        )
        .unwrap_err();
        assert!(e.contains("/b"), "{e}");
    }

    #[test]
    fn dates_and_formats() {
        for ok in [
            "2024-05-01T12:30:00Z",
            "2024-05-01T12:30Z",
            "2024-05-01 12:30:00",
            "2024-05-01T12:30:00.123456+05:30",
            "2024-05-01T12:30:00-0800",
            "2024-05-01",
            "1979-01-3",
            "1979-1-3T01:02:03Z",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        assert!(is_date("1979-01-3") && is_date("2024-2-29"));
        assert!(!is_date("2023-2-29") && !is_date("2023-02-290") && !is_date("2023--02"));
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:30:00+",
            "2024-05-01X12:30",
            "yesterday",
            "",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
        assert!(is_email("a.b+c@example.co.uk") && !is_email("a@b") && !is_email("a b@c.d"));
        assert!(is_uri("urn:isbn:1") && is_uri("https://x/y") && !is_uri("/rel") && !is_uri("x"));
        assert_eq!(normalize_pointer("a.b"), "/a/b");
        assert_eq!(normalize_pointer("/a/b"), "/a/b");
    }
}
