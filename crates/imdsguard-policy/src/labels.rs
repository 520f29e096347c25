//! Cilium's label model: `source:key=value`, and the selector-key normalisation of
//! docs/policy-semantics.md §2.2.

use imdsguard_labels::{NameError, check_label_value, check_qualified_name};
use std::fmt;
use std::sync::Arc;

/// The source of a label. `Any` exists only in selectors, where it matches every source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelSource {
    Any,
    K8s,
    Reserved,
    Cidr,
    Fqdn,
    CidrGroup,
    Node,
    Other(Arc<str>),
}

impl LabelSource {
    pub fn parse(s: &str) -> LabelSource {
        match s {
            "any" => LabelSource::Any,
            "k8s" => LabelSource::K8s,
            "reserved" => LabelSource::Reserved,
            "cidr" => LabelSource::Cidr,
            "fqdn" => LabelSource::Fqdn,
            "cidrgroup" => LabelSource::CidrGroup,
            "node" => LabelSource::Node,
            other => LabelSource::Other(other.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LabelSource::Any => "any",
            LabelSource::K8s => "k8s",
            LabelSource::Reserved => "reserved",
            LabelSource::Cidr => "cidr",
            LabelSource::Fqdn => "fqdn",
            LabelSource::CidrGroup => "cidrgroup",
            LabelSource::Node => "node",
            LabelSource::Other(s) => s,
        }
    }
}

/// One label of an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub key: Arc<str>,
    pub source: LabelSource,
    pub value: Arc<str>,
}

impl Label {
    pub fn new(source: LabelSource, key: &str, value: &str) -> Label {
        Label {
            source,
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn k8s(key: &str, value: &str) -> Label {
        Label::new(LabelSource::K8s, key, value)
    }

    pub fn reserved(key: &str) -> Label {
        Label::new(LabelSource::Reserved, key, "")
    }

    /// Parses `source:key=value`; a missing source means `unspec`, as in Cilium's `ParseLabel`.
    ///
    /// Not `imdsguard_labels::parse_label` (Cilium's parser exactly, which the flow filters use):
    /// this one knows no `$key` or `reserved.key` shorthand, and takes a `:` after an `=` for part
    /// of the value (`a=b:c` is key `a`, value `b:c`, where Cilium reads source `a=b`). Endpoint
    /// files and replayed flows are read with it; switching would change what they mean.
    pub fn parse(s: &str) -> Label {
        let (source, rest) = match s.split_once(':') {
            Some((src, rest)) if !src.contains('=') => (LabelSource::parse(src), rest),
            _ => (LabelSource::Other("unspec".into()), s),
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        Label::new(source, key, value)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.source.as_str(), self.key)
        } else {
            write!(f, "{}:{}={}", self.source.as_str(), self.key, self.value)
        }
    }
}

/// The labels of one identity, sorted by key so lookups are binary searches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct LabelSet(Vec<Label>);

impl LabelSet {
    pub fn new(mut labels: Vec<Label>) -> LabelSet {
        labels.sort();
        labels.dedup_by(|a, b| a.key == b.key && a.source == b.source);
        LabelSet(labels)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels whose key is `key`, from any source.
    pub fn by_key(&self, key: &str) -> &[Label] {
        let start = self.0.partition_point(|l| &*l.key < key);
        let end = self.0.partition_point(|l| &*l.key <= key);
        &self.0[start..end]
    }

    pub fn has_source(&self, source: &LabelSource) -> bool {
        self.0.iter().any(|l| &l.source == source)
    }

    pub fn get(&self, source: &LabelSource, key: &str) -> Option<&str> {
        self.by_key(key)
            .iter()
            .find(|l| &l.source == source)
            .map(|l| &*l.value)
    }

    pub fn has_reserved(&self, key: &str) -> bool {
        self.get(&LabelSource::Reserved, key).is_some()
    }

    /// The pod namespace (`k8s:io.kubernetes.pod.namespace`), if the identity is a pod's.
    pub fn namespace(&self) -> Option<&str> {
        self.get(&LabelSource::K8s, crate::identity::NAMESPACE_LABEL)
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

/// A selector key after normalisation: `app` → `any.app`, `k8s:app` → `k8s.app`, `$host` → `reserved.host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelKey {
    pub source: LabelSource,
    pub key: Arc<str>,
}

impl LabelKey {
    pub fn new(source: LabelSource, key: &str) -> LabelKey {
        LabelKey {
            source,
            key: key.into(),
        }
    }

    /// Cilium's `GetExtendedKeyFrom` (§2.2).
    pub fn from_selector_key(raw: &str) -> LabelKey {
        if let Some(rest) = raw.strip_prefix('$') {
            return LabelKey::new(LabelSource::Reserved, rest);
        }
        if let Some((src, rest)) = raw.split_once(':') {
            return LabelKey::new(LabelSource::parse(src), rest);
        }
        if let Some(rest) = raw.strip_prefix("reserved.") {
            return LabelKey::new(LabelSource::Reserved, rest);
        }
        LabelKey::new(LabelSource::Any, raw)
    }

    /// The extended form, `source.key`, as Cilium prints selector keys.
    pub fn extended(&self) -> String {
        format!("{}.{}", self.source.as_str(), self.key)
    }
}

impl fmt::Display for LabelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source.as_str(), self.key)
    }
}

