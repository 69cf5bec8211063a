//! Loading a mapping set in the platform's Data Prep format (`{"mappings": [{"sourceType":
//! "ATTRIBUTE" | "STATIC" | "EXPRESSION", "source": ..., "destination": ...}]}`), as the Data
//! Prep API and the UI export it, and checking everything that can be checked before a row is
//! read: paths, expressions, functions, destinations that collide.
//!
//! Keys a mapping set carries for the platform (`id`, `name`, `version`, `inputSchema`,
//! `outputSchema`, `schemaRef`, `xdmSchema`, `status`, timestamps, and per mapping `id`,
//! `name`, `description`, `identity`, `identityGroup`, `namespaceCode`, `primaryIdentity`,
//! `version`...) are accepted and ignored; the older API's `sourceAttribute` and
//! `destinationXdmPath` are read as `source` and `destination`. A non-empty `transformScript`
//! is refused. This module must not read records (`mapper.rs` applies the set).

use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

use sha2::Digest;

use crate::datum::Datum;
use crate::expr::{self, Expr, ExprError};
use crate::path::{FieldPath, Segment};

/// A loaded mapping set.
#[derive(Debug)]
pub struct MappingSet {
    /// Its `name`, if it has one.
    pub name: Option<String>,
    /// SHA-256 (hex) of the mapping set's bytes: a staged file records which set made it.
    pub digest: String,
    pub(crate) mappings: Vec<Mapping>,
    /// Every input field the mappings read; `Source::Attribute` and `Expr::Field` hold
    /// indices into it.
    pub(crate) fields: Vec<FieldPath>,
}

#[derive(Debug)]
pub(crate) struct Mapping {
    /// Its position in `mappings` (0-based, as in `mappings[3]`).
    pub index: usize,
    pub destination: FieldPath,
    pub source: Source,
}

#[derive(Debug)]
pub(crate) enum Source {
    /// A field of the input record (index into `MappingSet::fields`).
    Attribute(usize),
    Static(Datum<'static>),
    Expression(Expr),
}

/// Why a mapping set cannot be used. Every message names the mapping (`mappings[N]`, 0-based
/// as in the file) and its destination, and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the mapping set is not valid JSON: {0}")]
    NotJson(String),
    #[error(
        "the mapping set has no \"mappings\" array: expected {{\"mappings\": [{{\"sourceType\": \"ATTRIBUTE\", \"source\": \"F_NAME\", \"destination\": \"person.name.firstName\"}}, ...]}}"
    )]
    NoMappings,
    #[error("the mapping set's \"mappings\" list is empty: add at least one mapping")]
    Empty,
    #[error(
        "mappings[{index}] (destination {destination}): unknown function '{function}': it is not a Data Prep function; check its spelling (supported functions are listed in docs/mapping.md)"
    )]
    UnknownFunction {
        index: usize,
        destination: String,
        function: String,
    },
    #[error(
        "mappings[{index}] (destination {destination}): the Data Prep function '{function}' is not supported by batchdrop yet; map this field another way or drop the mapping (supported functions are listed in docs/mapping.md)"
    )]
    UnsupportedFunction {
        index: usize,
        destination: String,
        function: String,
    },
    #[error("mappings[{index}] (destination {destination}): {construct} is not supported")]
    UnsupportedConstruct {
        index: usize,
        destination: String,
        construct: String,
    },
    #[error(
        "the mapping set's \"{key}\" is not supported: batchdrop applies the \"mappings\" list only; remove \"{key}\""
    )]
    UnsupportedKey { key: String },
    #[error("mappings[{index}] (destination {destination}): {message}")]
    Invalid {
        index: usize,
        destination: String,
        message: String,
    },
}

impl MappingError {
    /// The function it names, if it is about one.
    pub fn function(&self) -> Option<&str> {
        match self {
            MappingError::UnknownFunction { function, .. }
            | MappingError::UnsupportedFunction { function, .. } => Some(function),
            _ => None,
        }
    }

