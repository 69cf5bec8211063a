//! The quick verdict on one JSON record: parsed and checked in one walk, holding nothing (no
//! `Value`, no map, no copy of a key or a string), with the same rules as `check`.
//!
//! It answers only "passes" or "look closer": a record with a problem, or one it cannot be
//! sure of (a key given twice, more required fields than it tracks), is to be checked again
//! held ([`Schema::check`]), which finds its issues, their fields and their order. So a
//! verdict of "passes" must imply that `check` finds nothing; the converse is only a matter of
//! speed. It must not report issues itself.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use crate::check::{CheckMode, Cx, Keep, Seen};
use crate::schema::{Additional, Node, Obj, Schema, Ty};

/// Required fields tracked per object; an object with more is checked held.
const REQUIRED_TRACKED: usize = 128;

impl Schema {
    /// Whether `json` is one JSON object (surrounded by whitespace at most) that passes every
    /// rule of the schema as [`Schema::check`] applies them in `mode`. `false` means it does
    /// not, or may not: parse it and [`Schema::check`] it to learn why.
    pub fn passes_json(&self, json: &[u8], mode: CheckMode) -> bool {
        let mut found = false;
        let mut cx = Cx::new(mode, Keep::Whether(&mut found));
        let mut unsure = false;
        // The record's UTF-8 is checked once, in one sweep, so that the parser need not check
        // each string on its own; a record that is not UTF-8 is left to the held check,
        // which says where it breaks.
        let Ok(json) = std::str::from_utf8(json) else {
            return false;
        };
        let mut de = serde_json::Deserializer::from_str(json);
        let walk = Walk {
            cx: &mut cx,
            unsure: &mut unsure,
            expect: Expect::Record(self.root_obj()),
        };
        let parsed = walk.deserialize(&mut de).and_then(|_| de.end());
        drop(cx);
        parsed.is_ok() && !found && !unsure
    }
}

/// What the value being walked must be.
#[derive(Clone, Copy)]
enum Expect<'s> {
    /// A record: an object checked against the schema's root.
    Record(&'s Obj),
    /// A field's value.
    Field(&'s Node),
    /// Anything (a field the schema does not name, ignored).
    Anything,
}

/// Walks one value while it is parsed. Its result is whether the value was not `null` (a
/// required field must be present and not null).
struct Walk<'w, 's, 'o> {
    cx: &'w mut Cx<'s, 'o>,
    /// Set when the walk cannot vouch for the record (it is then checked held).
    unsure: &'w mut bool,
    expect: Expect<'s>,
}

