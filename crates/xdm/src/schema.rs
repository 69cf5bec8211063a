//! Compiling a dataset's schema: the JSON Schema form that the platform's Schema Registry
//! exports for an XDM schema, turned once into a tree of [`Node`]s that `check` walks for
//! every record.
//!
//! Understood: `type` (a name or a list, `"null"` allowed), `properties`, `required`, `enum`,
//! `format` (`date-time`, `date`, `email`, `uri`), `pattern`, `minimum`/`maximum` (and the
//! exclusive forms), `minLength`/`maxLength`, `items`, `minItems`/`maxItems`,
//! `additionalProperties` (`false`, or a schema for map-like objects such as `identityMap`),
//! `allOf` and local `$ref`s (`#/definitions/...`). `meta:` keys, titles and descriptions are
//! ignored. A keyword of the wrong JSON type refuses the schema (`meta`).
//!
//! It owns the tree and how keywords map onto it; it must not look at records. The tree is
//! public, read-only, for the other walkers of the same schema (the mapping engine converts
//! and shapes mapped records by it): there is one compiler of XDM schemas.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::{Map, Value};

use crate::meta;
use crate::pattern::Pattern;
use crate::pointer::{escape_segment, normalize_pointer, unescape_segment};
use crate::text::Format;

/// `$ref`/`allOf` nesting deeper than this is refused (a cycle, most likely).
const MAX_DEPTH: usize = 64;

/// A compiled schema.
#[derive(Debug)]
pub struct Schema {
    /// The id datasets reference it by (`schemaRef.id`): the given id, else the schema's `$id`.
    pub id: String,
    /// Its title (or the given name): the emulator's config may reference it by name.
    pub name: String,
    /// JSON pointer of the field that identifies a row in upsert datasets, if given.
    pub identity_field: Option<String>,
    /// What the schema asks that is not checked (a `pattern` this crate cannot run), one
    /// sentence each, for the owner to log.
    pub warnings: Vec<String>,
    root: Node,
}

/// One field's rules.
#[derive(Debug, Default)]
pub struct Node {
    pub ty: Ty,
    pub format: Option<Format>,
    pub(crate) pattern: Option<Pattern>,
    pub enumeration: Option<Vec<Value>>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: Option<f64>,
    pub exclusive_maximum: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    /// An integer's width (`meta:xdmType`); plain `integer` is a long.
    pub width: IntWidth,
    /// Its place in its object's `required` (the first, if named twice), when it is a
    /// required property: the quick verdict learns it in the same lookup that finds the node.
    pub(crate) required_at: Option<usize>,
}

/// XDM's integer types (`meta:xdmType` `byte`, `short`, `int`, `long`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntWidth {
    Byte,
    Short,
    Int,
    #[default]
    Long,
}

#[derive(Debug, Default)]
pub enum Ty {
    /// No `type`: anything goes.
    #[default]
    Any,
    Object(Box<Obj>),
    Array(Option<Box<Node>>),
    String,
    Integer,
    Number,
    Boolean,
    Null,
}

#[derive(Debug, Default)]
pub struct Obj {
    pub props: Props,
    /// The names of `props` in the schema's order (Parquet columns follow it).
    pub order: Vec<String>,
    pub required: Vec<String>,
    pub additional: Additional,
    /// Whether `required` names a field that is not among `props`: a key of that name has no
    /// node to carry its place, so the quick verdict looks it up in `required`.
    pub(crate) required_beyond_props: bool,
}

/// An object's fields by name. Every key of every record is looked up here, so the hash is a
/// quick one ([`KeyHasher`]) rather than the standard SipHash: the map is
/// built once from the schema and never grows from input, so a record's keys cannot flood it
/// (a key crafted to collide costs one probe sequence over a map of the schema's size).
pub type Props = HashMap<String, Node, BuildHasherDefault<KeyHasher>>;

/// The hash of [`Props`]: a field name is mixed in one folded multiply (as `foldhash` does for
/// short strings) from its first and last 8 bytes and its length; a longer name adds its
/// middle 8 bytes at a time.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

