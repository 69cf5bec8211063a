//! Evaluating expressions: the Data Prep functions batchdrop implements (with the platform's
//! names and argument orders, from its "Data Prep mapping functions" reference) and the
//! operators of `expr.rs`.
//!
//! The supported set and their signatures are listed in `docs/mapping.md`; the Data Prep
//! functions known but not implemented are in [`UNSUPPORTED`], so that a mapping set using one
//! is refused naming it rather than as "unknown". A function that cannot work on its input
//! (`to_integer("abc")`) fails the row with a message; nothing here decides what happens to the
//! row (the mapper does).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Datelike, FixedOffset, Offset, Timelike, Utc};
use sha2::Digest;

use crate::dates::{self, JavaPattern};
use crate::datum::{Datum, date_text, date_time_text};
use crate::expr::{BinaryOp, Expr, StringMethod};

mod apply;
mod operators;
#[cfg(test)]
mod tests;

use apply::*;
pub use apply::{as_date_time, float_text, text};
pub use operators::parse_bool;
use operators::*;

/// The functions batchdrop implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Concat,
    Lower,
    Upper,
    Trim,
    Ltrim,
    Rtrim,
    Split,
    Substr,
    Left,
    Right,
    Lpad,
    Rpad,
    Replacestr,
    Join,
    ToInteger,
    ToBigint,
    ToDecimal,
    ToFloat,
    Iif,
    Decode,
    Coalesce,
    First,
    Last,
    ToArray,
    SizeOf,
    IsEmpty,
    Min,
    Max,
    Nullify,
    ToObject,
    Now,
    Timestamp,
    Date,
    Format,
    Dformat,
    DatePart,
    ZoneDateToUtc,
    Uuid,
    Sha256,
}

/// Name, function, fewest and most arguments (`None`: any number).
const SUPPORTED: [(&str, Function, usize, Option<usize>); 42] = [
    ("concat", Function::Concat, 1, None),
    ("lower", Function::Lower, 1, Some(1)),
    ("lcase", Function::Lower, 1, Some(1)),
    ("upper", Function::Upper, 1, Some(1)),
    ("ucase", Function::Upper, 1, Some(1)),
    ("trim", Function::Trim, 1, Some(1)),
    ("ltrim", Function::Ltrim, 1, Some(1)),
    ("rtrim", Function::Rtrim, 1, Some(1)),
    ("split", Function::Split, 2, Some(2)),
    ("substr", Function::Substr, 3, Some(3)),
    ("left", Function::Left, 2, Some(2)),
    ("right", Function::Right, 2, Some(2)),
    ("lpad", Function::Lpad, 3, Some(3)),
    ("rpad", Function::Rpad, 3, Some(3)),
    ("replacestr", Function::Replacestr, 3, Some(3)),
    ("join", Function::Join, 2, None),
    ("to_integer", Function::ToInteger, 1, Some(1)),
    ("to_bigint", Function::ToBigint, 1, Some(1)),
    ("to_decimal", Function::ToDecimal, 1, Some(1)),
    ("to_float", Function::ToFloat, 1, Some(1)),
    ("iif", Function::Iif, 3, Some(3)),
    ("decode", Function::Decode, 3, None),
    ("coalesce", Function::Coalesce, 1, None),
    ("first", Function::First, 1, None),
    ("last", Function::Last, 1, None),
    ("to_array", Function::ToArray, 1, None),
    ("size_of", Function::SizeOf, 1, Some(1)),
    ("is_empty", Function::IsEmpty, 1, Some(1)),
    ("min", Function::Min, 1, None),
    ("max", Function::Max, 1, None),
    ("nullify", Function::Nullify, 0, Some(0)),
    ("to_object", Function::ToObject, 2, None),
    ("now", Function::Now, 0, Some(0)),
    ("timestamp", Function::Timestamp, 0, Some(0)),
    ("date", Function::Date, 1, Some(3)),
    ("format", Function::Format, 2, Some(2)),
    ("dformat", Function::Dformat, 2, Some(2)),
    ("date_part", Function::DatePart, 2, Some(2)),
    ("zone_date_to_utc", Function::ZoneDateToUtc, 1, Some(1)),
    ("uuid", Function::Uuid, 0, Some(0)),
    ("guid", Function::Uuid, 0, Some(0)),
    ("sha256", Function::Sha256, 1, Some(2)),
];

