//! A HuJSON reader that keeps byte positions, so the policy file can be edited in
//! place without touching the admins' text.
//!
//! HuJSON is JSON with `//` and `/* */` comments and trailing commas in arrays and
//! objects. Every value records its byte span, and every array element and object
//! member records where its leading comments start and where its comma is.

use std::ops::Range;

use ken_core::{Error, Result};
use serde_json::{Map, Number, Value};

/// A parsed value with its byte span in the source text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) span: Range<usize>,
}

/// The kind of a [`Node`], with its children.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Container<Node>),
    Object(Container<Member>),
}

/// The items of an array or object and the position of its closing bracket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Container<T> {
    pub(crate) items: Vec<Item<T>>,
    pub(crate) close: usize,
}

/// An array element or object member with its surroundings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item<T> {
    pub(crate) value: T,
    /// The start of the text after the previous comma (or the opening bracket), so
    /// `lead..start` contains the item's leading whitespace and comments.
    pub(crate) lead: usize,
    /// The start of the item: its key for a member, its value for an element.
    pub(crate) start: usize,
    /// The position of the comma after the item, when there is one.
    pub(crate) comma: Option<usize>,
}

/// An object member.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub(crate) key: String,
    pub(crate) value: Node,
}

impl<T> Item<T> {
    /// Returns the item's leading whitespace and comments.
    pub(crate) fn leading<'t>(&self, text: &'t str) -> &'t str {
        &text[self.lead..self.start]
    }
}

impl Item<Node> {
    /// Returns the end of the item: after its comma, or after its value.
    pub(crate) fn end(&self) -> usize {
        self.comma.map_or(self.value.span.end, |comma| comma + 1)
    }
}

impl Item<Member> {
    /// Returns the end of the member: after its comma, or after its value.
    pub(crate) fn end(&self) -> usize {
        self.comma.map_or(self.value.value.span.end, |comma| comma + 1)
    }
}

impl Node {
    /// Returns the member `key` of an object.
    pub(crate) fn member(&self, key: &str) -> Option<&Item<Member>> {
        match &self.kind {
            Kind::Object(object) => object.items.iter().find(|item| item.value.key == key),
            _ => None,
        }
    }

