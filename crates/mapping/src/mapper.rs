//! Applying a mapping set to one record: read the fields it needs from the input (CSV columns
//! by header, JSON paths), evaluate each mapping, place the values at their destinations
//! (creating objects and arrays, spreading `[*]` sources over `[*]` destinations), then convert
//! and check the record with the dataset's schema when there is one.
//!
//! A row that cannot be mapped or breaks the schema is rejected with every reason found; the
//! mapper never drops a value silently. Reading files and writing output are `read.rs`' and
//! `write.rs`' business.

use std::borrow::Cow;
use std::sync::Arc;

use crate::datum::{Datum, same_address};
use crate::functions;
use crate::mapping_set::{MappingError, MappingSet, Source};
use crate::path::{FieldPath, Segment};
use crate::xdm::{FieldLookup, IssueKind, Schema};

/// Why one row was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based record number (CSV: not counting the header; a JSON array: its element).
    pub row: u64,
    /// The line it starts on, for text formats.
    pub line: Option<u64>,
    /// At least one.
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub kind: ReasonKind,
    /// The destination field it is about (dotted), if one.
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// The row could not be read (bad JSON, a CSV row with the wrong number of fields...).
    Unreadable,
    /// A mapping failed on this row (a function refused its input, a `[*]` source that is
    /// not an array...).
    Mapping,
    /// A value does not convert to its field's type in the schema.
    Conversion,
    /// The record breaks a rule of the schema (length, range, enum, format, required).
    Schema,
    /// The record does not fit the Parquet columns fixed from the schema and the first rows.
    Output,
}

/// A mapping set ready to apply, with the dataset's schema if known.
#[derive(Debug, Clone)]
pub struct Mapper {
    pub(crate) set: Arc<MappingSet>,
    pub(crate) schema: Option<Arc<Schema>>,
}

/// Where each field the mappings read is in a CSV file (column index).
#[derive(Debug, Clone)]
pub struct CsvBinding {
    columns: Vec<usize>,
}

impl Mapper {
    pub fn new(set: MappingSet, schema: Option<Schema>) -> Mapper {
        Mapper {
            set: Arc::new(set),
            schema: schema.map(Arc::new),
        }
    }

    pub fn mapping_set(&self) -> &MappingSet {
        &self.set
    }

    pub fn schema(&self) -> Option<&Schema> {
        self.schema.as_deref()
    }

    /// Destinations the schema does not have, one warning per missing field (with the
    /// mappings that write inside it): the platform ignores such fields in JSON and refuses
    /// them as Parquet columns, so they are worth saying before anything is written.
    pub fn warnings(&self) -> Vec<String> {
        let Some(schema) = &self.schema else {
            return Vec::new();
        };
        let id = schema.id.as_deref().unwrap_or("the schema");
        // (the first field the schema lacks, the mappings writing it or inside it)
        let mut missing: Vec<(FieldPath, Vec<usize>)> = Vec::new();
        for mapping in &self.set.mappings {
            if let FieldLookup::Missing { at } = schema.field(&mapping.destination) {
                let field = FieldPath {
                    segments: mapping.destination.segments[..=at].to_vec(),
                };
                match missing.iter_mut().find(|(f, _)| *f == field) {
                    Some((_, indices)) => indices.push(mapping.index),
                    None => missing.push((field, vec![mapping.index])),
                }
            }
        }
        missing
            .into_iter()
            .map(|(field, indices)| {
                let by: Vec<String> = indices.iter().map(|i| format!("mappings[{i}]")).collect();
                format!(
                    "{id} has no field {field} (written by {}): the platform ignores it in JSON and refuses it as a Parquet column; add it to the schema or drop those mappings",
                    by.join(", ")
                )
            })
            .collect()
    }