/// Data Prep functions that batchdrop does not implement (yet): refused by name.
pub const UNSUPPORTED: [&str; 40] = [
    "explode",
    "instr",
    "extract_regex",
    "matches_regex",
    "sha1",
    "sha512",
    "md5",
    "crc32",
    "get_url_protocol",
    "get_url_host",
    "get_url_port",
    "get_url_path",
    "get_url_query_str",
    "get_url_encoded",
    "get_url_decoded",
    "set_date_part",
    "make_date_time",
    "make_timestamp",
    "zone_date_to_zone",
    "arrays_to_object",
    "arrays_to_objects",
    "str_to_object",
    "contains_key",
    "is_set",
    "get_keys",
    "get_values",
    "add_to_array",
    "join_arrays",
    "upsert_array_append",
    "upsert_array_replace",
    "json_to_object",
    "fpid_to_ecid",
    "ua_os_name",
    "ua_os_version_major",
    "ua_os_version",
    "ua_os_name_version",
    "ua_agent_version",
    "ua_agent_version_major",
    "ua_agent_name",
    "ua_device_class",
];

pub enum Lookup {
    Supported(Function),
    Unsupported,
    Unknown,
}

/// Finds a function by its Data Prep name.
pub fn lookup(name: &str) -> Lookup {
    if let Some((_, f, _, _)) = SUPPORTED.iter().find(|(n, ..)| *n == name) {
        Lookup::Supported(*f)
    } else if UNSUPPORTED.contains(&name) {
        Lookup::Unsupported
    } else {
        Lookup::Unknown
    }
}

/// The names batchdrop implements (aliases included).
pub fn supported_names() -> impl Iterator<Item = &'static str> {
    SUPPORTED.iter().map(|(n, ..)| *n)
}

/// Checks a call when the mapping set is loaded (argument count, constant date patterns and
/// options) and translates constant date patterns once.
pub fn prepare_call(function: Function, mut args: Vec<Expr>) -> Result<Vec<Expr>, String> {
    let (_, _, min, max) = SUPPORTED
        .iter()
        .find(|(_, f, ..)| *f == function)
        .expect("every function has a row in SUPPORTED");
    let n = args.len();
    if n < *min || max.is_some_and(|max| n > max) {
        let expected = match max {
            Some(max) if max == min => format!("{min}"),
            Some(max) => format!("{min} to {max}"),
            None => format!("at least {min}"),
        };
        return Err(format!("takes {expected} arguments, {n} given"));
    }
    let pattern_arg = match function {
        Function::Date if n >= 2 => Some(1),
        Function::Format | Function::Dformat => Some(1),
        _ => None,
    };
    if let Some(i) = pattern_arg
        && let Expr::Literal(Datum::Str(pattern)) = &args[i]
    {
        args[i] = Expr::Pattern(Arc::new(JavaPattern::compile(pattern)?));
    }
    match (function, args.first()) {
        (Function::ToObject, _) if !n.is_multiple_of(2) => {
            return Err(format!(
                "takes key/value pairs (an even number of arguments), {n} given"
            ));
        }
        (Function::DatePart, Some(Expr::Literal(Datum::Str(component)))) => {
            date_component(component)?;
        }
        _ => {}
    }
    if function == Function::Sha256
        && let Some(Expr::Literal(Datum::Str(charset))) = args.get(1)
    {
        utf8_charset(charset)?;
    }
    Ok(args)
}

/// Evaluates an expression against the fields of one row (`fields[i]` is field `i` of the
/// mapping set's field table).
pub fn eval<'a>(expr: &Expr, fields: &[Datum<'a>]) -> Result<Datum<'a>, String> {
    match expr {
        Expr::Literal(value) => Ok(value.clone()),
        Expr::Pattern(pattern) => Ok(Datum::Str(Cow::Owned(pattern.source.clone()))),
        Expr::Field(i) => Ok(fields.get(*i).cloned().unwrap_or(Datum::Null)),
        Expr::List(items) => Ok(Datum::Array(
            items
                .iter()
                .map(|item| eval(item, fields))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Not(inner) => Ok(Datum::Bool(!truthy(&eval(inner, fields)?)?)),
        Expr::Negate(inner) => match number(&eval(inner, fields)?, "-")? {
            None => Ok(Datum::Null),
            Some(Number::Int(i)) => Ok(Datum::Int(-i)),
            Some(Number::Float(f)) => Ok(Datum::Float(-f)),
        },
        Expr::Method(target, method, arg) => {
            let (left, right) = (eval(target, fields)?, eval(arg, fields)?);
            let (Some(left), Some(right)) = (text(&left)?, text(&right)?) else {
                return Ok(Datum::Bool(false));
            };
            Ok(Datum::Bool(match method {
                StringMethod::Equals => left == right,
                StringMethod::EqualsIgnoreCase => left.to_lowercase() == right.to_lowercase(),
            }))
        }
        Expr::Binary(op, left, right) => binary(*op, left, right, fields),
        Expr::Call(function, args) => call(*function, args, fields),
    }
}