/// Arbitrary odd constants (digits of pi), so that no input folds to zero by itself.
const MIX: [u64; 3] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d1,
];

/// The high and low halves of the full product, folded together.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(eight)
}

fn half(bytes: &[u8], at: usize) -> u64 {
    let mut four = [0u8; 4];
    four.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(four))
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        let (first, last) = match len {
            0 => (0, 0),
            1..=3 => (
                u64::from(bytes[0])
                    | u64::from(bytes[len / 2]) << 8
                    | u64::from(bytes[len - 1]) << 16,
                0,
            ),
            4..=7 => (half(bytes, 0), half(bytes, len - 4)),
            _ => {
                let mut state = self.0;
                let mut at = 8;
                while at + 8 < len {
                    state = fold(state ^ word(bytes, at) ^ MIX[0], MIX[1]);
                    at += 8;
                }
                self.0 = state;
                (word(bytes, 0), word(bytes, len - 8))
            }
        };
        self.0 = fold(
            self.0 ^ first ^ MIX[0],
            last ^ MIX[1] ^ (len as u64).rotate_left(32),
        );
    }

    fn write_u8(&mut self, byte: u8) {
        // `str` ends its bytes with 0xff: constant, so it needs no mixing of its own.
        self.0 ^= u64::from(byte).wrapping_mul(MIX[2]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Default)]
pub enum Additional {
    /// Unknown fields are ignored.
    #[default]
    Ignored,
    /// `additionalProperties: false`.
    Forbidden,
    /// `additionalProperties: {schema}`: a map whose values follow the schema.
    Schema(Box<Node>),
}

