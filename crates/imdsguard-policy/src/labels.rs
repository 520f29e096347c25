//! Cilium's label model: `source:key=value`, and the selector-key normalisation of
//! docs/policy-semantics.md §2.2.

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

/// Kubernetes `IsQualifiedName`: an optional DNS-subdomain prefix, `/`, and a name of at most 63
/// characters that begins and ends with an alphanumeric character.
pub fn validate_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(format!(
                "invalid label key {key:?}: prefix part must be non-empty"
            ));
        }
        if p.len() > 253 || !p.split('.').all(is_dns_label) {
            return Err(format!(
                "invalid label key {key:?}: prefix part must be a DNS subdomain"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err(format!(
            "invalid label key {key:?}: name part must be at most 63 characters, start and end with an alphanumeric character, and contain only [-_.a-zA-Z0-9]"
        ));
    }
    Ok(())
}

/// Kubernetes label value: empty, or at most 63 characters of `[-_.a-zA-Z0-9]` that begin and end
/// with an alphanumeric character.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && is_label_name(value)) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be at most 63 characters, start and end with an alphanumeric character, and contain only [-_.a-zA-Z0-9]"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
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
