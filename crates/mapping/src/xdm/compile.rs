//! Compiling an exported XDM schema into the nodes that [`super::Schema`] walks: `$ref`s,
//! `allOf`, types and constraints; a schema it cannot understand is refused here, not at a record.

use super::*;

pub(super) struct Compiler<'a> {
    pub(super) top: &'a Map<String, Value>,
}

impl<'a> Compiler<'a> {
    /// Follows `$ref`s (local ones only: an `xed-full` export has no others).
    fn resolve(&self, value: &'a Value, at: &str) -> Result<&'a Value, SchemaError> {
        let mut value = value;
        for _ in 0..MAX_DEPTH {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok(value);
            };
            let Some(local) = reference.strip_prefix("#/") else {
                return Err(SchemaError(format!(
                    "{}: $ref {reference:?} points outside the schema: export it fully resolved (Accept: application/vnd.adobe.xed-full+json; version=1)",
                    where_(at)
                )));
            };
            let mut segments = local.split('/');
            let mut target = self.top.get(&unescape(segments.next().unwrap_or_default()));
            for segment in segments {
                target = target.and_then(|t| t.get(unescape(segment)));
            }
            value = target.ok_or_else(|| {
                SchemaError(format!(
                    "{}: $ref {reference:?} names nothing in the schema",
                    where_(at)
                ))
            })?;
        }
        Err(SchemaError(format!(
            "{}: $ref chain too deep (a cycle?)",
            where_(at)
        )))
    }

    /// Every part of a node: itself and its `allOf` parts (nested too), `$ref`s followed.
    fn parts(
        &self,
        value: &'a Value,
        at: &str,
        depth: usize,
        out: &mut Vec<&'a Map<String, Value>>,
    ) -> Result<(), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError(format!(
                "{}: allOf nests deeper than {MAX_DEPTH} levels (a cycle?)",
                where_(at)
            )));
        }
        if let Value::Object(object) = self.resolve(value, at)? {
            out.push(object);
            if let Some(Value::Array(all)) = object.get("allOf") {
                for part in all {
                    self.parts(part, at, depth + 1, out)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn node(
        &self,
        value: &'a Value,
        at: &str,
        depth: usize,
    ) -> Result<Node, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError(format!(
                "{}: the schema nests deeper than {MAX_DEPTH} levels (a $ref cycle?)",
                where_(at)
            )));
        }
        let mut parts = Vec::new();
        self.parts(value, at, 0, &mut parts)?;
        let mut node = Node::default();
        let mut type_name: Option<&str> = None;
        let mut xdm_type: Option<&str> = None;
        let mut properties: Vec<(&String, &Value)> = Vec::new();
        let mut required: Vec<String> = Vec::new();
        let mut additional: Option<&Value> = None;
        let mut items: Option<&Value> = None;
        for part in &parts {
            match part.get("type") {
                Some(Value::String(t)) => type_name = Some(t),
                Some(Value::Array(types)) => {
                    type_name = types
                        .iter()
                        .filter_map(Value::as_str)
                        .find(|t| *t != "null")
                        .or(type_name);
                }
                _ => {}
            }
            if let Some(t) = part.get("meta:xdmType").and_then(Value::as_str) {
                xdm_type = Some(t);
            }
            if let Some(Value::Object(ps)) = part.get("properties") {
                for (name, child) in ps {
                    if !properties.iter().any(|(n, _)| *n == name) {
                        properties.push((name, child));
                    }
                }
            }
            if let Some(Value::Array(r)) = part.get("required") {
                required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            additional = part.get("additionalProperties").or(additional);
            items = part.get("items").or(items);
            let number = |k: &str| part.get(k).and_then(Value::as_f64);
            let unsigned = |k: &str| part.get(k).and_then(Value::as_u64);
            node.minimum = number("minimum").or(node.minimum);
            node.maximum = number("maximum").or(node.maximum);
            // draft-06 numbers, or draft-04 booleans that make minimum/maximum exclusive.
            match part.get("exclusiveMinimum") {
                Some(Value::Bool(true)) => node.exclusive_minimum = node.minimum.take(),
                Some(Value::Number(n)) => node.exclusive_minimum = n.as_f64(),
                _ => {}
            }
            match part.get("exclusiveMaximum") {
                Some(Value::Bool(true)) => node.exclusive_maximum = node.maximum.take(),
                Some(Value::Number(n)) => node.exclusive_maximum = n.as_f64(),
                _ => {}
            }
            node.min_length = unsigned("minLength").or(node.min_length);
            node.max_length = unsigned("maxLength").or(node.max_length);
            node.min_items = unsigned("minItems").or(node.min_items);
            node.max_items = unsigned("maxItems").or(node.max_items);
            if let Some(Value::Array(e)) = part.get("enum") {
                node.enumeration = Some(e.clone());
            }
            match part.get("format").and_then(Value::as_str) {
                Some("date") => node.format = Some(Format::Date),
                Some("date-time") => node.format = Some(Format::DateTime),
                Some("email") => node.format = Some(Format::Email),
                Some("uri") => node.format = Some(Format::Uri),
                _ => {}
            }
        }
        if type_name.is_none() {
            if !properties.is_empty() || additional.is_some() {
                type_name = Some("object");
            } else if items.is_some() {
                type_name = Some("array");
            }
        }
        node.kind = match type_name {
            None | Some("null") => Kind::Any,
            Some("object") => {
                let mut object = Object {
                    required,
                    ..Object::default()
                };
                for (name, child) in properties {
                    let child_at = format!("{at}/{name}");
                    object
                        .properties
                        .push((name.clone(), self.node(child, &child_at, depth + 1)?));
                }
                if object.properties.len() > INDEXED_PROPERTIES {
                    object.index = Some(
                        object
                            .properties
                            .iter()
                            .enumerate()
                            .map(|(i, (name, _))| (name.clone(), i))
                            .collect(),
                    );
                }
                object.additional = match additional {
                    Some(Value::Bool(false)) => Additional::Forbidden,
                    Some(map @ Value::Object(_)) => {
                        Additional::Map(Box::new(self.node(map, &format!("{at}/*"), depth + 1)?))
                    }
                    _ => Additional::Ignored,
                };
                Kind::Object(Box::new(object))
            }
            Some("array") => match items {
                Some(item @ Value::Object(_)) => Kind::Array(Some(Box::new(self.node(
                    item,
                    &format!("{at}/items"),
                    depth + 1,
                )?))),
                _ => Kind::Array(None),
            },
            Some("string") => Kind::String,
            Some("integer") => Kind::Integer(match xdm_type {
                Some("byte") => IntWidth::Byte,
                Some("short") => IntWidth::Short,
                Some("int") => IntWidth::Int,
                _ => IntWidth::Long,
            }),
            Some("number") => Kind::Number,
            Some("boolean") => Kind::Boolean,
            Some(other) => {
                return Err(SchemaError(format!(
                    "{}: unknown type {other:?}: use object, array, string, integer, number, boolean or null",
                    where_(at)
                )));
            }
        };
        Ok(node)
    }
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn where_(at: &str) -> String {
    if at.is_empty() {
        "the schema's root".into()
    } else {
        format!("field {at}")
    }
}
