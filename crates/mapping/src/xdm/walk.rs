//! Walking one record against the compiled schema: conversions into each field's type and the
//! platform's checks, collecting at most `MAX_ISSUES` issues.

use super::convert::convert;
use super::*;

/// Walks a record beside its schema, keeping the dotted path of where it is.
pub(super) struct Walk<'i> {
    /// `person.name.firstName`, `identityMap.ECID[1]`: grown and cut back as the walk goes.
    pub(super) path: String,
    /// Where each step began in `path`.
    pub(super) marks: Vec<usize>,
    pub(super) issues: &'i mut Vec<Issue>,
    pub(super) dropped: usize,
}

impl Walk<'_> {
    fn enter_key(&mut self, name: &str) {
        self.marks.push(self.path.len());
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(name);
    }

    fn enter_index(&mut self, index: usize) {
        use std::fmt::Write;
        self.marks.push(self.path.len());
        let _ = write!(self.path, "[{index}]");
    }

    fn leave(&mut self) {
        let mark = self.marks.pop().unwrap_or(0);
        self.path.truncate(mark);
    }

    fn issue(&mut self, kind: IssueKind, message: String) {
        if self.issues.len() >= MAX_ISSUES {
            self.dropped += 1;
            return;
        }
        let field = self.path.clone();
        let shown = if field.is_empty() {
            "the record"
        } else {
            &field
        };
        self.issues.push(Issue {
            message: format!("{shown}: {message}"),
            field,
            kind,
        });
    }

    pub(super) fn value(&mut self, node: &Node, value: &mut Datum) {
        if value.is_null() {
            return;
        }
        match &node.kind {
            Kind::Any => {}
            Kind::Object(object) => match value {
                Datum::Object(fields) => self.object(object, fields),
                other => self.wrong_type(other, "an object"),
            },
            Kind::Array(items) => match value {
                Datum::Array(elements) => {
                    let n = elements.len() as u64;
                    if let Some(min) = node.min_items.filter(|min| n < *min) {
                        self.issue(
                            IssueKind::Constraint,
                            format!("the array has {n} items; at least {min} are required"),
                        );
                    }
                    if let Some(max) = node.max_items.filter(|max| n > *max) {
                        self.issue(
                            IssueKind::Constraint,
                            format!("the array has {n} items; at most {max} are allowed"),
                        );
                    }
                    if let Some(item) = items {
                        for (i, element) in elements.iter_mut().enumerate() {
                            self.enter_index(i);
                            self.value(item, element);
                            self.leave();
                        }
                    }
                }
                other => self.wrong_type(other, "an array (arrays never convert)"),
            },
            Kind::String | Kind::Integer(_) | Kind::Number | Kind::Boolean => {
                match convert(node, value) {
                    Ok(Some(converted)) => *value = converted,
                    Ok(None) => {}
                    Err(message) => {
                        self.issue(IssueKind::Conversion, message);
                        return;
                    }
                }
                self.constraints(node, value);
            }
        }
    }

    fn object(&mut self, object: &Object, fields: &mut [(Cow<'_, str>, Datum<'_>)]) {
        for (name, value) in fields.iter_mut() {
            if value.is_null() {
                continue;
            }
            let child = match object.property(name) {
                Some(child) => Some(child),
                None => match &object.additional {
                    Additional::Ignored => None,
                    Additional::Map(values) => Some(values.as_ref()),
                    Additional::Forbidden => {
                        self.enter_key(name);
                        self.issue(
                            IssueKind::NotAllowed,
                            "the schema does not allow this field (additionalProperties: false): remove its mapping or add it to the schema".into(),
                        );
                        self.leave();
                        continue;
                    }
                },
            };
            if let Some(child) = child {
                self.enter_key(name);
                self.value(child, value);
                self.leave();
            }
        }
        for required in &object.required {
            let present = fields
                .iter()
                .any(|(name, value)| name == required && !value.is_null());
            if !present {
                self.enter_key(required);
                self.issue(
                    IssueKind::Required,
                    "required field is missing or null; map a value to it".into(),
                );
                self.leave();
            }
        }
    }

    fn wrong_type(&mut self, value: &Datum, wanted: &str) {
        self.issue(
            IssueKind::Conversion,
            format!(
                "expected {wanted}, found {} {}; map a value of the field's type",
                value.kind(),
                value.excerpt()
            ),
        );
    }

    fn constraints(&mut self, node: &Node, value: &Datum) {
        let number = match value {
            Datum::Int(i) => Some(*i as f64),
            Datum::Float(f) => Some(*f),
            _ => None,
        };
        if let Some(f) = number {
            // Messages are made only for values that break a rule (this runs for every field
            // of every row).
            if let Some(min) = node.minimum.filter(|min| f < *min) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} is below the minimum {}",
                        value.excerpt(),
                        float_short(min)
                    ),
                );
            }
            if let Some(max) = node.maximum.filter(|max| f > *max) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} is above the maximum {}",
                        value.excerpt(),
                        float_short(max)
                    ),
                );
            }
            if let Some(min) = node.exclusive_minimum.filter(|min| f <= *min) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} must be greater than {}",
                        value.excerpt(),
                        float_short(min)
                    ),
                );
            }
            if let Some(max) = node.exclusive_maximum.filter(|max| f >= *max) {
                self.issue(
                    IssueKind::Constraint,
                    format!("{} must be less than {}", value.excerpt(), float_short(max)),
                );
            }
            if let Kind::Integer(width) = node.kind {
                let (low, high) = width.range();
                if let Datum::Int(i) = value
                    && !(low..=high).contains(i)
                {
                    self.issue(
                        IssueKind::Constraint,
                        format!("{i} is out of range for the field's type ({low} to {high})"),
                    );
                }
            }
        }
        if let Datum::Str(s) = value {
            // Counting characters walks the text: only for fields with a length rule.
            let n = if node.min_length.is_some() || node.max_length.is_some() {
                s.chars().count() as u64
            } else {
                0
            };
            if let Some(min) = node.min_length.filter(|min| n < *min) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} has {n} characters; at least {min} are required",
                        value.excerpt()
                    ),
                );
            }
            if let Some(max) = node.max_length.filter(|max| n > *max) {
                self.issue(
                    IssueKind::Constraint,
                    format!(
                        "{} has {n} characters; at most {max} are allowed",
                        value.excerpt()
                    ),
                );
            }
            // Dates and date-times were converted above; the other formats are checked as the
            // validator checks them (one definition of each, in `batchdrop-xdm`).
            if let Some(format @ (Format::Email | Format::Uri)) = node.format
                && !format.accepts(s)
            {
                self.issue(
                    IssueKind::Constraint,
                    format!("{} {}", value.excerpt(), format.refusal()),
                );
            }
        }
        if let Some(allowed) = &node.enumeration {
            let found = allowed.iter().any(|a| match (a, value) {
                (Value::String(x), Datum::Str(y)) => x == y,
                (Value::Number(x), _) => number.is_some() && x.as_f64() == number,
                (Value::Bool(x), Datum::Bool(y)) => x == y,
                _ => false,
            });
            if !found {
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
                    IssueKind::Constraint,
                    format!(
                        "{} is not one of the allowed values: {}{more}",
                        value.excerpt(),
                        list.join(", ")
                    ),
                );
            }
        }
    }
}

fn float_short(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}