    /// Returns the value as plain JSON, dropping positions and comments.
    pub(crate) fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(text) => text
                .parse::<Number>()
                .map(Value::Number)
                .unwrap_or_else(|_| Value::String(text.clone())),
            Kind::String(s) => Value::String(s.clone()),
            Kind::Array(array) => Value::Array(array.items.iter().map(|item| item.value.to_json()).collect()),
            Kind::Object(object) => {
                let mut map = Map::new();
                for item in &object.items {
                    map.insert(item.value.key.clone(), item.value.value.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// Returns the strings of an array of strings, or a lone string, and nothing
    /// for other values.
    pub(crate) fn strings(&self) -> Vec<&str> {
        match &self.kind {
            Kind::String(s) => vec![s.as_str()],
            Kind::Array(array) => array
                .items
                .iter()
                .filter_map(|item| match &item.value.kind {
                    Kind::String(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Parses HuJSON `text` into a tree that keeps byte positions.
pub(crate) fn parse(text: &str) -> Result<Node> {
    let mut parser = Parser { text, bytes: text.as_bytes(), pos: 0 };
    parser.skip_trivia()?;
    let node = parser.value(0)?;
    parser.skip_trivia()?;
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("unexpected text after the end of the policy"));
    }
    Ok(node)
}

/// Returns the 1-based line and column of byte `pos` in `text`.
pub(crate) fn line_column(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |newline| before.len() - newline - 1) + 1;
    (line, column)
}

/// The deepest nesting accepted, so a hostile file cannot overflow the stack.
const MAX_DEPTH: usize = 128;

struct Parser<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> Error {
        let (line, column) = line_column(self.text, self.pos);
        Error::invalid(
            "policy file",
            format!("line {line} column {column}"),
            format!("{message}; the policy file is not valid HuJSON, fix it in the admin console"),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_trivia(&mut self) -> Result<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'/') => {
                    while let Some(b) = self.peek() {
                        if b == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'*') => {
                    let Some(end) = self.text[self.pos + 2..].find("*/") else {
                        return Err(self.error("a /* comment is never closed"));
                    };
                    self.pos += 2 + end + 2;
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node> {
        if depth > MAX_DEPTH {
            return Err(self.error("the policy is nested too deeply"));
        }
        let start = self.pos;
        let kind = match self.peek() {
            Some(b'{') => Kind::Object(self.object(depth)?),
            Some(b'[') => Kind::Array(self.array(depth)?),
            Some(b'"') => Kind::String(self.string()?),
            Some(b't') => self.literal("true", Kind::Bool(true))?,
            Some(b'f') => self.literal("false", Kind::Bool(false))?,
            Some(b'n') => self.literal("null", Kind::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => return Err(self.error("expected a value")),
            None => return Err(self.error("the policy ends where a value was expected")),
        };
        Ok(Node { kind, span: start..self.pos })
    }

    fn literal(&mut self, word: &str, kind: Kind) -> Result<Kind> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(kind)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn number(&mut self) -> Kind {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_digit() || b"+-.eE".contains(&b) {
                self.pos += 1;
            } else {
                break;
            }
        }
        Kind::Number(self.text[start..self.pos].to_owned())
    }

    fn string(&mut self) -> Result<String> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.error("a string is never closed")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => self.pos += 2,
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.text[start..self.pos.min(self.text.len())];
        serde_json::from_str::<String>(raw).map_err(|_| {
            self.error("a string contains an invalid escape")
        })
    }

    fn array(&mut self, depth: usize) -> Result<Container<Node>> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            let lead = self.pos;
            self.skip_trivia()?;
            match self.peek() {
                Some(b']') => {
                    let close = self.pos;
                    self.pos += 1;
                    return Ok(Container { items, close });
                }
                None => return Err(self.error("an array is never closed")),
                _ => {}
            }
            let start = self.pos;
            let value = self.value(depth + 1)?;
            self.skip_trivia()?;
            let comma = self.comma_or_close(b']')?;
            items.push(Item { value, lead, start, comma });
            if comma.is_none() {
                let close = self.pos;
                self.pos += 1;
                return Ok(Container { items, close });
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Container<Member>> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            let lead = self.pos;
            self.skip_trivia()?;
            match self.peek() {
                Some(b'}') => {
                    let close = self.pos;
                    self.pos += 1;
                    return Ok(Container { items, close });
                }
                Some(b'"') => {}
                None => return Err(self.error("an object is never closed")),
                Some(_) => return Err(self.error("expected a quoted key")),
            }
            let start = self.pos;
            let key = self.string()?;
            self.skip_trivia()?;
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':' after a key"));
            }
            self.pos += 1;
            self.skip_trivia()?;
            let value = self.value(depth + 1)?;
            self.skip_trivia()?;
            let comma = self.comma_or_close(b'}')?;
            items.push(Item {
                value: Member { key, value },
                lead,
                start,
                comma,
            });
            if comma.is_none() {
                let close = self.pos;
                self.pos += 1;
                return Ok(Container { items, close });
            }
        }
    }

    /// Consumes a comma and returns its position, or returns `None` at `close`
    /// (which is left for the caller).
    fn comma_or_close(&mut self, close: u8) -> Result<Option<usize>> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(Some(self.pos - 1))
            }
            Some(b) if b == close => Ok(None),
            _ => Err(self.error(if close == b']' { "expected ',' or ']'" } else { "expected ',' or '}'" })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_and_trailing_commas() {
        let text = "// head\n{\n  \"a\": [1, 2,], /* note */\n  \"b\": {\"c\": \"d\\n\",},\n}\n";
        let node = parse(text).unwrap();
        assert_eq!(node.to_json(), serde_json::json!({"a": [1, 2], "b": {"c": "d\n"}}));
        let a = node.member("a").unwrap();
        assert_eq!(&text[a.value.value.span.clone()], "[1, 2,]");
        assert!(a.comma.is_some());
        let b = node.member("b").unwrap();
        assert!(b.leading(text).contains("/* note */"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let error = parse("{\n  \"a\": [1 2]\n}").unwrap_err().to_string();
        assert!(error.contains("line 2 column 11"), "{error}");
        let error = parse("{\"a\": 1} x").unwrap_err().to_string();
        assert!(error.contains("after the end"), "{error}");
        let error = parse("{a: 1}").unwrap_err().to_string();
        assert!(error.contains("quoted key"), "{error}");
        let error = parse("{\"a\": 1 /* open").unwrap_err().to_string();
        assert!(error.contains("never closed"), "{error}");
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let text = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert!(parse(&text).is_err());
    }
}
