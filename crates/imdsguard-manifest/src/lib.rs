//! Kubernetes manifests read into a tree that remembers where every value came from.
//!
//! Policies are written by people, so every error must point at a file, a line, a column and a field
//! path. This crate parses multi-document YAML (JSON is read as YAML flow style), splits `kind: List`
//! objects into their items, and offers [`Field`], a cursor that walks a node while it tracks the
//! field path and rejects unknown keys. It does no I/O: callers hand it text and a file name.
//! Limits: anchors and aliases are expanded by copying; tags are ignored; merge keys (`<<`) are not
//! supported (Kubernetes does not accept them either).

mod field;
mod node;

pub use field::{Field, FieldError, MapField};
pub use node::{Node, NodeKind, Pos, parse_documents};

use std::sync::Arc;

/// Where a manifest came from: a file name (as given by the user) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: Arc<str>,
    pub text: Arc<str>,
}

impl Source {
    pub fn new(name: impl Into<Arc<str>>, text: impl Into<Arc<str>>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// One Kubernetes object found in a source, with its identifying fields read leniently (a missing
/// `kind` is reported by the caller, not here).
#[derive(Debug, Clone)]
pub struct Object {
    pub file: Arc<str>,
    pub node: Node,
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl Object {
    /// `Kind namespace/name` or `Kind name`, the way the object is named in messages.
    pub fn display_name(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("<no kind>");
        let name = self.name.as_deref().unwrap_or("<no name>");
        match &self.namespace {
            Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
            _ => format!("{kind} {name}"),
        }
    }
}

/// A document that could not be parsed at all.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{pos}: {message}")]
pub struct SyntaxError {
    pub file: Arc<str>,
    pub pos: Pos,
    pub message: String,
}

/// Splits a source into objects. Empty documents are skipped; `kind: List` (and `*List`) objects
/// with `items` are flattened, as `kubectl get -o yaml` prints them.
pub fn objects(source: &Source) -> Result<Vec<Object>, SyntaxError> {
    let docs = parse_documents(&source.text).map_err(|(pos, message)| SyntaxError {
        file: source.name.clone(),
        pos,
        message,
    })?;
    let mut out = Vec::new();
    for doc in docs {
        collect(&source.name, doc, &mut out);
    }
    Ok(out)
}

fn collect(file: &Arc<str>, node: Node, out: &mut Vec<Object>) {
    if node.is_null() {
        return;
    }
    let kind = node.get("kind").and_then(Node::as_str).map(str::to_owned);
    if let Some(k) = &kind
        && k.ends_with("List")
        && let Some(items) = node.get("items").and_then(Node::as_seq)
    {
        for item in items.iter().cloned() {
            collect(file, item, out);
        }
        return;
    }
    let meta = node.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .map(str::to_owned);
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str)
        .map(str::to_owned);
    let api_version = node
        .get("apiVersion")
        .and_then(Node::as_str)
        .map(str::to_owned);
    out.push(Object {
        file: file.clone(),
        node,
        api_version,
        kind,
        name,
        namespace,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_lists() {
        let text = "---\nkind: A\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- kind: B\n  metadata:\n    name: b\n    namespace: n\n";
        let objs = objects(&Source::new("f.yaml", text)).unwrap();
        let names: Vec<_> = objs.iter().map(Object::display_name).collect();
        assert_eq!(names, ["A a", "B n/b"]);
        assert_eq!(objs[1].node.pos.line, 8);
    }

    #[test]
    fn reads_json() {
        let text = r#"{"kind": "A", "metadata": {"name": "x"}, "spec": {"n": [1, 2]}}"#;
        let objs = objects(&Source::new("f.json", text)).unwrap();
        assert_eq!(objs[0].name.as_deref(), Some("x"));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = objects(&Source::new("f.yaml", "a: [1, 2\nb: c\n")).unwrap_err();
        assert_eq!(&*err.file, "f.yaml");
        assert!(err.pos.line >= 1);
    }
}
