//! The operators of expressions (`+`, `==`, `&&`, …) and the number, truth and order rules
//! they share with the functions.

use super::*;

pub(super) fn binary<'a>(
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

pub(super) fn arithmetic<'a>(op: BinaryOp, a: &Datum, b: &Datum) -> Result<Datum<'a>, String> {
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
pub(super) enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub(super) fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// A number for arithmetic: numbers, and text that reads as one; `None` for null.
pub(super) fn number(value: &Datum, context: &str) -> Result<Option<Number>, String> {
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

pub(super) fn parse_number(s: &str) -> Option<Number> {
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
pub(super) fn truthy(value: &Datum) -> Result<bool, String> {
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

pub(super) fn equal(a: &Datum, b: &Datum) -> bool {
    match (a, b) {
        (Datum::Null, Datum::Null) => true,
        (Datum::Null, _) | (_, Datum::Null) => false,
        _ => compare(a, b) == Some(Ordering::Equal),
    }
}

/// The order of two values: numbers numerically (text that reads as a number too), dates in
/// time, text by characters; `None` when they cannot be compared (null, mixed kinds).
pub(super) fn compare(a: &Datum, b: &Datum) -> Option<Ordering> {
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
