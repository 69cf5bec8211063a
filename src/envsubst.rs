//! `${VAR}`, `${VAR:-default}` and `${VAR:?message}` in the config file's text, replaced by
//! environment variables before the TOML is parsed (as Vector and Fluent Bit do).
//!
//! This module owns the substitution only: it reads variables through the lookup it is given
//! (never `std::env` itself, so tests need no process-wide state) and knows just enough TOML to
//! leave comments alone and to keep a value inside a quoted string a plain string. It must not
//! parse or validate the configuration (`config` does).

/// Why the text cannot be interpolated. Each names the variable and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error(
        "line {line}: the environment variable {name} is not set: set it, or write ${{{name}:-default}} to give a default"
    )]
    Unset { line: usize, name: String },
    #[error("line {line}: the environment variable {name} is not set or empty: {message}")]
    Required {
        line: usize,
        name: String,
        message: String,
    },
    #[error(
        "line {line}: `${{` opens a variable that is never closed with `}}`: write ${{NAME}}, or $${{ for a literal ${{"
    )]
    Unclosed { line: usize },
    #[error(
        "line {line}: `${{{text}}}` is not a variable: names are letters, digits and `_`, not starting with a digit (write $${{ for a literal ${{)"
    )]
    BadName { line: usize, text: String },
    #[error(
        "line {line}: the value of {name} holds a quote or a line break, which a 'single-quoted' TOML string cannot hold: put ${{{name}}} in \"double quotes\""
    )]
    UnquotableValue { line: usize, name: String },
}

/// Where the scanner is in the TOML text: substitution rules differ inside strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Bare,
    /// `"..."`: the value is escaped so that it stays one string, exactly as it is.
    Basic,
    /// `"""..."""`
    MultiBasic,
    /// `'...'`: no escapes exist, so a value with `'` or a line break is refused.
    Literal,
    /// `'''...'''`
    MultiLiteral,
    /// From `#` to the end of the line: left as written, variables included.
    Comment,
}

/// The text after substitution, and what was substituted (to keep values out of messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    pub text: String,
    /// Each variable used, with its value.
    values: Vec<(String, String)>,
}

/// Values shorter than this are left in messages: they are not secrets, and replacing a short
/// one would mangle unrelated words.
const REDACT_MIN_LEN: usize = 8;

impl Interpolated {
    /// `message` (an error about the substituted text) with every substituted value of at least
    /// 8 characters written back as `${NAME}`: a variable may hold a secret, and a parse error
    /// quotes the line it is on.
    pub fn redact(&self, message: &str) -> String {
        let mut message = message.to_owned();
        let mut values: Vec<&(String, String)> = self
            .values
            .iter()
            .filter(|(_, value)| value.len() >= REDACT_MIN_LEN)
            .collect();
        // Longest first, so a value containing another is replaced whole.
        values.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        for (name, value) in values {
            message = message.replace(value.as_str(), &format!("${{{name}}}"));
        }
        message
    }
}

/// `text` with every `${...}` outside comments replaced using `lookup`; `$${` is a literal
/// `${`. Outside strings a value is inserted as is (so `max_files = ${N}` works).
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolateError> {
    let mut values = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut context = Context::Bare;
    let mut line = 1;
    let mut rest = text;
    while !rest.is_empty() {
        // Variables first: they may appear in any context but comments.
        if context != Context::Comment {
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
                continue;
            }
            if let Some(after) = rest.strip_prefix("${") {
                let end = after.find('}').ok_or(InterpolateError::Unclosed { line })?;
                let expr = &after[..end];
                if expr.contains('\n') {
                    return Err(InterpolateError::Unclosed { line });
                }
                let (name, value) = expand(expr, line, &lookup)?;
                out.push_str(&quote(&value, context, name, line)?);
                values.push((name.to_owned(), value));
                rest = &after[end + 1..];
                continue;
            }
        }
        let (token, next) = step(rest, context);
        context = next;
        line += token.matches('\n').count();
        out.push_str(token);
        rest = &rest[token.len()..];
    }
    Ok(Interpolated { text: out, values })
}

