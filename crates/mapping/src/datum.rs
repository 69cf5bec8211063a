//! The values a mapping works with: JSON's kinds plus dates and date-times (what Data Prep's
//! `date()` returns), borrowing text from the input record where it can so that a row costs
//! few allocations.
//!
//! This module owns the value type and its JSON forms; it must not decide conversions between
//! types (the schema's conversions are in `xdm/`, the functions' in `functions/`).

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat};
use serde::ser::{SerializeMap, SerializeSeq};

/// One value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// A calendar day (a schema field of `format: date`).
    Date(NaiveDate),
    /// A date-time with its offset (Data Prep's ZonedDateTime).
    DateTime(DateTime<FixedOffset>),
    Array(Vec<Datum<'a>>),
    /// Fields in the order they were written.
    Object(Vec<(Cow<'a, str>, Datum<'a>)>),
}

impl<'a> Datum<'a> {
    /// Borrows a JSON value (its strings and keys are not copied).
    pub fn from_json(value: &'a serde_json::Value) -> Datum<'a> {
        match value {
            serde_json::Value::Null => Datum::Null,
            serde_json::Value::Bool(b) => Datum::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Datum::Int(i),
                None => Datum::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Datum::Str(Cow::Borrowed(s)),
            serde_json::Value::Array(items) => {
                Datum::Array(items.iter().map(Datum::from_json).collect())
            }
            serde_json::Value::Object(fields) => Datum::Object(
                fields
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Datum::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The value as JSON: dates as `YYYY-MM-DD`, date-times as ISO 8601 (`Z` for UTC).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Datum::Null => serde_json::Value::Null,
            Datum::Bool(b) => serde_json::Value::Bool(*b),
            Datum::Int(i) => serde_json::Value::from(*i),
            Datum::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Datum::Str(s) => serde_json::Value::String(s.to_string()),
            Datum::Date(d) => serde_json::Value::String(date_text(d)),
            Datum::DateTime(t) => serde_json::Value::String(date_time_text(t)),
            Datum::Array(items) => {
                serde_json::Value::Array(items.iter().map(Datum::to_json).collect())
            }
            Datum::Object(fields) => serde_json::Value::Object(
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A copy that borrows nothing (kept beyond its input row).
    pub fn into_owned(self) -> Datum<'static> {
        match self {
            Datum::Null => Datum::Null,
            Datum::Bool(b) => Datum::Bool(b),
            Datum::Int(i) => Datum::Int(i),
            Datum::Float(f) => Datum::Float(f),
            Datum::Str(s) => Datum::Str(Cow::Owned(s.into_owned())),
            Datum::Date(d) => Datum::Date(d),
            Datum::DateTime(t) => Datum::DateTime(t),
            Datum::Array(items) => Datum::Array(items.into_iter().map(Datum::into_owned).collect()),
            Datum::Object(fields) => Datum::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// What kind of value it is, for messages ("a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Datum::Null => "null",
            Datum::Bool(_) => "a boolean",
            Datum::Int(_) => "an integer",
            Datum::Float(_) => "a number",
            Datum::Str(_) => "a string",
            Datum::Date(_) => "a date",
            Datum::DateTime(_) => "a date-time",
            Datum::Array(_) => "an array",
            Datum::Object(_) => "an object",
        }
    }

    /// The value in a message: scalars as JSON, cut to 80 characters; arrays and objects
    /// abbreviated.
    pub fn excerpt(&self) -> String {
        let text = match self {
            Datum::Array(_) => return "[...]".into(),
            Datum::Object(_) => return "{...}".into(),
            other => other.to_json().to_string(),
        };
        if text.chars().count() <= 80 {
            return text;
        }
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    }

    /// A field of an object, looked for at `*cursor` first (a record lists its fields in the
    /// order its columns expect them), then anywhere; moves the cursor past it.
    pub(crate) fn field_at(&self, name: &str, cursor: &mut usize) -> Option<&Datum<'a>> {
        let Datum::Object(fields) = self else {
            return None;
        };
        let at = match fields.get(*cursor) {
            Some((k, _)) if same_name(k, name) => *cursor,
            _ => fields.iter().position(|(k, _)| same_name(k, name))?,
        };
        *cursor = at + 1;
        Some(&fields[at].1)
    }
}

/// Whether two names are the same string in memory (interned names: no byte compare).
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()
}

/// Whether two names are equal: by address first, then by content.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    same_address(a, b) || a == b
}

/// `YYYY-MM-DD`.
pub fn date_text(d: &NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// ISO 8601 with the offset, `Z` for UTC, fractions only when there are some.
pub fn date_time_text(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl serde::Serialize for Datum<'_> {
    /// The JSON form of [`Datum::to_json`], written without building it (JSON Lines output).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Datum::Null => s.serialize_unit(),
            Datum::Bool(b) => s.serialize_bool(*b),
            Datum::Int(i) => s.serialize_i64(*i),
            Datum::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Datum::Float(_) => s.serialize_unit(),
            Datum::Str(text) => s.serialize_str(text),
            Datum::Date(d) => s.serialize_str(&date_text(d)),
            Datum::DateTime(t) => s.serialize_str(&date_time_text(t)),
            Datum::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Datum::Object(fields) => {
                let present = fields.iter().filter(|(_, v)| !v.is_null());
                let mut map = s.serialize_map(Some(present.clone().count()))?;
                for (k, v) in present {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip_leaves_out_nulls_and_prints_dates() {
        let source = json!({"a": "x", "b": 2, "c": 1.5, "d": null, "e": [true, {"f": "g"}]});
        let datum = Datum::from_json(&source);
        assert_eq!(
            datum.to_json(),
            json!({"a": "x", "b": 2, "c": 1.5, "e": [true, {"f": "g"}]})
        );
        let with_dates = Datum::Object(vec![
            (
                "day".into(),
                Datum::Date(NaiveDate::from_ymd_opt(1979, 1, 3).unwrap()),
            ),
            (
                "at".into(),
                Datum::DateTime(DateTime::parse_from_rfc3339("2019-10-23T11:24:00+00:00").unwrap()),
            ),
        ]);
        let expected = json!({"day": "1979-01-03", "at": "2019-10-23T11:24:00Z"});
        assert_eq!(with_dates.to_json(), expected);
        // The serializer writes the same JSON.
        assert_eq!(serde_json::to_value(&with_dates).unwrap(), expected);
        assert_eq!(
            serde_json::to_value(&datum).unwrap(),
            datum.to_json(),
            "serializer and to_json agree"
        );
    }

    #[test]
    fn excerpts_are_short() {
        let long = Datum::Str("x".repeat(200).into());
        assert_eq!(long.excerpt().chars().count(), 80);
        assert_eq!(Datum::Int(5).excerpt(), "5");
        assert_eq!(Datum::Str("a".into()).excerpt(), "\"a\"");
    }
}