    /// Finds the columns of a CSV file for the fields the mappings read. A source names a
    /// column by its header (`Full\.Name` and `Full.Name` both name the column `Full.Name`).
    pub fn bind_csv(&self, headers: &[String]) -> Result<CsvBinding, MappingError> {
        let mut columns = Vec::with_capacity(self.set.fields.len());
        for (field_id, path) in self.set.fields.iter().enumerate() {
            let name = path.as_keys().map(|keys| keys.join("."));
            let found = name
                .as_deref()
                .and_then(|name| headers.iter().position(|h| h == name));
            match found {
                Some(column) => columns.push(column),
                None => {
                    let mapping = self
                        .set
                        .mappings
                        .iter()
                        .find(|m| reads(&m.source, field_id))
                        .expect("every field in the table is read by some mapping");
                    let shown: Vec<&str> = headers.iter().take(40).map(String::as_str).collect();
                    let message = match name {
                        Some(name) => format!(
                            "it reads the column {name:?}, which the file does not have; its columns are: {}",
                            shown.join(", ")
                        ),
                        None => format!(
                            "it reads {path}, but a CSV row is flat (columns only, no arrays)"
                        ),
                    };
                    return Err(MappingError::Invalid {
                        index: mapping.index,
                        destination: mapping.destination.to_string(),
                        message,
                    });
                }
            }
        }
        Ok(CsvBinding { columns })
    }

    /// The fields of a CSV row (an empty cell is an absent value).
    pub(crate) fn csv_fields<'r>(
        &self,
        binding: &CsvBinding,
        row: &'r csv::StringRecord,
    ) -> Vec<Datum<'r>> {
        binding
            .columns
            .iter()
            .map(|&c| match row.get(c) {
                Some(cell) if !cell.is_empty() => Datum::Str(Cow::Borrowed(cell)),
                _ => Datum::Null,
            })
            .collect()
    }

    /// The fields of a JSON record (a missing field is null; `[*]` gives an array).
    pub(crate) fn json_fields<'r>(&self, record: &'r serde_json::Value) -> Vec<Datum<'r>> {
        self.set
            .fields
            .iter()
            .map(|path| lookup(record, &path.segments))
            .collect()
    }

    /// Maps one record given its fields, then converts and checks it with the schema.
    pub(crate) fn map_fields<'a>(&'a self, fields: &[Datum<'a>]) -> Result<Datum<'a>, Vec<Reason>> {
        let mut record = Datum::Object(Vec::with_capacity(8));
        let mut reasons = Vec::new();
        for mapping in &self.set.mappings {
            let value = match &mapping.source {
                Source::Attribute(field) => fields.get(*field).cloned().unwrap_or(Datum::Null),
                Source::Static(constant) => constant.clone(),
                Source::Expression(expr) => match functions::eval(expr, fields) {
                    Ok(value) => value,
                    Err(message) => {
                        reasons.push(Reason {
                            kind: ReasonKind::Mapping,
                            field: Some(mapping.destination.to_string()),
                            message: format!(
                                "mappings[{}] (destination {}): {message}",
                                mapping.index, mapping.destination
                            ),
                        });
                        continue;
                    }
                },
            };
            if let Err(message) = place(&mut record, &mapping.destination.segments, value) {
                reasons.push(Reason {
                    kind: ReasonKind::Mapping,
                    field: Some(mapping.destination.to_string()),
                    message: format!(
                        "mappings[{}] (destination {}): {message}",
                        mapping.index, mapping.destination
                    ),
                });
            }
        }
        if !reasons.is_empty() {
            return Err(reasons);
        }
        if let Some(schema) = &self.schema {
            let mut issues = Vec::new();
            schema.conform(&mut record, &mut issues);
            if !issues.is_empty() {
                return Err(issues
                    .into_iter()
                    .map(|issue| Reason {
                        kind: match issue.kind {
                            IssueKind::Conversion => ReasonKind::Conversion,
                            _ => ReasonKind::Schema,
                        },
                        field: Some(issue.field),
                        message: issue.message,
                    })
                    .collect());
            }
        }
        Ok(record)
    }

    /// Maps one JSON record (a convenience for callers with records in memory): the mapped
    /// record as JSON, or why it was rejected.
    pub fn map_json(&self, record: &serde_json::Value) -> Result<serde_json::Value, Vec<Reason>> {
        let fields = self.json_fields(record);
        self.map_fields(&fields).map(|mapped| mapped.to_json())
    }

    /// Maps one CSV row given its header (a convenience, as `map_json`).
    pub fn map_csv_row(
        &self,
        headers: &[String],
        row: &[&str],
    ) -> Result<serde_json::Value, Vec<Reason>> {
        let binding = self.bind_csv(headers).map_err(|e| {
            vec![Reason {
                kind: ReasonKind::Mapping,
                field: e.destination().map(str::to_owned),
                message: e.to_string(),
            }]
        })?;
        let record = csv::StringRecord::from(row.to_vec());
        let fields = self.csv_fields(&binding, &record);
        self.map_fields(&fields).map(|mapped| mapped.to_json())
    }
}