/// The next token of `rest` in `context` (a delimiter, an escape pair, or one character) and
/// the context after it.
fn step(rest: &str, context: Context) -> (&str, Context) {
    let one = &rest[..rest.chars().next().map_or(0, char::len_utf8)];
    match context {
        Context::Bare => {
            for (delim, to) in [
                ("\"\"\"", Context::MultiBasic),
                ("'''", Context::MultiLiteral),
                ("\"", Context::Basic),
                ("'", Context::Literal),
                ("#", Context::Comment),
            ] {
                if rest.starts_with(delim) {
                    return (&rest[..delim.len()], to);
                }
            }
            (one, Context::Bare)
        }
        Context::Basic | Context::MultiBasic if rest.starts_with('\\') => {
            let len = 1 + rest[1..].chars().next().map_or(0, char::len_utf8);
            (&rest[..len], context)
        }
        Context::Basic if one == "\"" || one == "\n" => (one, Context::Bare),
        Context::Literal if one == "'" || one == "\n" => (one, Context::Bare),
        Context::MultiBasic if rest.starts_with("\"\"\"") => (&rest[..3], Context::Bare),
        Context::MultiLiteral if rest.starts_with("'''") => (&rest[..3], Context::Bare),
        Context::Comment if one == "\n" => (one, Context::Bare),
        _ => (one, context),
    }
}

/// `NAME`, `NAME:-default` or `NAME:?message` → the variable's name and its value.
fn expand<'a>(
    expr: &'a str,
    line: usize,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(&'a str, String), InterpolateError> {
    let (name, rule) = match expr.find(':') {
        Some(i) => (&expr[..i], Some(&expr[i..])),
        None => (expr, None),
    };
    let valid = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let bad = || InterpolateError::BadName {
        line,
        text: expr.to_owned(),
    };
    if !valid {
        return Err(bad());
    }
    let value = lookup(name);
    let value = match rule {
        None => value.ok_or_else(|| InterpolateError::Unset {
            line,
            name: name.to_owned(),
        })?,
        Some(rule) => {
            let set = value.filter(|v| !v.is_empty());
            if let Some(default) = rule.strip_prefix(":-") {
                set.unwrap_or_else(|| default.to_owned())
            } else if let Some(message) = rule.strip_prefix(":?") {
                set.ok_or_else(|| InterpolateError::Required {
                    line,
                    name: name.to_owned(),
                    message: if message.is_empty() {
                        format!("set {name}")
                    } else {
                        message.to_owned()
                    },
                })?
            } else {
                return Err(bad());
            }
        }
    };
    Ok((name, value))
}

