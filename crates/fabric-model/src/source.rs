//! Documents as written: a small tree that keeps where every value came from.
//!
//! Manifests arrive as YAML files (CLI) or as JSON objects (the function).
//! Both become a [`Node`] tree. YAML scalars keep their text and whether they
//! were quoted, so that type decisions are made against the schema rather than
//! by YAML 1.1/1.2 guessing: `hostname: no` is the string `no`, and
//! `macAddress: 52:54:00:12:34:56` is the text the user wrote, not a base-60
//! integer.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::Pos;

/// A value with the position it was written at (absent for JSON input).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value starts.
    pub pos: Option<Pos>,
}

/// A mapping key and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub text: String,
    /// Where the key starts.
    pub pos: Option<Pos>,
}

/// The shape of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~`, or nothing.
    Null,
    /// A scalar. `plain` is false for quoted and block scalars.
    Scalar {
        /// Text after escape processing.
        text: String,
        /// Written without quotes (so numbers and booleans may be meant).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// Looks up a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Converts JSON (as the function receives it) into a tree without positions.
    pub fn from_json(value: &serde_json::Value) -> Node {
        let value = match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Scalar {
                text: b.to_string(),
                plain: true,
            },
            serde_json::Value::Number(n) => Value::Scalar {
                text: n.to_string(),
                plain: true,
            },
            serde_json::Value::String(s) => Value::Scalar {
                text: s.clone(),
                plain: false,
            },
            serde_json::Value::Array(items) => {
                Value::Seq(items.iter().map(Node::from_json).collect())
            }
            serde_json::Value::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                text: k.clone(),
                                pos: None,
                            },
                            Node::from_json(v),
                        )
                    })
                    .collect(),
            ),
        };
        Node { value, pos: None }
    }
}

/// A YAML syntax error, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where.
    pub pos: Pos,
}

/// Parses every document of a YAML stream.
///
/// Anchors and aliases are refused: a manifest has no need for them, and they
/// are how "billion laughs" inputs grow.
pub fn parse_yaml(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut events = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    while let Some(next) = events.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            message: e.info().to_string(),
            pos: Pos {
                line: e.marker().line() as u32,
                col: e.marker().col() as u32 + 1,
            },
        })?;
        let pos = pos_of(&span);
        let node = match event {
            Event::StreamStart | Event::DocumentStart(..) | Event::DocumentEnd => continue,
            Event::StreamEnd => break,
            Event::Alias(_) | Event::UnresolvedAlias(_) => {
                return Err(SyntaxError {
                    message: "aliases (*name) are not supported in manifests".into(),
                    pos,
                })
            }
            Event::Scalar(text, style, anchor, _tag) => {
                if anchor != 0 {
                    return Err(anchor_error(pos));
                }
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                Node {
                    value,
                    pos: Some(pos),
                }
            }
            Event::SequenceStart(_, anchor, _) => {
                if anchor != 0 {
                    return Err(anchor_error(pos));
                }
                stack.push(Frame::Seq(pos, Vec::new()));
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                if anchor != 0 {
                    return Err(anchor_error(pos));
                }
                stack.push(Frame::Map(pos, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Node {
                    value: Value::Seq(items),
                    pos: Some(p),
                },
                _ => unreachable_frame(pos)?,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, entries, _)) => Node {
                    value: Value::Map(entries),
                    pos: Some(p),
                },
                _ => unreachable_frame(pos)?,
            },
            #[allow(unreachable_patterns)]
            _ => continue,
        };
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => {
                    let text = match node.value {
                        Value::Scalar { text, .. } => text,
                        Value::Null => String::new(),
                        _ => {
                            return Err(SyntaxError {
                                message: "complex mapping keys are not supported".into(),
                                pos: node.pos.unwrap_or(pos),
                            })
                        }
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.text == text) {
                        return Err(SyntaxError {
                            message: format!(
                                "the key {text:?} appears twice in this mapping (first at line {})",
                                first.pos.map(|p| p.line).unwrap_or(0)
                            ),
                            pos: node.pos.unwrap_or(pos),
                        });
                    }
                    *pending = Some(Key {
                        text,
                        pos: node.pos,
                    });
                }
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(docs)
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Key, Node)>, Option<Key>),
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line() as u32,
        col: span.start.col() as u32 + 1,
    }
}

fn anchor_error(pos: Pos) -> SyntaxError {
    SyntaxError {
        message: "anchors (&name) are not supported in manifests".into(),
        pos,
    }
}

fn unreachable_frame(pos: Pos) -> Result<Node, SyntaxError> {
    Err(SyntaxError {
        message: "unbalanced YAML structure".into(),
        pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_and_positions() {
        let docs =
            parse_yaml("a:\n  b: no\n  mac: 52:54:00:12:34:56\n  n: ~\n---\nx: 1\n").unwrap();
        assert_eq!(docs.len(), 2);
        let a = docs[0].get("a").unwrap();
        let b = a.get("b").unwrap();
        assert_eq!(b.as_text(), Some("no"));
        assert_eq!(b.pos, Some(Pos { line: 2, col: 6 }));
        assert_eq!(a.get("mac").unwrap().as_text(), Some("52:54:00:12:34:56"));
        assert_eq!(a.get("n").unwrap().value, Value::Null);
    }

    #[test]
    fn refuses_duplicate_keys_and_aliases() {
        let e = parse_yaml("a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
        assert_eq!(e.pos.line, 2);
        assert!(parse_yaml("a: &x 1\nb: *x\n").is_err());
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let e = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1);
    }
}
