//! SCIM filters (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2), parsed into a typed tree.
//!
//! The parser never builds SQL: a parsed [`Filter`] is matched in memory (PATCH value paths) or
//! turned by the resource modules into the store's typed conditions, whose SQL is fixed text with
//! bound parameters.

use std::fmt;

/// Longest filter or path accepted, in bytes: the grammar needs no more, and a bound keeps a
/// hostile query string cheap to refuse.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and value paths: the parser recurses, so the bound keeps
/// its stack small whatever the input.
pub const MAX_DEPTH: usize = 32;

/// An attribute path: an optional schema URN, an attribute, an optional sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A comparison operator: the store's, so a parsed filter needs no mapping to be matched.
pub use crate::store::matching::Cmp as CompareOp;

impl CompareOp {
    fn parse(word: &str) -> Option<CompareOp> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

/// A literal of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
    Null,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches `filter`.
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
    },
}

/// A PATCH operation's `path`: an attribute, optionally narrowed to the values matching a
/// filter, optionally a sub-attribute of those (`emails[type eq "work"].value`).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

/// Why a filter or path does not parse; the message is for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// `.` right after `]`, before a sub-attribute (PATCH paths only).
    Dot,
}

fn err(message: impl Into<String>) -> ParseError {
    ParseError(message.into())
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-' | '$' | '+')
}

fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(err(format!("the filter is longer than {MAX_FILTER_LEN} bytes")));
    }
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '[' => {
                chars.next();
                tokens.push(Token::OpenBracket);
            }
            ']' => {
                chars.next();
                tokens.push(Token::CloseBracket);
                if let Some(&(_, '.')) = chars.peek() {
                    chars.next();
                    tokens.push(Token::Dot);
                }
            }
            '"' => {
                // A JSON string: find its closing quote (skipping escapes), then let serde_json
                // decode the escapes exactly as JSON defines them.
                chars.next();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| err("a string is not closed with `\"`"))?;
                let literal = &text[start..=end];
                let value: String = serde_json::from_str(literal).map_err(|_| err("a string has an invalid escape"))?;
                tokens.push(Token::Str(value));
            }
            c if is_word_char(c) => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(text[start..end].to_owned()));
            }
            other => return Err(err(format!("unexpected character {other:?}"))),
        }
    }
    Ok(tokens)
}

