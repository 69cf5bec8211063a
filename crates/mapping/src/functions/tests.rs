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
    assert!(matches!(e, expr::ExprError::BadCall { message, .. } if message.contains("fortnight")));
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
