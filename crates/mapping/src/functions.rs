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

fn binary<'a>(
    op: BinaryOp,
    left: &Expr,
    right: &Expr,
    fields: &[Datum<'a>],
) -> Result<Datum<'a>, String> {
    // The logical operators do not evaluate their right side when the left decides.
    match op {
        BinaryOp::And => {
            return Ok(Datum::Bool(
                truthy(&eval(left, fields)?)? && truthy(&eval(right, fields)?)?,
            ));
        }
        BinaryOp::Or => {
            return Ok(Datum::Bool(
                truthy(&eval(left, fields)?)? || truthy(&eval(right, fields)?)?,
            ));
        }
        _ => {}
    }
    let (a, b) = (eval(left, fields)?, eval(right, fields)?);
    match op {
        BinaryOp::Eq => Ok(Datum::Bool(equal(&a, &b))),
        BinaryOp::Ne => Ok(Datum::Bool(!equal(&a, &b))),
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            let Some(order) = compare(&a, &b) else {
                return Ok(Datum::Bool(false));
            };
            Ok(Datum::Bool(match op {
                BinaryOp::Lt => order == Ordering::Less,
                BinaryOp::Le => order != Ordering::Greater,
                BinaryOp::Gt => order == Ordering::Greater,
                _ => order != Ordering::Less,
            }))
        }
        BinaryOp::Add if matches!(a, Datum::Str(_)) || matches!(b, Datum::Str(_)) => {
            let mut joined = text(&a)?.unwrap_or_default().into_owned();
            joined.push_str(&text(&b)?.unwrap_or_default());
            Ok(Datum::Str(Cow::Owned(joined)))
        }
        _ => arithmetic(op, &a, &b),
    }
}

fn arithmetic<'a>(op: BinaryOp, a: &Datum, b: &Datum) -> Result<Datum<'a>, String> {
    let symbol = match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        _ => "%",
    };
    let (Some(x), Some(y)) = (number(a, symbol)?, number(b, symbol)?) else {
        return Ok(Datum::Null);
    };
    if let (Number::Int(x), Number::Int(y)) = (x, y) {
        let result = match op {
            BinaryOp::Add => x.checked_add(y),
            BinaryOp::Sub => x.checked_sub(y),
            BinaryOp::Mul => x.checked_mul(y),
            BinaryOp::Div if y == 0 => return Err("division by zero".into()),
            BinaryOp::Div => x.checked_div(y),
            _ if y == 0 => return Err("modulo by zero".into()),
            _ => x.checked_rem(y),
        };
        return result
            .map(Datum::Int)
            .ok_or_else(|| format!("{x} {symbol} {y} overflows a long"));
    }
    let (x, y) = (x.as_f64(), y.as_f64());
    let result = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        _ => x % y,
    };
    if result.is_finite() {
        Ok(Datum::Float(result))
    } else {
        Err(format!("{x} {symbol} {y} is not a finite number"))
    }
}

#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// A number for arithmetic: numbers, and text that reads as one; `None` for null.
fn number(value: &Datum, context: &str) -> Result<Option<Number>, String> {
    match value {
        Datum::Null => Ok(None),
        Datum::Int(i) => Ok(Some(Number::Int(*i))),
        Datum::Float(f) => Ok(Some(Number::Float(*f))),
        Datum::Str(s) => parse_number(s)
            .map(Some)
            .ok_or_else(|| format!("{context}: {} is not a number", value.excerpt())),
        other => Err(format!(
            "{context}: expected a number, found {}",
            other.kind()
        )),
    }
}

fn parse_number(s: &str) -> Option<Number> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(Number::Int(i));
    }
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Number::Float)
}

/// A condition's truth: booleans, null (false), and text Data Prep reads as a boolean.
fn truthy(value: &Datum) -> Result<bool, String> {
    match value {
        Datum::Bool(b) => Ok(*b),
        Datum::Null => Ok(false),
        Datum::Str(s) => parse_bool(s)
            .ok_or_else(|| format!("{} is not a condition (true or false)", value.excerpt())),
        other => Err(format!(
            "expected a condition (true or false), found {}",
            other.kind()
        )),
    }
}