/// `value` as it must be written in `context` to mean itself.
fn quote(
    value: &str,
    context: Context,
    name: &str,
    line: usize,
) -> Result<String, InterpolateError> {
    match context {
        Context::Basic | Context::MultiBasic => {
            let mut escaped = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '\\' => escaped.push_str("\\\\"),
                    '"' => escaped.push_str("\\\""),
                    '\n' => escaped.push_str("\\n"),
                    '\r' => escaped.push_str("\\r"),
                    '\t' => escaped.push_str("\\t"),
                    c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", u32::from(c))),
                    c => escaped.push(c),
                }
            }
            Ok(escaped)
        }
        Context::Literal | Context::MultiLiteral => {
            if value.contains(['\'', '\n', '\r']) {
                Err(InterpolateError::UnquotableValue {
                    line,
                    name: name.to_owned(),
                })
            } else {
                Ok(value.to_owned())
            }
        }
        Context::Bare | Context::Comment => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn variables_defaults_and_required_values() {
        let vars = env(&[("DATASET", "ds1"), ("EMPTY", ""), ("N", "10")]);
        let text = "dataset = \"${DATASET}\"\nmax_files = ${N}\nsandbox = \"${SANDBOX:-dev}\"\nx = \"${EMPTY:-fallback}\"\ny = \"${EMPTY}\"\n";
        assert_eq!(
            interpolate(text, &vars).unwrap().text,
            "dataset = \"ds1\"\nmax_files = 10\nsandbox = \"dev\"\nx = \"fallback\"\ny = \"\"\n"
        );
        let err = interpolate("a = 1\n\nb = \"${MISSING}\"\n", &vars).unwrap_err();
        assert_eq!(
            err,
            InterpolateError::Unset {
                line: 3,
                name: "MISSING".into()
            }
        );
        assert!(err.to_string().contains("MISSING") && err.to_string().contains("line 3"));
        let err = interpolate("a = 1\nb = \"${EMPTY:?set it to the org}\"", &vars).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: the environment variable EMPTY is not set or empty: set it to the org"
        );
    }

    #[test]
    fn comments_are_left_alone_and_escapes_stay_literal() {
        let vars = env(&[("A", "x")]);
        let text = "# uses ${NOT_SET}\nk = \"# ${A}\" # ${ALSO_NOT_SET}\nm = \"$${A}\"\n";
        assert_eq!(
            interpolate(text, &vars).unwrap().text,
            "# uses ${NOT_SET}\nk = \"# x\" # ${ALSO_NOT_SET}\nm = \"${A}\"\n"
        );
        // A quote inside a string does not end it, so the comment rule does not start there.
        let text = "k = \"a \\\" # ${A}\"\n";
        assert_eq!(
            interpolate(text, &vars).unwrap().text,
            "k = \"a \\\" # x\"\n"
        );
    }

    #[test]
    fn a_value_inside_quotes_stays_one_string() {
        let vars = env(&[("V", "a\"b\\c\nd"), ("Q", "it's")]);
        let text = "k = \"${V}\"\n";
        let out = interpolate(text, &vars).unwrap().text;
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["k"].as_str(), Some("a\"b\\c\nd"));
        let err = interpolate("k = '${Q}'", &vars).unwrap_err();
        assert!(matches!(err, InterpolateError::UnquotableValue { .. }));
        assert!(err.to_string().contains("double quotes"), "{err}");
        let out = interpolate("k = \"\"\"\n${Q}\"\"\"\n", &vars).unwrap().text;
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["k"].as_str(), Some("it's"));
    }

    #[test]
    fn substituted_values_are_kept_out_of_messages() {
        let vars = env(&[("SECRET", "s3cr3t-token-value"), ("SHORT", "prod")]);
        let done = interpolate("a = ${SECRET}\nb = \"${SHORT}\"\n", &vars).unwrap();
        let err = toml::from_str::<toml::Table>(&done.text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s3cr3t-token-value"),
            "the parser quotes it: {err}"
        );
        let redacted = done.redact(&err);
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert!(redacted.contains("${SECRET}"), "{redacted}");
        assert_eq!(
            done.redact("sandbox prod"),
            "sandbox prod",
            "short values stay"
        );
    }

    #[test]
    fn malformed_references_are_refused_with_their_line() {
        let vars = env(&[]);
        assert_eq!(
            interpolate("a = 1\nb = \"${OOPS\"\n", &vars).unwrap_err(),
            InterpolateError::Unclosed { line: 2 }
        );
        assert!(matches!(
            interpolate("b = \"${1X}\"", &vars).unwrap_err(),
            InterpolateError::BadName { line: 1, .. }
        ));
        assert!(matches!(
            interpolate("b = \"${X:=y}\"", &vars).unwrap_err(),
            InterpolateError::BadName { line: 1, .. }
        ));
        assert!(matches!(
            interpolate("b = \"${}\"", &vars).unwrap_err(),
            InterpolateError::BadName { .. }
        ));
        // A lone `$` is just a character.
        assert_eq!(
            interpolate("p = \"a$b\"", &vars).unwrap().text,
            "p = \"a$b\""
        );
    }
}
