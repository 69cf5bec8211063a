//! One record checked against a compiled schema, with the platform's conversions: strings
//! convert to numbers, dates and date-times; integers and doubles convert among themselves (a
//! double with a fraction is not an integer); a long converts to a date or date-time (epoch
//! milliseconds); numbers convert to strings; booleans, arrays and objects never convert. CSV
//! cells are text, so they also convert to booleans from `true`/`false`. A `null` counts as an
//! absent field. Fields the schema does not name are ignored unless `additionalProperties` is
//! `false`.
//!
//! It reads records and writes issues; it must not compile schemas (that is `schema`).

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use crate::issue::{Issue, IssueCode};
use crate::pointer::escape_segment;
use crate::schema::{Additional, Node, Obj, Schema, Ty};
use crate::text::Format;

/// At most this many issues are reported per record (the rest are counted in the last one).
const MAX_ISSUES_PER_RECORD: usize = 16;

/// Where a record comes from: CSV cells are text, so they convert to booleans too, and an empty
/// cell is an absent value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Json,
    Csv,
    Parquet,
}

/// How to check a record.
#[derive(Debug, Clone, Copy)]
pub struct CheckMode {
    pub source: Source,
    /// Upsert rows carry only the fields they change: required fields are not checked.
    pub skip_required: bool,
    /// Whether `pattern`s are checked. The platform's batch ingestion does not check them
    /// (its data quality guide: "Pattern check: No" for batch, "Yes" for streaming), so the
    /// emulator leaves this off; a stricter check before upload may turn it on.
    pub patterns: bool,
}

impl Schema {
    /// Checks one record, appending its issues to `out`.
    pub fn check(&self, record: &Map<String, Value>, mode: CheckMode, out: &mut Vec<Issue>) {
        let mut cx = Cx::new(mode, Keep::Issues(out));
        cx.object(self.root_obj(), record);
        if let Keep::Issues(out) = cx.keep
            && cx.dropped > 0
            && let Some(last) = out.last_mut()
        {
            last.message.push_str(&format!(
                " (and {} more problems in this record)",
                cx.dropped
            ));
        }
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// What a check keeps of the problems it finds.
pub(crate) enum Keep<'o> {
    /// Every issue, with its field and message.
    Issues(&'o mut Vec<Issue>),
    /// Only whether there was one (the check while a record is parsed, `stream`: a record
    /// with a problem is checked again, held, to learn its issues).
    Whether(&'o mut bool),
}

pub(crate) struct Cx<'a, 'o> {
    pub(crate) mode: CheckMode,
    path: Vec<Seg<'a>>,
    keep: Keep<'o>,
    dropped: usize,
}

/// A value as the rules see it: a scalar by value, a container by its kind only, so that a
/// record held as a `Value` and one checked while it is parsed (`stream`) share the rules.
#[derive(Debug, Clone)]
pub(crate) enum Seen<'v> {
    Null,
    Bool(bool),
    Num(Number),
    Str(&'v str),
    Array,
    Object,
}

impl<'v> Seen<'v> {
    fn of(v: &'v Value) -> Seen<'v> {
        match v {
            Value::Null => Seen::Null,
            Value::Bool(b) => Seen::Bool(*b),
            Value::Number(n) => Seen::Num(n.clone()),
            Value::String(s) => Seen::Str(s),
            Value::Array(_) => Seen::Array,
            Value::Object(_) => Seen::Object,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Seen::Null => "null",
            Seen::Bool(_) => "a boolean",
            Seen::Num(_) => "a number",
            Seen::Str(_) => "a string",
            Seen::Array => "an array",
            Seen::Object => "an object",
        }
    }

    /// As [`excerpt`] of the value.
    fn excerpt(&self) -> String {
        excerpt(&match self {
            Seen::Null => Value::Null,
            Seen::Bool(b) => Value::Bool(*b),
            Seen::Num(n) => Value::Number(n.clone()),
            Seen::Str(s) => Value::String((*s).to_owned()),
            Seen::Array => Value::Array(Vec::new()),
            Seen::Object => Value::Object(Map::new()),
        })
    }
}

/// A scalar after conversion to the field's type.
enum Conv<'v> {
    Num(f64),
    Text(Cow<'v, str>),
    /// Valid, and no rule of the field applies any more (a long taken as a date-time).
    Checked,
}

impl<'a, 'o> Cx<'a, 'o> {
    pub(crate) fn new(mode: CheckMode, keep: Keep<'o>) -> Self {
        Cx {
            mode,
            path: Vec::with_capacity(8),
            keep,
            dropped: 0,
        }
    }

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

    pub(crate) fn issue(&mut self, code: IssueCode, message: String) {
        match &mut self.keep {
            Keep::Whether(found) => {
                **found = true;
                return;
            }
            Keep::Issues(out) if out.len() >= MAX_ISSUES_PER_RECORD => {
                self.dropped += 1;
                return;
            }
            Keep::Issues(_) => {}
        }
        let pointer = self.pointer();
        let at = if pointer.is_empty() { "/" } else { &pointer };
        let issue = Issue {
            code,
            message: format!("{at}: {message}"),
            pointer,
        };
        if let Keep::Issues(out) = &mut self.keep {
            out.push(issue);
        }
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
                            IssueCode::Constraint,
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
                        IssueCode::Required,
                        "required field is missing or null; add a value to this field".into(),
                    );
                    self.path.pop();
                }
            }
        }
    }

