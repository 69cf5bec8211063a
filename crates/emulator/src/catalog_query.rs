//! The query language of Catalog lists (`GET /catalog/batches`, `/catalog/dataSets`), applied
//! to the objects as the Catalog shows them: simple filters on any top-level field (comma
//! lists, `!` negation), `property=` conditions (`==`, `!=`, `<`, `<=`, `>`, `>=`, `~` regex,
//! bare existence, `!` absence; dotted paths), `tags=ns:value` with `*`, time windows,
//! `orderBy` over several fields, `start`/`limit`, and `properties=` to trim each object.
//!
//! Working on the JSON the client will receive (not on columns) keeps one meaning for every
//! field a client can see, including the ones the emulator derives. The platform filters on
//! its own side; a filter ignored here would answer the whole collection as if it were the
//! filtered one, so what cannot be understood is refused with 400, naming the parameter. This
//! module must not touch the store or HTTP: objects in, a page of objects out.

use std::cmp::Ordering;

use regex_automata::dfa::regex::Regex;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// Which collection is queried: the names some filters use differ from the objects' fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Batches,
    Datasets,
    DatasetFiles,
}

/// A parsed list query.
pub struct CatalogQuery {
    filters: Vec<Filter>,
    order: Vec<(String, bool)>,
    start: usize,
    limit: usize,
    properties: Option<Vec<String>>,
}

