//! The meta-schema check of a schema being compiled: every keyword the compiler reads must have
//! the JSON type the JSON Schema meta-schema (draft-06, what the Schema Registry exports) gives
//! it. Without it, `"required": "id"` or `"minimum": "5"` would be silently ignored and every
//! record would pass a rule the schema's author believes is checked.
//!
//! It checks one schema object's own keywords, not its children (the compiler visits those);
//! keywords it does not read (`meta:*`, `title`, `description`, `default`...) are not checked.

use serde_json::{Map, Value};

/// The JSON type a keyword must have.
#[derive(Clone, Copy)]
enum Expected {
    /// A type name, or a list of them.
    TypeNames,
    /// An object of schemas (`properties`).
    Schemas,
    /// A list of schemas (`allOf`).
    SchemaList,
    /// A schema, or `true`/`false` (`additionalProperties`, `items`, which may also be a list).
    SchemaOrBool,
    StringList,
    Array,
    String,
    Number,
    /// A number (draft-06), or a boolean (draft-04 `exclusiveMinimum`/`exclusiveMaximum`).
    NumberOrBool,
    /// A non-negative integer (lengths and item counts).
    Count,
}

/// The keywords the compiler reads, with what each must be.
const KEYWORDS: &[(&str, Expected)] = &[
    ("type", Expected::TypeNames),
    ("properties", Expected::Schemas),
    ("required", Expected::StringList),
    ("allOf", Expected::SchemaList),
    ("additionalProperties", Expected::SchemaOrBool),
    ("items", Expected::SchemaOrBool),
    ("enum", Expected::Array),
    ("format", Expected::String),
    ("pattern", Expected::String),
    ("$ref", Expected::String),
    ("minimum", Expected::Number),
    ("maximum", Expected::Number),
    ("exclusiveMinimum", Expected::NumberOrBool),
    ("exclusiveMaximum", Expected::NumberOrBool),
    ("minLength", Expected::Count),
    ("maxLength", Expected::Count),
    ("minItems", Expected::Count),
    ("maxItems", Expected::Count),
];

/// `Err` names the first keyword of `schema` (at `at`, e.g. "field /person/age") whose value
/// has the wrong JSON type, and what it must be.
pub(crate) fn check_keywords(schema: &Map<String, Value>, at: &str) -> Result<(), String> {
    for (keyword, expected) in KEYWORDS {
        let Some(value) = schema.get(*keyword) else {
            continue;
        };
        if !fits(value, *expected) {
            return Err(format!(
                "{at}: {keyword} must be {}, not {}; fix the schema (it is not a valid JSON Schema)",
                describe(*expected),
                crate::check::excerpt(value)
            ));
        }
    }
    Ok(())
}

fn is_schema(v: &Value) -> bool {
    v.is_object() || v.is_boolean()
}

fn fits(v: &Value, expected: Expected) -> bool {
    match expected {
        Expected::TypeNames => match v {
            Value::String(_) => true,
            Value::Array(names) => names.iter().all(Value::is_string),
            _ => false,
        },
        Expected::Schemas => v.as_object().is_some_and(|m| m.values().all(is_schema)),
        Expected::SchemaList => v.as_array().is_some_and(|a| a.iter().all(is_schema)),
        Expected::SchemaOrBool => {
            is_schema(v) || v.as_array().is_some_and(|a| a.iter().all(is_schema))
        }
        Expected::StringList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Expected::Array => v.is_array(),
        Expected::String => v.is_string(),
        Expected::Number => v.is_number(),
        Expected::NumberOrBool => v.is_number() || v.is_boolean(),
        Expected::Count => v.as_u64().is_some(),
    }
}

fn describe(expected: Expected) -> &'static str {
    match expected {
        Expected::TypeNames => "a type name or a list of them",
        Expected::Schemas => "an object whose values are schemas",
        Expected::SchemaList => "a list of schemas",
        Expected::SchemaOrBool => "a schema or a boolean",
        Expected::StringList => "a list of strings",
        Expected::Array => "a list",
        Expected::String => "a string",
        Expected::Number => "a number",
        Expected::NumberOrBool => "a number",
        Expected::Count => "a non-negative integer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), String> {
        check_keywords(v.as_object().unwrap(), "field /x")
    }

    #[test]
    fn keywords_of_the_wrong_type_are_named() {
        assert!(
            check(
                json!({"type": ["string", "null"], "minLength": 1, "enum": ["a"],
                         "exclusiveMinimum": true, "items": [{}], "meta:xdmType": 5})
            )
            .is_ok()
        );
        let e = check(json!({"required": "id"})).unwrap_err();
        assert!(
            e.contains("field /x: required must be a list of strings"),
            "{e}"
        );
        let e = check(json!({"minimum": "5"})).unwrap_err();
        assert!(e.contains("minimum must be a number, not \"5\""), "{e}");
        let e = check(json!({"maxLength": -1})).unwrap_err();
        assert!(e.contains("non-negative integer"), "{e}");
        let e = check(json!({"properties": {"a": "string"}})).unwrap_err();
        assert!(
            e.contains("properties must be an object whose values are schemas"),
            "{e}"
        );
        assert!(check(json!({"type": 7})).is_err());
        assert!(check(json!({"pattern": 7})).is_err());
    }
}