    fn value(&mut self, node: &'a Node, v: &'a Value) {
        match (&node.ty, v) {
            (Ty::Object(o), Value::Object(m)) => self.object(o, m),
            (Ty::Array(items), Value::Array(a)) => self.array(node, items.as_deref(), a),
            _ => self.leaf(node, &Seen::of(v)),
        }
    }

    /// A value that is not a container of the node's kind (an object for an object node, an
    /// array for an array node): a scalar's conversions and rules, or a type issue.
    pub(crate) fn leaf(&mut self, node: &Node, v: &Seen<'_>) {
        if matches!(v, Seen::Null) {
            return;
        }
        match &node.ty {
            Ty::Any | Ty::Null => {}
            Ty::Object(_) => self.type_issue(v, "an object"),
            Ty::Array(_) => self.type_issue(v, "an array (arrays never convert)"),
            Ty::Boolean => match v {
                Seen::Bool(_) => {}
                Seen::Str(s)
                    if self.mode.source == Source::Csv
                        && (s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false")) => {}
                _ if self.mode.source == Source::Csv => {
                    self.type_issue(v, "a boolean (true or false)")
                }
                _ => self.type_issue(v, "a boolean (booleans never convert)"),
            },
            Ty::Integer | Ty::Number | Ty::String => match self.convert(node, v) {
                Some(Conv::Num(f)) => self.number_rules(node, v, f),
                Some(Conv::Text(s)) => self.text_rules(node, v, &s),
                Some(Conv::Checked) | None => {}
            },
        }
    }

    fn array(&mut self, node: &Node, items: Option<&'a Node>, a: &'a [Value]) {
        self.array_length(node, a.len() as u64);
        if let Some(item) = items {
            for (i, it) in a.iter().enumerate() {
                self.path.push(Seg::Index(i));
                self.value(item, it);
                self.path.pop();
            }
        }
    }

    /// The rules on an array's number of items.
    pub(crate) fn array_length(&mut self, node: &Node, n: u64) {
        if let Some(min) = node.min_items
            && n < min
        {
            self.issue(
                IssueCode::Constraint,
                format!("the array has {n} items; at least {min} are required"),
            );
        }
        if let Some(max) = node.max_items
            && n > max
        {
            self.issue(
                IssueCode::Constraint,
                format!("the array has {n} items; at most {max} are allowed"),
            );
        }
    }

    fn type_issue(&mut self, v: &Seen<'_>, wanted: &str) {
        self.issue(
            IssueCode::Type,
            format!(
                "expected {wanted}, found {} {}; send a value of the field's type",
                v.kind(),
                v.excerpt()
            ),
        );
    }

    /// Converts a value to the field's scalar type, or reports why it cannot.
    fn convert<'v>(&mut self, node: &Node, v: &Seen<'v>) -> Option<Conv<'v>> {
        match (&node.ty, v) {
            (_, Seen::Bool(_)) | (_, Seen::Array) | (_, Seen::Object) => {
                let wanted = match (&node.ty, node.format) {
                    (Ty::Integer, _) => "an integer",
                    (Ty::Number, _) => "a number",
                    (_, Some(Format::DateTime)) => "a date-time",
                    (_, Some(Format::Date)) => "a date",
                    _ => "a string",
                };
                let why = match v {
                    Seen::Bool(_) => " (booleans never convert)",
                    Seen::Array => " (arrays never convert)",
                    _ => "",
                };
                self.type_issue(v, &format!("{wanted}{why}"));
                None
            }
            (Ty::Integer, Seen::Num(n)) => self.integer_from_number(n),
            (Ty::Integer, Seen::Str(s)) => self.integer_from_text(v, s),
            (Ty::Number, Seen::Num(n)) => Some(Conv::Num(n.as_f64().unwrap_or(0.0))),
            (Ty::Number, Seen::Str(s)) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Some(Conv::Num(f)),
                _ => {
                    self.issue(
                        IssueCode::Type,
                        format!("{} cannot be converted to a number", v.excerpt()),
                    );
                    None
                }
            },
            (Ty::String, Seen::Num(n)) => match node.format {
                Some(Format::DateTime) | Some(Format::Date) => self.date_from_number(n),
                _ => Some(Conv::Text(Cow::Owned(n.to_string()))),
            },
            (Ty::String, Seen::Str(s)) => Some(Conv::Text(Cow::Borrowed(s))),
            (_, Seen::Null) => None,
            _ => None,
        }
    }

    /// A double converts to an integer only without a fraction.
    fn integer_from_number<'v>(&mut self, n: &serde_json::Number) -> Option<Conv<'v>> {
        if n.is_i64() || n.is_u64() {
            return Some(Conv::Num(n.as_f64().unwrap_or(0.0)));
        }
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f.fract() == 0.0 && f.is_finite() {
            Some(Conv::Num(f))
        } else {
            self.issue(
                IssueCode::Type,
                format!(
                    "{n} is not an integer (a double converts to an integer only without a fraction)"
                ),
            );
            None
        }
    }

    fn integer_from_text<'v>(&mut self, v: &Seen<'_>, s: &str) -> Option<Conv<'v>> {
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
                IssueCode::Type,
                format!("{} cannot be converted to an integer", v.excerpt()),
            );
            None
        }
    }

    /// A long is epoch milliseconds; no other number is a date.
    fn date_from_number<'v>(&mut self, n: &serde_json::Number) -> Option<Conv<'v>> {
        if !(n.is_i64() || n.is_u64()) {
            self.issue(
                IssueCode::Type,
                format!(
                    "{n} cannot be converted to a date-time: only a long (epoch milliseconds) or an ISO 8601 string can"
                ),
            );
            return None;
        }
        let ms = n.as_i64().unwrap_or(i64::MAX);
        if chrono::DateTime::from_timestamp_millis(ms).is_some() {
            Some(Conv::Checked)
        } else {
            self.issue(
                IssueCode::Constraint,
                format!("{n} is out of range for a date-time in epoch milliseconds"),
            );
            None
        }
    }

    fn number_rules(&mut self, node: &Node, v: &Seen<'_>, f: f64) {
        let broken = [
            (node.minimum.filter(|min| f < *min), "is below the minimum"),
            (node.maximum.filter(|max| f > *max), "is above the maximum"),
            (
                node.exclusive_minimum.filter(|min| f <= *min),
                "must be greater than",
            ),
            (
                node.exclusive_maximum.filter(|max| f >= *max),
                "must be less than",
            ),
        ];
        for (bound, rule) in broken {
            if let Some(bound) = bound {
                self.issue(
                    IssueCode::Constraint,
                    format!("{} {rule} {}", v.excerpt(), num(bound)),
                );
            }
        }
        if let Some(e) = &node.enumeration
            && !e.iter().any(|x| x.as_f64() == Some(f))
        {
            self.enum_issue(v, e);
        }
    }

    fn text_rules(&mut self, node: &Node, v: &Seen<'_>, s: &str) {
        if let Some(format) = node.format
            && !format.accepts(s)
        {
            self.issue(
                IssueCode::Constraint,
                format!("{} {}", v.excerpt(), format.refusal()),
            );
        }
        if node.min_length.is_some() || node.max_length.is_some() {
            let n = s.chars().count() as u64;
            if let Some(min) = node.min_length
                && n < min
            {
                self.issue(
                    IssueCode::Constraint,
                    format!(
                        "{} has {n} characters; at least {min} are required",
                        v.excerpt()
                    ),
                );
            }
            if let Some(max) = node.max_length
                && n > max
            {
                self.issue(
                    IssueCode::Constraint,
                    format!(
                        "{} has {n} characters; at most {max} are allowed",
                        v.excerpt()
                    ),
                );
            }
        }
        if self.mode.patterns
            && let Some(pattern) = &node.pattern
            && !pattern.is_match(s)
        {
            self.issue(
                IssueCode::Constraint,
                format!(
                    "{} does not match the field's pattern {}",
                    v.excerpt(),
                    excerpt(&Value::String(pattern.source().to_owned()))
                ),
            );
        }
        if let Some(e) = &node.enumeration
            && !e.iter().any(|x| match x {
                Value::String(es) => es == s,
                Value::Number(en) => en.to_string() == s,
                _ => false,
            })
        {
            self.enum_issue(v, e);
        }
    }

    fn enum_issue(&mut self, v: &Seen<'_>, allowed: &[Value]) {
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
            IssueCode::Constraint,
            format!(
                "{} is not one of the allowed values: {}{more}",
                v.excerpt(),
                list.join(", ")
            ),
        );
    }
}