    /// The mapping it is about (0-based), if any.
    pub fn index(&self) -> Option<usize> {
        match self {
            MappingError::UnknownFunction { index, .. }
            | MappingError::UnsupportedFunction { index, .. }
            | MappingError::UnsupportedConstruct { index, .. }
            | MappingError::Invalid { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The destination of the mapping it is about, if any.
    pub fn destination(&self) -> Option<&str> {
        match self {
            MappingError::UnknownFunction { destination, .. }
            | MappingError::UnsupportedFunction { destination, .. }
            | MappingError::UnsupportedConstruct { destination, .. }
            | MappingError::Invalid { destination, .. } => Some(destination),
            _ => None,
        }
    }
}

impl MappingSet {
    /// Loads a mapping set from its JSON text.
    pub fn from_json(text: &[u8]) -> Result<MappingSet, MappingError> {
        let digest = format!("{:x}", sha2::Sha256::digest(text));
        let document: Value =
            serde_json::from_slice(text).map_err(|e| MappingError::NotJson(e.to_string()))?;
        let (entries, name) = match &document {
            Value::Array(entries) => (entries, None),
            Value::Object(top) => {
                if let Some(script) = top.get("transformScript")
                    && !script.is_null()
                    && script.as_str() != Some("")
                {
                    return Err(MappingError::UnsupportedKey {
                        key: "transformScript".into(),
                    });
                }
                let Some(Value::Array(entries)) = top.get("mappings") else {
                    return Err(MappingError::NoMappings);
                };
                (
                    entries,
                    top.get("name").and_then(Value::as_str).map(str::to_owned),
                )
            }
            _ => return Err(MappingError::NoMappings),
        };
        if entries.is_empty() {
            return Err(MappingError::Empty);
        }
        let mut fields = Vec::new();
        let mut mappings = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            mappings.push(compile(index, entry, &mut fields)?);
        }
        check_collisions(&mappings)?;
        intern_names(&mut mappings);
        Ok(MappingSet {
            name,
            digest,
            mappings,
            fields,
        })
    }

    /// How many mappings it has.
    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// The destinations, in the set's order (as written in the file).
    pub fn destinations(&self) -> impl Iterator<Item = &FieldPath> {
        self.mappings.iter().map(|m| &m.destination)
    }
}

fn compile(
    index: usize,
    entry: &Value,
    fields: &mut Vec<FieldPath>,
) -> Result<Mapping, MappingError> {
    let Value::Object(entry) = entry else {
        return Err(MappingError::Invalid {
            index,
            destination: "?".into(),
            message: "a mapping must be a JSON object with sourceType, source and destination"
                .into(),
        });
    };
    let destination_text = entry
        .get("destination")
        .or_else(|| entry.get("destinationXdmPath"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let invalid = |message: String| MappingError::Invalid {
        index,
        destination: if destination_text.is_empty() {
            "?".into()
        } else {
            destination_text.clone()
        },
        message,
    };
    if destination_text.is_empty() {
        return Err(invalid(
            "it has no \"destination\" (the field of the dataset's schema it writes)".into(),
        ));
    }
    let destination = FieldPath::parse(&destination_text)
        .map_err(|e| invalid(format!("bad destination: {e}")))?;
    if !matches!(destination.segments.first(), Some(Segment::Key(_))) {
        return Err(invalid(
            "a destination starts with a field name (a record is an object, not an array)".into(),
        ));
    }
    let source_value = entry.get("source").or_else(|| entry.get("sourceAttribute"));
    let source_type = match entry.get("sourceType") {
        None | Some(Value::Null) => "ATTRIBUTE".to_owned(),
        Some(Value::String(t)) => t.to_ascii_uppercase(),
        Some(other) => {
            return Err(invalid(format!(
                "sourceType must be \"ATTRIBUTE\", \"STATIC\" or \"EXPRESSION\", found {other}"
            )));
        }
    };
    let source = match source_type.as_str() {
        "ATTRIBUTE" => {
            let Some(Value::String(text)) = source_value else {
                return Err(invalid(
                    "an ATTRIBUTE mapping needs \"source\": the input field's name or path".into(),
                ));
            };
            let path = FieldPath::parse(text).map_err(|e| invalid(format!("bad source: {e}")))?;
            if destination.each_count() > path.each_count() {
                return Err(invalid(format!(
                    "the destination has {} [*] but the source {text:?} has {}: each [*] of a destination takes the elements of a [*] of its source",
                    destination.each_count(),
                    path.each_count()
                )));
            }
            Source::Attribute(expr::field_id(fields, path))
        }
        "STATIC" => {
            let constant = match source_value {
                Some(Value::String(s)) => Datum::Str(s.clone().into()),
                Some(Value::Bool(b)) => Datum::Bool(*b),
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) => Datum::Int(i),
                    None => Datum::Float(n.as_f64().unwrap_or_default()),
                },
                _ => {
                    return Err(invalid(
                        "a STATIC mapping needs \"source\": the constant to write (a string, number or boolean)".into(),
                    ));
                }
            };
            if destination.each_count() > 0 {
                return Err(invalid(
                    "[*] in the destination needs an ATTRIBUTE source with [*] (a constant has no elements)".into(),
                ));
            }
            Source::Static(constant)
        }
        "EXPRESSION" => {
            let Some(Value::String(text)) = source_value else {
                return Err(invalid(
                    "an EXPRESSION mapping needs \"source\": the expression, e.g. to_integer(YOB)"
                        .into(),
                ));
            };
            if destination.each_count() > 0 {
                return Err(invalid(
                    "[*] in the destination needs an ATTRIBUTE source with [*] (an expression gives one value)".into(),
                ));
            }
            let parsed = expr::parse(text, fields).map_err(|e| match e {
                ExprError::UnknownFunction(function) => MappingError::UnknownFunction {
                    index,
                    destination: destination_text.clone(),
                    function,
                },
                ExprError::UnsupportedFunction(function) => MappingError::UnsupportedFunction {
                    index,
                    destination: destination_text.clone(),
                    function,
                },
                ExprError::Unsupported(construct) => MappingError::UnsupportedConstruct {
                    index,
                    destination: destination_text.clone(),
                    construct,
                },
                ExprError::Syntax(message) => {
                    invalid(format!("the expression {text:?} cannot be read: {message}"))
                }
                ExprError::BadCall { function, message } => {
                    invalid(format!("in {text:?}: {function}(): {message}"))
                }
            })?;
            Source::Expression(parsed)
        }
        other => {
            return Err(MappingError::UnsupportedConstruct {
                index,
                destination: destination_text.clone(),
                construct: format!(
                    "the sourceType {other:?} (use ATTRIBUTE, STATIC or EXPRESSION)"
                ),
            });
        }
    };
    Ok(Mapping {
        index,
        destination,
        source,
    })
}

/// Makes every destination name one shared string per distinct name, so that records built
/// from the destinations find their fields by address (`datum::same_address`) rather than by
/// comparing bytes, once per field per row.
fn intern_names(mappings: &mut [Mapping]) {
    let mut names: HashSet<Arc<str>> = HashSet::new();
    for mapping in mappings {
        for segment in &mut mapping.destination.segments {
            if let Segment::Key(name) = segment {
                match names.get(&**name) {
                    Some(shared) => *name = shared.clone(),
                    None => {
                        names.insert(name.clone());
                    }
                }
            }
        }
    }
}

/// Two mappings must not write the same field, nor one inside what another writes whole, nor
/// use both `[*]` and a fixed index on the same array.
fn check_collisions(mappings: &[Mapping]) -> Result<(), MappingError> {
    for (i, a) in mappings.iter().enumerate() {
        for b in &mappings[..i] {
            let (short, long) = if a.destination.segments.len() <= b.destination.segments.len() {
                (&a.destination, &b.destination)
            } else {
                (&b.destination, &a.destination)
            };
            let mut mixed = None;
            let mut same_prefix = true;
            for (x, y) in short.segments.iter().zip(&long.segments) {
                match (x, y) {
                    (Segment::Each, Segment::Index(n)) | (Segment::Index(n), Segment::Each) => {
                        mixed = Some(*n);
                        same_prefix = false;
                        break;
                    }
                    _ if x != y => {
                        same_prefix = false;
                        break;
                    }
                    _ => {}
                }
            }
            let message = if let Some(n) = mixed {
                format!(
                    "it uses [*] and [{n}] on the same array as mappings[{}] ({}); use one or the other",
                    b.index, b.destination
                )
            } else if same_prefix && short.segments.len() == long.segments.len() {
                format!(
                    "mappings[{}] writes the same field; keep one of them",
                    b.index
                )
            } else if same_prefix {
                format!(
                    "{short} is written whole by one mapping and {long} inside it by another (mappings[{}]); map the inner fields only",
                    b.index
                )
            } else {
                continue;
            };
            return Err(MappingError::Invalid {
                index: a.index,
                destination: a.destination.to_string(),
                message,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<MappingSet, MappingError> {
        MappingSet::from_json(json.as_bytes())
    }

    #[test]
    fn an_exported_mapping_set_loads_with_its_extra_keys() {
        let set = load(
            r#"{
            "id": "cbb0da769faa48fcb29e026a924ba29d", "name": "Demo Mapping Set", "version": 0,
            "inputSchema": {"id": "a167ff2947ff447ebd8bcf7ef6756232", "version": 0},
            "outputSchema": {"schemaRef": {"id": "https://ns.adobe.com/t/schemas/x",
                             "contentType": "application/vnd.adobe.xed-full+json;version=1"}},
            "status": "DRAFT", "transformScript": "", "createdDate": "2020-11-25T19:40:24.123Z",
            "mappings": [
                {"sourceType": "ATTRIBUTE", "source": "Id", "destination": "_id", "name": "Id",
                 "description": "Identifier field", "identity": false, "identityGroup": null,
                 "namespaceCode": null, "version": 0, "id": "m1"},
                {"sourceType": "STATIC", "source": "CUSTOMER", "destination": "userType"},
                {"sourceType": "EXPRESSION", "source": "concat(upper(lastName), upper(firstName), now())",
                 "destination": "pi.created"},
                {"sourceAttribute": "FirstName", "destinationXdmPath": "person.name.firstName"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.name.as_deref(), Some("Demo Mapping Set"));
        assert_eq!(set.digest.len(), 64);
        let shown: Vec<String> = set.fields.iter().map(ToString::to_string).collect();
        assert_eq!(shown, vec!["Id", "lastName", "firstName", "FirstName"]);
        // A bare list of mappings is accepted too.
        assert_eq!(
            load(r#"[{"sourceType": "ATTRIBUTE", "source": "a", "destination": "b"}]"#)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn an_unknown_function_is_refused_with_its_name_index_and_destination() {
        let e = load(
            r#"{"mappings": [
                {"sourceType": "ATTRIBUTE", "source": "a", "destination": "x"},
                {"sourceType": "EXPRESSION", "source": "upper(frobnicate(a))", "destination": "person.name.firstName"}
            ]}"#,
        )
        .unwrap_err();
        assert_eq!(e.function(), Some("frobnicate"));
        assert_eq!(e.index(), Some(1));
        assert_eq!(e.destination(), Some("person.name.firstName"));
        assert!(e.to_string().contains("mappings[1]") && e.to_string().contains("'frobnicate'"));
        let e = load(
            r#"{"mappings": [{"sourceType": "EXPRESSION", "source": "ua_os_name(agent)", "destination": "os"}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, MappingError::UnsupportedFunction { function, .. } if function == "ua_os_name")
        );
    }

    #[test]
    fn bad_mapping_sets_say_what_is_wrong() {
        for (text, expected) in [
            ("{", "not valid JSON"),
            (r#"{"mapping": []}"#, "no \"mappings\""),
            (r#"{"mappings": []}"#, "is empty"),
            (
                r#"{"transformScript": "x", "mappings": []}"#,
                "transformScript",
            ),
            (
                r#"{"mappings": [{"sourceType": "ATTRIBUTE", "source": "a"}]}"#,
                "no \"destination\"",
            ),
            (
                r#"{"mappings": [{"sourceType": "LOOKUP", "source": "a", "destination": "b"}]}"#,
                "\"LOOKUP\"",
            ),
            (
                r#"{"mappings": [{"sourceType": "ATTRIBUTE", "destination": "b"}]}"#,
                "needs \"source\"",
            ),
            (
                r#"{"mappings": [{"sourceType": "ATTRIBUTE", "source": "a..b", "destination": "b"}]}"#,
                "bad source",
            ),
            (
                r#"{"mappings": [{"sourceType": "ATTRIBUTE", "source": "a", "destination": "b[*]"}]}"#,
                "has 0",
            ),
            (
                r#"{"mappings": [{"sourceType": "ATTRIBUTE", "source": "a", "destination": "[0]"}]}"#,
                "starts with a field name",
            ),
            (
                r#"{"mappings": [{"sourceType": "STATIC", "source": "x", "destination": "b[*]"}]}"#,
                "[*]",
            ),
            (
                r#"{"mappings": [{"sourceType": "EXPRESSION", "source": "concat(a", "destination": "b"}]}"#,
                "cannot be read",
            ),
            (
                r#"{"mappings": [{"sourceType": "EXPRESSION", "source": "a ? b : c", "destination": "b"}]}"#,
                "iif",
            ),
            (
                r#"{"mappings": [
                {"sourceType": "ATTRIBUTE", "source": "a", "destination": "p.q"},
                {"sourceType": "ATTRIBUTE", "source": "b", "destination": "p.q"}]}"#,
                "same field",
            ),
            (
                r#"{"mappings": [
                {"sourceType": "ATTRIBUTE", "source": "a", "destination": "p"},
                {"sourceType": "ATTRIBUTE", "source": "b", "destination": "p.q"}]}"#,
                "inside it",
            ),
            (
                r#"{"mappings": [
                {"sourceType": "ATTRIBUTE", "source": "a[*].x", "destination": "p[*].q"},
                {"sourceType": "ATTRIBUTE", "source": "b", "destination": "p[0].r"}]}"#,
                "[*] and [0]",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
        // Sibling fields and distinct indices are fine.
        load(
            r#"{"mappings": [
                {"sourceType": "ATTRIBUTE", "source": "a", "destination": "m.E[0].id"},
                {"sourceType": "ATTRIBUTE", "source": "b", "destination": "m.E[1].id"},
                {"sourceType": "ATTRIBUTE", "source": "c[*].x", "destination": "l[*].x"},
                {"sourceType": "ATTRIBUTE", "source": "c[*].y", "destination": "l[*].y"}]}"#,
        )
        .unwrap();
    }
}
