use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;
use std::fmt;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    /// A scalar with its text; `quoted` scalars are always strings (`"80"` is not a number).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys keep their order and their own positions, so duplicate and unknown keys can be reported.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
    }

    /// The text of a scalar, quoted or not.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short description of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// Parses every document of a YAML stream. Returns the position and message of the first syntax error.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, (Pos, String)> {
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut last_pos = Pos { line: 1, col: 1 };
    let mut doc_root: Option<Node> = None;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            let m = e.marker();
            (
                Pos {
                    line: m.line() as u32,
                    col: m.col() as u32 + 1,
                },
                e.info().to_owned(),
            )
        })?;
        let pos = Pos {
            line: span.start.line() as u32,
            col: span.start.col() as u32 + 1,
        };
        last_pos = pos;
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                doc_root = None;
                None
            }
            Event::DocumentEnd => {
                docs.push(doc_root.take().unwrap_or(Node {
                    pos,
                    kind: NodeKind::Null,
                }));
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => Some((
                    Node {
                        pos,
                        kind: node.kind.clone(),
                    },
                    0,
                )),
                None => return Err((pos, "unknown alias".to_owned())),
            },
            Event::Scalar(text, style, anchor, _) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let kind = if !quoted && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar {
                        text: text.into_owned(),
                        quoted,
                    }
                };
                Some((Node { pos, kind }, anchor))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(pos, anchor, Vec::new()));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(pos, anchor, Vec::new(), None));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, anchor, items)) => Some((
                    Node {
                        pos: p,
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                )),
                _ => return Err((pos, "unbalanced sequence".to_owned())),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, anchor, entries, None)) => Some((
                    Node {
                        pos: p,
                        kind: NodeKind::Map(entries),
                    },
                    anchor,
                )),
                _ => return Err((pos, "unbalanced mapping".to_owned())),
            },
        };
        if let Some((node, anchor)) = finished {
            if anchor != 0 {
                anchors.insert(anchor, node.clone());
            }
            match stack.last_mut() {
                Some(Frame::Seq(_, _, items)) => items.push(node),
                Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                    Some(key) => entries.push((key, node)),
                    None => *pending = Some(node),
                },
                None => doc_root = Some(node),
            }
        }
    }
    if !stack.is_empty() {
        return Err((last_pos, "unexpected end of input".to_owned()));
    }
    if let Some(root) = doc_root {
        docs.push(root);
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("a:\n  b: \"80\"\n  c: [x, y]\n").unwrap();
        let b = docs[0].get("a").unwrap().get("b").unwrap();
        assert_eq!(b.pos, Pos { line: 2, col: 6 });
        assert_eq!(
            b.kind,
            NodeKind::Scalar {
                text: "80".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn aliases_are_copied() {
        let docs = parse_documents("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(
            docs[0].get("b").unwrap().get("k").unwrap().as_str(),
            Some("v")
        );
    }

    #[test]
    fn empty_value_is_null() {
        let docs = parse_documents("a:\nb: ~\n").unwrap();
        assert!(docs[0].get("a").unwrap().is_null());
        assert!(docs[0].get("b").unwrap().is_null());
    }
}