enum Filter {
    /// `field=a,b,!c`: the field's value is one of the wanted ones (if any) and none of the
    /// refused ones.
    Values {
        path: Vec<String>,
        wanted: Vec<String>,
        refused: Vec<String>,
    },
    /// `property=path OP value`.
    Compare {
        path: Vec<String>,
        op: Op,
        value: String,
    },
    /// Boxed: a compiled regex is large beside the other conditions.
    Matches {
        path: Vec<String>,
        regex: Box<Regex>,
    },
    Exists {
        path: Vec<String>,
        present: bool,
    },
    /// `tags=ns:value` (`*` in the value matches any run of characters).
    Tag {
        namespace: String,
        value: String,
    },
    /// `createdAfter=ms` and the like (exclusive).
    Time {
        field: &'static str,
        after: bool,
        at: i64,
    },
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Time-window parameters: (parameter, field, after?).
const WINDOWS: &[(&str, &str, bool)] = &[
    ("createdAfter", "created", true),
    ("createdBefore", "created", false),
    ("startAfter", "started", true),
    ("startBefore", "started", false),
    ("endAfter", "completed", true),
    ("endBefore", "completed", false),
];

impl CatalogQuery {
    /// Parses the query string's pairs (a parameter may repeat: `property=` often does).
    pub fn parse(pairs: &[(String, String)], collection: Collection) -> ApiResult<CatalogQuery> {
        let mut query = CatalogQuery {
            filters: Vec::new(),
            order: Vec::new(),
            start: 0,
            limit: 20,
            properties: None,
        };
        for (name, value) in pairs {
            match name.as_str() {
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "limit {value:?} must be a positive integer (at most 100)"
                            ))
                        })?
                        .min(100)
                }
                "start" => {
                    query.start = value.parse::<usize>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "start {value:?} must be a non-negative integer"
                        ))
                    })?
                }
                "orderBy" => query.order = order_by(value)?,
                "properties" => {
                    query.properties = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    )
                }
                "property" => query.filters.push(property(value)?),
                "tags" => {
                    for tag in value.split(',').filter(|t| !t.is_empty()) {
                        let (namespace, value) = tag.split_once(':').ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "tags {tag:?} must be NAMESPACE:VALUE (VALUE may be * or contain *)"
                            ))
                        })?;
                        query.filters.push(Filter::Tag {
                            namespace: namespace.to_owned(),
                            value: value.to_owned(),
                        });
                    }
                }
                window if WINDOWS.iter().any(|(p, ..)| *p == window) => {
                    let (_, field, after) = WINDOWS.iter().find(|(p, ..)| *p == window).unwrap();
                    let at = value.parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "{window} {value:?} must be epoch milliseconds"
                        ))
                    })?;
                    query.filters.push(Filter::Time {
                        field,
                        after: *after,
                        at,
                    });
                }
                field => query.filters.push(values(field, value, collection)?),
            }
        }
        Ok(query)
    }

    /// The page (`start`, `limit`) to read from the store when the query only narrows `field`
    /// to `narrowed` (what the store already did) in the default order, newest first by
    /// `created` then by id: the caller may then read just that page, ordered so, and give it
    /// to [`CatalogQuery::shape`]. `None` when anything else must see every object.
    pub fn page_alone(&self, field: &str, narrowed: &[String]) -> Option<(usize, usize)> {
        let only_narrowing = self.filters.iter().all(|filter| {
            matches!(filter, Filter::Values { path, wanted, refused }
                if path.len() == 1 && path[0] == field && refused.is_empty()
                    && wanted.iter().all(|w| narrowed.contains(w))
                    && narrowed.iter().all(|n| wanted.contains(n)))
        });
        (self.order.is_empty() && only_narrowing).then_some((self.start, self.limit))
    }

    /// Trims each object of a page the store read as [`CatalogQuery::page_alone`] said.
    pub fn shape(&self, page: Vec<(String, Value)>) -> Vec<(String, Value)> {
        page.into_iter()
            .map(|(id, object)| (id, self.trim(object)))
            .collect()
    }

    /// Filters, orders, pages and trims `objects` (id, object).
    pub fn apply(&self, mut objects: Vec<(String, Value)>) -> Vec<(String, Value)> {
        objects.retain(|(_, object)| self.filters.iter().all(|f| f.accepts(object)));
        if self.order.is_empty() {
            // The Catalog's default: newest first.
            objects.sort_by(|a, b| compare(&b.1["created"], &a.1["created"]).then(b.0.cmp(&a.0)));
        } else {
            objects.sort_by(|a, b| {
                self.order
                    .iter()
                    .map(|(field, descending)| {
                        let path = dotted(field);
                        let ordering = compare(lookup(&a.1, &path), lookup(&b.1, &path));
                        if *descending {
                            ordering.reverse()
                        } else {
                            ordering
                        }
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| {
                        // Ties by id, in the direction of the last field (ids grow with time).
                        let by_id = a.0.cmp(&b.0);
                        match self.order.last() {
                            Some((_, true)) => by_id.reverse(),
                            _ => by_id,
                        }
                    })
            });
        }
        let page = objects
            .into_iter()
            .skip(self.start)
            .take(self.limit)
            .collect();
        self.shape(page)
    }

    fn trim(&self, object: Value) -> Value {
        let (Some(keep), Value::Object(fields)) = (&self.properties, &object) else {
            return object;
        };
        let trimmed: Map<String, Value> = fields
            .iter()
            .filter(|(k, _)| keep.iter().any(|p| p == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(trimmed)
    }
}

/// `orderBy=desc:created,updated`: each field may carry `asc:`/`desc:`; one without takes the
/// direction before it (ascending at first).
fn order_by(value: &str) -> ApiResult<Vec<(String, bool)>> {
    let mut descending = false;
    let mut order = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let field = match entry.split_once(':') {
            Some((direction, field)) => {
                descending = match direction.to_ascii_lowercase().as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "orderBy {value:?}: the direction of {entry:?} must be asc or desc"
                        )));
                    }
                };
                field
            }
            None => entry,
        };
        if field.is_empty() {
            return Err(ApiError::bad_request(format!(
                "orderBy {value:?}: a field name is missing"
            )));
        }
        order.push((field.to_owned(), descending));
    }
    Ok(order)
}

/// A simple filter: `field=a,b` or `field=!a`. `dataSet` of a batch is its related dataset;
/// `batch` is the batch's id.
fn values(field: &str, value: &str, collection: Collection) -> ApiResult<Filter> {
    let path = match (collection, field) {
        (Collection::Batches, "dataSet") => vec!["$dataSet".to_owned()],
        (Collection::Batches, "batch") => vec!["id".to_owned()],
        _ => dotted(field),
    };
    let mut wanted = Vec::new();
    let mut refused = Vec::new();
    for item in value.split(',').filter(|v| !v.is_empty()) {
        match item.strip_prefix('!') {
            Some(not) => refused.push(not.to_owned()),
            None => wanted.push(item.to_owned()),
        }
    }
    if wanted.is_empty() && refused.is_empty() {
        return Err(ApiError::bad_request(format!(
            "filter {field}= has no value: give one or more, comma-separated (! to exclude)"
        )));
    }
    Ok(Filter::Values {
        path,
        wanted,
        refused,
    })
}