/// Data Prep's booleans in text (its data-handling guide): y, yes, on, true and n, no, off,
/// false, in any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "on" | "true" => Some(true),
        "n" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

fn equal(a: &Datum, b: &Datum) -> bool {
    match (a, b) {
        (Datum::Null, Datum::Null) => true,
        (Datum::Null, _) | (_, Datum::Null) => false,
        _ => compare(a, b) == Some(Ordering::Equal),
    }
}

/// The order of two values: numbers numerically (text that reads as a number too), dates in
/// time, text by characters; `None` when they cannot be compared (null, mixed kinds).
fn compare(a: &Datum, b: &Datum) -> Option<Ordering> {
    let numeric = |d: &Datum| match d {
        Datum::Int(i) => Some(Number::Int(*i)),
        Datum::Float(f) => Some(Number::Float(*f)),
        Datum::Str(s) => parse_number(s),
        _ => None,
    };
    match (a, b) {
        (Datum::Str(x), Datum::Str(y)) => Some(x.cmp(y)),
        (Datum::Bool(x), Datum::Bool(y)) => Some(x.cmp(y)),
        (Datum::Int(x), Datum::Int(y)) => Some(x.cmp(y)),
        (Datum::Date(x), Datum::Date(y)) => Some(x.cmp(y)),
        (Datum::DateTime(_) | Datum::Date(_), Datum::DateTime(_) | Datum::Date(_)) => {
            Some(as_date_time(a).ok()??.cmp(&as_date_time(b).ok()??))
        }
        (Datum::Bool(x), Datum::Str(s)) | (Datum::Str(s), Datum::Bool(x)) => {
            let y = parse_bool(s)?;
            Some(if matches!(a, Datum::Bool(_)) {
                x.cmp(&y)
            } else {
                y.cmp(x)
            })
        }
        _ => {
            let (x, y) = (numeric(a)?, numeric(b)?);
            match (x, y) {
                (Number::Int(x), Number::Int(y)) => Some(x.cmp(&y)),
                _ => x.as_f64().partial_cmp(&y.as_f64()),
            }
        }
    }
}

/// The text of a scalar (Java's forms: `2.0` for a whole double); `None` for null.
pub fn text<'v>(value: &'v Datum) -> Result<Option<Cow<'v, str>>, String> {
    Ok(Some(match value {
        Datum::Null => return Ok(None),
        Datum::Str(s) => Cow::Borrowed(s.as_ref()),
        Datum::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Datum::Int(i) => Cow::Owned(i.to_string()),
        Datum::Float(f) => Cow::Owned(float_text(*f)),
        Datum::Date(d) => Cow::Owned(date_text(d)),
        Datum::DateTime(t) => Cow::Owned(date_time_text(t)),
        Datum::Array(_) | Datum::Object(_) => {
            return Err(format!("expected text, found {}", value.kind()));
        }
    }))
}

/// A double as Java prints it when it is whole (`2.0`), else the shortest exact form.
pub fn float_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

/// Text in, text out; null stays null.
fn map_text<'a>(value: &Datum, f: impl FnOnce(&str) -> String) -> Result<Datum<'a>, String> {
    Ok(match text(value)? {
        None => Datum::Null,
        Some(s) => Datum::Str(Cow::Owned(f(&s))),
    })
}

/// A count or position argument.
fn count(value: &Datum, what: &str) -> Result<usize, String> {
    match number(value, what)? {
        None => Err(format!("{what} is null")),
        Some(Number::Int(i)) => Ok(i.max(0) as usize),
        Some(Number::Float(f)) if f.fract() == 0.0 => Ok(f.max(0.0) as usize),
        Some(Number::Float(f)) => Err(format!("{what} must be a whole number, found {f}")),
    }
}

/// The items a variadic function works on: its arguments, or the items of its one array.
fn items<'v, 'a>(args: &'v [Datum<'a>]) -> &'v [Datum<'a>] {
    match args {
        [Datum::Array(inner)] => inner,
        _ => args,
    }
}

/// The function's name, for messages.
fn name_of(function: Function) -> &'static str {
    SUPPORTED
        .iter()
        .find(|(_, f, ..)| *f == function)
        .map(|(n, ..)| *n)
        .unwrap_or("?")
}

