//! Consumer group filters: which messages a group receives, decided at put time from the
//! message's custom properties (never its body).
//!
//! OCI documents only examples (`:region`, `:type = "order"`, numeric comparisons, AND,
//! OR, NOT, parentheses), so Berth defines the grammar:
//!
//! ```text
//! filter  = [ or ]                       empty: every message
//! or      = and { "OR" and }
//! and     = unary { "AND" unary }
//! unary   = "NOT" unary | "(" or ")" | test
//! test    = key [ op literal ]           a key alone: the property is present
//! key     = ":" name                     name: 1–128 of A–Z a–z 0–9 _ - .
//! op      = "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! literal = string | number              string: "…" or '…', \ escapes the next char
//!                                        number: [-]digits[.digits][e[±]digits]
//! ```
//!
//! Keywords are case-insensitive; AND binds tighter than OR. A comparison is true only when
//! the property is present: against a string it compares the text (`<`, `>` by code
//! point), against a number it compares numerically and is false for a value that is not
//! a number. NOT negates, so `NOT :k = "x"` also matches messages without `k`.
//! Filters are parsed when a group is created or updated, so a put only evaluates them.

use std::collections::BTreeMap;
use std::fmt;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of NOT and parentheses (parsing recurses that deep).
const MAX_DEPTH: usize = 32;
/// Longest property name (as for custom properties).
const MAX_KEY_BYTES: usize = crate::limits::MAX_PROPERTY_KEY_BYTES;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// The property is present.
    Has(String),
    /// The property is present and compares so with the literal.
    Compare {
        /// The property.
        key: String,
        /// How it compares.
        op: Op,
        /// With what.
        value: Literal,
    },
    /// The inner filter does not hold.
    Not(Box<Filter>),
    /// Every one holds (two or more).
    And(Vec<Filter>),
    /// At least one holds (two or more).
    Or(Vec<Filter>),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// What a property is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string, compared as text.
    Text(String),
    /// A number, compared numerically.
    Number(f64),
}

/// Why a filter does not parse: what was expected where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: at character {position}: {message}")]
pub struct FilterError {
    /// 1-based character position in the filter.
    pub position: usize,
    /// What was wrong there.
    pub message: String,
}

/// Parses a filter; `None` for an empty one (every message).
///
/// # Errors
/// Where the filter departs from the grammar, or it is too long or too deep.
pub fn parse(text: &str) -> Result<Option<Filter>, FilterError> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(FilterError { position: 1, message: format!("longer than {MAX_FILTER_BYTES} bytes") });
    }
    let tokens = tokens(text)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser { text, tokens, next: 0 };
    let filter = parser.or(0)?;
    match parser.tokens.get(parser.next) {
        None => Ok(Some(filter)),
        Some(extra) => Err(parser.error_at(extra.at, "expected AND, OR or the end of the filter")),
    }
}

impl Filter {
    /// Whether a message with these custom properties passes.
    pub fn matches(&self, properties: Option<&BTreeMap<String, String>>) -> bool {
        let get = |key: &str| properties.and_then(|p| p.get(key));
        match self {
            Filter::Has(key) => get(key).is_some(),
            Filter::Compare { key, op, value } => get(key).is_some_and(|found| op.holds(compare(found, value))),
            Filter::Not(inner) => !inner.matches(properties),
            Filter::And(all) => all.iter().all(|f| f.matches(properties)),
            Filter::Or(any) => any.iter().any(|f| f.matches(properties)),
        }
    }
}

/// How a property's value compares with a literal; `None` if they cannot be compared.
fn compare(found: &str, literal: &Literal) -> Option<std::cmp::Ordering> {
    match literal {
        Literal::Text(text) => Some(found.cmp(text.as_str())),
        Literal::Number(number) => number_of(found).and_then(|found| found.partial_cmp(number)),
    }
}