/// `property=` conditions.
fn property(value: &str) -> ApiResult<Filter> {
    for (token, op) in [
        ("==", Some(Op::Eq)),
        ("!=", Some(Op::Ne)),
        ("<=", Some(Op::Le)),
        (">=", Some(Op::Ge)),
        ("<", Some(Op::Lt)),
        (">", Some(Op::Gt)),
        ("~", None),
    ] {
        let Some((field, operand)) = value.split_once(token) else {
            continue;
        };
        if field.is_empty() {
            break;
        }
        let path = dotted(field);
        return Ok(match op {
            Some(op) => Filter::Compare {
                path,
                op,
                value: operand.to_owned(),
            },
            None => Filter::Matches {
                path,
                regex: Box::new(Regex::new(operand).map_err(|e| {
                    ApiError::bad_request(format!(
                        "property {value:?}: {operand:?} is not a regular expression the emulator can use ({e})"
                    ))
                })?),
            },
        });
    }
    match value.strip_prefix('!') {
        Some(field) if !field.is_empty() => Ok(Filter::Exists {
            path: dotted(field),
            present: false,
        }),
        None if !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b)) =>
        {
            Ok(Filter::Exists {
                path: dotted(value),
                present: true,
            })
        }
        _ => Err(ApiError::bad_request(format!(
            "property {value:?} is not a condition the Catalog takes: FIELD, !FIELD, or FIELD \
             followed by ==, !=, <, <=, >, >= or ~ (regex) and a value"
        ))),
    }
}

fn dotted(field: &str) -> Vec<String> {
    field.split('.').map(str::to_owned).collect()
}

/// The value at a dotted path; `$dataSet` is a batch's related dataset id.
fn lookup<'v>(object: &'v Value, path: &[String]) -> &'v Value {
    if path.len() == 1 && path[0] == "$dataSet" {
        return object["relatedObjects"]
            .as_array()
            .and_then(|related| related.iter().find(|r| r["type"] == "dataSet"))
            .map(|r| &r["id"])
            .unwrap_or(&Value::Null);
    }
    path.iter().fold(object, |value, key| &value[key.as_str()])
}

/// A value as the text a query compares it with.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Numbers by value, everything else by text; absent values first.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => text(a).cmp(&text(b)),
    }
}

/// A field's value against a query's text: as numbers when both are, else as text.
fn compare_text(value: &Value, operand: &str) -> Option<Ordering> {
    match (value.as_f64(), operand.parse::<f64>()) {
        (Some(x), Ok(y)) => x.partial_cmp(&y),
        _ => text(value).map(|t| t.as_str().cmp(operand)),
    }
}

