use crate::node::{Node, NodeKind, Pos};

/// A problem with one field: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

/// A node together with the field path that led to it (`spec.egress[0].toPorts`).
#[derive(Debug, Clone)]
pub struct Field<'a> {
    pub node: &'a Node,
    path: String,
}

impl<'a> Field<'a> {
    pub fn root(node: &'a Node) -> Self {
        Field {
            node,
            path: String::new(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn pos(&self) -> Pos {
        self.node.pos
    }

    pub fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError {
            pos: self.node.pos,
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn child(&self, name: &str, node: &'a Node) -> Field<'a> {
        let path = if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        };
        Field { node, path }
    }

    /// Any scalar, as text. Numbers and booleans written without quotes are accepted as text too,
    /// because people write `port: 80` as often as `port: "80"`.
    pub fn str(&self) -> Result<&'a str, FieldError> {
        match &self.node.kind {
            NodeKind::Scalar { text, .. } => Ok(text),
            _ => Err(self.error(format!(
                "expected a string, found {}",
                self.node.type_name()
            ))),
        }
    }

    pub fn bool(&self) -> Result<bool, FieldError> {
        match &self.node.kind {
            NodeKind::Scalar {
                text,
                quoted: false,
            } if text == "true" => Ok(true),
            NodeKind::Scalar {
                text,
                quoted: false,
            } if text == "false" => Ok(false),
            _ => Err(self.error(format!(
                "expected true or false, found {}",
                describe(self.node)
            ))),
        }
    }

    /// An integer written without quotes.
    pub fn int(&self) -> Result<i64, FieldError> {
        match &self.node.kind {
            NodeKind::Scalar {
                text,
                quoted: false,
            } => text
                .parse()
                .map_err(|_| self.error(format!("expected an integer, found {text:?}"))),
            _ => Err(self.error(format!(
                "expected an integer, found {}",
                describe(self.node)
            ))),
        }
    }

    /// The items of a list, each with its index in the path. `null` is an empty list.
    pub fn seq(&self) -> Result<Vec<Field<'a>>, FieldError> {
        match &self.node.kind {
            NodeKind::Null => Ok(Vec::new()),
            NodeKind::Seq(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, n)| Field {
                    node: n,
                    path: format!("{}[{i}]", self.path),
                })
                .collect()),
            _ => Err(self.error(format!("expected a list, found {}", self.node.type_name()))),
        }
    }

    /// A list of strings.
    pub fn strings(&self) -> Result<Vec<String>, FieldError> {
        self.seq()?
            .iter()
            .map(|f| f.str().map(str::to_owned))
            .collect()
    }

    /// A mapping whose keys must all be in `known`; any other key is an error at that key.
    pub fn map(&self, known: &[&str]) -> Result<MapField<'a>, FieldError> {
        let map = self.free_map()?;
        for (key, field) in &map.entries {
            if !known.contains(key) {
                return Err(FieldError {
                    pos: field.key_pos,
                    path: field.field.path.clone(),
                    message: format!("unknown field {key:?} (known fields: {})", known.join(", ")),
                });
            }
        }
        Ok(map)
    }

    /// A mapping with arbitrary keys (labels, matchLabels). Duplicate keys are still errors.
    pub fn free_map(&self) -> Result<MapField<'a>, FieldError> {
        let entries = match &self.node.kind {
            NodeKind::Null => &[][..],
            NodeKind::Map(entries) => entries.as_slice(),
            _ => {
                return Err(self.error(format!(
                    "expected a mapping, found {}",
                    self.node.type_name()
                )));
            }
        };
        let mut out: Vec<(&'a str, Entry<'a>)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = match &k.kind {
                NodeKind::Scalar { text, .. } => text.as_str(),
                _ => {
                    return Err(FieldError {
                        pos: k.pos,
                        path: self.path.clone(),
                        message: "mapping keys must be strings".to_owned(),
                    });
                }
            };
            let field = self.child(key, v);
            if out.iter().any(|(k2, _)| *k2 == key) {
                return Err(FieldError {
                    pos: k.pos,
                    path: field.path,
                    message: "duplicate key".to_owned(),
                });
            }
            out.push((
                key,
                Entry {
                    key_pos: k.pos,
                    field,
                },
            ));
        }
        Ok(MapField {
            field: self.clone(),
            entries: out,
        })
    }
}