fn call<'a>(function: Function, args: &[Expr], fields: &[Datum<'a>]) -> Result<Datum<'a>, String> {
    // The branching functions evaluate only what they return.
    match function {
        Function::Iif => {
            let condition = eval(&args[0], fields)?;
            let chosen = if truthy(&condition).map_err(|e| format!("iif: {e}"))? {
                &args[1]
            } else {
                &args[2]
            };
            return eval(chosen, fields);
        }
        Function::Coalesce if args.len() > 1 => {
            for arg in args {
                let value = eval(arg, fields)?;
                if !value.is_null() {
                    return Ok(value);
                }
            }
            return Ok(Datum::Null);
        }
        _ => {}
    }
    let values: Vec<Datum<'a>> = args
        .iter()
        .map(|arg| eval(arg, fields))
        .collect::<Result<_, _>>()?;
    apply(function, args, values).map_err(|e| format!("{}: {e}", name_of(function)))
}

fn apply<'a>(
    function: Function,
    args: &[Expr],
    values: Vec<Datum<'a>>,
) -> Result<Datum<'a>, String> {
    let v = &values;
    Ok(match function {
        Function::Concat => {
            let mut out = String::new();
            let mut any = false;
            for value in v {
                if let Some(s) = text(value)? {
                    out.push_str(&s);
                    any = true;
                }
            }
            if any {
                Datum::Str(Cow::Owned(out))
            } else {
                Datum::Null
            }
        }
        Function::Lower => map_text(&v[0], str::to_lowercase)?,
        Function::Upper => map_text(&v[0], str::to_uppercase)?,
        Function::Trim => map_text(&v[0], |s| s.trim().to_owned())?,
        Function::Ltrim => map_text(&v[0], |s| s.trim_start().to_owned())?,
        Function::Rtrim => map_text(&v[0], |s| s.trim_end().to_owned())?,
        Function::Split => {
            let Some(input) = text(&v[0])? else {
                return Ok(Datum::Null);
            };
            let separators: Vec<char> = text(&v[1])?.unwrap_or_default().chars().collect();
            let parts = input
                .split(|c: char| {
                    if separators.is_empty() {
                        c.is_whitespace()
                    } else {
                        separators.contains(&c)
                    }
                })
                .filter(|part| !part.is_empty())
                .map(|part| Datum::Str(Cow::Owned(part.to_owned())))
                .collect();
            Datum::Array(parts)
        }
        Function::Substr => {
            let (start, length) = (count(&v[1], "START_INDEX")?, count(&v[2], "LENGTH")?);
            map_text(&v[0], |s| s.chars().skip(start).take(length).collect())?
        }
        Function::Left => {
            let n = count(&v[1], "COUNT")?;
            map_text(&v[0], |s| s.chars().take(n).collect())?
        }
        Function::Right => {
            let n = count(&v[1], "COUNT")?;
            map_text(&v[0], |s| {
                let total = s.chars().count();
                s.chars().skip(total.saturating_sub(n)).collect()
            })?
        }
        Function::Lpad | Function::Rpad => {
            let width = count(&v[1], "COUNT")?;
            let padding = match text(&v[2])? {
                Some(p) if !p.is_empty() => p.into_owned(),
                _ => " ".to_owned(),
            };
            let left = function == Function::Lpad;
            map_text(&v[0], |s| {
                let missing = width.saturating_sub(s.chars().count());
                let pad: String = padding.chars().cycle().take(missing).collect();
                if left { pad + s } else { s.to_owned() + &pad }
            })?
        }
        Function::Replacestr => {
            let find = text(&v[1])?.unwrap_or_default().into_owned();
            let with = text(&v[2])?.unwrap_or_default().into_owned();
            map_text(&v[0], |s| {
                if find.is_empty() {
                    s.to_owned()
                } else {
                    s.replace(&find, &with)
                }
            })?
        }
        Function::Join => {
            let separator = text(&v[0])?.unwrap_or_default().into_owned();
            let mut parts = Vec::new();
            for item in items(&v[1..]) {
                if let Some(s) = text(item)? {
                    parts.push(s.into_owned());
                }
            }
            Datum::Str(Cow::Owned(parts.join(&separator)))
        }
        Function::ToInteger => to_whole(
            &v[0],
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            "an Integer",
        )?,
        Function::ToBigint => to_whole(&v[0], i64::MIN, i64::MAX, "a long")?,
        Function::ToDecimal | Function::ToFloat => match number(&v[0], "STRING")? {
            None => Datum::Null,
            Some(n) => Datum::Float(n.as_f64()),
        },
        // Reached only when its arguments were evaluated anyway (see `call`).
        Function::Iif => {
            if truthy(&v[0])? {
                v[1].clone()
            } else {
                v[2].clone()
            }
        }
        Function::Coalesce => v
            .iter()
            .flat_map(|d| match d {
                Datum::Array(inner) => inner.clone(),
                other => vec![other.clone()],
            })
            .find(|d| !d.is_null())
            .unwrap_or(Datum::Null),
        Function::Decode => {
            let key = &v[0];
            let options = &v[1..];
            for pair in options.chunks(2) {
                match pair {
                    [candidate, value] if equal(key, candidate) => return Ok(value.clone()),
                    [default] => return Ok(default.clone()),
                    _ => {}
                }
            }
            Datum::Null
        }
        Function::First => items(v).first().cloned().unwrap_or(Datum::Null),
        Function::Last => items(v).last().cloned().unwrap_or(Datum::Null),
        Function::ToArray => {
            let include_nulls = truthy(&v[0])?;
            Datum::Array(
                v[1..]
                    .iter()
                    .filter(|d| include_nulls || !d.is_null())
                    .cloned()
                    .collect(),
            )
        }
        Function::SizeOf => Datum::Int(match &v[0] {
            Datum::Null => 0,
            Datum::Array(a) => a.len() as i64,
            Datum::Object(o) => o.len() as i64,
            Datum::Str(s) => s.chars().count() as i64,
            other => {
                return Err(format!(
                    "expected an array, object or text, found {}",
                    other.kind()
                ));
            }
        }),
        Function::IsEmpty => Datum::Bool(match &v[0] {
            Datum::Null => true,
            Datum::Array(a) => a.is_empty(),
            Datum::Object(o) => o.is_empty(),
            Datum::Str(s) => s.is_empty(),
            _ => false,
        }),
        Function::Min | Function::Max => {
            let mut best: Option<&Datum<'a>> = None;
            for item in items(v).iter().filter(|d| !d.is_null()) {
                best = Some(match best {
                    None => item,
                    Some(current) => {
                        let order = compare(item, current).ok_or_else(|| {
                            format!("cannot compare {} with {}", item.kind(), current.kind())
                        })?;
                        let better = if function == Function::Min {
                            order == Ordering::Less
                        } else {
                            order == Ordering::Greater
                        };
                        if better { item } else { current }
                    }
                });
            }
            best.cloned().unwrap_or(Datum::Null)
        }
        Function::Nullify => Datum::Null,
        Function::ToObject => {
            let mut fields = Vec::with_capacity(v.len() / 2);
            for pair in v.chunks(2) {
                let key = text(&pair[0])?.ok_or("a key is null")?.into_owned();
                fields.push((Cow::Owned(key), pair[1].clone()));
            }
            Datum::Object(fields)
        }
        Function::Now => Datum::DateTime(Utc::now().with_timezone(&Utc.fix())),
        Function::Timestamp => Datum::Int(Utc::now().timestamp_millis()),
        Function::Date => {
            if v[0].is_null() {
                return match v.get(2) {
                    Some(default) => {
                        Ok(as_date_time(default)?.map_or(Datum::Null, Datum::DateTime))
                    }
                    None => Ok(Datum::Null),
                };
            }
            let parsed = match (&v[0], args.get(1)) {
                (Datum::Str(s), Some(format_arg)) => {
                    let pattern = pattern_of(format_arg, v.get(1))?;
                    pattern.parse(s)?
                }
                (value, _) => as_date_time(value)?
                    .ok_or_else(|| format!("{} cannot be read as a date", value.excerpt()))?,
            };
            Datum::DateTime(parsed)
        }
        Function::Format => {
            let Some(at) = as_date_time(&v[0])? else {
                return Ok(Datum::Null);
            };
            Datum::Str(Cow::Owned(pattern_of(&args[1], v.get(1))?.format(&at)))
        }
        Function::Dformat => {
            let ms = match number(&v[0], "TIMESTAMP")? {
                None => return Ok(Datum::Null),
                Some(Number::Int(ms)) => ms,
                Some(Number::Float(f)) => f as i64,
            };
            let at = dates::from_epoch_millis(ms)
                .ok_or_else(|| format!("{ms} is out of range for epoch milliseconds"))?;
            Datum::Str(Cow::Owned(pattern_of(&args[1], v.get(1))?.format(&at)))
        }
        Function::DatePart => {
            let component = text(&v[0])?.ok_or("COMPONENT is null")?;
            let component = date_component(&component)?;
            match as_date_time(&v[1])? {
                None => Datum::Null,
                Some(at) => Datum::Int(component.of(&at)),
            }
        }
        Function::ZoneDateToUtc => match as_date_time(&v[0])? {
            None => Datum::Null,
            Some(at) => Datum::DateTime(at.with_timezone(&Utc.fix())),
        },
        Function::Uuid => Datum::Str(Cow::Owned(uuid::Uuid::new_v4().to_string())),
        Function::Sha256 => {
            if let Some(charset) = v.get(1).map(text).transpose()?.flatten() {
                utf8_charset(&charset)?;
            }
            match text(&v[0])? {
                None => Datum::Null,
                Some(s) => Datum::Str(Cow::Owned(format!(
                    "{:x}",
                    sha2::Sha256::digest(s.as_bytes())
                ))),
            }
        }
    })
}