fn reads(source: &Source, field: usize) -> bool {
    fn in_expr(expr: &crate::expr::Expr, field: usize) -> bool {
        use crate::expr::Expr;
        match expr {
            Expr::Field(f) => *f == field,
            Expr::Call(_, args) | Expr::List(args) => args.iter().any(|a| in_expr(a, field)),
            Expr::Method(a, _, b) | Expr::Binary(_, a, b) => in_expr(a, field) || in_expr(b, field),
            Expr::Not(a) | Expr::Negate(a) => in_expr(a, field),
            Expr::Literal(_) | Expr::Pattern(_) => false,
        }
    }
    match source {
        Source::Attribute(f) => *f == field,
        Source::Static(_) => false,
        Source::Expression(expr) => in_expr(expr, field),
    }
}

/// The value at a path of a JSON record: missing is null; `[*]` collects the elements.
fn lookup<'r>(value: &'r serde_json::Value, path: &[Segment]) -> Datum<'r> {
    let Some((first, rest)) = path.split_first() else {
        return Datum::from_json(value);
    };
    match (first, value) {
        (Segment::Key(name), serde_json::Value::Object(fields)) => match fields.get(&**name) {
            Some(child) => lookup(child, rest),
            None => Datum::Null,
        },
        (Segment::Index(i), serde_json::Value::Array(items)) => match items.get(*i) {
            Some(child) => lookup(child, rest),
            None => Datum::Null,
        },
        (Segment::Each, serde_json::Value::Array(items)) => {
            Datum::Array(items.iter().map(|item| lookup(item, rest)).collect())
        }
        _ => Datum::Null,
    }
}

/// Writes `value` at `path` inside `node`, creating objects and arrays on the way. Each `[*]`
/// of the path takes one level of array from the value (element `i` goes to element `i`). A
/// null writes nothing.
fn place<'a>(node: &mut Datum<'a>, path: &'a [Segment], value: Datum<'a>) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let Some((first, rest)) = path.split_first() else {
        if !node.is_null() {
            return Err("another mapping already wrote this field".into());
        }
        *node = value;
        return Ok(());
    };
    match first {
        Segment::Key(name) => {
            if node.is_null() {
                *node = Datum::Object(Vec::with_capacity(4));
            }
            let Datum::Object(fields) = node else {
                return Err(format!(
                    "cannot write {name} inside {}, which another mapping wrote",
                    node.kind()
                ));
            };
            // Names are interned, so a name already written is found by its address; a new
            // one is looked for by content (a copied object's names are not interned).
            let found = fields
                .iter()
                .position(|(k, _)| same_address(k, name))
                .or_else(|| fields.iter().position(|(k, _)| **k == **name));
            let slot = match found {
                Some(i) => &mut fields[i].1,
                None => {
                    fields.push((Cow::Borrowed(&**name), Datum::Null));
                    &mut fields.last_mut().expect("just pushed").1
                }
            };
            place(slot, rest, value)
        }
        Segment::Index(i) => {
            let elements = array_at(node)?;
            if elements.len() <= *i {
                elements.resize(i + 1, Datum::Null);
            }
            place(&mut elements[*i], rest, value)
        }
        Segment::Each => {
            let Datum::Array(items) = value else {
                return Err(format!(
                    "its source gave {} {} where [*] needs an array",
                    value.kind(),
                    value.excerpt()
                ));
            };
            let elements = array_at(node)?;
            if elements.len() < items.len() {
                elements.resize(items.len(), Datum::Null);
            }
            for (i, item) in items.into_iter().enumerate() {
                // An element whose value is null still exists (the arrays stay aligned).
                if elements[i].is_null() && !rest.is_empty() {
                    elements[i] = Datum::Object(Vec::new());
                }
                place(&mut elements[i], rest, item)?;
            }
            Ok(())
        }
    }
}

