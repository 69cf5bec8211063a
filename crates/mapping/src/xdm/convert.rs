//! The platform's conversions of a value into a field's scalar type, and the `email` and `uri`
//! format checks.

use super::*;

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

pub(super) fn convert<'a>(node: &Node, value: &Datum<'a>) -> Result<Option<Datum<'a>>, String> {
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