/// A property value read as a number, with the literal's syntax (so "5.0" = 5).
fn number_of(text: &str) -> Option<f64> {
    let end = number_end(text.as_bytes(), 0)?;
    (end == text.len()).then(|| text.parse().ok()).flatten()
}

impl Op {
    fn holds(self, ordering: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let Some(ordering) = ordering else { return false };
        match self {
            Op::Eq => ordering == Equal,
            Op::Ne => ordering != Equal,
            Op::Lt => ordering == Less,
            Op::Le => ordering != Greater,
            Op::Gt => ordering == Greater,
            Op::Ge => ordering != Less,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// The canonical text of a filter: it parses back to the same filter.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Operands of AND and OR are parenthesized when they are ORs or ANDs themselves.
        let operand = |f: &mut fmt::Formatter<'_>, inner: &Filter| match inner {
            Filter::And(_) | Filter::Or(_) => write!(f, "({inner})"),
            _ => write!(f, "{inner}"),
        };
        match self {
            Filter::Has(key) => write!(f, ":{key}"),
            Filter::Compare { key, op, value } => write!(f, ":{key} {} {value}", op.as_str()),
            Filter::Not(inner) => {
                write!(f, "NOT ")?;
                operand(f, inner)
            }
            Filter::And(all) | Filter::Or(all) => {
                let joiner = if matches!(self, Filter::And(_)) { " AND " } else { " OR " };
                for (i, inner) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str(joiner)?;
                    }
                    operand(f, inner)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Number(n) => write!(f, "{n:?}"),
            Literal::Text(text) => {
                f.write_str("\"")?;
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Key(String),
    Op(Op),
    Literal(Literal),
    And,
    Or,
    Not,
    Open,
    Close,
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    /// Byte offset in the filter.
    at: usize,
}

fn error(text: &str, at: usize, message: impl Into<String>) -> FilterError {
    FilterError { position: text[..at.min(text.len())].chars().count() + 1, message: message.into() }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Where a number starting at `at` ends, if one starts there.
fn number_end(bytes: &[u8], at: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let mut i = at + usize::from(bytes.get(at) == Some(&b'-'));
    i = digits(i)?;
    if bytes.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        i = digits(i + 1 + sign)?;
    }
    Some(i)
}

fn tokens(text: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at = i;
        let c = bytes[i];
        let kind = match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b':' => {
                i += 1;
                while bytes.get(i).copied().is_some_and(is_name_byte) {
                    i += 1;
                }
                let name = &text[at + 1..i];
                if name.is_empty() {
                    return Err(error(text, at, "expected a property name after ':'"));
                }
                if name.len() > MAX_KEY_BYTES {
                    return Err(error(text, at, format!("a property name is at most {MAX_KEY_BYTES} bytes")));
                }
                Kind::Key(name.to_owned())
            }
            b'=' | b'!' | b'<' | b'>' => {
                let next = bytes.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    (b'=', _) => (Op::Eq, 1),
                    (b'!', Some(b'=')) | (b'<', Some(b'>')) => (Op::Ne, 2),
                    (b'<', Some(b'=')) => (Op::Le, 2),
                    (b'>', Some(b'=')) => (Op::Ge, 2),
                    (b'<', _) => (Op::Lt, 1),
                    (b'>', _) => (Op::Gt, 1),
                    _ => return Err(error(text, at, "expected '!='")),
                };
                i += len;
                Kind::Op(op)
            }
            b'"' | b'\'' => {
                let mut value = String::new();
                let mut chars = text[i + 1..].char_indices();
                loop {
                    match chars.next() {
                        None => return Err(error(text, at, "this string is not closed")),
                        Some((_, '\\')) => match chars.next() {
                            Some((_, escaped)) => value.push(escaped),
                            None => return Err(error(text, at, "this string is not closed")),
                        },
                        Some((end, q)) if q as u32 == u32::from(c) => {
                            i += 1 + end + 1;
                            break;
                        }
                        Some((_, other)) => value.push(other),
                    }
                }
                Kind::Literal(Literal::Text(value))
            }
            b'-' | b'0'..=b'9' => {
                let end = number_end(bytes, i).ok_or_else(|| error(text, at, "expected a number"))?;
                let number: f64 = text[i..end].parse().map_err(|_| error(text, at, "expected a number"))?;
                if !number.is_finite() {
                    return Err(error(text, at, "this number is too large"));
                }
                i = end;
                Kind::Literal(Literal::Number(number))
            }
            _ if c.is_ascii_alphabetic() => {
                while bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                    i += 1;
                }
                match text[at..i].to_ascii_uppercase().as_str() {
                    "AND" => Kind::And,
                    "OR" => Kind::Or,
                    "NOT" => Kind::Not,
                    word => {
                        return Err(error(
                            text,
                            at,
                            format!("unknown word {word:?}: property names start with ':' (e.g. :{word})"),
                        ))
                    }
                }
            }
            _ => {
                let shown = text[at..].chars().next().unwrap_or_default();
                return Err(error(text, at, format!("unexpected {shown:?}")));
            }
        };
        out.push(Token { kind, at });
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    next: usize,
}