/// What kind of JSON value `v` is, as messages name it ("a string", "an object").
pub fn kind(v: &Value) -> &'static str {
    Seen::of(v).kind()
}

pub(crate) fn excerpt(v: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use serde_json::json;

    fn issues(schema: &Schema, v: Value, source: Source) -> Vec<Issue> {
        let mut out = Vec::new();
        schema.check(
            v.as_object().unwrap(),
            CheckMode {
                source,
                skip_required: false,
                patterns: false,
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
        let by_ptr: HashMap<&str, IssueCode> =
            got.iter().map(|i| (i.pointer.as_str(), i.code)).collect();
        assert_eq!(by_ptr["/id"], IssueCode::Required);
        assert_eq!(by_ptr["/age"], IssueCode::Type);
        assert_eq!(by_ptr["/score"], IssueCode::Type);
        assert_eq!(by_ptr["/vip"], IssueCode::Type);
        assert_eq!(by_ptr["/seen"], IssueCode::Constraint);
        assert_eq!(by_ptr["/born"], IssueCode::Constraint);
        assert_eq!(by_ptr["/mail"], IssueCode::Constraint);
        assert_eq!(by_ptr["/site"], IssueCode::Constraint);
        assert_eq!(by_ptr["/tier"], IssueCode::Constraint);
        assert_eq!(by_ptr["/tags/0"], IssueCode::Constraint);
        assert!(
            !by_ptr.contains_key("/tags/1"),
            "numbers convert to strings"
        );
        assert_eq!(by_ptr["/home/city"], IssueCode::Constraint);
        assert_eq!(by_ptr["/ids/ECID/0/id"], IssueCode::Required);
        assert!(got.iter().all(|i| i.message.starts_with(&i.pointer)));

        // Integers: a fraction does not convert; a double without one does.
        let got = issues(&s, json!({"id": "x", "age": 1.5}), Source::Json);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].code, IssueCode::Type);
        assert_eq!(
            issues(&s, json!({"id": "x", "age": 200}), Source::Json)[0].code,
            IssueCode::Constraint
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
            IssueCode::Type
        );
        assert_eq!(
            issues(&s, json!({"id": ["x"]}), Source::Json)[0].code,
            IssueCode::Type
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
    fn patterns_are_checked_only_when_asked() {
        let s = Schema::compile(
            &json!({"type": "object", "properties": {
                "day": {"type": "string", "pattern": "^[0-1][0-9]-[0-9][0-9]$"}}}),
            Some("x"),
            None,
            None,
        )
        .unwrap();
        let record = json!({"day": "01-3"});
        let record = record.as_object().unwrap();
        let mut out = Vec::new();
        let mut mode = CheckMode {
            source: Source::Json,
            skip_required: false,
            patterns: false,
        };
        s.check(record, mode, &mut out);
        assert_eq!(
            out,
            vec![],
            "the platform's batch ingestion ignores patterns"
        );
        mode.patterns = true;
        s.check(record, mode, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code, IssueCode::Constraint);
        assert_eq!(out[0].pointer, "/day");
        assert!(
            out[0]
                .message
                .contains("does not match the field's pattern"),
            "{out:?}"
        );
        out.clear();
        s.check(json!({"day": "12-31"}).as_object().unwrap(), mode, &mut out);
        assert_eq!(out, vec![]);
    }
}