/// Kubernetes `IsQualifiedName` (the rules are `imdsguard_labels::names`'), with two
/// differences kept from before the rules were shared: each DNS label of the prefix is also held
/// to 63 characters (Kubernetes bounds only the whole prefix), and a key with two `/` is reported
/// as a bad prefix. The messages are the engine's own.
pub fn validate_qualified_name(key: &str) -> Result<(), String> {
    let long_prefix_label = key
        .rsplit_once('/')
        .is_some_and(|(p, _)| p.split('.').any(|l| l.len() > 63));
    let problem = match check_qualified_name(key) {
        Err(NameError::EmptyPrefix(_)) => "prefix part must be non-empty",
        Err(NameError::TooManySlashes(_) | NameError::Prefix(_)) => {
            "prefix part must be a DNS subdomain"
        }
        _ if long_prefix_label => "prefix part must be a DNS subdomain",
        Err(_) => {
            "name part must be at most 63 characters, start and end with an alphanumeric \
             character, and contain only [-_.a-zA-Z0-9]"
        }
        Ok(()) => return Ok(()),
    };
    Err(format!("invalid label key {key:?}: {problem}"))
}

/// Kubernetes label value: empty, or at most 63 characters of `[-_.a-zA-Z0-9]` that begin and end
/// with an alphanumeric character.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    check_label_value(value).map_err(|_| {
        format!(
            "invalid label value {value:?}: must be at most 63 characters, start and end with an alphanumeric character, and contain only [-_.a-zA-Z0-9]"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_key_normalisation() {
        let cases = [
            ("k8s:app", "k8s.app"),
            ("app", "any.app"),
            ("any:app", "any.app"),
            ("reserved:host", "reserved.host"),
            ("$host", "reserved.host"),
            ("reserved.host", "reserved.host"),
            (
                "io.kubernetes.pod.namespace",
                "any.io.kubernetes.pod.namespace",
            ),
            ("app.kubernetes.io/name", "any.app.kubernetes.io/name"),
            ("cidr:10.0.0.0/8", "cidr.10.0.0.0/8"),
        ];
        for (raw, want) in cases {
            assert_eq!(LabelKey::from_selector_key(raw).extended(), want, "{raw}");
        }
    }

    #[test]
    fn label_parse_and_display() {
        let l = Label::parse("k8s:io.kubernetes.pod.namespace=default");
        assert_eq!(l.source, LabelSource::K8s);
        assert_eq!(l.to_string(), "k8s:io.kubernetes.pod.namespace=default");
        assert_eq!(Label::parse("reserved:world").to_string(), "reserved:world");
    }

    #[test]
    fn qualified_names() {
        assert!(validate_qualified_name("any.app.kubernetes.io/name").is_ok());
        assert!(
            validate_qualified_name("cidrgroup.io.cilium.policy.cidrgroupname/azure-imds").is_ok()
        );
        assert!(validate_qualified_name("k8s.bad key").is_err());
        assert!(validate_label_value("-x").is_err());
        assert!(validate_label_value("").is_ok());
    }
}