impl Parser<'_> {
    fn error_at(&self, at: usize, message: &str) -> FilterError {
        error(self.text, at, message)
    }

    /// Where the next token starts, or the end.
    fn here(&self) -> usize {
        self.tokens.get(self.next).map_or(self.text.len(), |t| t.at)
    }

    fn take(&mut self, kind: &Kind) -> bool {
        let found = self.tokens.get(self.next).is_some_and(|t| &t.kind == kind);
        self.next += usize::from(found);
        found
    }

    fn or(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut any = vec![self.and(depth)?];
        while self.take(&Kind::Or) {
            any.push(self.and(depth)?);
        }
        Ok(if any.len() == 1 { any.remove(0) } else { Filter::Or(any) })
    }

    fn and(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut all = vec![self.unary(depth)?];
        while self.take(&Kind::And) {
            all.push(self.unary(depth)?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Filter::And(all) })
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(self.error_at(self.here(), &format!("nested deeper than {MAX_DEPTH}")));
        }
        let at = self.here();
        let Some(token) = self.tokens.get(self.next) else {
            return Err(self.error_at(at, "expected a property (:name), NOT or '('"));
        };
        match token.kind.clone() {
            Kind::Not => {
                self.next += 1;
                Ok(Filter::Not(Box::new(self.unary(depth + 1)?)))
            }
            Kind::Open => {
                self.next += 1;
                let inner = self.or(depth + 1)?;
                if !self.take(&Kind::Close) {
                    return Err(self.error_at(self.here(), "expected ')'"));
                }
                Ok(inner)
            }
            Kind::Key(key) => {
                self.next += 1;
                let Some(Kind::Op(op)) = self.tokens.get(self.next).map(|t| t.kind.clone()) else {
                    return Ok(Filter::Has(key));
                };
                self.next += 1;
                match self.tokens.get(self.next).map(|t| t.kind.clone()) {
                    Some(Kind::Literal(value)) => {
                        self.next += 1;
                        Ok(Filter::Compare { key, op, value })
                    }
                    _ => Err(self.error_at(self.here(), "expected a string (\"…\") or a number")),
                }
            }
            _ => Err(self.error_at(at, "expected a property (:name), NOT or '('")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn passes(filter: &str, pairs: &[(&str, &str)]) -> bool {
        parse(filter).unwrap().expect("not empty").matches(Some(&props(pairs)))
    }

    #[test]
    fn presence_equality_and_numbers() {
        assert!(passes(":region", &[("region", "eu")]));
        assert!(!passes(":region", &[("zone", "eu")]));
        assert!(passes(r#":type = "order""#, &[("type", "order")]));
        assert!(!passes(r#":type = "order""#, &[("type", "Order")]), "case-sensitive");
        assert!(passes(":amount > 500", &[("amount", "750.5")]));
        assert!(!passes(":amount > 500", &[("amount", "lots")]), "not a number: false");
        assert!(passes(":amount = 5", &[("amount", "5.0")]));
        assert!(passes(":n <= -1e3", &[("n", "-1000")]));
        assert!(passes(r#":name < "b""#, &[("name", "apple")]));
        assert!(passes(r#":t != "x""#, &[("t", "y")]) && passes(r#":t <> "x""#, &[("t", "y")]));
        assert!(!passes(r#":t != "x""#, &[]), "a comparison needs the property");
        assert!(passes(r#"NOT :t = "x""#, &[]), "NOT negates");
        assert!(!parse(":region").unwrap().unwrap().matches(None), "no properties at all");
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_regroup() {
        let f = r#":a OR :b AND :c"#;
        assert!(passes(f, &[("a", "1")]));
        assert!(!passes(f, &[("b", "1")]));
        let g = r#"(:a OR :b) AND :c"#;
        assert!(!passes(g, &[("a", "1")]));
        assert!(passes(g, &[("b", "1"), ("c", "1")]));
        assert!(passes(r#"not (:a and :b) Or :c"#, &[("a", "1")]), "keywords in any case");
    }

    #[test]
    fn empty_means_every_message() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("  \n ").unwrap(), None);
    }

    #[test]
    fn errors_say_where_and_what() {
        let at = |f: &str| parse(f).unwrap_err();
        assert_eq!(at(":type =").position, 8);
        assert!(at(":type =").message.contains("expected a string"));
        assert_eq!(at(r#":type = "order"#).position, 9);
        assert!(at(r#":type = "order"#).message.contains("not closed"));
        assert!(at("type = 1").message.contains("start with ':'"));
        assert_eq!(at(":a AND").position, 7);
        assert_eq!(at("(:a").message, "expected ')'");
        assert!(at(":a :b").message.contains("expected AND, OR"));
        assert!(at(": = 1").message.contains("property name"));
        assert!(at(":a = 1e999").message.contains("too large"));
        assert!(at(&format!(":{}", "k".repeat(129))).message.contains("at most 128"));
        assert!(at(&"NOT ".repeat(40)).message.contains("nested deeper"));
        assert!(at(&"(".repeat(40)).message.contains("nested deeper"));
        assert!(at(&" ".repeat(5000)).message.contains("longer than"));
        assert_eq!(at("é & :a").position, 1, "positions count characters");
        assert_eq!(at(":a = 'x' & :b").position, 10);
        assert_eq!(at("(:a").to_string(), "filter: at character 4: expected ')'");
    }

    fn filter() -> impl Strategy<Value = Filter> {
        let key = "[a-z][a-z0-9_.-]{0,8}";
        let literal =
            prop_oneof!["[ -~é\"\\\\']{0,8}".prop_map(Literal::Text), (-1.0e6f64..1.0e6).prop_map(Literal::Number),];
        let op = prop_oneof![Just(Op::Eq), Just(Op::Ne), Just(Op::Lt), Just(Op::Le), Just(Op::Gt), Just(Op::Ge)];
        let leaf = prop_oneof![
            key.prop_map(Filter::Has),
            (key, op, literal).prop_map(|(key, op, value)| Filter::Compare { key, op, value }),
        ];
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|f| Filter::Not(Box::new(f))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
                prop::collection::vec(inner, 2..4).prop_map(Filter::Or),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_canonical_text_parses_back_to_the_same_filter(f in filter()) {
            let text = f.to_string();
            let back = parse(&text).unwrap().expect("not empty");
            prop_assert_eq!(back, f, "{}", text);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            if let Ok(Some(f)) = parse(&text) {
                let _ = f.matches(Some(&props(&[("a", "1")])));
                prop_assert!(parse(&f.to_string()).unwrap().is_some());
            }
        }
    }
}