#[derive(Debug, Clone)]
struct Entry<'a> {
    key_pos: Pos,
    field: Field<'a>,
}

/// A mapping being decoded.
#[derive(Debug, Clone)]
pub struct MapField<'a> {
    pub field: Field<'a>,
    entries: Vec<(&'a str, Entry<'a>)>,
}

impl<'a> MapField<'a> {
    /// The field, if present and not null (Kubernetes treats `key: null` as absent).
    pub fn get(&self, name: &str) -> Option<Field<'a>> {
        self.entries
            .iter()
            .find(|(k, e)| *k == name && !e.field.node.is_null())
            .map(|(_, e)| e.field.clone())
    }

    /// The field, even when its value is null.
    pub fn get_raw(&self, name: &str) -> Option<Field<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, e)| e.field.clone())
    }

    /// Where the key `name` is written (its value may start on a later line).
    pub fn key_pos(&self, name: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, e)| e.key_pos)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn required(&self, name: &str) -> Result<Field<'a>, FieldError> {
        self.get(name).ok_or_else(|| {
            let path = if self.field.path.is_empty() {
                name.to_owned()
            } else {
                format!("{}.{name}", self.field.path)
            };
            FieldError {
                pos: self.field.pos(),
                path,
                message: "required field is missing".to_owned(),
            }
        })
    }

    /// All entries in document order.
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, Field<'a>)> + '_ {
        self.entries.iter().map(|(k, e)| (*k, e.field.clone()))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn error(&self, message: impl Into<String>) -> FieldError {
        self.field.error(message)
    }
}

fn describe(node: &Node) -> String {
    match &node.kind {
        NodeKind::Scalar { text, .. } => format!("{text:?}"),
        _ => node.type_name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::parse_documents;

    #[test]
    fn unknown_field_points_at_key() {
        let docs = parse_documents("spec:\n  egres: []\n").unwrap();
        let root = Field::root(&docs[0]).map(&["spec"]).unwrap();
        let err = root.required("spec").unwrap().map(&["egress"]).unwrap_err();
        assert_eq!(err.path, "spec.egres");
        assert_eq!(err.pos, Pos { line: 2, col: 3 });
        assert!(err.message.starts_with("unknown field \"egres\""));
    }

    #[test]
    fn paths_include_indices() {
        let docs = parse_documents("a:\n- b: 1\n- b: x\n").unwrap();
        let root = Field::root(&docs[0]).map(&["a"]).unwrap();
        let items = root.get("a").unwrap().seq().unwrap();
        let err = items[1]
            .map(&["b"])
            .unwrap()
            .get("b")
            .unwrap()
            .int()
            .unwrap_err();
        assert_eq!(err.path, "a[1].b");
    }

    #[test]
    fn key_positions_are_kept() {
        let docs = parse_documents("spec:\n  rules:\n    http: []\n").unwrap();
        let spec = Field::root(&docs[0]).map(&["spec"]).unwrap();
        let spec = spec.required("spec").unwrap().free_map().unwrap();
        assert_eq!(spec.key_pos("rules"), Some(Pos { line: 2, col: 3 }));
        assert_eq!(spec.get("rules").unwrap().pos(), Pos { line: 3, col: 5 });
        assert_eq!(spec.key_pos("nope"), None);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let docs = parse_documents("a: 1\na: 2\n").unwrap();
        assert_eq!(
            Field::root(&docs[0]).map(&["a"]).unwrap_err().message,
            "duplicate key"
        );
    }
}