/// Splits `urn:…:User:name.givenName` into its parts and checks the attribute names.
fn attr_path(word: &str) -> Result<AttrPath, ParseError> {
    let (urn, rest) = match word.rfind(':') {
        Some(i) => (Some(word[..i].to_owned()), &word[i + 1..]),
        None => (None, word),
    };
    if let Some(urn) = &urn {
        if !urn.to_ascii_lowercase().starts_with("urn:") {
            return Err(err(format!("`{word}` is not an attribute path")));
        }
    }
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    let name_ok = |n: &str| {
        n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'))
    };
    if !name_ok(attr) || sub.is_some_and(|s| !name_ok(s)) {
        return Err(err(format!("`{word}` is not an attribute path")));
    }
    Ok(AttrPath { urn, attr: attr.to_owned(), sub: sub.map(str::to_owned) })
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(format!("the filter nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// or-expression: the loosest binding.
    fn or(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.and()?;
        while self.peek_keyword("or") {
            self.next();
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.unary()?;
        while self.peek_keyword("and") {
            self.next();
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        self.deeper()?;
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Filter, ParseError> {
        match self.next() {
            Some(Token::Open) => self.group(),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("not") && self.peek() == Some(&Token::Open) => {
                self.next();
                Ok(Filter::Not(Box::new(self.group()?)))
            }
            Some(Token::Word(w)) => {
                let path = attr_path(&w)?;
                match self.next() {
                    Some(Token::OpenBracket) => {
                        if path.sub.is_some() {
                            return Err(err(format!("`{w}[…]`: a value filter applies to an attribute")));
                        }
                        let filter = self.or()?;
                        if self.next() != Some(Token::CloseBracket) {
                            return Err(err("a value filter `[` is not closed with `]`"));
                        }
                        Ok(Filter::ValuePath { attr: path, filter: Box::new(filter) })
                    }
                    Some(Token::Word(op)) if op.eq_ignore_ascii_case("pr") => Ok(Filter::Present(path)),
                    Some(Token::Word(op)) => {
                        let op =
                            CompareOp::parse(&op).ok_or_else(|| err(format!("`{op}` is not a comparison operator")))?;
                        let value = self.value()?;
                        Ok(Filter::Compare { path, op, value })
                    }
                    _ => Err(err(format!("`{w}` must be followed by an operator"))),
                }
            }
            Some(other) => Err(err(format!("unexpected {}", describe(&other)))),
            None => Err(err("the filter ends where an expression was expected")),
        }
    }

    fn group(&mut self) -> Result<Filter, ParseError> {
        let inner = self.or()?;
        match self.next() {
            Some(Token::Close) => Ok(inner),
            _ => Err(err("`(` is not closed with `)`")),
        }
    }

    fn value(&mut self) -> Result<CompValue, ParseError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(CompValue::Str(s)),
            Some(Token::Word(w)) => match w.as_str() {
                "true" => Ok(CompValue::Bool(true)),
                "false" => Ok(CompValue::Bool(false)),
                "null" => Ok(CompValue::Null),
                number => match serde_json::from_str::<serde_json::Value>(number) {
                    Ok(serde_json::Value::Number(n)) => Ok(CompValue::Num(n)),
                    _ => Err(err(format!("`{w}` is not a value (strings are written in double quotes)"))),
                },
            },
            Some(other) => Err(err(format!("expected a value, found {}", describe(&other)))),
            None => Err(err("the filter ends where a value was expected")),
        }
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("`{w}`"),
        Token::Str(_) => "a string".into(),
        Token::Open => "`(`".into(),
        Token::Close => "`)`".into(),
        Token::OpenBracket => "`[`".into(),
        Token::CloseBracket => "`]`".into(),
        Token::Dot => "`.`".into(),
    }
}

/// Parses a `filter` query parameter.
pub fn parse_filter(text: &str) -> Result<Filter, ParseError> {
    let mut parser = Parser { tokens: tokenize(text)?, at: 0, depth: 0 };
    let filter = parser.or()?;
    match parser.next() {
        None => Ok(filter),
        Some(extra) => Err(err(format!("unexpected {} after a complete expression", describe(&extra)))),
    }
}

/// Parses a PATCH operation's `path`.
pub fn parse_path(text: &str) -> Result<PatchPath, ParseError> {
    let mut parser = Parser { tokens: tokenize(text)?, at: 0, depth: 0 };
    let Some(Token::Word(word)) = parser.next() else { return Err(err("a path starts with an attribute name")) };
    let attr = attr_path(&word)?;
    let mut path = PatchPath { attr, filter: None, sub: None };
    if parser.peek() == Some(&Token::OpenBracket) {
        if path.attr.sub.is_some() {
            return Err(err(format!("`{word}[…]`: a value filter applies to an attribute")));
        }
        parser.next();
        path.filter = Some(parser.or()?);
        if parser.next() != Some(Token::CloseBracket) {
            return Err(err("a value filter `[` is not closed with `]`"));
        }
        if parser.peek() == Some(&Token::Dot) {
            parser.next();
            match parser.next() {
                Some(Token::Word(sub)) if !sub.contains([':', '.']) => {
                    attr_path(&sub)?;
                    path.sub = Some(sub);
                }
                _ => return Err(err("`].` must be followed by a sub-attribute name")),
            }
        }
    }
    match parser.next() {
        None => Ok(path),
        Some(extra) => Err(err(format!("unexpected {} in the path", describe(&extra)))),
    }
}

/// Whether a JSON value (one value of a multi-valued attribute, or a whole resource) matches a
/// filter. Attribute names match case-insensitively; strings compare case-insensitively unless
/// `case_exact` says the attribute is case-exact.
pub fn matches(filter: &Filter, value: &serde_json::Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
    match filter {
        Filter::And(a, b) => matches(a, value, case_exact) && matches(b, value, case_exact),
        Filter::Or(a, b) => matches(a, value, case_exact) || matches(b, value, case_exact),
        Filter::Not(a) => !matches(a, value, case_exact),
        Filter::Present(path) => lookup(value, path)
            .iter()
            .any(|v| !v.is_null() && v.as_str() != Some("") && v.as_array().is_none_or(|a| !a.is_empty())),
        Filter::Compare { path, op, value: literal } => {
            let exact = case_exact(path);
            lookup(value, path).iter().any(|v| compare(v, *op, literal, exact))
        }
        Filter::ValuePath { attr, filter } => lookup(value, attr).iter().any(|v| match v {
            serde_json::Value::Array(items) => items.iter().any(|i| matches(filter, i, case_exact)),
            other => matches(filter, other, case_exact),
        }),
    }
}

fn get_ci<'v>(object: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    object.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// The values a path names in `value` (sub-attributes of every element of a multi-valued one).
fn lookup<'v>(value: &'v serde_json::Value, path: &AttrPath) -> Vec<&'v serde_json::Value> {
    let Some(top) = get_ci(value, &path.attr) else { return Vec::new() };
    match &path.sub {
        None => vec![top],
        Some(sub) => match top {
            serde_json::Value::Array(items) => items.iter().filter_map(|i| get_ci(i, sub)).collect(),
            other => get_ci(other, sub).into_iter().collect(),
        },
    }
}

fn compare(actual: &serde_json::Value, op: CompareOp, literal: &CompValue, exact: bool) -> bool {
    use serde_json::Value;
    match (actual, literal) {
        (Value::Array(items), _) => items.iter().any(|i| compare(i, op, literal, exact)),
        (Value::String(a), CompValue::Str(b)) => {
            let (a, b) = if exact { (a.clone(), b.clone()) } else { (a.to_lowercase(), b.to_lowercase()) };
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
            }
        }
        (Value::Bool(a), CompValue::Bool(b)) => match op {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            _ => false,
        },
        (Value::Number(a), CompValue::Num(b)) => {
            let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) else { return false };
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
                _ => false,
            }
        }
        (Value::Null, CompValue::Null) => op == CompareOp::Eq,
        (_, CompValue::Null) => op == CompareOp::Ne,
        _ => op == CompareOp::Ne,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(attr: &str) -> AttrPath {
        AttrPath { urn: None, attr: attr.into(), sub: None }
    }

    #[test]
    fn okta_and_entra_lookups_parse_into_comparisons() {
        assert_eq!(
            parse_filter(r#"userName eq "ada@example.com""#),
            Ok(Filter::Compare {
                path: path("userName"),
                op: CompareOp::Eq,
                value: CompValue::Str("ada@example.com".into())
            })
        );
        let both = parse_filter(r#"externalId EQ "e1" AND userName eq "u""#).expect("and");
        assert!(matches!(both, Filter::And(_, _)), "{both:?}");
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_override() {
        let f = parse_filter(r#"a eq "1" or b eq "2" and c eq "3""#).expect("parse");
        let Filter::Or(_, right) = f else { panic!("{f:?}") };
        assert!(matches!(*right, Filter::And(_, _)));
        let f = parse_filter(r#"(a eq "1" or b eq "2") and c eq "3""#).expect("parse");
        assert!(matches!(f, Filter::And(_, _)), "{f:?}");
    }

    #[test]
    fn urns_sub_attributes_and_value_paths_parse() {
        let f = parse_filter(r#"urn:ietf:params:scim:schemas:core:2.0:User:name.givenName sw "A""#).expect("urn");
        let Filter::Compare { path, .. } = f else { panic!() };
        assert_eq!(path.urn.as_deref(), Some("urn:ietf:params:scim:schemas:core:2.0:User"));
        assert_eq!((path.attr.as_str(), path.sub.as_deref()), ("name", Some("givenName")));
        let f = parse_filter(r#"emails[type eq "work" and value co "@example.com"]"#).expect("value path");
        assert!(matches!(f, Filter::ValuePath { .. }));
        assert!(matches!(parse_filter("title pr"), Ok(Filter::Present(_))));
        assert!(matches!(parse_filter(r#"not (active eq true)"#), Ok(Filter::Not(_))));
    }

    #[test]
    fn malformed_filters_are_errors_not_panics() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName eq "x"#,
            r#"userName xx "x""#,
            r#"userName eq x"#,
            r#"(userName eq "x""#,
            r#"userName eq "x")"#,
            r#"userName eq "x" and"#,
            r#"emails[value eq "x""#,
            r#"1abc eq "x""#,
            r#"userName eq "x" userName"#,
            r#"userName eq "\q""#,
            "'; DROP TABLE users; --",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?} parsed");
        }
        let deep = format!("{}a pr{}", "(".repeat(1000), ")".repeat(1000));
        assert!(parse_filter(&deep).unwrap_err().0.contains("deeper"));
        assert!(parse_filter(&"a".repeat(MAX_FILTER_LEN + 1)).is_err());
    }

    #[test]
    fn patch_paths_with_value_filters_and_sub_attributes_parse() {
        let p = parse_path(r#"members[value eq "usr_1"]"#).expect("members");
        assert_eq!(p.attr, path("members"));
        assert!(p.filter.is_some() && p.sub.is_none());
        let p = parse_path(r#"emails[type eq "work"].value"#).expect("sub");
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert_eq!(parse_path("active").expect("plain").attr, path("active"));
        for bad in ["", "[", "members[", "members]", "emails[type eq \"w\"].", "a b", "members[value eq \"x\"] x"] {
            assert!(parse_path(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn value_filters_match_in_memory_case_insensitively_unless_case_exact() {
        let member = json!({"value": "usr_ABC", "display": "Ada"});
        let f = parse_filter(r#"value eq "usr_abc""#).expect("parse");
        assert!(matches(&f, &member, &|_| false));
        assert!(!matches(&f, &member, &|_| true));
        let user = json!({"emails": [{"value": "a@x.org", "type": "work"}, {"value": "b@y.org"}]});
        let f = parse_filter(r#"emails[type eq "work" and value ew "X.ORG"]"#).expect("parse");
        assert!(matches(&f, &user, &|_| false));
        assert!(matches(&parse_filter("emails.value pr").expect("pr"), &user, &|_| false));
    }

    proptest::proptest! {
        /// Whatever the text, parsing answers Ok or Err: no panic, no overflow.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = parse_filter(&text);
            let _ = parse_path(&text);
        }

        /// Token soup close to the grammar reaches the parser's deeper branches.
        #[test]
        fn token_soup_never_panics(parts in proptest::collection::vec(proptest::sample::select(vec![
            "userName", "eq", "and", "or", "not", "(", ")", "[", "]", "].", "\"x\"", "pr", "true", "12", "emails",
            "value", "urn:ietf:params:scim:schemas:core:2.0:User:name.givenName", "\"\\u00e9\"", " ", "co", "\"",
        ]), 0..40)) {
            let text = parts.join(" ");
            let _ = parse_filter(&text);
            let _ = parse_path(&text);
            let _ = parse_path(&parts.concat());
        }
    }
}