impl<'w, 's, 'o> Walk<'w, 's, 'o> {
    fn again(&mut self, expect: Expect<'s>) -> Walk<'_, 's, 'o> {
        Walk {
            cx: &mut *self.cx,
            unsure: &mut *self.unsure,
            expect,
        }
    }

    fn leaf(self, v: Seen<'_>) -> bool {
        match self.expect {
            // Not an object: the held check says what it is.
            Expect::Record(_) => *self.unsure = true,
            Expect::Field(node) => self.cx.leaf(node, &v),
            Expect::Anything => {}
        }
        !matches!(v, Seen::Null)
    }

    fn object<'de, A: MapAccess<'de>>(mut self, o: &'s Obj, mut map: A) -> Result<(), A::Error> {
        let check_required = !self.cx.mode.skip_required;
        if check_required && o.required.len() > REQUIRED_TRACKED {
            *self.unsure = true;
        }
        // Bit i: the last value given for required field i is not null (the held record keeps
        // the last of a key given twice).
        let mut present = 0u128;
        let mut seen = 0u128;
        while let Some(key) = map.next_key_seed(KeySeed(o))? {
            let expect = match key.node {
                Some(node) => Expect::Field(node),
                None => match &o.additional {
                    Additional::Ignored => Expect::Anything,
                    Additional::Forbidden => Expect::Anything,
                    Additional::Schema(node) => Expect::Field(node),
                },
            };
            let given = map.next_value_seed(self.again(expect))?;
            if key.node.is_none() && given && matches!(o.additional, Additional::Forbidden) {
                *self.unsure = true;
            }
            if let Some(i) = key.required {
                let bit = 1u128 << i;
                if seen & bit != 0 {
                    // Given twice: only the last counts; the held check knows which.
                    *self.unsure = true;
                }
                seen |= bit;
                if given {
                    present |= bit;
                } else {
                    present &= !bit;
                }
            }
        }
        if check_required {
            let wanted = o.required.len().min(REQUIRED_TRACKED);
            let all = if wanted == 128 {
                u128::MAX
            } else {
                (1u128 << wanted) - 1
            };
            if present & all != all {
                *self.unsure = true;
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<bool, E> {
        Ok(self.leaf(Seen::Bool(b)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<bool, E> {
        Ok(self.leaf(Seen::Num(n.into())))
    }

    fn visit_u64<E>(self, n: u64) -> Result<bool, E> {
        Ok(self.leaf(Seen::Num(n.into())))
    }

    fn visit_f64<E>(self, f: f64) -> Result<bool, E> {
        // As serde_json's `Value` takes a float it cannot hold: null.
        Ok(self.leaf(Number::from_f64(f).map_or(Seen::Null, Seen::Num)))
    }

    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(self.leaf(Seen::Str(s)))
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(self.leaf(Seen::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<bool, A::Error> {
        let node = match self.expect {
            Expect::Field(node) => node,
            Expect::Record(_) | Expect::Anything => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(self.leaf(Seen::Array));
            }
        };
        let Ty::Array(items) = &node.ty else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(self.leaf(Seen::Array));
        };
        let item = items.as_deref().map_or(Expect::Anything, Expect::Field);
        let mut n = 0u64;
        while seq.next_element_seed(self.again(item))?.is_some() {
            n += 1;
        }
        self.cx.array_length(node, n);
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let o = match self.expect {
            Expect::Record(o) => o,
            Expect::Field(Node {
                ty: Ty::Object(o), ..
            }) => o.as_ref(),
            Expect::Field(_) | Expect::Anything => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(self.leaf(Seen::Object));
            }
        };
        self.object(o, map)?;
        Ok(true)
    }
}

/// A key of an object, looked up without keeping it.
struct Key<'s> {
    /// The field's node, when the schema names it.
    node: Option<&'s Node>,
    /// Its place among the object's tracked required fields.
    required: Option<usize>,
}

struct KeySeed<'s>(&'s Obj);

impl<'de, 's> DeserializeSeed<'de> for KeySeed<'s> {
    type Value = Key<'s>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'s>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'s> Visitor<'_> for KeySeed<'s> {
    type Value = Key<'s>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, k: &str) -> Result<Key<'s>, E> {
        let o = self.0;
        let node = o.props.get(k);
        let required = match node {
            Some(node) => node.required_at,
            None if o.required_beyond_props => o.required.iter().position(|r| r == k),
            None => None,
        };
        Ok(Key {
            node,
            required: required.filter(|&i| i < REQUIRED_TRACKED),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::check::Source;

    fn mode(source: Source, skip_required: bool) -> CheckMode {
        CheckMode {
            source,
            skip_required,
            patterns: false,
        }
    }

    /// The verdict agrees with the held check: "passes" only when it finds nothing.
    fn agree(schema: &Schema, json: &str, mode: CheckMode) -> bool {
        let verdict = schema.passes_json(json.as_bytes(), mode);
        let held = match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(record)) => {
                let mut issues = Vec::new();
                schema.check(&record, mode, &mut issues);
                issues.is_empty()
            }
            _ => false,
        };
        assert!(
            !verdict || held,
            "passes_json said {json} passes; check found issues"
        );
        verdict
    }

    fn schema() -> Schema {
        Schema::compile(
            &json!({
                "type": "object",
                "required": ["id", "ts"],
                "properties": {
                    "id": {"type": "integer", "minimum": 0},
                    "ts": {"type": "string", "format": "date-time"},
                    "name": {"type": "string", "maxLength": 8},
                    "score": {"type": "number", "maximum": 100},
                    "vip": {"type": "boolean"},
                    "tier": {"type": "string", "enum": ["gold", "silver"]},
                    "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "minLength": 1}},
                    "home": {"type": "object", "additionalProperties": false, "required": ["city"],
                        "properties": {"city": {"type": "string"}}},
                    "ids": {"type": "object", "additionalProperties": {"type": "integer"}}
                }
            }),
            Some("s"),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn clean_records_pass_without_being_held() {
        let s = schema();
        let json = mode(Source::Json, false);
        for clean in [
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z"}"#,
            r#" {"id":"7","ts":1764432000000,"name":"Ann","score":"99.5","vip":true,"tier":"gold"} "#,
            r#"{"id":2.0,"ts":"2026-11-29","tags":["a","b"],"home":{"city":"Köln"},"ids":{"x":3}}"#,
            r#"{"id":3,"ts":"2026-11-29T16:00:00Z","unknown":{"deep":[1,{"a":null}]},"name":null}"#,
            r#"{"id":4,"ts":"2026-11-29T16:00:00Z","name":"\u00e9t\u00e9"}"#,
            r#"{"id":5,"ts":"2026-11-29T16:00:00Z","tags":[],"home":{"city":"x","extra":null}}"#,
        ] {
            assert!(agree(&s, clean, json), "{clean} should pass");
        }
    }

    #[test]
    fn records_with_problems_are_handed_to_the_held_check() {
        let s = schema();
        let json = mode(Source::Json, false);
        for bad in [
            r#"{"id":-1,"ts":"2026-11-29T16:00:00Z"}"#,
            r#"{"id":1.5,"ts":"2026-11-29T16:00:00Z"}"#,
            r#"{"id":1,"ts":"yesterday"}"#,
            r#"{"id":1}"#,
            r#"{"id":1,"ts":null}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","ts":null}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","name":"Friederike"}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","score":101}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","vip":"true"}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","tier":"bronze"}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","tags":["a","b","c"]}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","tags":[""]}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","tags":"a"}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","home":{"city":"x","zip":"1"}}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","home":{}}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","home":[]}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z","ids":{"x":"y"}}"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z"} x"#,
            r#"{"id":1,"ts":"2026-11-29T16:00:00Z""#,
            r#"[{"id":1,"ts":"2026-11-29T16:00:00Z"}]"#,
            r#""a string""#,
            "",
        ] {
            assert!(!agree(&s, bad, json), "{bad} should not pass");
        }
    }

    /// The shared fixtures, row for row: the verdict is "passes" exactly when the held check
    /// finds nothing (no key is given twice there, so nothing is left unsure).
    #[test]
    fn the_fixture_rows_get_the_held_check_s_verdict() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let read = |name: &str| -> Value {
            let text = std::fs::read_to_string(fixtures.join(name))
                .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
            serde_json::from_str(&text).unwrap()
        };
        let Value::Array(rows) = read("CRM_profiles.json") else {
            panic!("CRM_profiles.json is an array of records");
        };
        let (mut passed, mut held_back) = (0, 0);
        for name in ["objectXDM.schema.json", "CRM_profiles.schema.json"] {
            let schema = Schema::compile(&read(name), Some(name), None, None).unwrap();
            for row in &rows {
                let json = serde_json::to_string(row).unwrap();
                let mut issues = Vec::new();
                schema.check(
                    row.as_object().unwrap(),
                    mode(Source::Json, false),
                    &mut issues,
                );
                let verdict = schema.passes_json(json.as_bytes(), mode(Source::Json, false));
                assert_eq!(verdict, issues.is_empty(), "{name}: {json}: {issues:?}");
                if verdict {
                    passed += 1;
                } else {
                    held_back += 1;
                }
            }
        }
        assert!(
            passed > 0 && held_back > 0,
            "{passed} passed, {held_back} held back"
        );
    }

    #[test]
    fn a_record_that_is_not_utf8_is_handed_to_the_held_check() {
        let s = schema();
        let json = mode(Source::Json, false);
        let clean = br#"{"id":1,"ts":"2026-11-29T16:00:00Z","name":"Ann","other":"x"}"#;
        assert!(s.passes_json(clean, json));
        // A bad byte in a field the schema names, in one it does not, and in a key.
        for (from, to) in [
            (b"Ann".as_slice(), b"A\xffn".as_slice()),
            (b"x", b"\xfe"),
            (b"other", b"oth\xc3"),
        ] {
            let at = clean.windows(from.len()).position(|w| w == from).unwrap();
            let mut bad = clean[..at].to_vec();
            bad.extend_from_slice(to);
            bad.extend_from_slice(&clean[at + from.len()..]);
            assert!(
                !s.passes_json(&bad, json),
                "{} should not pass",
                String::from_utf8_lossy(&bad)
            );
            assert!(serde_json::from_slice::<Value>(&bad).is_err());
        }
    }

    /// A required name that `properties` does not list has no node to carry its place: a key
    /// of that name still counts, under each rule for unknown fields.
    #[test]
    fn a_required_field_beyond_the_properties_still_counts() {
        let json = mode(Source::Json, false);
        for additional in [json!(true), json!(false), json!({"type": "integer"})] {
            let s = Schema::compile(
                &json!({
                    "type": "object",
                    "required": ["id", "ghost"],
                    "properties": {"id": {"type": "integer"}},
                    "additionalProperties": additional
                }),
                Some("s"),
                None,
                None,
            )
            .unwrap();
            let allowed = additional != json!(false);
            assert_eq!(agree(&s, r#"{"id":1,"ghost":2}"#, json), allowed);
            assert_eq!(agree(&s, r#"{"ghost":2,"id":1}"#, json), allowed);
            assert_eq!(
                agree(&s, r#"{"id":1,"ghost":"two"}"#, json),
                additional == json!(true)
            );
            for bad in [
                r#"{"id":1}"#,
                r#"{"id":1,"ghost":null}"#,
                r#"{"id":1,"ghost":2,"ghost":null}"#,
                r#"{"id":1,"ghost":null,"ghost":2}"#,
                r#"{"ghost":2}"#,
            ] {
                assert!(
                    !agree(&s, bad, json),
                    "{bad} should not pass ({additional})"
                );
            }
            assert!(agree(&s, r#"{"id":1}"#, mode(Source::Json, true)));
        }
    }

    /// Every required field has its own place, up to the last one tracked; past that the
    /// object is checked held. Some of the names are not among the properties.
    #[test]
    fn many_required_fields_are_each_tracked() {
        let json = mode(Source::Json, false);
        let name = |i: usize| format!("f{i}");
        let record = |fields: &[usize]| {
            let body: Vec<String> = fields
                .iter()
                .map(|i| format!(r#""{}":{i}"#, name(*i)))
                .collect();
            format!("{{{}}}", body.join(","))
        };
        for wanted in [1, 2, 64, 65, 127, REQUIRED_TRACKED, REQUIRED_TRACKED + 1] {
            let properties: serde_json::Map<String, Value> = (0..wanted)
                .filter(|i| i % 3 != 1)
                .map(|i| (name(i), json!({"type": "integer"})))
                .collect();
            let required: Vec<String> = (0..wanted).map(name).collect();
            let s = Schema::compile(
                &json!({"type": "object", "required": required, "properties": properties}),
                Some("s"),
                None,
                None,
            )
            .unwrap();
            let all: Vec<usize> = (0..wanted).rev().collect();
            assert_eq!(
                agree(&s, &record(&all), json),
                wanted <= REQUIRED_TRACKED,
                "{wanted} required, all given"
            );
            for missing in [0, 1, wanted / 2, wanted - 1]
                .into_iter()
                .filter(|i| *i < wanted)
            {
                let some: Vec<usize> = all.iter().copied().filter(|i| *i != missing).collect();
                assert!(
                    !agree(&s, &record(&some), json),
                    "{wanted} required, f{missing} missing"
                );
            }
        }
    }

    #[test]
    fn csv_conversions_and_upserts_follow_the_mode() {
        let s = schema();
        let row = r#"{"id":"1","ts":"2026-11-29","vip":"TRUE"}"#;
        assert!(!agree(&s, row, mode(Source::Json, false)));
        assert!(agree(&s, row, mode(Source::Csv, false)));
        let partial = r#"{"name":"Ann"}"#;
        assert!(!agree(&s, partial, mode(Source::Json, false)));
        assert!(agree(&s, partial, mode(Source::Json, true)));
    }
}