impl Schema {
    /// Compiles a schema from its JSON form. `id`/`name` override the schema's `$id`/`title`;
    /// `identity_field` (a JSON pointer, or dotted: `person.crmId`) must name a scalar field.
    pub fn compile(
        json: &Value,
        id: Option<&str>,
        name: Option<&str>,
        identity_field: Option<&str>,
    ) -> Result<Schema, String> {
        let Value::Object(top) = json else {
            return Err(
                "a schema must be a JSON object (the Schema Registry's JSON Schema export)".into(),
            );
        };
        let id = id
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| top.get("$id").and_then(Value::as_str).map(str::to_owned))
            .ok_or(
                "the schema has no $id: give it an id (in the config: [[schemas]] id = \"...\")",
            )?;
        let name = name
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| top.get("title").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| id.clone());
        let mut compiler = Compiler {
            top,
            warnings: Vec::new(),
        };
        let root = compiler.node(json, "", 0)?;
        if !matches!(root.ty, Ty::Object(_)) {
            return Err(
                "the schema's root is not an object: an XDM schema describes records (type: object, properties: ...)"
                    .into(),
            );
        }
        let schema = Schema {
            id,
            name,
            identity_field: identity_field
                .filter(|s| !s.is_empty())
                .map(normalize_pointer),
            warnings: compiler.warnings,
            root,
        };
        schema.check_identity_field()?;
        Ok(schema)
    }

    fn check_identity_field(&self) -> Result<(), String> {
        let Some(p) = &self.identity_field else {
            return Ok(());
        };
        match self.node_at(p) {
            None => Err(format!(
                "identity field {p} is not a field of the schema: name a field of it (a JSON pointer such as /person/crmId, or dotted: person.crmId)"
            )),
            Some(n) if !matches!(n.ty, Ty::String | Ty::Integer | Ty::Number | Ty::Any) => {
                Err(format!(
                    "identity field {p} is not a string or a number: an identity must be a scalar"
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// The record's node (an object).
    pub fn root(&self) -> &Node {
        &self.root
    }

    pub(crate) fn root_obj(&self) -> &Obj {
        match &self.root.ty {
            Ty::Object(o) => o,
            _ => unreachable!("compile checks that the root is an object"),
        }
    }

    /// Whether the record level names this field.
    pub fn has_top_field(&self, name: &str) -> bool {
        self.root_obj().props.contains_key(name)
    }

    /// The names of the record's fields, for messages.
    pub fn top_fields(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.root_obj().props.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    fn node_at(&self, pointer: &str) -> Option<&Node> {
        let mut node = &self.root;
        for seg in pointer.split('/').skip(1) {
            node = match &node.ty {
                Ty::Object(o) => o.props.get(&unescape_segment(seg))?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Whether a nested path of field names (a CSV header `a.b.c`, a Parquet struct) exists,
    /// and where it stops existing. `Ok(())` also when it enters a map or an untyped object.
    pub fn check_path(&self, path: &[&str]) -> Result<(), usize> {
        let mut node = &self.root;
        for (i, seg) in path.iter().enumerate() {
            while let Ty::Array(Some(items)) = &node.ty {
                node = items;
            }
            match &node.ty {
                Ty::Object(o) => match o.props.get(*seg) {
                    Some(n) => node = n,
                    // A map (additionalProperties: {schema}) takes any key; otherwise the
                    // field must exist (Parquet carries a subset of the schema's fields).
                    None if matches!(o.additional, Additional::Schema(_)) => return Ok(()),
                    None => return Err(i),
                },
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Where a field's keywords are read from: the field's object and the parts of its `allOf`.
struct Compiler<'a> {
    top: &'a Map<String, Value>,
    warnings: Vec<String>,
}

/// The keywords of a field's parts that decide its type and its children.
#[derive(Default)]
struct Shape<'a> {
    type_name: Option<&'a str>,
    props: Vec<(&'a String, &'a Value)>,
    required: Vec<String>,
    additional: Option<&'a Value>,
    items: Option<&'a Value>,
}

impl<'a> Shape<'a> {
    fn read(&mut self, part: &'a Map<String, Value>) {
        match part.get("type") {
            Some(Value::String(t)) => self.type_name = Some(t),
            Some(Value::Array(ts)) => {
                if let Some(t) = ts.iter().filter_map(Value::as_str).find(|t| *t != "null") {
                    self.type_name = Some(t);
                } else if self.type_name.is_none() && !ts.is_empty() {
                    self.type_name = Some("null");
                }
            }
            _ => {}
        }
        if let Some(Value::Object(ps)) = part.get("properties") {
            self.props.extend(ps.iter());
        }
        if let Some(Value::Array(r)) = part.get("required") {
            self.required
                .extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        if let Some(a) = part.get("additionalProperties") {
            self.additional = Some(a);
        }
        if let Some(i) = part.get("items") {
            self.items = Some(i);
        }
    }
}

impl<'a> Compiler<'a> {
    fn resolve(&self, v: &'a Value, at: &str) -> Result<&'a Value, String> {
        let mut v = v;
        for _ in 0..MAX_DEPTH {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return Ok(v);
            };
            let Some(local) = r.strip_prefix("#/") else {
                return Err(format!(
                    "{}: $ref {r:?} points outside the schema: export it fully resolved (Schema Registry: Accept: application/vnd.adobe.xed-full+json; version=1)",
                    display_at(at)
                ));
            };
            let mut target: Option<&'a Value> = None;
            for (i, seg) in local.split('/').enumerate() {
                let seg = unescape_segment(seg);
                target = if i == 0 {
                    self.top.get(&seg)
                } else {
                    target.and_then(|t| t.get(&seg))
                };
            }
            v = target.ok_or_else(|| {
                format!("{}: $ref {r:?} names nothing in the schema", display_at(at))
            })?;
        }
        Err(format!(
            "{}: $ref chain too deep (a cycle?)",
            display_at(at)
        ))
    }

    /// The field's object and the parts its `allOf` merges in (one level of nested `allOf`
    /// too, as registry exports have).
    fn parts(
        &self,
        field: &'a Map<String, Value>,
        at: &str,
    ) -> Result<Vec<&'a Map<String, Value>>, String> {
        let mut parts = vec![field];
        let Some(all) = field.get("allOf").and_then(Value::as_array) else {
            return Ok(parts);
        };
        for part in all {
            if let Value::Object(p) = self.resolve(part, at)? {
                parts.push(p);
                if let Some(inner) = p.get("allOf").and_then(Value::as_array) {
                    for ip in inner {
                        if let Value::Object(ipo) = self.resolve(ip, at)? {
                            parts.push(ipo);
                        }
                    }
                }
            }
        }
        Ok(parts)
    }

    fn node(&mut self, v: &'a Value, at: &str, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{}: the schema nests deeper than {MAX_DEPTH} levels (a $ref cycle?)",
                display_at(at)
            ));
        }
        let v = self.resolve(v, at)?;
        let Value::Object(o) = v else {
            // `true` / `{}`-like: anything goes.
            return Ok(Node::default());
        };
        let mut node = Node::default();
        let mut shape = Shape::default();
        for part in self.parts(o, at)? {
            meta::check_keywords(part, &display_at(at))?;
            shape.read(part);
            self.read_rules(part, at, &mut node);
        }
        node.ty = self.ty(shape, at, depth)?;
        Ok(node)
    }

    /// The value rules of one part; later parts override earlier ones.
    fn read_rules(&mut self, part: &Map<String, Value>, at: &str, node: &mut Node) {
        let num = |k: &str| part.get(k).and_then(Value::as_f64);
        let uint = |k: &str| part.get(k).and_then(Value::as_u64);
        node.minimum = num("minimum").or(node.minimum);
        node.maximum = num("maximum").or(node.maximum);
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
        node.min_length = uint("minLength").or(node.min_length);
        node.max_length = uint("maxLength").or(node.max_length);
        node.min_items = uint("minItems").or(node.min_items);
        node.max_items = uint("maxItems").or(node.max_items);
        if let Some(Value::Array(e)) = part.get("enum") {
            node.enumeration = Some(e.clone());
        }
        if let Some(f) = part.get("format").and_then(Value::as_str) {
            node.format = Format::from_keyword(f).or(node.format);
        }
        match part.get("meta:xdmType").and_then(Value::as_str) {
            Some("byte") => node.width = IntWidth::Byte,
            Some("short") => node.width = IntWidth::Short,
            Some("int") => node.width = IntWidth::Int,
            Some("long") => node.width = IntWidth::Long,
            _ => {}
        }
        if let Some(p) = part.get("pattern").and_then(Value::as_str) {
            match Pattern::compile(p) {
                Ok(pattern) => node.pattern = Some(pattern),
                Err(why) => self.warnings.push(format!(
                    "{}: pattern {p:?} is not checked: {why}",
                    display_at(at)
                )),
            }
        }
    }

    fn ty(&mut self, shape: Shape<'a>, at: &str, depth: usize) -> Result<Ty, String> {
        let type_name = shape.type_name.or_else(|| {
            if !shape.props.is_empty() || shape.additional.is_some() {
                Some("object")
            } else if shape.items.is_some() {
                Some("array")
            } else {
                None
            }
        });
        Ok(match type_name {
            None => Ty::Any,
            Some("object") => Ty::Object(Box::new(self.object(shape, at, depth)?)),
            Some("array") => match shape.items {
                Some(i @ Value::Object(_)) => Ty::Array(Some(Box::new(self.node(
                    i,
                    &format!("{at}/items"),
                    depth + 1,
                )?))),
                _ => Ty::Array(None),
            },
            Some("string") => Ty::String,
            Some("integer") => Ty::Integer,
            Some("number") => Ty::Number,
            Some("boolean") => Ty::Boolean,
            Some("null") => Ty::Null,
            Some(other) => {
                return Err(format!(
                    "{}: unknown type {other:?}: use object, array, string, integer, number, boolean or null",
                    display_at(at)
                ));
            }
        })
    }

    fn object(&mut self, shape: Shape<'a>, at: &str, depth: usize) -> Result<Obj, String> {
        let mut obj = Obj {
            required: shape.required,
            ..Obj::default()
        };
        for (k, pv) in shape.props {
            let child = self.node(pv, &format!("{at}/{}", escape_segment(k)), depth + 1)?;
            if obj.props.insert(k.clone(), child).is_none() {
                obj.order.push(k.clone());
            }
        }
        obj.additional = match shape.additional {
            None | Some(Value::Bool(true)) => Additional::Ignored,
            Some(Value::Bool(false)) => Additional::Forbidden,
            Some(s @ Value::Object(_)) => {
                Additional::Schema(Box::new(self.node(s, &format!("{at}/*"), depth + 1)?))
            }
            Some(_) => Additional::Ignored,
        };
        for (at, name) in obj.required.iter().enumerate() {
            match obj.props.get_mut(name) {
                Some(node) => {
                    node.required_at.get_or_insert(at);
                }
                None => obj.required_beyond_props = true,
            }
        }
        Ok(obj)
    }
}

fn display_at(at: &str) -> String {
    if at.is_empty() {
        "the schema's root".into()
    } else {
        format!("field {at}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Names of every length up to past two words, and names that differ only in their
    /// middle, their length or a trailing NUL: each is found as itself, and the hashes spread.
    #[test]
    fn field_names_of_every_length_are_found_and_spread() {
        let mut names: Vec<String> = (0..40)
            .map(|n| "abcdefghijklmnopqrstuvwxyz0123456789ABCD"[..n].to_owned())
            .collect();
        names.extend(
            [
                "personalEmail",
                "personalEmaim",
                "a\0",
                "a",
                "xdm:homeAddress.city",
                "xdm:homeAddress.cit\0",
                "_tenant_id_longer_field",
            ]
            .map(str::to_owned),
        );
        names.extend((0..200).map(|i| format!("field{i}")));
        names.extend((0..50).map(|i| format!("prefix_same_{i:02}_suffix_same")));
        names.sort();
        names.dedup();
        let mut props = Props::default();
        for (i, name) in names.iter().enumerate() {
            props.insert(
                name.clone(),
                Node {
                    min_items: Some(i as u64),
                    ..Node::default()
                },
            );
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(
                props.get(name.as_str()).and_then(|n| n.min_items),
                Some(i as u64),
                "{name:?}"
            );
        }
        assert!(
            !props.contains_key("field200")
                && !props.contains_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDE")
        );
        let hash = |name: &str| {
            std::hash::BuildHasher::hash_one(&BuildHasherDefault::<KeyHasher>::default(), name)
        };
        let mut hashes: Vec<u64> = names.iter().map(|n| hash(n)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), names.len(), "two names hash alike");
        // The low bits pick the bucket: they must spread too (at most a few names share them).
        let mut low: Vec<u64> = names.iter().map(|n| hash(n) & 0x3ff).collect();
        low.sort_unstable();
        low.dedup();
        assert!(
            low.len() * 10 > names.len() * 8,
            "{} of {} low bits distinct",
            low.len(),
            names.len()
        );
    }

    #[test]
    fn compile_errors_say_what_to_do() {
        let e = Schema::compile(&json!({"type": "string"}), Some("x"), None, None).unwrap_err();
        assert!(e.contains("root"), "{e}");
        let e = Schema::compile(
            &json!({"type": "object", "properties": {"a": {"$ref": "https://ns.adobe.com/xdm/context/profile"}}}),
            Some("x"),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("xed-full") && e.contains("/a"), "{e}");
        let e = Schema::compile(&json!({"type": "object"}), None, None, None).unwrap_err();
        assert!(e.contains("$id"), "{e}");
        let e = Schema::compile(
            &json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            Some("x"),
            None,
            Some("b"),
        )
        .unwrap_err();
        assert!(e.contains("/b"), "{e}");
    }

    #[test]
    fn keywords_of_the_wrong_type_refuse_the_schema_and_unrunnable_patterns_warn() {
        let e = Schema::compile(
            &json!({"type": "object", "properties": {"person": {"type": "object",
                "properties": {"age": {"type": "integer", "minimum": "0"}}}}}),
            Some("x"),
            None,
            None,
        )
        .unwrap_err();
        assert!(
            e.starts_with("field /person/age: minimum must be a number"),
            "{e}"
        );
        let e = Schema::compile(
            &json!({"type": "object", "required": "id"}),
            Some("x"),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.starts_with("the schema's root: required"), "{e}");
        let s = Schema::compile(
            &json!({"type": "object", "properties": {
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                "odd": {"type": "string", "pattern": "^(?!x)"}}}),
            Some("x"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].starts_with("field /odd: pattern"),
            "{:?}",
            s.warnings
        );
    }
}