fn array_at<'n, 'a>(node: &'n mut Datum<'a>) -> Result<&'n mut Vec<Datum<'a>>, String> {
    if node.is_null() {
        *node = Datum::Array(Vec::new());
    }
    match node {
        Datum::Array(elements) => Ok(elements),
        other => Err(format!(
            "cannot use an array index on {}, which another mapping wrote",
            other.kind()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapper(mappings: serde_json::Value, schema: Option<serde_json::Value>) -> Mapper {
        let set =
            MappingSet::from_json(json!({ "mappings": mappings }).to_string().as_bytes()).unwrap();
        Mapper::new(set, schema.map(|s| Schema::compile(&s).unwrap()))
    }

    #[test]
    fn nested_destinations_fixed_indices_and_constants() {
        let m = mapper(
            json!([
                {"sourceType": "ATTRIBUTE", "source": "customerInfo.name", "destination": "pi.name"},
                {"sourceType": "ATTRIBUTE", "source": "customerInfo.emails[0].email", "destination": "pi.email"},
                {"sourceType": "ATTRIBUTE", "source": "customerInfo.name", "destination": "piList[0]"},
                {"sourceType": "ATTRIBUTE", "source": "id2", "destination": "ids.ECID[1].id"},
                {"sourceType": "ATTRIBUTE", "source": "id1", "destination": "ids.ECID[0].id"},
                {"sourceType": "STATIC", "source": "CUSTOMER", "destination": "userType"},
                {"sourceType": "STATIC", "source": 3, "destination": "n"},
                {"sourceType": "ATTRIBUTE", "source": "missing.field", "destination": "gone"}
            ]),
            None,
        );
        let out = m
            .map_json(&json!({"customerInfo": {"name": "John Smith", "emails": [{"email": "js@example.com"}]},
                              "id1": "a", "id2": "b"}))
            .unwrap();
        assert_eq!(
            out,
            json!({"pi": {"name": "John Smith", "email": "js@example.com"}, "piList": ["John Smith"],
                   "ids": {"ECID": [{"id": "a"}, {"id": "b"}]}, "userType": "CUSTOMER", "n": 3})
        );
    }

    #[test]
    fn iteration_spreads_elements_and_keeps_arrays_aligned() {
        let m = mapper(
            json!([
                {"sourceType": "ATTRIBUTE", "source": "customerInfo.emails[*].name", "destination": "pi[*].name"},
                {"sourceType": "ATTRIBUTE", "source": "customerInfo.emails[*].email", "destination": "pi[*].address"},
                {"sourceType": "ATTRIBUTE", "source": "customerInfo.emails[*].email", "destination": "all"},
                {"sourceType": "ATTRIBUTE", "source": "orders[*].lines[*].sku", "destination": "o[*].skus[*]"},
                {"sourceType": "ATTRIBUTE", "source": "customerInfo.emails", "destination": "copy"}
            ]),
            None,
        );
        let input = json!({
            "customerInfo": {"emails": [
                {"name": "John Smith", "email": "js@example.com"},
                {"email": "jane@example.com"}
            ]},
            "orders": [{"lines": [{"sku": "a"}, {"sku": "b"}]}, {"lines": [{"sku": "c"}]}]
        });
        assert_eq!(
            m.map_json(&input).unwrap(),
            json!({
                "pi": [{"name": "John Smith", "address": "js@example.com"}, {"address": "jane@example.com"}],
                "all": ["js@example.com", "jane@example.com"],
                "o": [{"skus": ["a", "b"]}, {"skus": ["c"]}],
                "copy": [{"name": "John Smith", "email": "js@example.com"}, {"email": "jane@example.com"}]
            })
        );
        // `[*]` over something that is not an array reads nothing (a missing field).
        assert_eq!(
            m.map_json(&json!({"customerInfo": {"emails": "none"}}))
                .unwrap(),
            json!({"copy": "none"})
        );
    }

    #[test]
    fn escaped_dots_read_and_write_names_with_dots() {
        let m = mapper(
            json!([
                {"sourceType": "ATTRIBUTE", "source": "Full\\.Name", "destination": "pi.name"},
                {"sourceType": "ATTRIBUTE", "source": "address.street\\.name", "destination": "a\\.b.c"},
                {"sourceType": "EXPRESSION", "source": "upper(${Full\\.Name})", "destination": "shout"}
            ]),
            None,
        );
        let out = m
            .map_json(&json!({"Full.Name": "John Smith", "address": {"street.name": "Main"}}))
            .unwrap();
        assert_eq!(
            out,
            json!({"pi": {"name": "John Smith"}, "a.b": {"c": "Main"}, "shout": "JOHN SMITH"})
        );
        // In CSV, `Full.Name` unescaped names the column too (as in the platform's example).
        let m = mapper(
            json!([{"sourceType": "ATTRIBUTE", "source": "Full.Name", "destination": "pi.name"},
                   {"sourceType": "ATTRIBUTE", "source": "Email", "destination": "pi.email"}]),
            None,
        );
        let headers = vec!["Full.Name".to_owned(), "Email".to_owned()];
        assert_eq!(
            m.map_csv_row(&headers, &["John Smith", ""]).unwrap(),
            json!({"pi": {"name": "John Smith"}})
        );
    }

    #[test]
    fn a_missing_csv_column_names_the_mapping_and_the_columns() {
        let m = mapper(
            json!([{"sourceType": "EXPRESSION", "source": "to_integer(YOB)", "destination": "person.birthYear"}]),
            None,
        );
        let e = m
            .bind_csv(&["F_NAME".to_owned(), "DOB".to_owned()])
            .unwrap_err();
        assert_eq!(e.index(), Some(0));
        let text = e.to_string();
        assert!(
            text.contains("\"YOB\"") && text.contains("F_NAME, DOB"),
            "{text}"
        );
    }

    #[test]
    fn strings_stay_strings_without_a_schema_and_convert_with_one() {
        let mappings = json!([
            {"sourceType": "ATTRIBUTE", "source": "YOB", "destination": "person.birthYear"},
            {"sourceType": "STATIC", "source": "false", "destination": "identityMap.CRMID[0].primary"},
            {"sourceType": "ATTRIBUTE", "source": "ID", "destination": "identityMap.CRMID[0].id"}
        ]);
        let input = json!({"YOB": "2004", "ID": "x"});
        assert_eq!(
            mapper(mappings.clone(), None).map_json(&input).unwrap(),
            json!({"person": {"birthYear": "2004"}, "identityMap": {"CRMID": [{"primary": "false", "id": "x"}]}})
        );
        let schema = json!({"type": "object", "properties": {
            "person": {"type": "object", "properties": {"birthYear": {"type": "integer"}}},
            "identityMap": {"type": "object", "additionalProperties": {"type": "array", "items": {
                "type": "object", "properties": {"id": {"type": "string"}, "primary": {"type": "boolean"}}}}}
        }});
        let m = mapper(mappings, Some(schema));
        assert_eq!(
            m.map_json(&input).unwrap(),
            json!({"person": {"birthYear": 2004}, "identityMap": {"CRMID": [{"primary": false, "id": "x"}]}})
        );
        let reasons = m.map_json(&json!({"YOB": "MMIV", "ID": "x"})).unwrap_err();
        assert_eq!(reasons.len(), 1);
        assert_eq!(reasons[0].kind, ReasonKind::Conversion);
        assert_eq!(reasons[0].field.as_deref(), Some("person.birthYear"));
        assert!(m.warnings().is_empty());
    }

    #[test]
    fn function_failures_reject_the_row_with_the_mapping_named() {
        let m = mapper(
            json!([
                {"sourceType": "EXPRESSION", "source": "to_integer(YOB)", "destination": "person.birthYear"},
                {"sourceType": "EXPRESSION", "source": "date(DOB, \"yyyy-MM-dd\")", "destination": "person.birthDate"}
            ]),
            None,
        );
        let reasons = m
            .map_json(&json!({"YOB": "19x4", "DOB": "31/12/1999"}))
            .unwrap_err();
        assert_eq!(reasons.len(), 2, "every failure is reported: {reasons:?}");
        assert!(
            reasons[0]
                .message
                .starts_with("mappings[0] (destination person.birthYear): to_integer:")
        );
        assert!(reasons[1].message.contains("date:"));
    }

    #[test]
    fn destinations_the_schema_lacks_are_warned_about() {
        let m = mapper(
            json!([
                {"sourceType": "ATTRIBUTE", "source": "a", "destination": "person.name.firstName"},
                {"sourceType": "ATTRIBUTE", "source": "b", "destination": "homeAddress.city"}
            ]),
            Some(
                json!({"$id": "https://x/s", "type": "object", "properties": {
                "person": {"type": "object", "properties": {"name": {"type": "object", "properties": {
                    "firstName": {"type": "string"}}}}}}}),
            ),
        );
        let warnings = m.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            warnings[0],
            "https://x/s has no field homeAddress (written by mappings[1]): the platform ignores it in JSON and refuses it as a Parquet column; add it to the schema or drop those mappings"
        );
    }
}