/// A whole number within bounds, from a number or text.
fn to_whole<'a>(value: &Datum, min: i64, max: i64, what: &str) -> Result<Datum<'a>, String> {
    let whole = match number(value, "STRING")? {
        None => return Ok(Datum::Null),
        Some(Number::Int(i)) => Some(i),
        Some(Number::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
        Some(Number::Float(_)) => None,
    };
    match whole {
        Some(i) if (min..=max).contains(&i) => Ok(Datum::Int(i)),
        Some(_) => Err(format!("{} is out of range for {what}", value.excerpt())),
        None => Err(format!("{} is not a whole number", value.excerpt())),
    }
}

/// The pattern of a date function: translated when the mapping set was loaded, or now.
fn pattern_of(arg: &Expr, value: Option<&Datum>) -> Result<Arc<JavaPattern>, String> {
    if let Expr::Pattern(p) = arg {
        return Ok(p.clone());
    }
    let source = value
        .map(text)
        .transpose()?
        .flatten()
        .ok_or("FORMAT is null")?;
    Ok(Arc::new(JavaPattern::compile(&source)?))
}

/// A value as a date-time: date-times, dates (midnight UTC), longs (epoch milliseconds), text
/// (ISO 8601 or Data Prep's list of formats); `None` for null.
pub fn as_date_time(value: &Datum) -> Result<Option<DateTime<FixedOffset>>, String> {
    Ok(Some(match value {
        Datum::Null => return Ok(None),
        Datum::DateTime(at) => *at,
        Datum::Date(day) => day
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .with_timezone(&Utc.fix()),
        Datum::Int(ms) => dates::from_epoch_millis(*ms)
            .ok_or_else(|| format!("{ms} is out of range for epoch milliseconds"))?,
        Datum::Str(s) => dates::parse_any(s).ok_or_else(|| {
            format!(
                "{} is not a date: give its format, e.g. date(FIELD, \"dd/MM/yyyy\")",
                value.excerpt()
            )
        })?,
        other => return Err(format!("expected a date, found {}", other.kind())),
    }))
}

fn utf8_charset(charset: &str) -> Result<(), String> {
    if charset.eq_ignore_ascii_case("UTF-8") || charset.eq_ignore_ascii_case("UTF8") {
        Ok(())
    } else {
        Err(format!(
            "the character set {charset:?} is not supported; only UTF-8 is"
        ))
    }
}

/// A part of a date for `date_part`.
#[derive(Debug, Clone, Copy)]
enum DateComponent {
    Year,
    Quarter,
    Month,
    DayOfYear,
    Day,
    Week,
    Weekday,
    Hour,
    Hour12,
    Minute,
    Second,
    Millisecond,
}

fn date_component(name: &str) -> Result<DateComponent, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "year" | "yyyy" | "yy" => DateComponent::Year,
        "quarter" | "qq" | "q" => DateComponent::Quarter,
        "month" | "mm" | "m" => DateComponent::Month,
        "dayofyear" | "dy" | "y" => DateComponent::DayOfYear,
        "day" | "dd" | "d" => DateComponent::Day,
        "week" | "ww" | "w" => DateComponent::Week,
        "weekday" | "dw" => DateComponent::Weekday,
        "hour" | "hh" | "hh24" => DateComponent::Hour,
        "hh12" => DateComponent::Hour12,
        "minute" | "mi" | "n" => DateComponent::Minute,
        "second" | "ss" | "s" => DateComponent::Second,
        "millisecond" | "ms" | "sss" => DateComponent::Millisecond,
        other => {
            return Err(format!(
                "{other:?} is not a date component (year, quarter, month, dayofyear, day, week, weekday, hour, hh12, minute, second, millisecond)"
            ));
        }
    })
}