/// Whether `value` matches `pattern`, where `*` stands for any run of characters.
fn wildcard(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || !value.ends_with(last) || value.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl Filter {
    fn accepts(&self, object: &Value) -> bool {
        match self {
            Filter::Values {
                path,
                wanted,
                refused,
            } => {
                let value = text(lookup(object, path));
                let value = value.as_deref();
                (wanted.is_empty() || value.is_some_and(|v| wanted.iter().any(|w| w == v)))
                    && !value.is_some_and(|v| refused.iter().any(|r| r == v))
            }
            Filter::Compare { path, op, value } => {
                let field = lookup(object, path);
                if field.is_null() {
                    return matches!(op, Op::Ne);
                }
                let Some(ordering) = compare_text(field, value) else {
                    return false;
                };
                match op {
                    Op::Eq => ordering.is_eq(),
                    Op::Ne => ordering.is_ne(),
                    Op::Lt => ordering.is_lt(),
                    Op::Le => ordering.is_le(),
                    Op::Gt => ordering.is_gt(),
                    Op::Ge => ordering.is_ge(),
                }
            }
            Filter::Matches { path, regex } => {
                text(lookup(object, path)).is_some_and(|t| regex.is_match(t.as_bytes()))
            }
            Filter::Exists { path, present } => lookup(object, path).is_null() != *present,
            Filter::Tag { namespace, value } => object["tags"][namespace.as_str()]
                .as_array()
                .is_some_and(|values| {
                    values
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|v| wildcard(value, v))
                }),
            Filter::Time { field, after, at } => match object[*field].as_i64() {
                Some(t) if *after => t > *at,
                Some(t) => t < *at,
                None => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(query: &str, collection: Collection, objects: &[Value]) -> Vec<String> {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let objects = objects
            .iter()
            .map(|o| (o["id"].as_str().unwrap().to_owned(), o.clone()))
            .collect();
        CatalogQuery::parse(&pairs, collection)
            .unwrap()
            .apply(objects)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    fn batches() -> Vec<Value> {
        vec![
            json!({"id": "a", "status": "success", "created": 1, "updated": 9, "createdUser": "u1",
                   "relatedObjects": [{"type": "dataSet", "id": "D1"}],
                   "metrics": {"inputRecordCount": 10}, "tags": {"acp_successor": ["b"]}}),
            json!({"id": "b", "status": "failed", "created": 2, "updated": 8, "createdUser": "u2",
                   "relatedObjects": [{"type": "dataSet", "id": "D2"}],
                   "metrics": {"inputRecordCount": 5}}),
            json!({"id": "c", "status": "success", "created": 3, "updated": 8, "createdUser": "u1",
                   "relatedObjects": [{"type": "dataSet", "id": "D1"}],
                   "tags": {"acp_note": ["first-run"]}}),
        ]
    }

    #[test]
    fn simple_filters_take_lists_and_negations_on_any_field() {
        let b = batches();
        assert_eq!(run("status=success", Collection::Batches, &b), ["c", "a"]);
        assert_eq!(run("status=!success", Collection::Batches, &b), ["b"]);
        assert_eq!(
            run("createdUser=u2,u1&status=!failed", Collection::Batches, &b),
            ["c", "a"]
        );
        assert_eq!(run("dataSet=D2", Collection::Batches, &b), ["b"]);
        assert_eq!(
            run("batch=a,c&orderBy=created", Collection::Batches, &b),
            ["a", "c"]
        );
        assert!(run("nosuchfield=x", Collection::Batches, &b).is_empty());
    }

    #[test]
    fn property_conditions_compare_numbers_by_value_and_text_by_regex() {
        let b = batches();
        assert_eq!(
            run(
                "property=created>1&orderBy=asc:created",
                Collection::Batches,
                &b
            ),
            ["b", "c"]
        );
        assert_eq!(
            run(
                "property=metrics.inputRecordCount>=6",
                Collection::Batches,
                &b
            ),
            ["a"]
        );
        assert_eq!(
            run("property=status==failed", Collection::Batches, &b),
            ["b"]
        );
        assert_eq!(
            run(
                "property=status!=failed&property=created<3",
                Collection::Batches,
                &b
            ),
            ["a"]
        );
        assert_eq!(
            run("property=createdUser~2$", Collection::Batches, &b),
            ["b"]
        );
        assert_eq!(run("property=metrics", Collection::Batches, &b), ["b", "a"]);
        assert_eq!(run("property=!metrics", Collection::Batches, &b), ["c"]);
    }

    #[test]
    fn tags_match_with_wildcards_and_all_must_hold() {
        let b = batches();
        assert_eq!(run("tags=acp_successor:*", Collection::Batches, &b), ["a"]);
        assert_eq!(run("tags=acp_note:first*", Collection::Batches, &b), ["c"]);
        assert_eq!(run("tags=acp_note:*run", Collection::Batches, &b), ["c"]);
        assert!(run("tags=acp_note:second*", Collection::Batches, &b).is_empty());
        assert!(run("tags=acp_note:*,acp_successor:*", Collection::Batches, &b).is_empty());
    }

    #[test]
    fn order_by_several_fields_then_pages() {
        let b = batches();
        assert_eq!(
            run("orderBy=desc:updated,asc:created", Collection::Batches, &b),
            ["a", "b", "c"]
        );
        assert_eq!(
            run("orderBy=desc:updated,created", Collection::Batches, &b),
            ["a", "c", "b"]
        );
        assert_eq!(
            run("orderBy=created&start=1&limit=1", Collection::Batches, &b),
            ["b"]
        );
    }

    #[test]
    fn properties_trim_each_object() {
        let pairs = vec![("properties".to_owned(), "status,created".to_owned())];
        let query = CatalogQuery::parse(&pairs, Collection::Batches).unwrap();
        let got = query.apply(vec![("a".to_owned(), batches()[0].clone())]);
        assert_eq!(got[0].1, json!({"status": "success", "created": 1}));
    }

    #[test]
    fn what_cannot_be_understood_is_refused() {
        for bad in [
            ("property", "=x"),
            ("property", "a b"),
            ("property", "name~("),
            ("orderBy", "sideways:created"),
            ("tags", "nonamespace"),
            ("limit", "0"),
            ("createdAfter", "yesterday"),
            ("status", ","),
        ] {
            let pairs = vec![(bad.0.to_owned(), bad.1.to_owned())];
            assert!(
                CatalogQuery::parse(&pairs, Collection::Batches).is_err(),
                "{bad:?}"
            );
        }
    }
}
