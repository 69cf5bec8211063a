//! Data Prep's expression language (the `source` of an `EXPRESSION` mapping): parsed once
//! into a tree, evaluated per row.
//!
//! Understood: string literals (`"..."` or `'...'`), numbers, `true`, `false`, `null`, field
//! references (`name.firstName`, `items[0].sku`, `${First Name}`, `${First\.Name}`), function
//! calls with Data Prep's names (see `functions/`), `.equals(...)` and
//! `.equalsIgnoreCase(...)`, `!`/`not`, `&&`/`and`, `||`/`or`, `==`/`eq`, `!=`/`ne`,
//! `<`/`lt`, `<=`/`le`, `>`/`gt`, `>=`/`ge`, `+` (numbers, or text when either side is text),
//! `-`, `*`, `/`/`div`, `%`/`mod`, parentheses and array literals (`['a', 'b']`).
//!
//! Refused at parse time, by name: the ternary `?:` (use `iif`), regex matches (`=~`), bitwise
//! operators, assignments, and the statements of the underlying language (`var`, `if`, `for`,
//! `while`, `new`, `return`...). This module must not evaluate functions (`functions/` does).

use crate::datum::Datum;
use crate::functions::{self, Function, Lookup};
use crate::path::{FieldPath, Segment};

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Literal(Datum<'static>),
    /// A field of the input record, by its index in the mapping set's field table.
    Field(usize),
    Call(Function, Vec<Expr>),
    Method(Box<Expr>, StringMethod, Box<Expr>),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    /// A constant date pattern argument, translated once when the mapping set is loaded.
    Pattern(std::sync::Arc<crate::dates::JavaPattern>),
}

/// The string methods Data Prep documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMethod {
    Equals,
    EqualsIgnoreCase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Why an expression cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprError {
    Syntax(String),
    /// A name that is no Data Prep function.
    UnknownFunction(String),
    /// A Data Prep function batchdrop does not implement.
    UnsupportedFunction(String),
    /// A construct of the language batchdrop does not implement (named).
    Unsupported(String),
    /// A function called with a wrong number of arguments, or a bad constant argument.
    BadCall {
        function: String,
        message: String,
    },
}

/// The index of a field in the mapping set's field table (added if new): a field read by
/// several mappings is read once per row.
pub fn field_id(fields: &mut Vec<FieldPath>, path: FieldPath) -> usize {
    match fields.iter().position(|p| *p == path) {
        Some(i) => i,
        None => {
            fields.push(path);
            fields.len() - 1
        }
    }
}

/// Parses one expression; the fields it reads go into `fields`.
pub fn parse(text: &str, fields: &mut Vec<FieldPath>) -> Result<Expr, ExprError> {
    let tokens = lex(text)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        fields,
    };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(ExprError::Syntax(format!(
            "unexpected {} after a complete expression",
            token.describe()
        ))),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `${...}`: a field name that is not an identifier.
    Wrapped(String),
    Str(String),
    Int(i64),
    Float(f64),
    Sym(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(name) => format!("'{name}'"),
            Token::Wrapped(name) => format!("'${{{name}}}'"),
            Token::Str(s) => format!("the string {s:?}"),
            Token::Int(i) => format!("the number {i}"),
            Token::Float(f) => format!("the number {f}"),
            Token::Sym(s) => format!("'{s}'"),
        }
    }
}

const SYMBOLS: [&str; 27] = [
    "&&", "||", "==", "!=", "<=", ">=", "=~", "!~", "?:", "(", ")", "[", "]", ",", ".", "!", "<",
    ">", "+", "-", "*", "/", "%", "?", ":", "=", "&",
];

fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '$' && chars.get(i + 1) == Some(&'{') {
            let mut name = String::new();
            let mut j = i + 2;
            loop {
                match chars.get(j) {
                    None => {
                        return Err(ExprError::Syntax(format!(
                            "'${{' at character {} is never closed with '}}'",
                            i + 1
                        )));
                    }
                    Some('}') => break,
                    Some('\\') if chars.get(j + 1).is_some() => {
                        // Kept: the path parser reads `\.` as a dot inside the name.
                        name.push('\\');
                        name.push(chars[j + 1]);
                        j += 2;
                    }
                    Some(&ch) => {
                        name.push(ch);
                        j += 1;
                    }
                }
            }
            tokens.push(Token::Wrapped(name));
            i = j + 1;
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(chars.get(i), Some('e' | 'E'))
                && (chars.get(i + 1).is_some_and(char::is_ascii_digit)
                    || (matches!(chars.get(i + 1), Some('+' | '-'))
                        && chars.get(i + 2).is_some_and(char::is_ascii_digit)))
            {
                float = true;
                i += 2;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let literal: String = chars[start..i].iter().collect();
            let token =
                if float {
                    Token::Float(
                        literal
                            .parse()
                            .map_err(|_| ExprError::Syntax(format!("{literal} is not a number")))?,
                    )
                } else {
                    match literal.parse::<i64>() {
                        Ok(n) => Token::Int(n),
                        Err(_) => Token::Float(literal.parse().map_err(|_| {
                            ExprError::Syntax(format!("{literal} is not a number"))
                        })?),
                    }
                };
            tokens.push(token);
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => {
                        return Err(ExprError::Syntax(format!(
                            "the string starting at character {} is never closed with {c}",
                            i + 1
                        )));
                    }
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        let escaped = chars.get(j + 1).copied().ok_or_else(|| {
                            ExprError::Syntax("a string ends with a lone backslash".into())
                        })?;
                        j += 2;
                        match escaped {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            'r' => s.push('\r'),
                            'u' => {
                                let hex: String =
                                    chars.get(j..j + 4).unwrap_or(&[]).iter().collect();
                                let code = u32::from_str_radix(&hex, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| {
                                        ExprError::Syntax(format!("\\u{hex} is not a character"))
                                    })?;
                                s.push(code);
                                j += 4;
                            }
                            // `\"`, `\'`, `\\`, and a regex-style `\|` keep the character.
                            other => s.push(other),
                        }
                    }
                    Some(&ch) => {
                        s.push(ch);
                        j += 1;
                    }
                }
            }
            tokens.push(Token::Str(s));
            i = j + 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) else {
                return Err(ExprError::Syntax(format!(
                    "unexpected character {c:?} at character {}",
                    i + 1
                )));
            };
            tokens.push(Token::Sym(sym));
            i += sym.chars().count();
        }
    }
    Ok(tokens)
}

struct Parser<'f> {
    tokens: Vec<Token>,
    at: usize,
    fields: &'f mut Vec<FieldPath>,
}

