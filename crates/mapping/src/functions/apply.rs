//! Calling one Data Prep function on its evaluated arguments: strings, numbers, dates, hashes,
//! arrays; a function that cannot work on its input fails the row with a message.

use super::*;

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
pub(super) fn map_text<'a>(
    value: &Datum,
    f: impl FnOnce(&str) -> String,
) -> Result<Datum<'a>, String> {
    Ok(match text(value)? {
        None => Datum::Null,
        Some(s) => Datum::Str(Cow::Owned(f(&s))),
    })
}

/// A count or position argument.
pub(super) fn count(value: &Datum, what: &str) -> Result<usize, String> {
    match number(value, what)? {
        None => Err(format!("{what} is null")),
        Some(Number::Int(i)) => Ok(i.max(0) as usize),
        Some(Number::Float(f)) if f.fract() == 0.0 => Ok(f.max(0.0) as usize),
        Some(Number::Float(f)) => Err(format!("{what} must be a whole number, found {f}")),
    }
}

/// The items a variadic function works on: its arguments, or the items of its one array.
pub(super) fn items<'v, 'a>(args: &'v [Datum<'a>]) -> &'v [Datum<'a>] {
    match args {
        [Datum::Array(inner)] => inner,
        _ => args,
    }
}

/// The function's name, for messages.
pub(super) fn name_of(function: Function) -> &'static str {
    SUPPORTED
        .iter()
        .find(|(_, f, ..)| *f == function)
        .map(|(n, ..)| *n)
        .unwrap_or("?")
}

pub(super) fn call<'a>(
    function: Function,
    args: &[Expr],
    fields: &[Datum<'a>],
) -> Result<Datum<'a>, String> {
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

pub(super) fn apply<'a>(
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
pub(super) fn to_whole<'a>(
    value: &Datum,
    min: i64,
    max: i64,
    what: &str,
) -> Result<Datum<'a>, String> {
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
pub(super) fn pattern_of(arg: &Expr, value: Option<&Datum>) -> Result<Arc<JavaPattern>, String> {
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

pub(super) fn utf8_charset(charset: &str) -> Result<(), String> {
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
pub(super) enum DateComponent {
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

pub(super) fn date_component(name: &str) -> Result<DateComponent, String> {
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