impl DateComponent {
    fn of(self, at: &DateTime<FixedOffset>) -> i64 {
        i64::from(match self {
            DateComponent::Year => return i64::from(at.year()),
            DateComponent::Quarter => (at.month() - 1) / 3 + 1,
            DateComponent::Month => at.month(),
            DateComponent::DayOfYear => at.ordinal(),
            DateComponent::Day => at.day(),
            DateComponent::Week => at.iso_week().week(),
            // Sunday is 1, as in Java's Calendar.DAY_OF_WEEK.
            DateComponent::Weekday => at.weekday().number_from_sunday(),
            DateComponent::Hour => at.hour(),
            DateComponent::Hour12 => at.hour12().1,
            DateComponent::Minute => at.minute(),
            DateComponent::Second => at.second(),
            DateComponent::Millisecond => at.nanosecond() / 1_000_000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr;
    use crate::path::FieldPath;
    use serde_json::json;

    /// Evaluates `text` with fields from a JSON object (by top-level name).
    fn run(text: &str, record: serde_json::Value) -> Result<serde_json::Value, String> {
        let mut fields: Vec<FieldPath> = Vec::new();
        let expr = expr::parse(text, &mut fields).map_err(|e| format!("{e:?}"))?;
        let values: Vec<Datum> = fields
            .iter()
            .map(|p| {
                let name = p.as_keys().unwrap().join(".");
                record
                    .get(&name)
                    .map(Datum::from_json)
                    .unwrap_or(Datum::Null)
            })
            .collect();
        eval(&expr, &values).map(|d| d.to_json())
    }

    fn ok(text: &str) -> serde_json::Value {
        run(text, json!({})).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn string_functions_follow_the_reference_examples() {
        assert_eq!(ok(r#"concat("Hi, ", "there", "!")"#), json!("Hi, there!"));
        assert_eq!(ok(r#"concat("a", null, 1, 2.0, true)"#), json!("a12.0true"));
        assert_eq!(ok("concat(null, null)"), json!(null));
        assert_eq!(ok(r#"lower("HeLLo")"#), json!("hello"));
        assert_eq!(ok(r#"lcase("HeLLo")"#), json!("hello"));
        assert_eq!(ok(r#"upper("HeLLo")"#), json!("HELLO"));
        assert_eq!(ok(r#"ucase("HeLLo")"#), json!("HELLO"));
        assert_eq!(ok(r#"trim(" hello ")"#), json!("hello"));
        assert_eq!(ok(r#"ltrim(" hello ")"#), json!("hello "));
        assert_eq!(ok(r#"rtrim(" hello ")"#), json!(" hello"));
        assert_eq!(ok("upper(null)"), json!(null));
        assert_eq!(
            ok(r#"split("Hello world", " ")"#),
            json!(["Hello", "world"])
        );
        assert_eq!(ok(r#"split("a,b;;c", ",;")"#), json!(["a", "b", "c"]));
        assert_eq!(
            ok(r#"substr("This is a substring test", 7, 8)"#),
            json!(" a subst")
        );
        assert_eq!(ok(r#"left("abcde", 2)"#), json!("ab"));
        assert_eq!(ok(r#"right("abcde", 2)"#), json!("de"));
        assert_eq!(ok(r#"lpad("bat", 8, "yz")"#), json!("yzyzybat"));
        assert_eq!(ok(r#"rpad("bat", 8, "yz")"#), json!("batyzyzy"));
        assert_eq!(ok(r#"lpad("bat", 5, "")"#), json!("  bat"));
        assert_eq!(
            ok(r#"replacestr("This is a string re test", "re", "replace")"#),
            json!("This is a string replace test")
        );
        assert_eq!(
            ok(r#"join(" ", to_array(true, "Hello", "world"))"#),
            json!("Hello world")
        );
        assert_eq!(ok(r#"join("-", "a", null, "b")"#), json!("a-b"));
        assert_eq!(ok(r#""string1".equals("STRING1")"#), json!(false));
        assert_eq!(ok(r#""string1".equalsIgnoreCase("STRING1")"#), json!(true));
    }

    #[test]
    fn type_conversions() {
        assert_eq!(ok(r#"to_integer("12")"#), json!(12));
        assert_eq!(ok(r#"to_integer(" 2004 ")"#), json!(2004));
        assert_eq!(ok("to_integer(3.0)"), json!(3));
        assert!(
            run(r#"to_integer("12.5")"#, json!({}))
                .unwrap_err()
                .contains("to_integer")
        );
        assert!(
            run(r#"to_integer("3000000000")"#, json!({}))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            run(r#"to_integer("abc")"#, json!({}))
                .unwrap_err()
                .contains("\"abc\"")
        );
        assert_eq!(ok(r#"to_bigint("3000000000")"#), json!(3000000000i64));
        assert_eq!(ok(r#"to_decimal("20.5")"#), json!(20.5));
        assert_eq!(ok(r#"to_float("-85.7922905")"#), json!(-85.7922905));
        assert_eq!(ok("to_decimal(null)"), json!(null));
        assert!(run("to_decimal(true)", json!({})).is_err());
    }

    #[test]
    fn logic_and_hierarchies() {
        assert_eq!(
            ok(r#"iif("s".equalsIgnoreCase("S"), "True", "False")"#),
            json!("True")
        );
        // The branch not taken is not evaluated (it would fail).
        assert_eq!(ok(r#"iif(false, to_integer("x"), "no")"#), json!("no"));
        assert_eq!(
            run("iif(A == 'x', 1, 2)", json!({"A": "x"})).unwrap(),
            json!(1)
        );
        assert!(run("iif(A, 1, 2)", json!({"A": "maybe"})).is_err());
        assert_eq!(run("iif(A, 1, 2)", json!({"A": "yes"})).unwrap(), json!(1));
        let decode = r#"decode(stateCode, "ca", "California", "pa", "Pennsylvania", "N/A")"#;
        assert_eq!(
            run(decode, json!({"stateCode": "ca"})).unwrap(),
            json!("California")
        );
        assert_eq!(
            run(decode, json!({"stateCode": "pa"})).unwrap(),
            json!("Pennsylvania")
        );
        assert_eq!(
            run(decode, json!({"stateCode": "ny"})).unwrap(),
            json!("N/A")
        );
        assert_eq!(
            ok(r#"coalesce(null, null, "first", null, "second")"#),
            json!("first")
        );
        assert_eq!(ok(r#"first("1", "2", "3")"#), json!("1"));
        assert_eq!(ok(r#"last("1", "2", "3")"#), json!("3"));
        assert_eq!(ok("first(['a', 'b'])"), json!("a"));
        assert_eq!(ok("to_array(false, 1, null, 2, 3)"), json!([1, 2, 3]));
        assert_eq!(ok("to_array(true, 1, null)"), json!([1, null]));
        assert_eq!(ok("size_of([1, 2, 3, 4])"), json!(4));
        assert_eq!(ok("is_empty([1, null, 2, 3])"), json!(false));
        assert_eq!(ok("is_empty(null)"), json!(true));
        assert_eq!(ok("min(3, 1, 4)"), json!(1));
        assert_eq!(ok("max(3, 1, 4.5)"), json!(4.5));
        assert_eq!(ok("nullify()"), json!(null));
        assert_eq!(
            ok(r#"to_object("firstName", "John", "lastName", "Doe")"#),
            json!({"firstName": "John", "lastName": "Doe"})
        );
        assert_eq!(ok("1 + 2 * 3 - 4 / 2"), json!(5));
        assert_eq!(ok("7 % 4 + 0.5"), json!(3.5));
        assert_eq!(ok("'a' + 1"), json!("a1"));
        assert_eq!(ok("!(1 < 2) or 2 ge 2"), json!(true));
        assert_eq!(ok("'10' == 10 && null != 1"), json!(true));
        assert!(
            run("1 / 0", json!({}))
                .unwrap_err()
                .contains("division by zero")
        );
    }

    #[test]
    fn dates_parse_format_and_split() {
        assert_eq!(
            ok(r#"date("2019-10-23 11:24", "yyyy-MM-dd HH:mm")"#),
            json!("2019-10-23T11:24:00Z")
        );
        assert_eq!(
            ok(r#"date("2019-10-23 11:24")"#),
            json!("2019-10-23T11:24:00Z")
        );
        assert_eq!(
            ok(r#"date(null, "yyyy-MM-dd", "2020-01-01")"#),
            json!("2020-01-01T00:00:00Z")
        );
        assert_eq!(ok(r#"date(null, "yyyy-MM-dd")"#), json!(null));
        assert!(
            run(r#"date("December 31st, 2020", "yyyy-MM-dd")"#, json!({}))
                .unwrap_err()
                .starts_with("date: ")
        );
        // A pattern from a field is translated per row.
        assert_eq!(
            run("date(D, F)", json!({"D": "31/12/2020", "F": "dd/MM/yyyy"})).unwrap(),
            json!("2020-12-31T00:00:00Z")
        );
        assert_eq!(
            ok(r#"format(date("2019-10-23T11:24:00+00:00"), "yyyy-MM-dd HH:mm:ss")"#),
            json!("2019-10-23 11:24:00")
        );
        assert_eq!(
            ok(r#"dformat(1571829875000, "yyyy-MM-dd'T'HH:mm:ss.SSSX")"#),
            json!("2019-10-23T11:24:35.000Z")
        );
        assert_eq!(
            ok(r#"date_part("MM", date("2019-10-17 11:55:12"))"#),
            json!(10)
        );
        assert_eq!(ok(r#"date_part("year", "2019-10-17")"#), json!(2019));
        assert_eq!(ok(r#"date_part("q", "2019-10-17")"#), json!(4));
        assert_eq!(
            ok(r#"date_part("dw", "2019-10-17")"#),
            json!(5),
            "a Thursday"
        );
        assert_eq!(ok(r#"date_part("hh12", "2019-10-17 23:55:12")"#), json!(11));
        assert_eq!(
            ok(r#"zone_date_to_utc(date("2019-10-17T11:55:12-08:00"))"#),
            json!("2019-10-17T19:55:12Z")
        );
        let now = ok("now()");
        assert!(dates::parse_iso(now.as_str().unwrap()).is_some(), "{now}");
        assert!(ok("timestamp()").as_i64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn bad_constant_arguments_are_refused_when_loaded() {
        let mut fields = Vec::new();
        let e = expr::parse(r#"date(x, "yyyy-ww")"#, &mut fields).unwrap_err();
        assert!(matches!(e, expr::ExprError::BadCall { function, .. } if function == "date"));
        let e = expr::parse(r#"date_part("fortnight", x)"#, &mut fields).unwrap_err();
        assert!(
            matches!(e, expr::ExprError::BadCall { message, .. } if message.contains("fortnight"))
        );
        let e = expr::parse(r#"sha256(x, "UTF-16")"#, &mut fields).unwrap_err();
        assert!(matches!(e, expr::ExprError::BadCall { .. }));
        let e = expr::parse(r#"to_object("a")"#, &mut fields).unwrap_err();
        assert!(matches!(e, expr::ExprError::BadCall { .. }));
    }

    #[test]
    fn special_operations() {
        let id = ok("uuid()");
        assert!(uuid::Uuid::parse_str(id.as_str().unwrap()).is_ok());
        assert_ne!(ok("guid()"), ok("guid()"));
        assert_eq!(
            ok(r#"sha256("my text", "UTF-8")"#),
            json!("7330d2b39ca35eaf4cb95fc846c21ee6a39af698154a83a586ee270a0d372104")
        );
    }
}