/// Words of the underlying language that start statements, which mappings cannot use.
const STATEMENTS: [&str; 9] = [
    "var", "if", "else", "for", "while", "break", "continue", "return", "new",
];

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if self.peek() == Some(&Token::Sym(match_sym(sym))) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &str, context: &str) -> Result<(), ExprError> {
        if self.eat_sym(sym) {
            return Ok(());
        }
        Err(ExprError::Syntax(match self.peek() {
            Some(t) => format!("expected '{sym}' {context}, found {}", t.describe()),
            None => format!("expected '{sym}' {context}, found the end of the expression"),
        }))
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat_sym("||") || self.eat_word("or") {
            let right = self.and()?;
            left = Expr::Binary(BinaryOp::Or, Box::new(left), Box::new(right));
        }
        self.refuse_trailing_operators()?;
        Ok(left)
    }

    fn refuse_trailing_operators(&self) -> Result<(), ExprError> {
        match self.peek() {
            Some(Token::Sym("?" | "?:")) => Err(ExprError::Unsupported(
                "the conditional operator '? :' (use iif(CONDITION, TRUE_VALUE, FALSE_VALUE))"
                    .into(),
            )),
            Some(Token::Sym("=~" | "!~")) => Err(ExprError::Unsupported(
                "regular-expression matching ('=~', '!~')".into(),
            )),
            Some(Token::Sym("=")) => Err(ExprError::Unsupported(
                "assignment ('='); to compare, write '=='".into(),
            )),
            Some(Token::Sym("&")) => Err(ExprError::Unsupported(
                "bitwise operators; for a logical and, write '&&'".into(),
            )),
            _ => Ok(()),
        }
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.equality()?;
        while self.eat_sym("&&") || self.eat_word("and") {
            let right = self.equality()?;
            left = Expr::Binary(BinaryOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.comparison()?;
        loop {
            let op = if self.eat_sym("==") || self.eat_word("eq") {
                BinaryOp::Eq
            } else if self.eat_sym("!=") || self.eat_word("ne") {
                BinaryOp::Ne
            } else {
                return Ok(left);
            };
            let right = self.comparison()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.additive()?;
        loop {
            let op = if self.eat_sym("<=") || self.eat_word("le") {
                BinaryOp::Le
            } else if self.eat_sym(">=") || self.eat_word("ge") {
                BinaryOp::Ge
            } else if self.eat_sym("<") || self.eat_word("lt") {
                BinaryOp::Lt
            } else if self.eat_sym(">") || self.eat_word("gt") {
                BinaryOp::Gt
            } else {
                return Ok(left);
            };
            let right = self.additive()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn additive(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.eat_sym("+") {
                BinaryOp::Add
            } else if self.eat_sym("-") {
                BinaryOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                BinaryOp::Mul
            } else if self.eat_sym("/") || self.eat_word("div") {
                BinaryOp::Div
            } else if self.eat_sym("%") || self.eat_word("mod") {
                BinaryOp::Rem
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat_sym("!") || self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("-") {
            return Ok(match self.unary()? {
                Expr::Literal(Datum::Int(i)) => Expr::Literal(Datum::Int(-i)),
                Expr::Literal(Datum::Float(f)) => Expr::Literal(Datum::Float(-f)),
                other => Expr::Negate(Box::new(other)),
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let mut expr = self.primary()?;
        while self.eat_sym(".") {
            let Some(Token::Ident(name)) = self.next() else {
                return Err(ExprError::Syntax("expected a method name after '.'".into()));
            };
            if !self.eat_sym("(") {
                return Err(ExprError::Unsupported(format!(
                    "reading the field '{name}' of a computed value (a field path is written whole: a.b.c)"
                )));
            }
            let method = match name.as_str() {
                "equals" => StringMethod::Equals,
                "equalsIgnoreCase" => StringMethod::EqualsIgnoreCase,
                other => {
                    return Err(ExprError::Unsupported(format!(
                        "the method .{other}() (supported: .equals(), .equalsIgnoreCase())"
                    )));
                }
            };
            let mut args = self.arguments()?;
            if args.len() != 1 {
                return Err(ExprError::BadCall {
                    function: name,
                    message: format!("takes 1 argument, {} given", args.len()),
                });
            }
            expr = Expr::Method(Box::new(expr), method, Box::new(args.remove(0)));
        }
        Ok(expr)
    }

    /// After '(': the arguments up to ')'.
    fn arguments(&mut self) -> Result<Vec<Expr>, ExprError> {
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.or()?);
            if self.eat_sym(")") {
                return Ok(args);
            }
            self.expect_sym(",", "between arguments")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let Some(token) = self.next() else {
            return Err(ExprError::Syntax(
                "the expression ends where a value was expected".into(),
            ));
        };
        match token {
            Token::Str(s) => Ok(Expr::Literal(Datum::Str(s.into()))),
            Token::Int(i) => Ok(Expr::Literal(Datum::Int(i))),
            Token::Float(f) => Ok(Expr::Literal(Datum::Float(f))),
            Token::Sym("(") => {
                let inner = self.or()?;
                self.expect_sym(")", "to close '('")?;
                Ok(inner)
            }
            Token::Sym("[") => {
                let mut items = Vec::new();
                if !self.eat_sym("]") {
                    loop {
                        items.push(self.or()?);
                        if self.eat_sym("]") {
                            break;
                        }
                        self.expect_sym(",", "between array items")?;
                    }
                }
                Ok(Expr::List(items))
            }
            Token::Wrapped(name) => {
                let path = FieldPath::parse(&name)
                    .map_err(|e| ExprError::Syntax(format!("in '${{{name}}}': {e}")))?;
                self.field_path(path.segments)
            }
            Token::Ident(word) => self.word(word),
            Token::Sym(sym) => {
                self.at -= 1;
                self.refuse_trailing_operators()?;
                Err(ExprError::Syntax(format!(
                    "unexpected '{sym}' where a value was expected"
                )))
            }
        }
    }

    fn word(&mut self, word: String) -> Result<Expr, ExprError> {
        match word.as_str() {
            "true" => return Ok(Expr::Literal(Datum::Bool(true))),
            "false" => return Ok(Expr::Literal(Datum::Bool(false))),
            "null" => return Ok(Expr::Literal(Datum::Null)),
            w if STATEMENTS.contains(&w) => {
                return Err(ExprError::Unsupported(format!(
                    "the statement keyword '{w}' (a mapping's expression is a single value)"
                )));
            }
            _ => {}
        }
        if self.eat_sym("(") {
            let function = match functions::lookup(&word) {
                Lookup::Supported(f) => f,
                Lookup::Unsupported => return Err(ExprError::UnsupportedFunction(word)),
                Lookup::Unknown => return Err(ExprError::UnknownFunction(word)),
            };
            let args = self.arguments()?;
            let args =
                functions::prepare_call(function, args).map_err(|message| ExprError::BadCall {
                    function: word.clone(),
                    message,
                })?;
            return Ok(Expr::Call(function, args));
        }
        self.field_path(vec![Segment::Key(word.into())])
    }

    /// The rest of a field path: (.name)*([n])*, stopping before `.method(`.
    fn field_path(&mut self, mut segments: Vec<Segment>) -> Result<Expr, ExprError> {
        loop {
            if self.peek() == Some(&Token::Sym(".")) {
                match (self.tokens.get(self.at + 1), self.tokens.get(self.at + 2)) {
                    (Some(Token::Ident(_)), Some(Token::Sym("("))) => break,
                    (Some(Token::Ident(name)), _) => {
                        segments.push(Segment::Key(name.as_str().into()));
                        self.at += 2;
                    }
                    (Some(Token::Wrapped(name)), _) => {
                        let inner = FieldPath::parse(name)
                            .map_err(|e| ExprError::Syntax(format!("in '${{{name}}}': {e}")))?;
                        segments.extend(inner.segments);
                        self.at += 2;
                    }
                    _ => break,
                }
            } else if self.peek() == Some(&Token::Sym("[")) {
                self.at += 1;
                match self.next() {
                    Some(Token::Int(i)) if i >= 0 => segments.push(Segment::Index(i as usize)),
                    Some(Token::Sym("*")) => {
                        return Err(ExprError::Unsupported(
                            "'[*]' inside an expression (iterate with an ATTRIBUTE mapping: source a[*].b, destination x[*].y)".into(),
                        ));
                    }
                    _ => {
                        return Err(ExprError::Syntax(
                            "expected an array index such as [0] after a field".into(),
                        ));
                    }
                }
                self.expect_sym("]", "to close the array index")?;
            } else {
                break;
            }
        }
        self.field(FieldPath { segments })
    }

    fn field(&mut self, path: FieldPath) -> Result<Expr, ExprError> {
        if path.each_count() > 0 {
            return Err(ExprError::Unsupported(
                "'[*]' inside an expression (iterate with an ATTRIBUTE mapping: source a[*].b, destination x[*].y)".into(),
            ));
        }
        Ok(Expr::Field(field_id(self.fields, path)))
    }
}

/// The `&'static str` of a symbol (tokens compare by value).
fn match_sym(sym: &str) -> &'static str {
    SYMBOLS.iter().find(|s| **s == sym).copied().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with_fields(text: &str) -> (Result<Expr, ExprError>, Vec<FieldPath>) {
        let mut fields: Vec<FieldPath> = Vec::new();
        let r = parse(text, &mut fields);
        (r, fields)
    }

    #[test]
    fn fields_functions_and_operators_parse() {
        let (expr, fields) = parse_with_fields(
            "concat(upper(lastName), ' ', name.first, ${First Name}, ${a\\.b}.c, items[1].sku)",
        );
        let Expr::Call(Function::Concat, args) = expr.unwrap() else {
            panic!("a concat call")
        };
        assert_eq!(args.len(), 6);
        let shown: Vec<String> = fields.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "lastName",
                "name.first",
                "First Name",
                "a\\.b.c",
                "items[1].sku"
            ]
        );
        let (expr, _) =
            parse_with_fields("a == 'x' && not (b > 2 or c le -1.5) || d.equalsIgnoreCase(\"Y\")");
        assert!(matches!(expr.unwrap(), Expr::Binary(BinaryOp::Or, _, _)));
        let (expr, _) = parse_with_fields("1 + 2 * 3");
        let Expr::Binary(BinaryOp::Add, _, right) = expr.unwrap() else {
            panic!("+ binds looser than *")
        };
        assert!(matches!(*right, Expr::Binary(BinaryOp::Mul, _, _)));
        let (expr, _) = parse_with_fields("['a', \"b\\\"c\", 3]");
        let Expr::List(items) = expr.unwrap() else {
            panic!("a list")
        };
        assert!(matches!(&items[1], Expr::Literal(Datum::Str(s)) if s == "b\"c"));
    }

    #[test]
    fn a_field_used_twice_is_one_field() {
        let (_, fields) = parse_with_fields("iif(A == '', B, A)");
        assert_eq!(fields.len(), 2);
    }

    #[test]
    fn unknown_and_unsupported_functions_are_named() {
        let (r, _) = parse_with_fields("concat(frobnicate(a), b)");
        assert_eq!(
            r.unwrap_err(),
            ExprError::UnknownFunction("frobnicate".into())
        );
        let (r, _) = parse_with_fields("explode(a, ',')");
        assert_eq!(
            r.unwrap_err(),
            ExprError::UnsupportedFunction("explode".into())
        );
        let (r, _) = parse_with_fields("upper(a, b)");
        assert!(
            matches!(r.unwrap_err(), ExprError::BadCall { function, .. } if function == "upper")
        );
    }

    #[test]
    fn unsupported_constructs_are_named() {
        for (text, what) in [
            ("a ? b : c", "iif"),
            ("a =~ 'x.*'", "regular-expression"),
            ("var x = 1", "'var'"),
            ("a = 1", "assignment"),
            ("a[*].b", "[*]"),
            ("upper(a).length()", ".length()"),
            ("a & b", "bitwise"),
        ] {
            let (r, _) = parse_with_fields(text);
            match r {
                Err(ExprError::Unsupported(message)) => {
                    assert!(message.contains(what), "{text}: {message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for bad in ["concat(a,", "'open", "a b", "(a", "${a", ")"] {
            let (r, _) = parse_with_fields(bad);
            assert!(matches!(r, Err(ExprError::Syntax(_))), "{bad}: {r:?}");
        }
    }
}
